/**
 * A file's stamp: size, mtime and ctime (in nanoseconds), device and inode. Every read of an
 * export — the identity pass, each part as it is sent, the check before `complete` — compares the
 * file's stamp with the one taken when it settled: a file appended, truncated, rewritten or
 * renamed over shows in it, even when the writer put size and mtime back (ctime cannot be set
 * back). So the bytes are read once per target and never compared with a second hash pass.
 */
import type { BigIntStats } from 'node:fs';
import { lstat } from 'node:fs/promises';

export function stampOf(stats: BigIntStats): string {
  return `${stats.size}:${stats.mtimeNs}:${stats.ctimeNs}:${stats.dev}:${stats.ino}`;
}

/** The stamp of whatever is at `path` now (not following a symlink); null when nothing is. */
export async function currentStamp(path: string): Promise<string | null> {
  const stats = await lstat(path, { bigint: true }).catch(() => null);
  return stats?.isFile() ? stampOf(stats) : null;
}

/** The size a stamp records. */
export function stampedSize(stamp: string): number {
  return Number(stamp.split(':', 1)[0]);
}
