import { createHash, randomBytes } from 'node:crypto';
import { appendFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { digestFile } from '../../src/plan/hash.js';
import { sliceParts } from '../../src/plan/part-plan.js';
import { tempDir } from '../support/files.js';

let dir: Awaited<ReturnType<typeof tempDir>>;
beforeEach(async () => (dir = await tempDir()));
afterEach(async () => dir.cleanup());

const md5 = (b: Buffer): string => createHash('md5').update(b).digest('hex');

describe('digestFile', () => {
  it('computes the SHA-256 and the MD5 of every part of every layout in one read', async () => {
    const data = randomBytes(3 * 1024 * 1024 + 17);
    const path = join(dir.path, 'v.mp4');
    await writeFile(path, data);
    const a = sliceParts(data.length, 1024 * 1024);
    const b = sliceParts(data.length, 700_000);
    const digest = await digestFile(path, [a, b]);
    expect(digest.sha256).toBe(createHash('sha256').update(data).digest('hex'));
    expect(digest.partMd5s[0]).toEqual(a.map((p) => md5(data.subarray(p.offset, p.offset + p.size))));
    expect(digest.partMd5s[1]).toEqual(b.map((p) => md5(data.subarray(p.offset, p.offset + p.size))));
  });

  it('gives the MD5 of an empty part for an empty file', async () => {
    const path = join(dir.path, 'empty.mp4');
    await writeFile(path, '');
    const digest = await digestFile(path, [sliceParts(0, 1024)]);
    expect(digest.partMd5s[0]).toEqual([md5(Buffer.alloc(0))]);
  });

  it('refuses a layout that no longer fits the file (it grew since it was planned)', async () => {
    const path = join(dir.path, 'grow.mp4');
    await writeFile(path, randomBytes(1000));
    const layout = sliceParts(1000, 400);
    await appendFile(path, randomBytes(10));
    await expect(digestFile(path, [layout])).rejects.toThrow(/grew/);
  });
});
