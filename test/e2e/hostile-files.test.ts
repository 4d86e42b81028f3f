/**
 * Hostile and odd files, and fuzzed manifests, through the real daemon, the ALO emulator and its S3
 * store (issue 4, items 3 and 4). Each test asserts what the operator gets: the bytes of the object
 * ALO was told about, which uploads ALO saw completed, the ledger, and that the daemon stays up.
 * The 60 GiB plan and the swap between check and read are in test/unit/hostile-files.test.ts, the
 * thousands of fuzzed manifests in test/unit/manifest-fuzz.test.ts.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { appendFile, mkdir, open, rename, rm, stat, symlink, truncate, utimes, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import fc from 'fast-check';
import { stringify } from 'yaml';
import { describe, expect, it } from 'vitest';
import { parseManifest } from '../../src/watch/manifest.js';
import type { AloIncident } from '../emulators/alo.js';
import { waitIncident, type AloSite } from '../support/alo-site.js';
import { waitFor, type DaemonProcess } from '../support/daemon-process.js';
import { MiB, mp4Header, sha256File, writeVideo } from '../support/files.js';
import { harness, type Harness } from '../support/harness.js';
import { ledgerRows } from '../support/ledger.js';
import { incidentManifest, writeManifest } from '../support/manifest.js';

const KiB = 1024;

const final = (n: number) => (i: AloIncident) => i.uploaded_videos.length + i.failed_videos.length === n;

function uploadedKey(i: AloIncident, videoId: string): string {
  const v = i.uploaded_videos.find((u) => u.id === videoId);
  if (!v) throw new Error(`${videoId} is not uploaded: ${JSON.stringify(i)}`);
  return v.s3_key;
}

function failedErrors(i: AloIncident, videoId: string): string {
  const v = i.failed_videos.find((f) => f.id === videoId);
  if (!v) throw new Error(`${videoId} is not failed: ${JSON.stringify(i)}`);
  return v.upload_errors.join('\n');
}

/** Objects the store holds complete for this incident: multipart completes ALO accepted, and single PUTs. */
function completedObjects(s: AloSite, incidentId: string): string[] {
  const multipart = s.alo.calls
    .filter((c) => c.route === 'complete_multipart_upload' && c.status === 200 && c.incidentId === incidentId)
    .map(() => 'multipart');
  // Object keys are vms/<org>/<account>/<incident id>/…
  const single = s.store.requests
    .filter((r) => r.method === 'PUT' && r.status === 200 && r.partNumber === undefined && r.key.includes(`/${incidentId}/`))
    .map((r) => r.key);
  return [...multipart, ...single];
}

/** The real daemon on the site; the ledger's folder is made first (the daemon does not create it). */
async function daemon(h: Harness, s: AloSite): Promise<DaemonProcess> {
  await mkdir(dirname(s.ledgerPath), { recursive: true });
  return h.daemon(s);
}

const partsDone = (d: DaemonProcess, incidentId: string) => d.events('upload.part.done').filter((l) => l.incidentId === incidentId).length;

const restartsOf = (s: AloSite, incidentId: string) =>
  ledgerRows<{ restarts: number }>(s.ledgerPath, `SELECT restarts FROM videos WHERE incident_id = ?`, incidentId)[0]?.restarts ?? 0;

// Timing matters in these: they run one after the other.
describe('hostile and odd files (issue 4 §3)', () => {
  it('never completes a half-written file from a writer that pauses longer than settle_seconds', async (ctx) => {
    const h = harness(ctx);
    // settle 0.3 s; every part answered after 800 ms, one at a time, so an upload takes seconds.
    const s = await h.site({ upload: { concurrency: 1 } });
    s.store.setLatency(800);
    const d = await daemon(h, s);
    await waitFor(() => d.events('daemon.started').length > 0, 10_000, 'the daemon started');

    // A: as a VMS exports — the video written slowly with 1 s pauses (> settle), the manifest last.
    const a = randomUUID();
    const aFolder = join(s.exportsRoot, 'vms-order');
    await mkdir(aFolder, { recursive: true });
    const aPath = join(aFolder, 'cam01.mp4');
    await writeFile(aPath, mp4Header());
    for (let i = 0; i < 3; i++) {
      await sleep(1_000);
      await appendFile(aPath, randomBytes(2 * MiB));
    }
    const storeBeforeManifest = s.store.requests.length;
    await writeManifest(aFolder, incidentManifest(a, [{ id: 'cam01', file: 'cam01.mp4' }]));
    const aSha = await sha256File(aPath);

    // B: the manifest already there (an exporter that writes it first), the video growing in
    // bursts with pauses longer than settle_seconds while its upload is under way.
    const b = randomUUID();
    const bFolder = join(s.exportsRoot, 'manifest-first');
    const bPath = join(bFolder, 'cam01.mp4');
    await writeVideo(bPath, 11 * MiB);
    await writeManifest(bFolder, incidentManifest(b, [{ id: 'cam01', file: 'cam01.mp4' }]));
    for (let burst = 0; burst < 2; burst++) {
      await waitFor(() => partsDone(d, b) > burst, 30_000, `a part of B sent (burst ${burst})`);
      await sleep(1_000); // longer than settle_seconds: the daemon has long since taken the file as complete
      await appendFile(bPath, randomBytes(MiB + 17));
    }
    const bSha = await sha256File(bPath);
    const bSize = (await stat(bPath)).size;

    const aDone = await waitIncident(s, d, a, final(1), 'A uploaded');
    const bDone = await waitIncident(s, d, b, final(1), 'B uploaded', 60_000);
    // Nothing was sent for A before its manifest existed; what was completed is the whole file.
    expect(s.store.requests.slice(0, storeBeforeManifest)).toEqual([]);
    expect(await s.store.objectSha256(uploadedKey(aDone, 'cam01'))).toBe(aSha);
    expect(completedObjects(s, a)).toHaveLength(1);
    // B restarted on each burst, and only the final content was ever completed.
    expect(await s.store.objectSha256(uploadedKey(bDone, 'cam01'))).toBe(bSha);
    expect(s.store.objectSize(uploadedKey(bDone, 'cam01'))).toBe(bSize);
    expect(restartsOf(s, b)).toBeGreaterThanOrEqual(1);
    expect(completedObjects(s, b)).toHaveLength(1);
    expect(s.alo.calls.filter((c) => c.route === 'create_multipart_upload' && c.incidentId === b).length).toBeGreaterThanOrEqual(2);
    expect(s.store.openMultipartUploads()).toEqual([]);
  });

  it('restarts the upload of a file appended, truncated or rewritten (same size) after it was hashed; only the final content is completed', async (ctx) => {
    const h = harness(ctx);
    const s = await h.site({ upload: { concurrency: 1 } });
    s.store.setLatency(500);
    const d = await daemon(h, s);
    const changes: Record<string, (path: string) => Promise<void>> = {
      appended: (p) => appendFile(p, randomBytes(3 * MiB)),
      truncated: (p) => truncate(p, 7 * MiB + 3),
      rewritten: async (p) => {
        // Same size, new content throughout (a re-export), written in place.
        const size = (await stat(p)).size;
        const fh = await open(p, 'r+');
        await fh.write(Buffer.concat([mp4Header(), randomBytes(size - 32)]), 0, size, 0);
        await fh.close();
      },
    };
    for (const [kind, change] of Object.entries(changes)) {
      const id = randomUUID();
      const folder = join(s.exportsRoot, kind);
      const path = join(folder, 'cam01.mp4');
      const firstSha = await writeVideo(path, 16 * MiB);
      await writeManifest(folder, incidentManifest(id, [{ id: 'cam01', file: 'cam01.mp4' }]));
      await waitFor(() => partsDone(d, id) >= 1, 30_000, `${kind}: first part sent`);
      await change(path);
      const finalSha = await sha256File(path);
      expect(finalSha).not.toBe(firstSha);

      const done = await waitIncident(s, d, id, final(1), `${kind}: uploaded`).catch((err: Error) => {
        throw new Error(
          `${err.message}\n${d.logs
            .filter((l) => l.incidentId === id)
            .slice(-12)
            .map((l) => JSON.stringify(l).slice(0, 400))
            .join('\n')}`,
        );
      });
      const key = uploadedKey(done, 'cam01');
      expect(await s.store.objectSha256(key), kind).toBe(finalSha);
      expect(s.store.objectSize(key), kind).toBe((await stat(path)).size);
      expect(restartsOf(s, id), kind).toBeGreaterThanOrEqual(1);
      // One object completed for this video, the final one; the first multipart upload was aborted.
      expect(completedObjects(s, id), kind).toHaveLength(1);
      expect(
        s.alo.calls.filter((c) => c.route === 'create_multipart_upload' && c.incidentId === id),
        kind,
      ).toHaveLength(2);
      await waitFor(
        () => s.alo.calls.some((c) => c.route === 'abort_multipart_upload' && c.incidentId === id && c.status === 200),
        10_000,
        `${kind}: abort`,
      );
    }
    expect(s.store.openMultipartUploads()).toEqual([]);
  });

  it('uploads a temp-name-then-rename export exactly once, never under the temp name', async (ctx) => {
    const h = harness(ctx);
    const s = await h.site();
    const d = await daemon(h, s);
    const id = randomUUID();
    const folder = join(s.exportsRoot, 'renamer');
    await mkdir(folder, { recursive: true });
    // The manifest names the final name; the file is written under a temp name, with pauses longer than settle_seconds.
    await writeManifest(folder, incidentManifest(id, [{ id: 'cam01', file: 'cam01.mp4' }]));
    const tmp = join(folder, 'cam01.mp4.tmp');
    await writeFile(tmp, mp4Header());
    for (let i = 0; i < 3; i++) {
      await sleep(700);
      await appendFile(tmp, randomBytes(2 * MiB));
    }
    const sha = await sha256File(tmp);
    await rename(tmp, join(folder, 'cam01.mp4'));

    const done = await waitIncident(s, d, id, final(1), 'uploaded');
    const key = uploadedKey(done, 'cam01');
    expect(await s.store.objectSha256(key)).toBe(sha);
    expect(completedObjects(s, id)).toHaveLength(1);
    expect(s.alo.calls.filter((c) => c.route === 'create_multipart_upload' && c.incidentId === id)).toHaveLength(1);
    expect(key).not.toMatch(/\.tmp/);
    expect(JSON.stringify(s.alo.calls)).not.toMatch(/\.mp4\.tmp/);
    expect(s.store.requests.every((r) => !r.key.includes('.tmp'))).toBe(true);
    expect(d.events('export.settled').filter((l) => l.incidentId === id)).toHaveLength(1);
  });

  it('delivers 5 MiB - 1, exactly 5 MiB and 5 MiB + 1 byte-identical, and fails 0 B and 1 B clearly', async (ctx) => {
    const h = harness(ctx);
    const s = await h.site(); // multipart from 5 MiB, parts of 5 MiB
    const id = randomUUID();
    const folder = join(s.exportsRoot, 'edges');
    const sizes = { 'under-5mib': 5 * MiB - 1, '5mib': 5 * MiB, '5mib-plus-1': 5 * MiB + 1 };
    const shas = new Map<string, string>();
    for (const [name, size] of Object.entries(sizes)) shas.set(name, await writeVideo(join(folder, `${name}.mp4`), size));
    await writeFile(join(folder, 'zero.mp4'), Buffer.alloc(0));
    await writeFile(join(folder, 'one.mp4'), Buffer.from([0]));
    await writeManifest(
      folder,
      incidentManifest(
        id,
        [...Object.keys(sizes), 'zero', 'one'].map((n) => ({ id: n, file: `${n}.mp4` })),
      ),
    );

    const d = await daemon(h, s);
    const done = await waitIncident(s, d, id, final(5), 'all five final');
    for (const [name, size] of Object.entries(sizes)) {
      const key = uploadedKey(done, name);
      expect(await s.store.objectSha256(key), name).toBe(shas.get(name));
      expect(s.store.objectSize(key), name).toBe(size);
    }
    // 5 MiB - 1 is one PUT; 5 MiB is one 5 MiB part; 5 MiB + 1 is a 5 MiB part and a 1-byte last part.
    const parts = (name: string) =>
      s.store.requests
        .filter((r) => r.method === 'PUT' && r.status === 200 && r.key === uploadedKey(done, name))
        .map((r) => [r.partNumber ?? null, r.bytesReceived]);
    expect(parts('under-5mib')).toEqual([[null, 5 * MiB - 1]]);
    expect(parts('5mib')).toEqual([[1, 5 * MiB]]);
    expect(parts('5mib-plus-1').sort()).toEqual([
      [1, 5 * MiB],
      [2, 1],
    ]);
    // An empty file and a single byte are no video: failed with the file named (CONTRACT §3), never sent.
    expect(failedErrors(done, 'zero')).toMatch(/zero\.mp4 is empty/);
    expect(failedErrors(done, 'one')).toMatch(/one\.mp4 is not a known video container \(first bytes 00\)/);
    expect(completedObjects(s, id)).toHaveLength(3);
  });

  it('never uploads what a symlink swapped in during the upload leads to; the video fails saying why', async (ctx) => {
    const h = harness(ctx);
    const s = await h.site({ upload: { concurrency: 1 } });
    s.store.setLatency(500);
    const id = randomUUID();
    const folder = join(s.exportsRoot, 'swap');
    const path = join(folder, 'cam01.mp4');
    await writeVideo(path, 16 * MiB);
    // Outside the export root: same size, same mtime, a video header — only the path rules can tell.
    const secret = join(s.dir, 'outside', 'secret.mp4');
    await writeVideo(secret, 16 * MiB);
    await writeManifest(folder, incidentManifest(id, [{ id: 'cam01', file: 'cam01.mp4' }]));

    const d = await daemon(h, s);
    await waitFor(() => partsDone(d, id) >= 1, 30_000, 'first part sent');
    const st = await stat(path);
    await utimes(secret, st.atime, st.mtime);
    await rm(path);
    await symlink(secret, path);

    const done = await waitIncident(s, d, id, final(1), 'the video final');
    const error = failedErrors(done, 'cam01');
    expect(error).toContain('cam01.mp4');
    expect(error).toMatch(/leaves the incident folder/);
    expect(completedObjects(s, id)).toEqual([]);
    await waitFor(() => s.store.openMultipartUploads().length === 0, 10_000, 'the multipart upload aborted');
    expect(ledgerRows<{ state: string }>(s.ledgerPath, `SELECT state FROM videos WHERE incident_id = ?`, id)).toEqual([
      { state: 'failed' },
    ]);
    // The store holds no object at all (so none with the secret's content): only the aborted upload's parts ever went there.
    const puts = s.store.requests.filter((q) => q.method === 'PUT' && q.status === 200);
    expect(puts.length).toBeGreaterThan(0);
    expect(puts.filter((q) => s.store.hasObject(q.key))).toEqual([]);
    expect(puts.every((q) => q.partNumber !== undefined)).toBe(true);
    expect(d.events('daemon.stopped')).toEqual([]);
  });
});

describe('fuzzed manifests through the real daemon (issue 4 §4)', () => {
  it('stays up through a few dozen fuzzed manifests, logs each broken one naming its file, and uploads the good incident next to them', async (ctx) => {
    const h = harness(ctx);
    const s = await h.site();
    // Bait outside the export root, and at its top, where `..` and absolute paths would lead.
    const secretSha = await writeVideo(join(s.dir, 'secret.mp4'), 200 * KiB);
    await writeVideo(join(s.exportsRoot, 'secret.mp4'), 200 * KiB);

    const hostile = fc.constantFrom(
      '../secret.mp4',
      '../../secret.mp4',
      '..\\secret.mp4',
      '%2e%2e/secret.mp4',
      join(s.dir, 'secret.mp4'),
      'a\0b.mp4',
      'x/../../secret.mp4',
      '',
      '.',
      'cam.mp4.part',
    );
    const manifestValue = fc.record({
      incident: fc.oneof(
        fc.record({ id: fc.oneof(fc.uuid(), fc.string({ unit: 'binary', maxLength: 12 }), fc.integer()) }),
        fc.jsonValue({ maxDepth: 2 }),
      ),
      videos: fc.oneof(
        fc.array(
          fc.record({ id: fc.oneof(fc.constant('v'), fc.string({ maxLength: 5 }), fc.integer()), file: fc.oneof(hostile, fc.integer()) }),
          { maxLength: 4 },
        ),
        fc.jsonValue({ maxDepth: 2 }),
      ),
    });
    const text = fc.oneof(
      manifestValue.map((m) => ({ name: 'incident.json', text: JSON.stringify(m) })),
      manifestValue.map((m) => ({ name: 'incident.yaml', text: stringify(m) })),
      fc.tuple(manifestValue, fc.nat(), fc.nat({ max: 30 })).map(([m, at, n]) => {
        const t = JSON.stringify(m);
        const cut = at % Math.max(1, t.length);
        return { name: 'incident.json', text: t.slice(0, cut) + t.slice(cut + n) };
      }),
      fc.string({ unit: 'binary', maxLength: 300 }).map((t) => ({ name: 'incident.yml', text: t })),
      fc.nat({ max: 3000 }).map((n) => ({ name: 'incident.json', text: '['.repeat(n) })),
      fc.constant({ name: 'incident.yaml', text: 'a: &a [x, x]\nb: !!js/function "return 1"\n' }),
    );
    const fuzzed = fc.sample(text, { numRuns: 36, seed: 4242 });
    const invalid: string[] = [];
    const validIds = new Set<string>();
    for (const [i, m] of fuzzed.entries()) {
      const folder = join(s.exportsRoot, 'fuzz', `f${String(i).padStart(2, '0')}`);
      await mkdir(folder, { recursive: true });
      const path = join(folder, m.name);
      await writeFile(path, m.text);
      const parsed = parseManifest(m.text, m.name);
      if (parsed.ok) validIds.add(parsed.manifest.incident.id);
      else invalid.push(path);
    }
    expect(invalid.length).toBeGreaterThan(20);
    // And valid manifests whose paths are hostile: accepted, and each video fails saying why.
    const hostileValid = ['../secret.mp4', '../../secret.mp4', join(s.dir, 'secret.mp4'), 'x\\..\\..\\secret.mp4'];
    for (const [i, file] of hostileValid.entries()) {
      const id = `hostile-${i}`;
      await writeManifest(join(s.exportsRoot, 'fuzz', `h${i}`), { incident: { id }, videos: [{ id: 'v', file }] });
      validIds.add(id);
    }

    const goodId = randomUUID();
    const goodFolder = join(s.exportsRoot, 'good');
    const goodSha = await writeVideo(join(goodFolder, 'cam01.mp4'), 300 * KiB);
    await writeManifest(goodFolder, incidentManifest(goodId, [{ id: 'cam01', file: 'cam01.mp4' }]));

    const d = await daemon(h, s);
    const good = await waitIncident(s, d, goodId, final(1), 'the good incident uploaded');
    expect(await s.store.objectSha256(uploadedKey(good, 'cam01'))).toBe(goodSha);
    // Every broken manifest logged, each line naming its file and a field or a place in it.
    await waitFor(
      () => invalid.every((p) => d.events('manifest.invalid').some((l) => l.path === p)),
      15_000,
      'every broken manifest logged',
    );
    const invalidLogged = d.events('manifest.invalid');
    expect(invalidLogged.length).toBeGreaterThanOrEqual(invalid.length);
    for (const line of invalidLogged) {
      expect(line.msg).toContain(String(line.path));
      expect(String(line.msg).length).toBeLessThan(1_000);
    }
    // The valid ones with hostile paths: their videos failed, nothing of theirs was read or sent.
    const hostileIds = [...validIds].filter((v) => v.startsWith('hostile-'));
    expect(hostileIds).toHaveLength(hostileValid.length);
    for (const id of hostileIds) {
      const i = await waitIncident(s, d, id, final(1), `${id} reported`, 15_000);
      expect(failedErrors(i, 'v')).toMatch(/leaves the incident folder|absolute path/);
    }
    const puts = s.store.requests.filter((r) => r.method === 'PUT' && r.status === 200).map((r) => r.key);
    expect(puts).toEqual([uploadedKey(good, 'cam01')]);
    expect(await s.store.objectSha256(puts[0]!)).not.toBe(secretSha);
    // Still up.
    expect(await Promise.race([d.exited.then(() => 'exited'), sleep(200).then(() => 'running')])).toBe('running');
    console.log(
      `hostile-files: ${fuzzed.length} fuzzed manifests given to the daemon (${invalid.length} invalid, ${fuzzed.length - invalid.length} valid) + ${hostileValid.length} valid with hostile paths`,
    );
  });
});
