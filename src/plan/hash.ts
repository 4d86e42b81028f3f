/**
 * A file's identity: its SHA-256, read once through one descriptor opened without following
 * symlinks, and only if the file is still the one that settled (its stamp, before and after).
 * Reading once matters on an NVR whose disks are busy recording.
 */
import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { ExportPathChangedError, openExportFile } from '../watch/paths.js';
import { currentStamp, stampOf } from './file-stamp.js';

export class FileChangedError extends Error {
  override readonly name = 'FileChangedError';
}

/** Reads through one reused buffer: a fresh buffer per chunk would leave the GC megabytes behind on a 10 GiB file. */
const READ_BUFFER = 1024 * 1024;

/** The SHA-256 (hex) of the file at `path`, which must have `stamp` throughout; FileChangedError otherwise. */
export async function sha256Of(path: string, stamp: string, signal?: AbortSignal): Promise<string> {
  let fh: FileHandle;
  try {
    fh = await openExportFile(path);
  } catch (err) {
    // A changed file, as far as the caller is concerned: it checks the path again (and refuses a
    // link leading out of the incident folder) rather than failing or retrying blindly.
    if (err instanceof ExportPathChangedError) throw new FileChangedError(err.message);
    throw err;
  }
  const sha = createHash('sha256');
  try {
    if (stampOf(await fh.stat({ bigint: true })) !== stamp) throw new FileChangedError('file changed since it settled');
    const buffer = Buffer.allocUnsafe(READ_BUFFER);
    for (let at = 0; ;) {
      signal?.throwIfAborted();
      const { bytesRead } = await fh.read(buffer, 0, buffer.length, at);
      if (bytesRead === 0) break;
      sha.update(buffer.subarray(0, bytesRead));
      at += bytesRead;
    }
    if (stampOf(await fh.stat({ bigint: true })) !== stamp) throw new FileChangedError('file changed while it was being hashed');
  } finally {
    await fh.close();
  }
  // The name must still lead to the file that was read: one renamed over it meanwhile (an exporter
  // writing a new version under a temp name) is a change even when size and mtime happen to match.
  if ((await currentStamp(path)) !== stamp) throw new FileChangedError('file was replaced or removed while it was being hashed');
  return sha.digest('hex');
}
