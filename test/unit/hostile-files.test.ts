/**
 * Hostile and odd files below the daemon, where a real process cannot reach the moment that
 * matters: a 60 GiB export (sparse: no disk used, never hashed) planned for every platform, and a
 * checked export swapped for a symlink between the traversal check and the read.
 */
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, open, readFile, realpath, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { Secrets } from '../../src/log/redact.js';
import { stampOf } from '../../src/plan/file-stamp.js';
import { FileChangedError, sha256Of } from '../../src/plan/hash.js';
import { MiB, S3_LIMITS, type PartLayout } from '../../src/plan/part-plan.js';
import { createTargets } from '../../src/targets/registry.js';
import type { Target } from '../../src/targets/target.js';
import { HttpClient } from '../../src/upload/http.js';
import { ExportPathChangedError, openExportFile, resolveExportPath } from '../../src/watch/paths.js';
import { readHead } from '../../src/watch/sniff.js';
import { mp4Header, tempDir } from '../support/files.js';
import { videoSource } from '../support/source-file.js';

const GiB = 1024 * MiB;

let tmp: { path: string; cleanup: () => Promise<void> };
beforeEach(async () => {
  tmp = await tempDir('vms-uplink-hostile-');
});
afterEach(async () => {
  await tmp.cleanup();
});

/** The four platforms as the daemon builds them from a configuration; nothing is called. */
function allTargets(): Map<string, Target> {
  const config = parseConfig(
    `
watch: { root: /srv/exports }
ledger: { path: /tmp/unused.db }
targets:
  alo: { type: alo, base_url: "http://127.0.0.1:9/v1", auth: { bearer: t } }
  aion: { type: aionvision, base_url: "http://127.0.0.1:9/api/v2", auth: { bearer: t } }
  truvideo: { type: truvideo, base_url: "http://127.0.0.1:9", auth: { bearer: t } }
  valt: { type: valt, base_url: "http://127.0.0.1:9/api/v3", auth: { bearer: t } }
`,
    { env: {} },
  );
  const secrets = new Secrets();
  return createTargets(config.targets, { http: new HttpClient({ connectionsPerOrigin: 1 }, secrets), secrets });
}

/** Parts numbered 1..N, contiguous from 0, covering exactly `size` bytes. */
function expectExactCover(layout: PartLayout, size: number): void {
  let offset = 0;
  layout.forEach((p, i) => {
    expect(p.number).toBe(i + 1);
    expect(p.offset).toBe(offset);
    offset += p.size;
  });
  expect(offset).toBe(size);
}

describe('a sparse 60 GiB export', () => {
  it('is planned within every platform’s part limits, or refused before any call where the platform caps the size', async () => {
    const path = join(tmp.path, 'cam01.mp4');
    const fh = await open(path, 'w');
    await fh.write(mp4Header());
    await fh.truncate(60 * GiB); // ftruncate: a hole, no blocks written
    await fh.close();
    const st = await stat(path);
    expect(st.size).toBe(60 * GiB);
    expect(st.blocks * 512).toBeLessThan(MiB); // really sparse: the test costs no disk
    const file = videoSource(st.size, { path });
    const targets = allTargets();

    // The daemon's own part_size default and the test suite's, plus an absurdly small and large preference.
    for (const preferred of [16 * MiB, 5 * MiB, 1, 8 * GiB]) {
      // ALO: S3 multipart — 5 MiB ≤ part ≤ 5 GiB (but the last), at most 10,000 parts.
      const alo = targets.get('alo')!;
      expect(alo.refuse(file)).toBeNull();
      const aloLayout = alo.layout(file, preferred)!;
      expectExactCover(aloLayout, st.size);
      expect(aloLayout.length).toBeLessThanOrEqual(S3_LIMITS.maxParts);
      for (const p of aloLayout.slice(0, -1)) {
        expect(p.size).toBeGreaterThanOrEqual(S3_LIMITS.minPartSize);
        expect(p.size).toBeLessThanOrEqual(S3_LIMITS.maxPartSize);
      }
      expect(aloLayout.at(-1)!.size).toBeLessThanOrEqual(S3_LIMITS.maxPartSize);

      // TruVideo: at most 120 parts of at most 600 MiB (60 GiB < 120 × 600 MiB = 70.3 GiB), at least 50 MiB above 1 GiB.
      const tv = targets.get('truvideo')!;
      expect(tv.refuse(file)).toBeNull();
      const tvLayout = tv.layout(file, preferred)!;
      expectExactCover(tvLayout, st.size);
      expect(tvLayout.length).toBeLessThanOrEqual(120);
      for (const p of tvLayout.slice(0, -1)) {
        expect(p.size).toBeGreaterThanOrEqual(50 * MiB);
        expect(p.size).toBeLessThanOrEqual(600 * MiB);
      }

      // Valt: chunk_size chunks (default 8 MiB), whatever upload.part_size says.
      const valt = targets.get('valt')!;
      expect(valt.refuse(file)).toBeNull();
      const valtLayout = valt.layout(file, preferred)!;
      expectExactCover(valtLayout, st.size);
      expect(valtLayout.length).toBe(60 * 128);
      for (const p of valtLayout) expect(p.size).toBe(8 * MiB);
    }

    // Aionvision: the server decides the layout; the file is refused before any call (10 GiB at most).
    const aion = targets.get('aion')!;
    expect(aion.layout(file, 16 * MiB)).toBeNull();
    expect(aion.refuse(file)).toMatch(/cam01\.mp4 is 60\.00 GiB; Aionvision accepts at most 10 GiB/);
    expect(aion.refuse(videoSource(10 * GiB, { path }))).toBeNull();
    expect(aion.refuse(videoSource(10 * GiB + 1, { path }))).toMatch(/at most 10 GiB/);

    // Just above TruVideo's cap it is refused before any call, not planned past 120 parts.
    expect(targets.get('truvideo')!.refuse(videoSource(120 * 600 * MiB + 1, { path }))).toMatch(/at most 120 parts of 600 MiB/);
    expect(targets.get('truvideo')!.layout(videoSource(120 * 600 * MiB, { path }), 16 * MiB)!.length).toBe(120);
  });
});

describe('an export swapped for a symlink after the traversal check', () => {
  /** An incident folder with a checked video, and a secret of the same size outside the export root. */
  async function setup(): Promise<{ folder: string; checked: string; secret: string; secretBytes: Buffer }> {
    const root = join(tmp.path, 'exports');
    const folder = join(root, 'incident');
    await mkdir(join(folder, 'sub'), { recursive: true });
    await writeFile(join(folder, 'cam01.mp4'), Buffer.concat([mp4Header(), randomBytes(64 * 1024)]));
    await writeFile(join(folder, 'sub', 'cam02.mp4'), Buffer.concat([mp4Header(), randomBytes(64 * 1024)]));
    await mkdir(join(tmp.path, 'outside', 'sub'), { recursive: true });
    const secretBytes = Buffer.concat([mp4Header(), Buffer.from('TOP-SECRET'.repeat(6553)), Buffer.alloc(2)]);
    const secret = join(tmp.path, 'outside', 'cam01.mp4');
    await writeFile(secret, secretBytes);
    await writeFile(join(tmp.path, 'outside', 'sub', 'cam02.mp4'), secretBytes);
    const where = await resolveExportPath(folder, 'cam01.mp4');
    expect(where).toEqual({ kind: 'ok', path: await realpath(join(folder, 'cam01.mp4')) });
    return { folder, checked: (where as { path: string }).path, secret, secretBytes };
  }

  async function swapForLink(path: string, target: string): Promise<void> {
    await rm(path, { recursive: true });
    await symlink(target, path);
  }

  it('is not hashed through the link: the planner sees a changed file, and the next check refuses the path', async () => {
    const { folder, checked, secret, secretBytes } = await setup();
    const settled = stampOf(await lstat(checked, { bigint: true }));
    await swapForLink(checked, secret);

    const hashing = sha256Of(checked, settled);
    await expect(hashing).rejects.toBeInstanceOf(FileChangedError);
    await expect(hashing).rejects.toThrow(/replaced by a symlink/);
    // Reading the head for the sniffer (whose error message quotes the first bytes) refuses too.
    await expect(readHead(checked)).rejects.toBeInstanceOf(ExportPathChangedError);
    // What the planner does next: check the path again — now refused, naming the file.
    expect(await resolveExportPath(folder, 'cam01.mp4')).toEqual({
      kind: 'refused',
      reason: 'file "cam01.mp4" leaves the incident folder',
    });
    // And the secret really is there with the same size, so only the guard stopped it.
    expect((await readFile(secret)).equals(secretBytes)).toBe(true);
  });

  it('is not read through a folder on its way swapped for a link (O_NOFOLLOW alone guards only the last name)', async () => {
    const { folder } = await setup();
    const where = await resolveExportPath(folder, 'sub/cam02.mp4');
    expect(where.kind).toBe('ok');
    const checked = (where as { path: string }).path;
    await swapForLink(join(folder, 'sub'), join(tmp.path, 'outside', 'sub'));

    await expect(openExportFile(checked)).rejects.toThrow(/leads elsewhere/);
    await expect(sha256Of(checked, 'any')).rejects.toBeInstanceOf(FileChangedError);
    expect(await resolveExportPath(folder, 'sub/cam02.mp4')).toMatchObject({
      kind: 'refused',
      reason: expect.stringContaining('leaves the incident folder'),
    });
  });

  it('notices a file renamed over the checked one while it is hashed, even with the same size and mtime', async () => {
    const { checked } = await setup();
    // Big enough (sparse, so no disk) that hashing is still running when the rename lands.
    const fh = await open(checked, 'r+');
    await fh.truncate(256 * MiB);
    await fh.close();
    const before = await stat(checked);
    const other = join(tmp.path, 'exports', 'incident', 'cam01.mp4.new.tmp');
    await writeFile(other, mp4Header());
    const oth = await open(other, 'r+');
    await oth.truncate(before.size);
    await oth.close();
    const { utimes } = await import('node:fs/promises');
    await utimes(other, before.atime, before.mtime);

    const hashing = sha256Of(checked, stampOf(await lstat(checked, { bigint: true })));
    await new Promise((r) => setTimeout(r, 5));
    await rename(other, checked);
    // The descriptor still reads the old file whole, and the new one has its size and mtime: only
    // the stamp's inode and ctime tell them apart.
    await expect(hashing).rejects.toBeInstanceOf(FileChangedError);
  });
});
