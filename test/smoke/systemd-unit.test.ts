/**
 * The shipped unit, read by systemd's own tools: its sandbox keeps an exposure of 1.5 or less,
 * it reloads with SIGHUP, and it gives the recorder precedence for CPU and disk. CI installs
 * systemd (for systemd-analyze) when the machine lacks it.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../support/daemon-process.js';

const UNIT = join(repoRoot(), 'systemd', 'vms-uplink.service');
const run = promisify(execFile);

/** systemd-analyze's answer; it exits non-zero when the exposure is above its threshold, so both streams are kept. */
async function analyze(...args: string[]): Promise<string> {
  try {
    const { stdout, stderr } = await run('systemd-analyze', args);
    return stdout + stderr;
  } catch (err) {
    const e = err as { code?: string; stdout?: string; stderr?: string };
    if (e.code === 'ENOENT') throw new Error('systemd-analyze is not installed (Debian: apt-get install systemd)', { cause: err });
    return `${e.stdout ?? ''}${e.stderr ?? ''}`;
  }
}

describe('systemd unit', () => {
  it('keeps an exposure of 1.5 or less', async () => {
    const out = await analyze('security', '--offline=yes', UNIT);
    const m = /Overall exposure level for vms-uplink\.service: ([\d.]+)/.exec(out);
    expect(m, out).not.toBeNull();
    expect(Number(m![1])).toBeLessThanOrEqual(1.5);
  });

  it('reloads with SIGHUP and runs below the recorder for CPU and disk', async () => {
    // systemd accepts every line of it (unknown or misspelt directives are reported here).
    expect(await analyze('verify', UNIT)).toBe('');
    const directives = new Map(
      (await readFile(UNIT, 'utf8'))
        .split('\n')
        .filter((l) => /^[A-Za-z]+=/.test(l))
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)] as const),
    );
    expect(directives.get('ExecReload')).toBe('/bin/kill -HUP $MAINPID');
    expect(Number(directives.get('Nice'))).toBeGreaterThan(0);
    expect(Number(directives.get('CPUWeight'))).toBeLessThan(100);
    expect(Number(directives.get('IOWeight'))).toBeLessThan(100);
    expect(directives.get('IOSchedulingClass')).toBe('best-effort');
    expect(Number(directives.get('IOSchedulingPriority'))).toBe(7);
  });
});
