/**
 * The filesystem a path lives on, from /proc/self/mountinfo. SQLite's WAL needs shared memory
 * and POSIX locks that network filesystems (NFS, SMB, sshfs…) do not provide reliably: a ledger
 * there can be corrupted silently, so the daemon refuses to start with one.
 */
import { readFileSync, realpathSync, statfsSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';

export const NETWORK_FILESYSTEMS: ReadonlySet<string> = new Set([
  'nfs',
  'nfs4',
  'cifs',
  'smb3',
  'smbfs',
  'ncpfs',
  '9p',
  'afs',
  'ceph',
  'glusterfs',
  'lustre',
  'gpfs',
  'beegfs',
  'davfs',
  'coda',
  'orangefs',
  'pvfs2',
  'fuse.sshfs',
  'fuse.glusterfs',
  'fuse.ceph-fuse',
  'fuse.s3fs',
  'fuse.rclone',
  'fuse.gcsfuse',
  'fuse.davfs2',
  'fuse.juicefs',
  'fuse.moosefs',
  'fuse.lizardfs',
  'fuse.smbnetfs',
  'fuse.curlftpfs',
]);

export interface Mount {
  mountPoint: string;
  fsType: string;
  source: string;
}

/** mountinfo escapes space, tab, newline and backslash as octal (`\040`). */
function unescape(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** The mounts of a mountinfo text, in its order (a later mount on the same point hides an earlier one). */
export function parseMountinfo(text: string): Mount[] {
  const mounts: Mount[] = [];
  for (const line of text.split('\n')) {
    const fields = line.trim().split(' ');
    const dash = fields.indexOf('-');
    if (dash < 6 || fields.length < dash + 3) continue;
    mounts.push({ mountPoint: unescape(fields[4]!), fsType: fields[dash + 1]!, source: unescape(fields[dash + 2]!) });
  }
  return mounts;
}

function within(path: string, mountPoint: string): boolean {
  if (mountPoint === '/') return path.startsWith('/');
  return path === mountPoint || path.startsWith(`${mountPoint}/`);
}

/** The mount holding an absolute, resolved path: the longest mount point that prefixes it, the last one on ties. */
export function mountOf(path: string, mounts: readonly Mount[]): Mount | null {
  let best: Mount | null = null;
  for (const m of mounts) {
    if (!within(path, m.mountPoint)) continue;
    if (!best || m.mountPoint.length >= best.mountPoint.length) best = m;
  }
  return best;
}

/** The path with symlinks resolved as far as it exists (the ledger and its folder may not exist yet). */
export function resolveExisting(path: string): string {
  const missing: string[] = [];
  let p = resolve(path);
  for (;;) {
    try {
      return join(realpathSync(p), ...missing.reverse());
    } catch {
      const parent = dirname(p);
      if (parent === p) return resolve(path);
      missing.push(basename(p));
      p = parent;
    }
  }
}

const readMountinfo = (): string => readFileSync('/proc/self/mountinfo', 'utf8');

/**
 * The network filesystem the file at `path` would be on, or null when it is local or this cannot
 * be told (no /proc: not Linux). Tests pass the mountinfo text of a machine with an NFS mount.
 */
export function networkMountOf(path: string, mountinfo: () => string = readMountinfo): Mount | null {
  let text: string;
  try {
    text = mountinfo();
  } catch {
    return null;
  }
  const mount = mountOf(resolveExisting(path), parseMountinfo(text));
  return mount && NETWORK_FILESYSTEMS.has(mount.fsType) ? mount : null;
}

/** Bytes an unprivileged writer may still use on the filesystem holding `path`'s folder; null when it cannot be told. */
export function freeBytesFor(path: string): number | null {
  return spaceOf(dirname(path))?.freeBytes ?? null;
}

/**
 * The size of the filesystem holding the folder `dir`, and the bytes an unprivileged writer may
 * still use on it (root's reserve left out, as `df` shows "Avail"); null when it cannot be told.
 */
export function spaceOf(dir: string): { freeBytes: number; sizeBytes: number } | null {
  try {
    const s = statfsSync(dir);
    return { freeBytes: Number(s.bavail) * Number(s.bsize), sizeBytes: Number(s.blocks) * Number(s.bsize) };
  } catch {
    return null;
  }
}
