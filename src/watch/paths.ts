import { constants } from 'node:fs';
import * as nodeFsp from 'node:fs/promises';
import * as path from 'node:path';

const IGNORED_SUFFIXES = ['.tmp', '.part', '.partial', '.crdownload'];

/** Files still being written by a VMS or a copy tool, and hidden files, are never read. */
export function isIgnoredName(name: string): boolean {
  if (name.startsWith('.')) return true;
  const lower = name.toLowerCase();
  return IGNORED_SUFFIXES.some((suffix) => lower.endsWith(suffix));
}

export type ExportPathResult =
  { kind: 'ok'; path: string /* real absolute path */ } | { kind: 'missing' } | { kind: 'refused'; reason: string };

/** The part of fs/promises this module uses, so that tests can pass memfs. */
export type ExportPathFs = Pick<typeof nodeFsp, 'realpath' | 'stat'>;

/**
 * Resolves a manifest's `file`/`thumbnail` value against its incident folder.
 *
 * Returns `refused` (with a reason naming the value) for anything that must not be read: absolute
 * paths, `..` segments, NUL bytes, ignored names, directories, non-regular files and anything whose
 * real path (after symlinks) lies outside the real incident folder. Returns `missing` while the file,
 * or a symlink's target, does not exist yet. Errors that may pass (EIO, EMFILE, …) are thrown so the
 * caller retries instead of failing the video for good.
 *
 * The returned path contains no symlinks; the caller should open exactly that path.
 */
export async function resolveExportPath(folder: string, relative: string, fsp: ExportPathFs = nodeFsp): Promise<ExportPathResult> {
  const shown = `file ${JSON.stringify(relative)}`;
  const refuse = (why: string): ExportPathResult => ({ kind: 'refused', reason: `${shown} ${why}` });

  if (typeof relative !== 'string' || relative === '') return refuse('is empty');
  if (relative.includes('\0')) return refuse('contains a NUL byte');
  // Both separators count: manifests written on Windows (or served from SMB shares) use `\`, and
  // a `..\` that only Windows would honour must be refused everywhere.
  if (/^[/\\]/.test(relative) || /^[A-Za-z]:/.test(relative)) return refuse('is an absolute path');
  const segments = relative.split(/[/\\]/);
  // Percent-encoding is deliberately not decoded: `%2e%2e` is a legal file name, not a traversal.
  if (segments.includes('..')) return refuse('leaves the incident folder');
  const names = segments.filter((s) => s !== '' && s !== '.');
  if (names.length === 0) return refuse('does not name a file');
  const ignored = names.find(isIgnoredName);
  if (ignored !== undefined) {
    return refuse(`is an ignored name (${JSON.stringify(ignored)}: dot-files and partial downloads are never read)`);
  }

  let realFolder: string;
  let realTarget: string;
  try {
    realFolder = await fsp.realpath(path.resolve(folder));
    realTarget = await fsp.realpath(path.join(path.resolve(folder), ...names));
  } catch (err) {
    const code = errorCode(err);
    if (code === 'ENOENT' || code === 'ENOTDIR') return { kind: 'missing' };
    if (code === 'ELOOP') return refuse('is a symlink loop');
    if (code === 'EACCES' || code === 'EPERM') return refuse(`cannot be accessed (${code})`);
    if (code === 'ENAMETOOLONG') return refuse('is too long a path');
    throw err;
  }

  // A symlink to `.` lands on the folder itself.
  if (realTarget === realFolder) return refuse('is a directory');
  if (!isInside(realFolder, realTarget)) return refuse('leaves the incident folder');

  let stats: Awaited<ReturnType<ExportPathFs['stat']>>;
  try {
    stats = await fsp.stat(realTarget);
  } catch (err) {
    // Deleted between realpath and stat: it may come back.
    const code = errorCode(err);
    if (code === 'ENOENT' || code === 'ENOTDIR') return { kind: 'missing' };
    if (code === 'EACCES' || code === 'EPERM') return refuse(`cannot be accessed (${code})`);
    throw err;
  }
  if (stats.isDirectory()) return refuse('is a directory');
  if (!stats.isFile()) return refuse(`is not a regular file (${fileKind(stats)})`);
  return { kind: 'ok', path: realTarget };
}

/** The path resolveExportPath checked is no longer the regular file it was (a symlink or another file was put there). */
export class ExportPathChangedError extends Error {
  override readonly name = 'ExportPathChangedError';
}

/**
 * Opens, for reading, a path that resolveExportPath returned — and only if it still is what was
 * checked. Between the check and the read, an exporter (or anyone with write access to the export
 * folder) can replace the file, or a folder on its way, with a symlink leading out of the export
 * root; a plain open() would follow it and the daemon would read, hash and upload that file.
 *
 * - O_NOFOLLOW refuses a symlink as the last name (ELOOP).
 * - O_NONBLOCK: a FIFO put in its place must not block the open forever.
 * - fstat on the opened descriptor: it must be a regular file.
 * - On Linux, /proc/self/fd says which path the kernel really opened: a folder on the way that
 *   was swapped for a symlink shows up as a different path (O_NOFOLLOW only guards the last name).
 *
 * Throws ExportPathChangedError for all of these, so the caller checks the path again (and then
 * refuses it as leaving the incident folder) instead of reading it.
 */
export async function openExportFile(realPath: string): Promise<nodeFsp.FileHandle> {
  let handle: nodeFsp.FileHandle;
  try {
    handle = await nodeFsp.open(realPath, constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0) | (constants.O_NONBLOCK ?? 0));
  } catch (err) {
    if (errorCode(err) === 'ELOOP') throw new ExportPathChangedError(`${realPath} was replaced by a symlink after it was checked`);
    throw err;
  }
  try {
    const stats = await handle.stat();
    if (!stats.isFile())
      throw new ExportPathChangedError(`${realPath} is no longer a regular file (${stats.isDirectory() ? 'directory' : fileKind(stats)})`);
    if (process.platform === 'linux') {
      const opened = await nodeFsp.readlink(`/proc/self/fd/${handle.fd}`).catch(() => null);
      if (opened !== null && opened !== path.resolve(realPath)) {
        if (opened.endsWith(' (deleted)')) throw new ExportPathChangedError(`${realPath} was deleted while it was opened`);
        throw new ExportPathChangedError(
          `${realPath} now leads elsewhere (${opened}): a folder on its way was replaced after it was checked`,
        );
      }
    }
    return handle;
  } catch (err) {
    await handle.close().catch(() => undefined);
    throw err;
  }
}

function isInside(realFolder: string, realTarget: string): boolean {
  const rel = path.relative(realFolder, realTarget);
  // `..foo` is a legal name inside; only a whole `..` segment climbs out.
  return rel !== '' && rel !== '..' && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel);
}

interface StatLike {
  isFIFO(): boolean;
  isSocket(): boolean;
  isCharacterDevice(): boolean;
  isBlockDevice(): boolean;
}

function fileKind(stats: StatLike): string {
  if (stats.isFIFO()) return 'fifo';
  if (stats.isSocket()) return 'socket';
  if (stats.isCharacterDevice()) return 'character device';
  if (stats.isBlockDevice()) return 'block device';
  return 'special file';
}

function errorCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code = err.code;
    return typeof code === 'string' ? code : undefined;
  }
  return undefined;
}
