/**
 * A small filesystem of the test's own, to fill up for real: a tmpfs mounted on a folder of the
 * test (CI runs as root; a run that cannot mount says so and fails, rather than testing less).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { TestContext } from 'vitest';

export interface SmallFilesystem {
  /** Fills it with one file until it refuses (ENOSPC). */
  fill(): Promise<void>;
  /** Removes that file. */
  free(): Promise<void>;
}

/** Mounts a tmpfs of `size` (e.g. `64m`) on `dir`; unmounted when the test finishes. */
export function mountTmpfs(ctx: TestContext, dir: string, size: string): SmallFilesystem {
  mkdirSync(dir, { recursive: true });
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'pipe' });
  } catch (err) {
    throw new Error(`this test fills a small filesystem of its own and needs to mount a tmpfs (as root): ${(err as Error).message}`, {
      cause: err,
    });
  }
  ctx.onTestFinished(() => {
    execFileSync('umount', ['-l', dir]);
  });
  const filler = join(dir, 'filler');
  return { fill: () => fillUp(filler), free: () => rm(filler, { force: true }) };
}

async function fillUp(path: string): Promise<void> {
  const fh = await open(path, 'w');
  const chunk = Buffer.alloc(16 * 1024, 0x46);
  try {
    for (;;) await fh.write(chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    await fh.close().catch(() => undefined);
  }
}
