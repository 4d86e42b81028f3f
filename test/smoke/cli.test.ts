/**
 * The command line of CONTRACT §2 and §4 as an operator meets it: exit codes, what is printed,
 * and that a bad configuration or a broken ledger starts nothing and changes nothing.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import Database from 'better-sqlite3';
import { existsSync } from 'node:fs';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { harness } from '../support/harness.js';
import { PACKAGE_VERSION, runCli, runCliOnTerminal, waitFor, writeConfig } from '../support/daemon-process.js';
import { MiB, writeVideo } from '../support/files.js';
import { incidentManifest, writeManifest } from '../support/manifest.js';

/** A configuration that validates, for a directory; `patch` replaces top-level sections. */
async function configIn(dir: string, patch: Record<string, unknown> = {}): Promise<{ configPath: string; ledgerPath: string }> {
  const ledgerPath = join(dir, 'state', 'ledger.db');
  await mkdir(join(dir, 'exports'), { recursive: true });
  const configPath = await writeConfig(dir, {
    watch: { root: join(dir, 'exports'), settle_seconds: 0.3 },
    ledger: { path: ledgerPath },
    targets: { alo: { type: 'alo', base_url: 'http://127.0.0.1:9/v1', auth: { bearer: 'not-used' } } },
    ...patch,
  });
  return { configPath, ledgerPath };
}

interface Snapshot {
  incidents: Array<{
    id: string;
    videos: Array<{
      id: string;
      state: string;
      uploads: Array<{
        role: string;
        state: string;
        bytesDone: number;
        bytesTotal: number;
        lastError: string | null;
        rateBytesPerSecond: number;
        etaSeconds: number | null;
      }>;
    }>;
  }>;
  totals: {
    queued: number;
    uploading: number;
    done: number;
    failed: number;
    waiting: number;
    failedVideos: number;
    refusedReports: number;
  };
}

/** A string as a literal part of a RegExp. */
const literal = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** What `check-config` printed: its one header line, then the resolved configuration as YAML. */
function printedConfig(stdout: string): Record<string, unknown> {
  const [header, ...rest] = stdout.split('\n');
  expect(header).toBe('# resolved configuration: sizes in bytes, rates in bytes per second (null = unlimited), durations in seconds');
  return parse(rest.join('\n')) as Record<string, unknown>;
}

/** Every key of a parsed YAML document, as dotted paths (`targets.alo.request_timeout`). */
function keyPaths(value: unknown, prefix = ''): string[] {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return [];
  return Object.entries(value).flatMap(([k, v]) => [`${prefix}${k}`, ...keyPaths(v, `${prefix}${k}.`)]);
}

async function statusJson(configPath: string): Promise<Snapshot> {
  const r = await runCli(['status', '--json', '--config', configPath]);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Snapshot;
}

describe.concurrent('vms-uplink command line (CONTRACT §2)', () => {
  it('refuses a bad configuration with exit 2, naming every offending key by its YAML path, and starts nothing', async (ctx) => {
    const dir = await harness(ctx).dir();
    const { configPath, ledgerPath } = await configIn(dir, {
      upload: { concurrency: 0 },
      targets: { alo: { type: 'alo', base_url: 'not a url', auth: { bearer: 'x' } } },
    });

    for (const command of ['run', 'check-config']) {
      const r = await runCli([command, '--config', configPath]);
      expect(r.code, `${command}: ${r.stderr}`).toBe(2);
      // The file, then one line per problem: the key's YAML path and what is wrong with it; nothing else
      // (in the order the checks ran, which differs between the two commands).
      const [file, ...problems] = r.stderr.split('\n');
      expect(file, command).toBe(`${configPath}:`);
      expect(problems.sort(), command).toEqual([
        '',
        '  targets.alo.base_url: Invalid URL',
        '  upload.concurrency: must be between 1 and 64',
      ]);
      expect(r.stdout, command).toBe('');
    }
    expect(existsSync(ledgerPath)).toBe(false);
    expect(existsSync(join(dir, 'state'))).toBe(false);
  });

  it('check-config accepts every platform type and names each target', async (ctx) => {
    const dir = await harness(ctx).dir();
    const { configPath } = await configIn(dir, {
      targets: {
        alo: { type: 'alo', base_url: 'https://api.alo.ai/v1', auth: { bearer: 'x' } },
        aion: { type: 'aionvision', base_url: 'https://api.aionvision.tech/api/v2', auth: { bearer: 'x' } },
        tv: { type: 'truvideo', base_url: 'https://upload-api.truvideo.com', auth: { bearer: 'x' } },
        valt: {
          type: 'valt',
          base_url: 'http://valt.example.com/api/v3',
          auth: {
            login: {
              url: 'http://valt.example.com/api/v3/login',
              body: { username: 'u', password: 'p' },
              token_field: 'data.access_token',
            },
            send_as: { query: 'access_token' },
          },
        },
      },
    });
    const r = await runCli(['check-config', '--config', configPath]);
    expect(r.code, r.stderr).toBe(0);
    const targets = printedConfig(r.stdout).targets as Record<string, { type: string }>;
    expect(Object.fromEntries(Object.entries(targets).map(([name, t]) => [name, t.type]))).toEqual({
      alo: 'alo',
      aion: 'aionvision',
      tv: 'truvideo',
      valt: 'valt',
    });
  });

  it('refuses a target type no platform module has (exit 2, targets.<name>.type), for run and check-config', async (ctx) => {
    const dir = await harness(ctx).dir();
    const { configPath, ledgerPath } = await configIn(dir, {
      targets: { tube: { type: 'youtube', base_url: 'https://example.com', auth: { bearer: 'x' } } },
    });
    for (const command of ['run', 'check-config']) {
      const r = await runCli([command, '--config', configPath]);
      expect(r.code, `${command}: ${r.stderr}`).toBe(2);
      expect(r.stderr, command).toBe(
        `${configPath}:\n  targets.tube.type: unknown target type "youtube" (valid types: alo, aionvision, truvideo, valt)\n`,
      );
    }
    expect(existsSync(ledgerPath)).toBe(false);
  });

  it('refuses a configuration that names an unset environment variable (exit 2, naming the path)', async (ctx) => {
    const dir = await harness(ctx).dir();
    const variable = `VMS_UPLINK_TEST_UNSET_${randomBytes(4).toString('hex').toUpperCase()}`;
    const { configPath, ledgerPath } = await configIn(dir, {
      targets: { alo: { type: 'alo', base_url: 'http://127.0.0.1:9/v1', auth: { bearer: `\${${variable}}` } } },
    });
    for (const command of ['run', 'check-config']) {
      const r = await runCli([command, '--config', configPath]);
      expect(r.code, `${command}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(new RegExp(`^\\s*targets\\.alo\\.auth\\.bearer: environment variable ${variable} is not set$`, 'm'));
    }
    expect(existsSync(ledgerPath)).toBe(false);
  });

  it('check-config prints the resolved configuration with every secret masked', async (ctx) => {
    const dir = await harness(ctx).dir();
    const envToken = `alo-env-token-${randomUUID()}`;
    const fileToken = `file-token-${randomUUID()}`;
    const loginUser = `operator-${randomUUID()}`;
    const loginPassword = `login-password-${randomUUID()}`;
    const headerValue = `header-value-${randomUUID()}`;
    const tokenFile = join(dir, 'alo_key');
    await writeFile(tokenFile, `${fileToken}\n`);
    // Every auth form (CONTRACT §4), on targets of the type this version runs.
    const { configPath } = await configIn(dir, {
      upload: { part_size: '6MiB', stall_timeout: '7s' },
      targets: {
        alo: { type: 'alo', base_url: 'https://api.alo.ai/v1', auth: { bearer: '${VMS_UPLINK_TEST_ALO_TOKEN}' } },
        alo_file: { type: 'alo', base_url: 'https://api.alo.ai/v1', auth: { bearer_file: tokenFile } },
        alo_header: {
          type: 'alo',
          base_url: 'https://api.alo.ai/v1',
          auth: { header: 'X-Api-Key', value: headerValue },
          request_timeout: '13s',
        },
        alo_login: {
          type: 'alo',
          base_url: 'https://alo.example.com/v1',
          auth: {
            login: {
              url: 'https://alo.example.com/v1/login',
              body: { username: loginUser, password: loginPassword },
              token_field: 'data.access_token',
            },
            send_as: { query: 'access_token' },
          },
        },
      },
    });

    const r = await runCli(['check-config', '--config', configPath], { VMS_UPLINK_TEST_ALO_TOKEN: envToken });
    expect(r.code, r.stderr).toBe(0);
    for (const secret of [envToken, fileToken, loginUser, loginPassword, headerValue]) expect(r.stdout + r.stderr).not.toContain(secret);
    // Resolved, not just echoed: the YAML's own key names (snake_case, as in the file), every default
    // filled in, sizes in bytes, durations in seconds, the non-secret values as written, the secrets `***`.
    const printed = printedConfig(r.stdout);
    const target = { type: 'alo', request_timeout: 30, multipart_threshold: 100 * MiB };
    expect(printed).toEqual({
      watch: {
        root: join(dir, 'exports'),
        settle_seconds: 0.3,
        missing_file_seconds: 3600,
        poll: false,
        poll_interval: 2,
        rescan_interval: 300,
      },
      ledger: { path: join(dir, 'state', 'ledger.db'), min_free: 256 * MiB },
      upload: {
        concurrency: 4,
        part_size: 6 * MiB,
        bandwidth: null,
        stall_timeout: 7,
        retry_initial: 1,
        retry_max: 300,
        drain_timeout: 10,
      },
      after_upload: 'keep',
      targets: {
        alo: { ...target, base_url: 'https://api.alo.ai/v1', auth: { bearer: '***' } },
        alo_file: { ...target, base_url: 'https://api.alo.ai/v1', auth: { bearer_file: '***' } },
        alo_header: { ...target, base_url: 'https://api.alo.ai/v1', auth: { header: 'X-Api-Key', value: '***' }, request_timeout: 13 },
        alo_login: {
          ...target,
          base_url: 'https://alo.example.com/v1',
          auth: {
            login: { url: 'https://alo.example.com/v1/login', body: '***', token_field: 'data.access_token' },
            send_as: { query: 'access_token' },
          },
        },
      },
      log: { level: 'info' },
      network: {},
    });
    // No key renamed on the way (camelCase or otherwise): every printed key is snake_case.
    const keys = keyPaths(printed);
    expect(keys.length).toBeGreaterThan(40);
    expect(keys.filter((k) => !/^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$/.test(k))).toEqual([]);
  });

  it('status before any run says there is no ledger yet', async (ctx) => {
    const dir = await harness(ctx).dir();
    const { configPath, ledgerPath } = await configIn(dir);
    const text = await runCli(['status', '--config', configPath]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toBe(`no ledger at ${ledgerPath} yet: the daemon has not run\n`);
    const json = await runCli(['status', '--json', '--config', configPath]);
    expect(json.code, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({ incidents: [] });
    expect(existsSync(ledgerPath)).toBe(false);
  });

  it('status shows the uploads while the daemon runs and after it stopped: a table in a pipe, bars on a terminal, rates in --json', async (ctx) => {
    const h = harness(ctx);
    // One part in flight at a time at 1 MiB/s: the big video's first 5 MiB part is done after
    // about 5 s and the last one about 24 s after the start, a window in which status sees it
    // mid-upload with a part done and a rate, even when each status run takes seconds.
    const s = await h.site({ upload: { concurrency: 1, bandwidth: '1MiB/s' } });
    const folder = join(s.exportsRoot, 'incident');
    await writeVideo(join(folder, 'big.mp4'), 24 * MiB);
    await writeVideo(join(folder, 'small.mp4'), 200 * 1024);
    const id = randomUUID();
    await writeManifest(
      folder,
      incidentManifest(id, [
        { id: 'big', file: 'big.mp4' },
        { id: 'small', file: 'small.mp4' },
        { id: 'lost', errors: ['No video available for the camera during the selected time period.'] },
      ]),
    );

    const d = h.daemon(s);
    // The ledger is set up before `daemon.started` (a status racing that set-up is a test of its own below).
    await waitFor(() => d.events('daemon.started').length > 0, 30_000, 'the daemon started');
    const bigUpload = (st: Snapshot) => st.incidents[0]?.videos.find((v) => v.id === 'big')?.uploads.find((u) => u.role === 'video');
    const during = await waitFor(
      async () => {
        const st = await statusJson(s.configPath);
        const big = bigUpload(st);
        return big?.state === 'uploading' && big.bytesDone > 0 ? st : undefined;
      },
      25_000,
      'status showing the big video uploading, a part of it done',
    );
    expect(bigUpload(during)).toMatchObject({ bytesTotal: 24 * MiB });
    expect(bigUpload(during)!.bytesDone).toBeLessThan(24 * MiB);
    expect(bigUpload(during)!.rateBytesPerSecond).toBeGreaterThan(0);
    expect(bigUpload(during)!.etaSeconds).toBeGreaterThan(0);
    expect(during.totals).toMatchObject({ failedVideos: 1, failed: 0, waiting: 0 });
    expect(during.totals.uploading).toBeGreaterThanOrEqual(1);
    expect(during.totals.queued + during.totals.uploading + during.totals.done).toBe(2);

    // Not a terminal (a pipe to the test): the table, the big video's row with its size, rate and ETA.
    const duringText = await runCli(['status', '--config', s.configPath]);
    expect(duringText.code).toBe(0);
    expect(duringText.stdout).toMatch(/^INCIDENT +VIDEO +CAMERA +TARGET +STATE +DONE +TOTAL +% +RATE +ETA +UPLOAD$/m);
    expect(duringText.stdout).toMatch(
      new RegExp(
        `^${id} +big +192\\.168\\.0\\.240 - Camera - 01 +alo +uploading +\\d+\\.\\d MiB +24\\.0 MiB +\\d+% +\\d+\\.\\d [KM]iB/s +\\d+:\\d\\d +#\\d+$`,
        'm',
      ),
    );
    expect(duringText.stdout).toMatch(new RegExp(`^${id} +lost .* export failed `, 'm'));
    expect(duringText.stdout).not.toContain('[#');

    // On a 72-column terminal: the big video as a progress bar that fits.
    const onTerminal = await runCliOnTerminal(['status', '--config', s.configPath], 72);
    expect(onTerminal.code).toBe(0);
    const barLine = onTerminal.stdout.split('\n').find((l) => l.startsWith('  big →'));
    const bar = /^ {2}(big →.*?) +\[#*\.*\] +\d+% +\d+\.\d MiB \/ 24\.0 MiB +\d+\.\d [KM]iB\/s +ETA \d+:\d\d$/.exec(barLine ?? '');
    expect(bar, onTerminal.stdout).not.toBeNull();
    // The label, "big → alo", cut with an ellipsis where the rest of the line leaves it no room.
    const label = bar![1]!;
    expect(label === 'big → alo' || (label.endsWith('…') && 'big → alo'.startsWith(label.slice(0, -1))), label).toBe(true);
    expect(barLine!.length).toBeLessThanOrEqual(72);
    expect(onTerminal.stdout).not.toMatch(/^INCIDENT /m);

    await waitFor(() => s.alo.incident(id)?.uploaded_videos.length === 2, 60_000, 'both videos uploaded');
    const expected = { queued: 0, uploading: 0, done: 2, failed: 0, waiting: 0, failedVideos: 1, refusedReports: 0 };
    expect((await statusJson(s.configPath)).totals).toEqual(expected);

    d.kill('SIGTERM');
    expect(await d.exited).toEqual({ code: 0, signal: null });
    const after = await statusJson(s.configPath);
    expect(after.totals).toEqual(expected);
    expect(after.incidents[0]!.videos.find((v) => v.id === 'big')!.uploads[0]).toMatchObject({ state: 'done', bytesDone: 24 * MiB });
    const afterText = await runCli(['status', '--config', s.configPath]);
    expect(afterText.code).toBe(0);
    expect(afterText.stdout).toContain(id);
    expect(afterText.stdout).toMatch(/^uploads: 0 uploading, 0 queued, 2 done, 0 failed; videos: 0 waiting for files, 1 failed$/m);
    expect(afterText.stdout).toMatch(new RegExp(`^${id} +big .* alo +done +24\\.0 MiB +24\\.0 MiB +100% +- +- +#\\d+$`, 'm'));
  }, 120_000);

  it('status works on a ledger the daemon has only just created (its tables not yet there)', async (ctx) => {
    // What a daemon starting on a new box leaves for an instant between creating the file and
    // migrating it; an operator running `status` right then must not get a fatal error.
    const dir = await harness(ctx).dir();
    const { configPath, ledgerPath } = await configIn(dir);
    await mkdir(join(dir, 'state'), { recursive: true });
    const db = new Database(ledgerPath);
    db.pragma('journal_mode = WAL');
    db.close();

    const json = await runCli(['status', '--json', '--config', configPath]);
    expect(json.code, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({ incidents: [] });
    const text = await runCli(['status', '--config', configPath]);
    expect(text.code, text.stderr).toBe(0);
  });

  it('retry puts a failed upload back in the queue; an unknown id exits 1, no id exits 2', async (ctx) => {
    const h = harness(ctx);
    const s = await h.site({ emulator: { maxUploadSizeMb: 1 } });
    const folder = join(s.exportsRoot, 'too-big');
    await writeVideo(join(folder, 'cam01.mp4'), 3 * MiB);
    const id = randomUUID();
    await writeManifest(folder, incidentManifest(id, [{ id: 'cam01', file: 'cam01.mp4' }]));

    const d = h.daemon(s);
    const incident = await waitFor(
      () => {
        const i = s.alo.incident(id);
        return i && i.failed_videos.length === 1 ? i : undefined;
      },
      30_000,
      'the too-big video reported failed',
    );
    expect(incident.failed_videos[0]!.upload_errors).toEqual([
      'upload failed: cam01.mp4 is 3.0 MB; ALO accepts at most 1 MB (max_upload_size_mb)',
    ]);
    expect(s.store.requests.filter((r) => r.method === 'PUT' && r.status === 200)).toEqual([]);
    d.kill('SIGTERM');
    expect(await d.exited).toEqual({ code: 0, signal: null });
    expect((await statusJson(s.configPath)).totals).toMatchObject({ failed: 1, queued: 0, done: 0 });

    const retried = await runCli(['retry', id, '--config', s.configPath]);
    expect(retried.code, retried.stderr).toBe(0);
    const st = await statusJson(s.configPath);
    expect(st.totals).toMatchObject({ failed: 0, queued: 1, done: 0 });
    expect(st.incidents[0]!.videos[0]!.uploads[0]).toMatchObject({ role: 'video', state: 'queued' });

    const unknownId = randomUUID();
    const unknown = await runCli(['retry', unknownId, '--config', s.configPath]);
    expect(unknown.code, unknown.stderr).toBe(1);
    expect(unknown.stderr).toBe(
      `nothing to retry for ${unknownId}: no failed upload with that number and no incident (or skipped one) with that id\n`,
    );
    const missing = await runCli(['retry', '--config', s.configPath]);
    expect(missing.code, missing.stderr).toBe(2);
    expect(missing.stderr.split('\n').slice(0, 3)).toEqual([
      'vms-uplink: retry needs the id of a failed upload (#number) or of an incident',
      '',
      'usage:',
    ]);
    expect(missing.stderr).toMatch(/^ {2}vms-uplink retry ID \[--config FILE\] +put a failed upload/m);
  });

  it('refuses to run on a corrupt ledger (exit 1, says how to recover) and leaves the file untouched', async (ctx) => {
    const dir = await harness(ctx).dir();
    const { configPath, ledgerPath } = await configIn(dir);
    await mkdir(join(dir, 'state'), { recursive: true });
    const garbage = Buffer.concat([Buffer.from('SQLite format 3\0', 'latin1'), randomBytes(16 * 1024)]);
    await writeFile(ledgerPath, garbage);

    const r = await runCli(['run', '--config', configPath]);
    expect(r.code, r.stderr).toBe(1);
    const db = literal(ledgerPath);
    expect(r.stderr).toMatch(new RegExp(`^vms-uplink: ledger ${db} is corrupt: .*\\. The file was left untouched\\. `, 'm'));
    expect(r.stderr).toMatch(/ Stop the daemon, then restore a backup, or set the broken ledger aside and start from an empty one: /);
    expect(r.stderr).toMatch(new RegExp(` mv ${db} ${db}\\.broken && `));
    expect((await readFile(ledgerPath)).equals(garbage)).toBe(true);
  });

  it('an unknown command exits 2 with the usage', async () => {
    const r = await runCli(['frobnicate']);
    expect(r.code).toBe(2);
    expect(r.stderr.split('\n').slice(0, 3)).toEqual(['vms-uplink: unknown command frobnicate', '', 'usage:']);
    for (const command of ['run', 'check-config', 'status', 'retry ID'])
      expect(r.stderr).toMatch(new RegExp(`^ {2}vms-uplink ${literal(command)} \\[--config FILE\\]`, 'm'));
  });

  it('--version prints the version of package.json and the Node.js it runs on, exits 0, and reads no configuration', async () => {
    // No config anywhere: --version must not need one.
    const env = { VMS_UPLINK_CONFIG: '/nonexistent/config.yaml' };
    for (const args of [['--version'], ['run', '--version']]) {
      const r = await runCli(args, env);
      expect([r.code, r.stdout, r.stderr]).toEqual([0, `vms-uplink ${PACKAGE_VERSION} (node ${process.versions.node})\n`, '']);
    }
    expect(PACKAGE_VERSION).toMatch(/^\d+\.\d+\.\d+/);
    expect((await runCli(['--help'])).stdout).toContain('vms-uplink --version');
  });
});
