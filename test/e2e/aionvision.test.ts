/**
 * What only Aionvision does, through the real daemon: server-decided chunks, a confirm per chunk
 * right after its PUT, formats and a refusal before any upload exists; and the target on its own.
 * Resume from the platform's progress after SIGKILL, chunk URLs replaced through chunks/retry when
 * they near expiry or S3 refuses one, and the abort of an upload the platform refuses are proven
 * by the conformance suite (test/conformance), as for every platform. Each test asserts what the
 * emulator received, what the daemon sent to the presigned URLs and the bytes in the store.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, type TestContext } from 'vitest';
import type { SourceFile, Target } from '../../src/targets/target.js';
import { AION_TEST_KEY, startAionvisionEmulator, type AionCall, type AionUpload } from '../emulators/aionvision.js';
import { listen } from '../emulators/listen.js';
import { startS3Store } from '../emulators/s3-store.js';
import { startAionSite, type AionSite } from '../support/aionvision-site.js';
import { DaemonProcess, runCli, waitFor } from '../support/daemon-process.js';
import { MiB, mp4Header, writeVideo } from '../support/files.js';
import { harness } from '../support/harness.js';
import { targetOf } from '../support/targets.js';
import { writeIncident } from '../support/manifest.js';

/** An MPEG transport stream packet header (PID 0x100, payload starting a PES): what many NVRs export as .ts. */
const MPEG_TS_HEADER = Buffer.from([0x47, 0x41, 0x00, 0x10, 0x00, 0x00, 0x01, 0xe0, 0x00, 0x00]);

/** A QuickTime `ftyp` box (brand `qt  `): sniffed as video/quicktime. */
function quickTimeHeader(): Buffer {
  const box = mp4Header();
  box.write('qt  ', 8, 'latin1');
  box.write('qt  qt  qt  qt  ', 16, 'latin1');
  return box;
}

function completed(s: AionSite, filename: string, timeoutMs = 30_000): Promise<AionUpload> {
  return waitFor(
    () => [...s.aion.uploads.values()].find((u) => u.filename === filename && u.status === 'completed'),
    timeoutMs,
    `${filename} completed`,
  );
}

const callsOf = (s: AionSite, route: AionCall['route']): AionCall[] => s.aion.calls.filter((c) => c.route === route);

interface StatusJson {
  totals: Record<string, number>;
  incidents: Array<{ videos: Array<{ id: string; uploads: Array<{ target: string; state: string; lastError: string | null }> }> }>;
}

async function status(s: AionSite): Promise<StatusJson> {
  const out = await runCli(['status', '--json', '--config', s.configPath]);
  expect(out.code).toBe(0);
  return JSON.parse(out.stdout) as StatusJson;
}

function uploadStatus(snapshot: StatusJson, videoId: string) {
  return snapshot.incidents
    .flatMap((i) => i.videos)
    .find((v) => v.id === videoId)
    ?.uploads.find((u) => u.target === 'aion');
}

describe('a 25 MiB video in server-decided 10 MiB chunks', () => {
  let s: AionSite;
  let d: DaemonProcess;
  let sha: string;
  let file: Buffer;
  let upload: AionUpload;

  beforeAll(async () => {
    s = await startAionSite({ upload: { concurrency: 1 } });
    sha = (await writeIncident(s.exportsRoot, 'happy-1', [{ id: 'v1', file: 'cam01_1149.mp4', size: 25 * MiB }])).get('v1')!;
    file = await readFile(join(s.exportsRoot, 'happy-1', 'cam01_1149.mp4'));
    d = DaemonProcess.run(s.configPath);
    upload = await completed(s, 'cam01_1149.mp4');
  });

  afterAll(async () => {
    d?.kill('SIGKILL');
    await d?.exited;
    await s?.close();
  });

  it('sends 3 chunks of 10/10/5 MiB, confirms each with its ETag and size, and the object is byte-identical', async () => {
    expect(callsOf(s, 'initiate').map((c) => [c.status, c.body])).toEqual([
      [200, { filename: 'cam01_1149.mp4', content_type: 'video/mp4', size_bytes: 25 * MiB }],
    ]);
    expect(upload.chunks.map((c) => c.size)).toEqual([10 * MiB, 10 * MiB, 5 * MiB]);
    const confirms = callsOf(s, 'confirm');
    expect(confirms.every((c) => c.status === 200)).toBe(true);
    expect(confirms.map((c) => c.body)).toEqual(
      upload.chunks.map((c) => ({
        media_id: upload.mediaId,
        upload_id: upload.uploadId,
        chunk_number: c.number,
        etag: `"${createHash('md5')
          .update(file.subarray(c.offset, c.offset + c.size))
          .digest('hex')}"`,
        size_bytes: c.size,
      })),
    );
    expect(callsOf(s, 'complete').map((c) => [c.status, c.body])).toEqual([
      [200, { media_id: upload.mediaId, upload_id: upload.uploadId }],
    ]);
    expect(await s.store.objectSha256(upload.s3Key)).toBe(sha);
    expect(s.store.openMultipartUploads()).toEqual([]);
    // The credentials went on every API call (the emulator answers 401 otherwise), never to S3.
    expect(s.aion.calls.every((c) => c.status === 200)).toBe(true);
    const puts = s.presigned.filter((r) => r.method === 'PUT');
    expect(puts).toHaveLength(3);
    for (const put of puts) {
      expect(put.headers['content-type']).toBe('video/mp4');
      expect(put.headers.authorization).toBeUndefined();
    }
    // The URLs of initiate were used: no chunk needed chunks/retry.
    expect(callsOf(s, 'retry')).toEqual([]);
    const snapshot = await status(s);
    expect(snapshot.totals).toMatchObject({ done: 1, failed: 0 });
  });

  it('confirms each chunk right after its own PUT, never before it and not in a batch at the end', () => {
    const confirms = callsOf(s, 'confirm');
    const puts = s.presigned.filter((r) => r.method === 'PUT');
    expect(confirms.map((c) => c.chunkNumber)).toEqual([1, 2, 3]);
    for (const [i, confirm] of confirms.entries()) {
      // S3 had answered this chunk's PUT when its confirm arrived…
      expect(confirm.putsBefore, `chunk ${confirm.chunkNumber}`).toBe(1);
      expect(confirm.at).toBeGreaterThanOrEqual(puts[i]!.at);
      // …and the next chunk's PUT came only after it.
      if (puts[i + 1]) expect(confirm.at).toBeLessThanOrEqual(puts[i + 1]!.at);
    }
  });
});

describe('refusals', () => {
  it('refuses an MPEG-TS export before any call, fails a video the platform refuses with its message, and uploads the other', async (ctx) => {
    const t = harness(ctx);
    const s = await t.aionSite();
    s.aion.refuseFilename('cam02.mp4', 'Video rejected: this account has reached its storage quota');
    const shas = await writeIncident(s.exportsRoot, 'refuse-1', [
      { id: 'ts', file: 'cam01.ts', size: 512 * 1024, header: MPEG_TS_HEADER },
      { id: 'refused', file: 'cam02.mp4', size: 512 * 1024 },
      { id: 'good', file: 'cam03.mov', size: 512 * 1024, header: quickTimeHeader() },
    ]);

    t.daemon(s);
    const good = await completed(s, 'cam03.mov');
    expect(await s.store.objectSha256(good.s3Key)).toBe(shas.get('good'));
    expect(good.contentType).toBe('video/quicktime');
    const snapshot = await waitFor(
      async () => {
        const snap = await status(s);
        return snap.totals.failed === 2 && snap.totals.done === 1 ? snap : undefined;
      },
      15_000,
      'two failed, one done',
    );

    // The .ts file never reached the platform.
    expect(s.aion.calls.map((c) => (c.body as { filename?: string } | undefined)?.filename).filter(Boolean)).not.toContain('cam01.ts');
    expect(uploadStatus(snapshot, 'ts')).toMatchObject({
      state: 'failed',
      lastError: 'cam01.ts is video/mp2t; Aionvision accepts MP4, MOV, M4V, WebM and AVI only',
    });
    // The refused file failed with the platform's own words, after one try (a 4xx is final).
    expect(uploadStatus(snapshot, 'refused')).toMatchObject({
      state: 'failed',
      lastError: expect.stringContaining('this account has reached its storage quota'),
    });
    expect(
      callsOf(s, 'initiate')
        .filter((c) => (c.body as { filename: string }).filename === 'cam02.mp4')
        .map((c) => c.status),
    ).toEqual([422]);
    expect(uploadStatus(snapshot, 'good')?.state).toBe('done');
  });
});

describe('the target on its own', () => {
  const target = (ctx: TestContext, baseUrl: string): Target =>
    targetOf(ctx, 'aion', { type: 'aionvision', base_url: baseUrl, auth: { bearer: AION_TEST_KEY } });
  const file = (over: Partial<SourceFile>): SourceFile => ({
    role: 'video',
    path: '/nonexistent',
    name: 'cam01.mp4',
    size: MiB,
    sha256: null,
    stamp: '',
    contentType: 'video/mp4',
    incident: { id: 'i1' },
    video: { id: 'v1' },
    ...over,
  });
  const signal = new AbortController().signal;

  it('refuses other formats, other extensions and videos over 10 GiB, saying which limit', (ctx) => {
    const t = target(ctx, 'http://127.0.0.1:9/api/v2');
    for (const [name, contentType] of [
      ['a.mp4', 'video/mp4'],
      ['a.MOV', 'video/quicktime'],
      ['a.m4v', 'video/x-m4v'],
      ['a.webm', 'video/webm'],
      ['a.avi', 'video/x-msvideo'],
    ]) {
      expect(t.refuse(file({ name: name!, contentType: contentType! })), name).toBeNull();
    }
    expect(t.refuse(file({ name: 'a.mkv', contentType: 'video/x-matroska' }))).toBe(
      'a.mkv is video/x-matroska; Aionvision accepts MP4, MOV, M4V, WebM and AVI only',
    );
    expect(t.refuse(file({ name: 'a.ts', contentType: 'video/mp4' }))).toMatch(
      /a\.ts is MP4, but Aionvision accepts only file names ending in \.mp4, \.mov/,
    );
    expect(t.refuse(file({ size: 10 * 1024 ** 3 }))).toBeNull();
    expect(t.refuse(file({ size: 10 * 1024 ** 3 + 1 }))).toMatch(/at most 10 GiB \(10737418240 bytes\) per video/);
    expect(t.layout(file({}), 16 * MiB)).toBeNull();
  });

  it('refuses a chunk layout that does not cover the file, and aborts that upload', async (ctx) => {
    const calls: Array<{ url: string; body: string }> = [];
    const answers = [
      {
        chunks: [
          { chunk_number: 1, upload_url: 'http://127.0.0.1:9/a', size_bytes: 5 },
          { chunk_number: 3, upload_url: 'http://127.0.0.1:9/c', size_bytes: 5 },
        ],
      },
      {
        chunks: [
          { chunk_number: 1, upload_url: 'http://127.0.0.1:9/a', size_bytes: 4 },
          { chunk_number: 2, upload_url: 'http://127.0.0.1:9/b', size_bytes: 5 },
        ],
      },
    ];
    const server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        calls.push({ url: req.url ?? '', body });
        const answer = req.url?.endsWith('/initiate') ? { media_id: 'm1', upload_id: 'u1', ...answers.shift() } : { status: 'aborted' };
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer));
      });
    });
    const origin = await listen(server, '127.0.0.1', 0);
    ctx.onTestFinished(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const t = target(ctx, `${origin}/api/v2`);
    await expect(t.start(file({ size: 10 }), null, signal)).rejects.toMatchObject({
      kind: 'permanent',
      message: expect.stringContaining('chunk 3 where chunk 2 of 2 belongs'),
    });
    await expect(t.start(file({ size: 10 }), null, signal)).rejects.toMatchObject({
      kind: 'permanent',
      message: expect.stringContaining('chunks of 9 bytes in all for a file of 10 bytes'),
    });
    expect(calls.map((c) => c.url)).toEqual([
      '/api/v2/video-uploads/initiate',
      '/api/v2/video-uploads/abort',
      '/api/v2/video-uploads/initiate',
      '/api/v2/video-uploads/abort',
    ]);
    expect(JSON.parse(calls[1]!.body)).toEqual({ media_id: 'm1', upload_id: 'u1' });
  });

  it('counts a complete that already went through as done (409, progress completed), and abort of it as done', async (ctx) => {
    const h = harness(ctx);
    const dir = await h.dir();
    const store = h.closeAtEnd(await startS3Store());
    const aion = h.closeAtEnd(await startAionvisionEmulator({ store }));
    const path = join(dir, 'cam01.mp4');
    const sha = await writeVideo(path, MiB);
    const md5 = createHash('md5')
      .update(await readFile(path))
      .digest('hex');
    const t = target(ctx, aion.baseUrl);
    const video = file({ path, sha256: sha });
    const started = await t.start(video, null, signal);
    expect(started.layout).toEqual([{ number: 1, offset: 0, size: MiB }]);
    const receipt = await t.sendPart({
      session: started.session,
      file: video,
      part: { number: 1, offset: 0, size: MiB },
      body: () => createReadStream(path),
      sentMd5: () => md5,
      signal,
    });
    expect(receipt.etag).toBe(md5);
    const parts = [{ number: 1, size: MiB, etag: md5 }];
    expect(await t.complete(started.session, video, parts, signal)).toEqual({ media_id: started.session.media_id });
    // As after a restart that never saw the first answer:
    expect(await t.complete(started.session, video, parts, signal)).toEqual({ media_id: started.session.media_id });
    await t.abort(started.session, video, signal);
    expect(aion.calls.map((c) => [c.route, c.status])).toEqual([
      ['initiate', 200],
      ['confirm', 200],
      ['complete', 200],
      ['complete', 409],
      ['progress', 200],
      ['abort', 409],
    ]);
    expect(await store.objectSha256([...aion.uploads.values()][0]!.s3Key)).toBe(sha);
    // An upload the platform does not know fails complete for good.
    await expect(t.complete({ media_id: 'nope', upload_id: 'nope' }, video, parts, signal)).rejects.toMatchObject({
      kind: 'permanent',
      details: { status: 404 },
    });
  });
});
