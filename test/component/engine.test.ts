/**
 * The upload engine in this process against the ALO emulator and its S3 store on 127.0.0.1, a
 * real ledger file and real files. Its pacer sleeps on a recording sleep: every retry happens at
 * once and the test sees how long it was told to wait.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it, type TestContext } from 'vitest';
import { FileIdentities } from '../../src/plan/identity.js';
import type { Target } from '../../src/targets/target.js';
import { UploadEngine } from '../../src/upload/engine.js';
import { Pacer } from '../../src/upload/pacer.js';
import type { S3Fault } from '../emulators/s3-store.js';
import { waitFor } from '../support/daemon-process.js';
import { MiB, writeVideo } from '../support/files.js';
import { harness } from '../support/harness.js';
import { incidentManifest, writeManifest } from '../support/manifest.js';
import {
  aloTarget,
  applyManifest,
  md5,
  openLedger,
  partMd5s,
  planAll,
  recordingSleep,
  startAlo,
  testLog,
  type Alo,
  type LedgerFile,
} from './fixtures.js';

interface UploadRow {
  id: number;
  state: string;
  result: string | null;
  last_error: string | null;
  session: string | null;
}
interface PartRow {
  number: number;
  state: string;
  md5: string | null;
  etag: string | null;
  attempts: number;
}

interface Bench extends Alo {
  l: LedgerFile;
  target: Target;
  waits: number[];
  /** The exported video and its incident. */
  video: { path: string; sha256: string; incidentId: string; videoId: string };
  engine(options?: { concurrency?: number; target?: Target }): UploadEngine;
  upload(): UploadRow;
  parts(): PartRow[];
  /** Part PUTs the store answered, as [part number, status]. */
  puts(): Array<[number | undefined, number]>;
}

/** One incident with one video of `size` bytes, read and planned into the ledger (queued to ALO), and engines to send it. */
async function bench(ctx: TestContext, size = 10 * MiB + 123): Promise<Bench> {
  const h = harness(ctx);
  const log = testLog(ctx);
  const site = await startAlo(h);
  const l = await openLedger(h);
  const target = aloTarget(ctx, site.alo.baseUrl);
  const folder = join(await h.dir(), 'incident-1');
  const incidentId = 'incident-1';
  const videoId = 'video-1';
  const path = join(folder, 'cam01.mp4');
  const sha256 = await writeVideo(path, size);
  await applyManifest(l.ledger, await writeManifest(folder, incidentManifest(incidentId, [{ id: videoId, file: 'cam01.mp4' }])));
  await planAll(l.ledger, [target], log);
  const { sleep, waits } = recordingSleep();
  const pacer = new Pacer({ initialMs: 100, maxMs: 1000 }, { sleep });
  const engines: UploadEngine[] = [];
  ctx.onTestFinished(async () => {
    for (const e of engines) await e.stop(0);
  });
  return {
    ...site,
    l,
    target,
    waits,
    video: { path, sha256, incidentId, videoId },
    engine: ({ concurrency = 2, target: t = target } = {}) => {
      const engine = new UploadEngine({
        ledger: l.ledger.uploads,
        identities: new FileIdentities(l.ledger.plan),
        targets: new Map([['alo', t]]),
        concurrency,
        stallTimeoutMs: 60_000,
        pacer,
        log,
      });
      engines.push(engine);
      return engine;
    },
    upload: () => l.rows<UploadRow>('SELECT id, state, result, last_error, session FROM uploads')[0]!,
    parts: () =>
      l.rows<PartRow>(
        'SELECT p.number, p.state, p.md5, p.etag, p.attempts FROM parts p JOIN uploads u ON u.id = p.upload_id ORDER BY p.number',
      ),
    puts: () => site.store.requests.filter((r) => r.method === 'PUT').map((r) => [r.partNumber, r.status]),
  };
}

/** Runs the engine until the upload is no longer queued. */
async function finish(b: Bench, engine: UploadEngine): Promise<UploadRow> {
  engine.poke();
  return waitFor(
    () => {
      const u = b.upload();
      return u.state !== 'queued' && engine.activeUploads === 0 ? u : undefined;
    },
    15_000,
    'the upload to finish',
  );
}

const keyOf = (u: UploadRow): string => (JSON.parse(u.result!) as { s3_key: string }).s3_key;

describe('UploadEngine on ALO', () => {
  it('completes a multipart upload byte for byte and records each part with the MD5 of what was sent', async (ctx) => {
    const b = await bench(ctx);
    const u = await finish(b, b.engine());
    expect(u.state).toBe('done');
    expect(await b.store.objectSha256(keyOf(u))).toBe(b.video.sha256);
    const expected = await partMd5s(b.video.path);
    expect(expected).toHaveLength(3);
    expect(b.parts()).toEqual(expected.map((m, i) => ({ number: i + 1, state: 'done', md5: m, etag: m, attempts: 0 })));
    // Each part sent once, then one complete; nothing left open, nothing retried.
    expect(b.puts().sort()).toEqual([
      [1, 200],
      [2, 200],
      [3, 200],
    ]);
    expect(b.alo.calls.filter((c) => c.route === 'complete_multipart_upload').map((c) => c.status)).toEqual([200]);
    expect(b.store.openMultipartUploads()).toEqual([]);
    expect(b.waits).toEqual([]);
  });

  it('sends a part S3 answered 503 again after the pacer’s backoff', async (ctx) => {
    const b = await bench(ctx);
    b.store.injectFaults({ kind: 'status', status: 503, code: 'SlowDown', partNumber: 2 });
    const u = await finish(b, b.engine());
    expect(u.state).toBe('done');
    expect(await b.store.objectSha256(keyOf(u))).toBe(b.video.sha256);
    expect(b.puts().filter(([n]) => n === 2)).toEqual([
      [2, 503],
      [2, 200],
    ]);
    // One wait, from the pacer's policy (at least half the first delay, at most the first delay).
    expect(b.waits).toHaveLength(1);
    expect(b.waits[0]).toBeGreaterThanOrEqual(50);
    expect(b.waits[0]).toBeLessThanOrEqual(100);
    expect(b.parts().find((p) => p.number === 2)).toMatchObject({ state: 'done', attempts: 1 });
  });

  it('fails the upload with ALO’s message on a permanent 4xx, without retrying it', async (ctx) => {
    const b = await bench(ctx);
    b.alo.refuseFile(b.video.videoId, 'this organisation takes no more video this month');
    const u = await finish(b, b.engine());
    expect(u.state).toBe('failed');
    expect(u.last_error).toContain('answered 422');
    expect(u.last_error).toContain('this organisation takes no more video this month');
    expect(b.alo.calls.filter((c) => c.route === 'upload_urls')).toHaveLength(1);
    expect(b.waits).toEqual([]);
    expect(b.puts()).toEqual([]);
    // The multipart upload opened for it is released.
    expect(b.store.openMultipartUploads()).toEqual([]);
  });

  it('fails the upload on a permanent 4xx from S3 for a part, sending that part once', async (ctx) => {
    const b = await bench(ctx);
    b.store.injectFaults({ kind: 'status', status: 400, code: 'InvalidArgument', partNumber: 1 });
    const u = await finish(b, b.engine({ concurrency: 1 }));
    expect(u.state).toBe('failed');
    expect(u.last_error).toMatch(/answered 400 InvalidArgument/);
    expect(b.puts().filter(([n]) => n === 1)).toEqual([[1, 400]]);
    expect(b.waits).toEqual([]);
    expect(b.alo.calls.filter((c) => c.route === 'complete_multipart_upload')).toEqual([]);
    // Given up: its remote upload is aborted, not left to linger.
    await waitFor(() => b.store.openMultipartUploads().length === 0, 5_000, 'the multipart upload aborted');
  });

  it.for<{ what: string; fault: S3Fault }>([
    { what: 'an ETag that is not the MD5 of the part', fault: { kind: 'wrong-etag', partNumber: 2 } },
    { what: 'a part corrupted on its way in', fault: { kind: 'corrupt', partNumber: 2 } },
  ])('sends a part again when S3 answers $what', async ({ fault }, ctx) => {
    const b = await bench(ctx);
    b.store.injectFaults(fault);
    const u = await finish(b, b.engine());
    expect(u.state).toBe('done');
    expect(b.puts().filter(([n]) => n === 2)).toEqual([
      [2, 200],
      [2, 200],
    ]);
    expect(b.waits).toHaveLength(1);
    // What is stored, and recorded, is the file's own bytes: the first answer was not trusted.
    expect(await b.store.objectSha256(keyOf(u))).toBe(b.video.sha256);
    const [, second] = await partMd5s(b.video.path);
    expect(b.parts().find((p) => p.number === 2)).toMatchObject({ md5: second, etag: second, attempts: 1 });
  });

  it('stops an upload the ledger withdrew while a part was in flight, and releases its remote upload', async (ctx) => {
    const b = await bench(ctx);
    // Part 1 is taken in whole and never answered: the upload is under way, held there.
    b.store.injectFaults({ kind: 'stall', partNumber: 1 });
    const engine = b.engine({ concurrency: 1 });
    engine.poke();
    await waitFor(() => b.store.requests.some((r) => r.code === 'Stalled'), 10_000, 'part 1 to reach S3');
    expect(engine.activeUploads).toBe(1);

    // The exporter went on writing: the ledger withdraws the upload (as export-changes.ts does).
    b.l.ledger.plan.fileChanged(b.video.incidentId, b.video.videoId, 'the file grew');
    engine.review();
    await waitFor(() => engine.activeUploads === 0, 5_000, 'the upload to stop');
    await waitFor(() => b.store.openMultipartUploads().length === 0, 5_000, 'the multipart upload aborted');
    expect(b.alo.calls.filter((c) => c.route === 'abort_multipart_upload').map((c) => c.status)).toEqual([200]);
    expect(b.alo.calls.filter((c) => c.route === 'complete_multipart_upload')).toEqual([]);
    // Nothing more was sent for it, and nothing of it is left in the ledger to run.
    expect(b.puts().map(([n]) => n)).toEqual([1]);
    expect(b.l.rows('SELECT id FROM uploads')).toEqual([]);
    expect(b.l.rows<{ state: string }>('SELECT state FROM videos')).toEqual([{ state: 'waiting' }]);
    expect(b.l.rows('SELECT id FROM pending_aborts')).toEqual([]);
  });

  it('resumes an upload from the ledger: only the parts not done are sent', async (ctx) => {
    const b = await bench(ctx);
    b.store.injectFaults({ kind: 'stall', partNumber: 2 });
    const first = b.engine({ concurrency: 1 });
    first.poke();
    await waitFor(() => b.store.requests.some((r) => r.code === 'Stalled'), 10_000, 'part 2 to reach S3');
    // The daemon stops (or dies) with part 1 acknowledged and part 2 unanswered.
    await first.stop(0);
    expect(b.upload().state).toBe('queued');
    expect(b.parts().map((p) => p.state)).toEqual(['done', 'pending', 'pending']);
    const before = b.puts().length;

    // A new engine and a new target (no URLs in memory), as after a restart.
    const u = await finish(b, b.engine({ target: aloTarget(ctx, b.alo.baseUrl) }));
    expect(u.state).toBe('done');
    expect(
      b
        .puts()
        .slice(before)
        .map(([n]) => n)
        .sort(),
    ).toEqual([2, 3]);
    expect(b.alo.calls.filter((c) => c.route === 'create_multipart_upload')).toHaveLength(1);
    expect(await b.store.objectSha256(keyOf(u))).toBe(b.video.sha256);
    const bytes = await readFile(b.video.path);
    expect(b.parts().map((p) => p.md5)).toEqual([
      md5(bytes.subarray(0, 5 * MiB)),
      md5(bytes.subarray(5 * MiB, 10 * MiB)),
      md5(bytes.subarray(10 * MiB)),
    ]);
  });
});
