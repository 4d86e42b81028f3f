import { createHash, randomBytes } from 'node:crypto';
import { appendFile, lstat, open, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { stampOf } from '../../src/plan/file-stamp.js';
import { FileChangedError, sha256Of } from '../../src/plan/hash.js';
import { tempDir } from '../support/files.js';

let dir: Awaited<ReturnType<typeof tempDir>>;
beforeEach(async () => (dir = await tempDir()));
afterEach(async () => dir.cleanup());

const stamp = async (path: string): Promise<string> => stampOf(await lstat(path, { bigint: true }));

describe('sha256Of: a file’s identity, read once', () => {
  it('is the SHA-256 of the file as stamped', async () => {
    const data = randomBytes(3 * 1024 * 1024 + 17);
    const path = join(dir.path, 'v.mp4');
    await writeFile(path, data);
    expect(await sha256Of(path, await stamp(path))).toBe(createHash('sha256').update(data).digest('hex'));
  });

  it('refuses a file that grew since it settled', async () => {
    const path = join(dir.path, 'grow.mp4');
    await writeFile(path, randomBytes(1000));
    const settled = await stamp(path);
    await appendFile(path, randomBytes(10));
    await expect(sha256Of(path, settled)).rejects.toBeInstanceOf(FileChangedError);
  });

  it('refuses a file rewritten in place with its size and mtime put back: its ctime tells', async () => {
    const path = join(dir.path, 'rewritten.mp4');
    await writeFile(path, randomBytes(4096));
    const before = await lstat(path);
    const settled = await stamp(path);
    await new Promise((r) => setTimeout(r, 20));
    const fh = await open(path, 'r+');
    await fh.write(Buffer.alloc(16, 0xab), 0, 16, 100);
    await fh.close();
    await utimes(path, before.atime, before.mtime);
    expect(Math.abs((await lstat(path)).mtimeMs - before.mtimeMs)).toBeLessThan(1);
    await expect(sha256Of(path, settled)).rejects.toBeInstanceOf(FileChangedError);
  });
});
