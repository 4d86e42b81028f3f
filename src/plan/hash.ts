/**
 * One read of a file yields its SHA-256 (the content's identity) and the MD5 of every part of
 * every layout asked for (what S3 must answer as ETag). Reading once matters on an NVR whose
 * disks are busy recording.
 */
import { createHash, type Hash } from 'node:crypto';
import { lstat, type FileHandle } from 'node:fs/promises';
import { ExportPathChangedError, openExportFile } from '../watch/paths.js';
import type { PartLayout } from './part-plan.js';

export interface FileDigest {
  size: number;
  mtimeMs: number;
  sha256: string;
  /** For each requested layout, the MD5 (hex) of each part, in part order. */
  partMd5s: string[][];
}

export class FileChangedError extends Error {
  override readonly name = 'FileChangedError';
}

class LayoutHasher {
  private index = 0;
  private filled = 0;
  private current: Hash = createHash('md5');
  readonly md5s: string[] = [];

  constructor(private readonly layout: PartLayout) {
    this.flushEmptyParts();
  }

  update(chunk: Buffer): void {
    let pos = 0;
    while (pos < chunk.length) {
      const part = this.layout[this.index];
      if (!part) throw new FileChangedError('file grew while it was being hashed');
      const take = Math.min(part.size - this.filled, chunk.length - pos);
      this.current.update(chunk.subarray(pos, pos + take));
      this.filled += take;
      pos += take;
      this.flushEmptyParts();
    }
  }

  private flushEmptyParts(): void {
    let part = this.layout[this.index];
    while (part && this.filled === part.size) {
      this.md5s.push(this.current.digest('hex'));
      this.current = createHash('md5');
      this.filled = 0;
      this.index++;
      part = this.layout[this.index];
    }
  }
}

/** Reads through one reused buffer: a fresh buffer per chunk would leave the GC megabytes behind on a 10 GiB file. */
const READ_BUFFER = 1024 * 1024;

export async function digestFile(path: string, layouts: PartLayout[], signal?: AbortSignal): Promise<FileDigest> {
  // Opened without following a symlink swapped in since the path was checked (openExportFile), and
  // stat'ed through the descriptor: the bytes hashed and the size/mtime compared are the same file's.
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
  const hashers = layouts.map((layout) => new LayoutHasher(layout));
  const buffer = Buffer.allocUnsafe(READ_BUFFER);
  let read = 0;
  let before: Awaited<ReturnType<FileHandle['stat']>>;
  let after: Awaited<ReturnType<FileHandle['stat']>>;
  try {
    before = await fh.stat();
    for (;;) {
      signal?.throwIfAborted();
      const { bytesRead } = await fh.read(buffer, 0, buffer.length, read);
      if (bytesRead === 0) break;
      const chunk = buffer.subarray(0, bytesRead);
      sha.update(chunk);
      for (const h of hashers) h.update(chunk);
      read += bytesRead;
    }
    after = await fh.stat();
  } finally {
    await fh.close();
  }
  if (read !== before.size || after.size !== before.size || after.mtimeMs !== before.mtimeMs) {
    throw new FileChangedError(`file changed while it was being hashed (${before.size} → ${after.size} bytes)`);
  }
  // The name must still lead to the file that was read: one renamed over it meanwhile (an exporter
  // writing a new version under a temp name) is a change even when size and mtime happen to match.
  const now = await lstat(path).catch(() => null);
  if (!now || now.ino !== before.ino || now.dev !== before.dev) {
    throw new FileChangedError(`file was replaced or removed while it was being hashed`);
  }
  for (const [i, h] of hashers.entries()) {
    if (h.md5s.length !== layouts[i]!.length) throw new FileChangedError('file shrank while it was being hashed');
  }
  return { size: before.size, mtimeMs: before.mtimeMs, sha256: sha.digest('hex'), partMd5s: hashers.map((h) => h.md5s) };
}
