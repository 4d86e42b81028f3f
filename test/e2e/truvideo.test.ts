/**
 * TruVideo (its Upload V3 document): what only this platform does. Part sizing by the document's
 * bands and limits (unit tests, no huge files); the emulator's strictness; and through the real
 * daemon: the metadata TruVideo receives, more presigned URLs asked for in one batch, a new login
 * when tokens expire, asynchronous completion (COMPLETED and FAILED), lost answers to start and
 * complete. Resume after SIGKILL from the ledger's uploadId and the parts TruVideo registered is
 * proven by the conformance suite (test/conformance), as for every platform.
 */
import { Readable } from 'node:stream';
import { request } from 'undici';
import { describe, expect, it, type TestContext } from 'vitest';
import { Secrets } from '../../src/log/redact.js';
import { MiB, PlanError } from '../../src/plan/part-plan.js';
import { TargetError, type SourceFile, type Target } from '../../src/targets/target.js';
import { truvideoConfig } from '../../src/targets/truvideo/config.js';
import { MAX_FILE_SIZE, TruvideoTarget, startRequest } from '../../src/targets/truvideo/index.js';
import { HttpClient } from '../../src/upload/http.js';
import { sleep } from '../../src/upload/pacer.js';
import { startS3Store, type S3Store } from '../emulators/s3-store.js';
import { startTruvideoEmulator, type TruvideoEmulator, type TruvideoEmulatorOptions, type TruvideoUpload } from '../emulators/truvideo.js';
import { TRUVIDEO_API_KEY, truvideoTargetConfig } from '../conformance/fixtures/truvideo.js';
import { runCli, waitFor, type DaemonProcess } from '../support/daemon-process.js';
import { mp4HeaderWithFrame } from '../support/files.js';
import { harness, type Harness } from '../support/harness.js';
import { INCIDENT_DETAILS, videoDefaults, writeIncident, writeOneVideoIncident } from '../support/manifest.js';
import { writeSiteConfig, type SiteFiles } from '../support/site.js';

// ---------------------------------------------------------------------------------------------
// Unit tests: refuse, layout and the start body.

function sourceFile(size: number, name = 'cam01.mp4', over: Partial<SourceFile> = {}): SourceFile {
  return {
    role: 'video',
    path: `/exports/${name}`,
    name,
    size,
    sha256: null,
    stamp: '',
    contentType: 'video/mp4',
    incident: {
      id: 'inc-1',
      title: 'Break-in',
      description: 'rear door',
      incident_at: '2024-02-02T11:04:12.987Z',
      latitude: 51.5,
      longitude: -0.12,
    },
    video: {
      id: 'vid-1',
      camera_id: 'cam-1',
      camera_name: 'Door cam',
      started_at: '2024-02-02T11:49:22Z',
      ended_at: '2024-02-02T11:51:32Z',
    },
    ...over,
  };
}

/** The target as the daemon makes it from a `targets.truvideo` block, logging in with the emulator's API key. */
function truvideo(baseUrl: string, loginUrl: string, over: Record<string, unknown> = {}): { target: Target; http: HttpClient } {
  const secrets = new Secrets();
  const http = new HttpClient({ connectionsPerOrigin: 2 }, secrets);
  const block = { type: 'truvideo', base_url: baseUrl, auth: { login: { url: loginUrl, body: { apiKey: TRUVIDEO_API_KEY } } }, ...over };
  return { target: new TruvideoTarget('truvideo', truvideoConfig.parse(block), { http, secrets }), http };
}

const offline = truvideo('http://127.0.0.1:9', 'http://127.0.0.1:9/auth/token').target;

/** Part sizes of the layout, checked against S3 and TruVideo's rules on the way. */
function sizes(size: number, preferred: number): { partSize: number; count: number; last: number } {
  const layout = offline.layout(sourceFile(size), preferred)!;
  expect(layout.reduce((sum, p) => sum + p.size, 0)).toBe(size);
  expect(layout.length).toBeLessThanOrEqual(120);
  for (const p of layout.slice(0, -1)) {
    expect(p.size).toBeGreaterThanOrEqual(5 * MiB);
    expect(p.size).toBeLessThanOrEqual(600 * MiB);
  }
  return { partSize: layout[0]!.size, count: layout.length, last: layout.at(-1)!.size };
}

describe('TruVideo part layout (MB read as MiB)', () => {
  it('5 MB edge: the smallest part_size is raised to the 10 MiB the document recommends; small files are one part', () => {
    expect(sizes(25 * MiB, 5 * MiB)).toEqual({ partSize: 10 * MiB, count: 3, last: 5 * MiB });
    expect(sizes(5 * MiB, 5 * MiB)).toEqual({ partSize: 5 * MiB, count: 1, last: 5 * MiB });
    expect(sizes(5 * MiB + 1, 5 * MiB)).toEqual({ partSize: 5 * MiB + 1, count: 1, last: 5 * MiB + 1 });
    expect(sizes(10 * MiB + 1, 5 * MiB)).toEqual({ partSize: 10 * MiB, count: 2, last: 1 });
  });

  it('honours part_size inside the band of the size class and clamps it into the band otherwise', () => {
    expect(sizes(100 * MiB - 1, 16 * MiB).partSize).toBe(16 * MiB); // < 100 MiB: 10–20 MiB
    expect(sizes(100 * MiB - 1, 64 * MiB).partSize).toBe(20 * MiB);
    expect(sizes(100 * MiB, 16 * MiB).partSize).toBe(20 * MiB); // 100 MiB – 1 GiB: 20–50 MiB
    expect(sizes(100 * MiB, 32 * MiB).partSize).toBe(32 * MiB);
    expect(sizes(1024 * MiB, 64 * MiB).partSize).toBe(50 * MiB);
    expect(sizes(1024 * MiB + 1, 16 * MiB).partSize).toBe(50 * MiB); // > 1 GiB: 50–600 MiB
    expect(sizes(4096 * MiB, 128 * MiB)).toEqual({ partSize: 128 * MiB, count: 32, last: 128 * MiB });
  });

  it('600 MB edge: a larger part_size is clamped to 600 MiB', () => {
    expect(sizes(10 * 1024 * MiB, 1024 * MiB).partSize).toBe(600 * MiB);
    expect(sizes(600 * MiB * 2, 5 * 1024 * MiB)).toEqual({ partSize: 600 * MiB, count: 2, last: 600 * MiB });
  });

  it('120-part limit: the part grows to a whole MiB so the file fits in 120 parts', () => {
    expect(sizes(120 * 64 * MiB, 64 * MiB)).toEqual({ partSize: 64 * MiB, count: 120, last: 64 * MiB });
    expect(sizes(120 * 64 * MiB + 1, 64 * MiB)).toEqual({ partSize: 65 * MiB, count: 119, last: 120 * 64 * MiB + 1 - 118 * 65 * MiB });
    expect(sizes(120 * 50 * MiB + 1, 16 * MiB)).toMatchObject({ partSize: 51 * MiB, count: 118 });
  });

  it('exactly 120 × 600 MiB is 120 parts of 600 MiB; one byte more is refused before any call', () => {
    expect(MAX_FILE_SIZE).toBe(120 * 600 * MiB);
    expect(sizes(MAX_FILE_SIZE, 16 * MiB)).toEqual({ partSize: 600 * MiB, count: 120, last: 600 * MiB });
    expect(offline.refuse(sourceFile(MAX_FILE_SIZE))).toBeNull();
    expect(offline.refuse(sourceFile(MAX_FILE_SIZE + 1))).toMatch(/at most 120 parts of 600 MiB \(75497472000 bytes\)/);
    expect(() => offline.layout(sourceFile(MAX_FILE_SIZE + 1), 16 * MiB)).toThrow(PlanError);
  });

  it('takes the document’s video types by extension and refuses the rest with a reason', () => {
    for (const name of ['a.mp4', 'b.MOV', 'c.avi', 'd.mkv', 'e.flv', 'f.wmv', 'g.3gpp', 'h.3gp', 'i.webm']) {
      expect(offline.refuse(sourceFile(MiB, name)), name).toBeNull();
    }
    expect(offline.refuse(sourceFile(MiB, 'cam.ts'))).toMatch(/TruVideo accepts video files \.mp4, \.mov, .*; cam\.ts has extension \.ts/);
    expect(offline.refuse(sourceFile(MiB, 'cam.jpg'))).toMatch(/has extension \.jpg/);
    expect(offline.refuse(sourceFile(MiB, 'export'))).toMatch(/has extension \(none\)/);
  });
});

describe('TruVideo start body', () => {
  it('carries the title, tags, duration and metadata; never the reserved keys', () => {
    expect(startRequest(sourceFile(3 * MiB, 'x.3gp'), 1)).toEqual({
      amountOfParts: 1,
      media: {
        fileType: '3GPP',
        title: 'Break-in — Door cam',
        creator: 'vms-uplink',
        duration: 130_000,
        tags: { incidentId: 'inc-1', videoId: 'vid-1', cameraId: 'cam-1', cameraName: 'Door cam' },
      },
      metadata: {
        title: 'Break-in',
        description: 'rear door',
        incident_at: '2024-02-02T11:04:12.987Z',
        latitude: 51.5,
        longitude: -0.12,
        camera_id: 'cam-1',
        camera_name: 'Door cam',
        started_at: '2024-02-02T11:49:22Z',
        ended_at: '2024-02-02T11:51:32Z',
      },
    });
  });

  it('falls back to the incident id and the file name, leaves out unknown values, and keeps titles to 255 characters', () => {
    const bare = startRequest(sourceFile(MiB, 'cam9.mkv', { incident: { id: 'inc-9' }, video: { id: 'v9' } }), 1);
    expect(bare.media).toEqual({
      fileType: 'MKV',
      title: 'Incident inc-9 — cam9.mkv',
      creator: 'vms-uplink',
      tags: { incidentId: 'inc-9', videoId: 'v9' },
    });
    expect(bare.metadata).toEqual({});
    const backwards = startRequest(
      sourceFile(MiB, 'a.mp4', { video: { id: 'v', started_at: '2024-02-02T11:00:00Z', ended_at: '2024-02-02T10:00:00Z' } }),
      1,
    );
    expect(backwards.media.duration).toBeUndefined();
    const long = startRequest(sourceFile(MiB, 'a.mp4', { incident: { id: 'i', title: '🚨'.repeat(300) } }), 1);
    expect(Array.from(long.media.title)).toHaveLength(255);
    expect(long.media.title.endsWith('…')).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------
// The emulator: as strict as the real service.

async function emulator(h: Harness, options: Partial<TruvideoEmulatorOptions> = {}): Promise<{ store: S3Store; tv: TruvideoEmulator }> {
  const store = h.closeAtEnd(await startS3Store());
  const tv = h.closeAtEnd(await startTruvideoEmulator({ store, apiKey: TRUVIDEO_API_KEY, ...options }));
  return { store, tv };
}

async function call(
  tv: TruvideoEmulator,
  method: 'GET' | 'POST',
  path: string,
  body?: unknown,
  token?: string,
): Promise<{ status: number; json: any }> {
  const headers: Record<string, string> = body === undefined ? {} : { 'content-type': 'application/json' };
  if (token) headers['authorization'] = `Bearer ${token}`;
  const res = await request(`${tv.baseUrl}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.body.text();
  return { status: res.statusCode, json: text ? JSON.parse(text) : undefined };
}

async function login(tv: TruvideoEmulator): Promise<string> {
  const res = await call(tv, 'POST', '/auth/token', { apiKey: TRUVIDEO_API_KEY });
  expect(res.status).toBe(200);
  return res.json.accessToken as string;
}

const media = { fileType: 'MP4', title: 'Incident — Cam', creator: 'vms-uplink' };

describe('TruVideo emulator', () => {
  it('needs a valid, unexpired token from the login', async (ctx) => {
    const { tv } = await emulator(harness(ctx));
    expect((await call(tv, 'POST', '/auth/token', { apiKey: 'wrong' })).status).toBe(401);
    expect((await call(tv, 'POST', '/upload/start', { amountOfParts: 1, media })).status).toBe(401);
    const token = await login(tv);
    expect((await call(tv, 'POST', '/upload/start', { amountOfParts: 1, media }, token)).status).toBe(201);
    tv.expireTokens();
    const expired = await call(tv, 'POST', '/upload/start', { amountOfParts: 1, media }, token);
    expect(expired).toMatchObject({ status: 401, json: { message: 'token expired' } });
  });

  it('refuses invalid start bodies with 400 naming the field', async (ctx) => {
    const { tv } = await emulator(harness(ctx));
    const token = await login(tv);
    const refused = async (body: unknown): Promise<string> => {
      const res = await call(tv, 'POST', '/upload/start', body, token);
      expect(res.status).toBe(400);
      return res.json.message as string;
    };
    expect(await refused({ amountOfParts: 121, media })).toMatch(/^amountOfParts: /);
    expect(await refused({ amountOfParts: 1.5, media })).toMatch(/^amountOfParts: /);
    expect(await refused({ amountOfParts: 1, media: { ...media, fileType: 'MPG' } })).toMatch(/^media\.fileType: /);
    expect(await refused({ amountOfParts: 1, media: { ...media, title: 'x'.repeat(256) } })).toMatch(/^media\.title: /);
    expect(await refused({ amountOfParts: 1, media: { ...media, creator: 'x'.repeat(256) } })).toMatch(/^media\.creator: /);
    expect(await refused({ amountOfParts: 1, media: { ...media, tags: { cameraId: 7 } } })).toMatch(/^media\.tags\.cameraId: /);
    expect(await refused({ amountOfParts: 1, media: { ...media, resolution: '4K' } })).toMatch(/^media\.resolution: /);
    expect(await refused({ amountOfParts: 1, media, metadata: { failureReason: 'x' } })).toMatch(/^metadata\.failureReason: reserved/);
    expect(await refused({ amountOfParts: 1, media, extra: true })).toMatch(/extra/);
    tv.refuseTitle('Cam', 'titles naming cameras are not allowed here');
    expect(await refused({ amountOfParts: 1, media })).toBe('titles naming cameras are not allowed here');
  });

  it('registers parts as they land, validates complete, and completes asynchronously', async (ctx) => {
    const { store, tv } = await emulator(harness(ctx), { initialUrls: 1, completeDelayMs: 300 });
    const token = await login(tv);
    const started = await call(tv, 'POST', '/upload/start', { amountOfParts: 2, media }, token);
    expect(started.status).toBe(201);
    const { uploadId } = started.json as { uploadId: string };
    expect(started.json.presignedUrls.map((u: { partNumber: number }) => u.partNumber)).toEqual([1]);
    const more = await call(tv, 'POST', `/upload/${uploadId}/presigned-urls`, { partNumbers: [2] }, token);
    expect(more.json.presignedUrls.map((u: { partNumber: number }) => u.partNumber)).toEqual([2]);
    expect((await call(tv, 'POST', `/upload/${uploadId}/presigned-urls`, { partNumbers: [3] }, token)).json.message).toMatch(
      /^partNumbers\[0\]: 3 is more than amountOfParts/,
    );

    const bodies = [Buffer.alloc(5 * MiB, 1), Buffer.from('tail')];
    const etags: string[] = [];
    for (const [i, url] of [started.json.presignedUrls[0].url, more.json.presignedUrls[0].url].entries()) {
      const put = await request(url as string, {
        method: 'PUT',
        body: bodies[i],
        headers: { 'content-length': String(bodies[i]!.length) },
      });
      await put.body.text();
      etags.push(String(put.headers['etag']).replace(/"/g, ''));
    }
    const details = await call(tv, 'GET', `/upload/${uploadId}`, undefined, token);
    expect(details.json).toMatchObject({
      status: 'PARTIAL',
      parts: [
        { partNumber: 1, eTag: etags[0] },
        { partNumber: 2, eTag: etags[1] },
      ],
    });

    const complete = (parts: unknown) => call(tv, 'POST', `/upload/${uploadId}/complete`, { parts }, token);
    expect((await complete([{ partNumber: 2, eTag: etags[1] }])).json.message).toMatch(/^parts\[0\]\.partNumber: expected 1/);
    expect((await complete([{ partNumber: 1, eTag: etags[0] }])).json.message).toMatch(/^parts: 1 parts listed/);
    expect(
      (
        await complete([
          { partNumber: 1, eTag: etags[1] },
          { partNumber: 2, eTag: etags[1] },
        ])
      ).json.message,
    ).toMatch(/^parts\[0\]\.eTag: does not match/);
    const ok = [
      { partNumber: 1, eTag: etags[0] },
      { partNumber: 2, eTag: etags[1] },
    ];
    expect((await complete(ok)).status).toBe(202);
    expect((await call(tv, 'GET', `/upload/${uploadId}`, undefined, token)).json.status).toBe('PENDING_COMPLETE');
    expect(await complete(ok)).toMatchObject({ status: 409 });
    const done = await waitFor(
      async () => {
        const d = await call(tv, 'GET', `/upload/${uploadId}`, undefined, token);
        return d.json.status === 'COMPLETED' ? d.json : undefined;
      },
      5000,
      'COMPLETED',
    );
    expect(done.parts).toHaveLength(2);
    expect(store.objectSize(done.keyName as string)).toBe(5 * MiB + 4);
    expect(await call(tv, 'GET', '/upload/nope', undefined, token)).toMatchObject({ status: 400 });
  });

  it('refuses a title at complete when told to, after its parts landed; the session stays open (TruVideo has no abort)', async (ctx) => {
    const { tv } = await emulator(harness(ctx), { initialUrls: 1 });
    const token = await login(tv);
    tv.refuseTitle('Cam', 'policy forbids this clip', 'complete');
    const started = await call(tv, 'POST', '/upload/start', { amountOfParts: 1, media }, token);
    expect(started.status).toBe(201);
    const { uploadId } = started.json as { uploadId: string };
    const put = await request(started.json.presignedUrls[0].url as string, {
      method: 'PUT',
      body: 'tail',
      headers: { 'content-length': '4' },
    });
    await put.body.text();
    const parts = [{ partNumber: 1, eTag: String(put.headers['etag']).replace(/"/g, '') }];
    for (let i = 0; i < 2; i++) {
      expect(await call(tv, 'POST', `/upload/${uploadId}/complete`, { parts }, token)).toEqual({
        status: 400,
        json: { status: 400, message: 'policy forbids this clip' },
      });
    }
    expect((await call(tv, 'GET', `/upload/${uploadId}`, undefined, token)).json.status).toBe('PARTIAL');
    expect(tv.calls.filter((c) => c.route === 'complete').map((c) => c.status)).toEqual([400, 400]);
    expect(tv.calls.every((c) => c.at > 0)).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------
// In process: polling after complete.

describe('TruVideo complete', () => {
  /** A started one-part upload whose part is in the store, through the target in this process. */
  async function sentUpload(ctx: TestContext, emulatorOptions: Partial<TruvideoEmulatorOptions>, config: Record<string, unknown>) {
    const { tv } = await emulator(harness(ctx), emulatorOptions);
    const { target, http } = truvideo(tv.baseUrl, tv.loginUrl, config);
    ctx.onTestFinished(() => http.close());
    const file = sourceFile(4, 'tiny.mp4');
    const signal = new AbortController().signal;
    const { session } = await target.start(file, [{ number: 1, offset: 0, size: 4 }], signal);
    const part = { number: 1, offset: 0, size: 4 };
    const { etag } = await target.sendPart({
      session,
      file,
      part,
      body: () => Readable.from([Buffer.from('abcd')]),
      sentMd5: () => '',
      signal,
    });
    /** Complete, asked again after the delay each `not-ready` names (as the pacer does), until an answer or another error. */
    const complete = async (): Promise<unknown> => {
      for (;;) {
        try {
          return await target.complete(session, file, [{ number: 1, size: 4, etag }], signal);
        } catch (err) {
          if (!(err instanceof TargetError) || err.kind !== 'not-ready') return err;
          await sleep(err.details.retryAfterMs ?? 0);
        }
      }
    };
    return { tv, complete, uploadId: String(session['uploadId']) };
  }

  it('polls with capped backoff and gives up after pollTimeout as retryable', async (ctx) => {
    const { tv, complete, uploadId } = await sentUpload(ctx, { completeDelayMs: 60_000 }, { poll_interval: 0.1, poll_timeout: 0.5 });
    const t0 = Date.now();
    const err = await complete();
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(err).toBeInstanceOf(TargetError);
    expect(err).toMatchObject({ kind: 'retryable', message: expect.stringMatching(/still PENDING_COMPLETE 0\.5 s after complete/) });
    // Polls after 0, 25, 50, 100, 100… ms: several, not a spin.
    const polls = tv.calls.filter((c) => c.route === 'get_upload' && c.uploadId === uploadId).length;
    expect(polls).toBeGreaterThanOrEqual(4);
    expect(polls).toBeLessThanOrEqual(10);
  });

  it('fails for good with the failureReason when the upload ends FAILED', async (ctx) => {
    const { tv, complete } = await sentUpload(ctx, { completeDelayMs: 100 }, { poll_interval: 0.1 });
    tv.failNextCompletion('transcoder rejected the stream');
    const err = await complete();
    expect(err).toBeInstanceOf(TargetError);
    expect(err).toMatchObject({ kind: 'permanent', message: expect.stringMatching(/FAILED: transcoder rejected the stream$/) });
  });
});

// ---------------------------------------------------------------------------------------------
// Through the real daemon.

interface Site extends SiteFiles {
  store: S3Store;
  tv: TruvideoEmulator;
  daemon(): DaemonProcess;
}

async function site(
  ctx: TestContext,
  options: { emulator?: Partial<TruvideoEmulatorOptions>; upload?: Record<string, unknown> } = {},
): Promise<Site> {
  const h = harness(ctx);
  const { store, tv } = await emulator(h, { completeDelayMs: 100, ...options.emulator });
  const files = await writeSiteConfig(await h.dir(), { upload: options.upload, targets: { truvideo: truvideoTargetConfig(tv) } });
  return { ...files, store, tv, daemon: () => h.daemon(files) };
}

function completed(s: Site, timeoutMs = 30_000) {
  return waitFor(() => s.tv.uploads().find((u) => u.status === 'COMPLETED'), timeoutMs, 'an upload COMPLETED');
}

/** Exports a one-video incident for the daemon; returns TruVideo's upload of it once COMPLETED, its bytes checked. */
async function deliverOneVideo(s: Site, id: string, size: number): Promise<TruvideoUpload> {
  const sha = await writeOneVideoIncident(s.exportsRoot, id, size);
  s.daemon();
  const upload = await completed(s);
  expect(await s.store.objectSha256(upload.keyName)).toBe(sha);
  return upload;
}

function okPuts(s: Site, s3UploadId: string): number[] {
  return s.store.requests.filter((r) => r.method === 'PUT' && r.status === 200 && r.uploadId === s3UploadId).map((r) => r.partNumber!);
}

async function uploadStatus(s: Site): Promise<{ state: string; lastError: string | null } | undefined> {
  const out = JSON.parse((await runCli(['status', '--json', '--config', s.configPath])).stdout) as {
    incidents: Array<{ videos: Array<{ uploads: Array<{ state: string; lastError: string | null }> }> }>;
  };
  return out.incidents[0]?.videos[0]?.uploads[0];
}

describe('TruVideo through the daemon', () => {
  it('delivers the video byte-identical, titled and tagged, with the incident as metadata; polls until COMPLETED', async (ctx) => {
    const s = await site(ctx, { emulator: { completeDelayMs: 700 } });
    const shas = await writeIncident(
      s.exportsRoot,
      'inc-happy',
      [
        { id: 'good-1', file: 'cam01_1149.mp4', size: 10 * MiB + 1234, header: mp4HeaderWithFrame(1920, 1080) },
        { id: 'bad-1', errors: ['G64 export failed with: No video available for the camera during the selected time period.'] },
      ],
      { title: 'Hey There!' },
    );
    s.daemon();
    const upload = await completed(s);
    expect(await s.store.objectSha256(upload.keyName)).toBe(shas.get('good-1'));
    expect(upload.media).toEqual({
      fileType: 'MP4',
      title: 'Hey There! — 192.168.0.240 - Camera - 01',
      creator: 'vms-uplink',
      duration: 130_000,
      resolution: 'HIGH', // 1080p, from the MP4's track header
      tags: { incidentId: 'inc-happy', videoId: 'good-1', cameraId: 'cam-1', cameraName: '192.168.0.240 - Camera - 01' },
    });
    // Every field of the incident and of its video, as the manifest has them, but the ids and the file.
    expect(upload.metadata).toEqual({ title: 'Hey There!', ...INCIDENT_DETAILS, ...videoDefaults(0) });
    expect(upload.amountOfParts).toBe(2); // 10 MiB parts: the 5 MiB part_size is below the band
    expect(okPuts(s, upload.s3UploadId).sort()).toEqual([1, 2]);
    // The failed export is not sent; the start gave every URL; complete once, then polls until COMPLETED.
    expect(s.tv.uploads()).toHaveLength(1);
    const routes = s.tv.calls.map((c) => `${c.route} ${c.status}`);
    expect(routes.filter((r) => r.startsWith('start'))).toEqual(['start 201']);
    expect(routes.filter((r) => r.startsWith('presigned_urls'))).toEqual([]);
    expect(routes.filter((r) => r.startsWith('complete'))).toEqual(['complete 202']);
    expect(routes.filter((r) => r.startsWith('get_upload')).length).toBeGreaterThanOrEqual(2);
    const done = await waitFor(async () => ((await uploadStatus(s))?.state === 'done' ? true : undefined), 10_000, 'status done');
    expect(done).toBe(true);
  });

  it('asks for the missing presigned URLs in one batch, and again for a refused one', async (ctx) => {
    const s = await site(ctx, { emulator: { initialUrls: 1 }, upload: { concurrency: 1 } });
    s.store.injectFaults({ kind: 'status', status: 403, code: 'AccessDenied', partNumber: 2 });
    const upload = await deliverOneVideo(s, 'inc-urls', 20 * MiB + 5); // 3 parts of 10 MiB
    const asked = s.tv.calls.filter((c) => c.route === 'presigned_urls').map((c) => [c.status, c.body]);
    // Parts 2 and 3 in one request; S3 refused part 2's URL, so both (still unsent) are asked for again.
    expect(asked).toEqual([
      [200, { partNumbers: [2, 3] }],
      [200, { partNumbers: [2, 3] }],
    ]);
    expect(okPuts(s, upload.s3UploadId).sort()).toEqual([1, 2, 3]);
  });

  it('logs in again when tokens expire mid-upload and completes; the start is sent once', async (ctx) => {
    const s = await site(ctx);
    s.tv.failNext('start', 1, 401); // refused before anything was created: safe to send again
    s.store.setLatency(800);
    const sha = await writeOneVideoIncident(s.exportsRoot, 'inc-token', 3 * MiB + 77);
    s.daemon();
    await waitFor(() => s.tv.calls.some((c) => c.route === 'start' && c.status === 201), 30_000, 'started');
    s.tv.expireTokens();
    const upload = await completed(s);
    expect(await s.store.objectSha256(upload.keyName)).toBe(sha);
    expect(s.tv.calls.filter((c) => c.route === 'start').map((c) => c.status)).toEqual([401, 201]);
    expect(s.tv.uploads()).toHaveLength(1);
    const afterStart = s.tv.calls.slice(s.tv.calls.findIndex((c) => c.route === 'start' && c.status === 201) + 1);
    // The next call (complete, once the part is in) met the expired token, and went through after a new login.
    expect(
      afterStart
        .filter((c) => c.route !== 'login')
        .map((c) => `${c.route} ${c.status}`)
        .slice(0, 2),
    ).toEqual(['complete 401', 'complete 202']);
    expect(s.tv.calls.filter((c) => c.route === 'login' && c.status === 200).length).toBeGreaterThanOrEqual(3);
  });

  it('fails the upload with TruVideo’s failureReason when the completion FAILED', async (ctx) => {
    const s = await site(ctx);
    s.tv.failNextCompletion('Media processing failed: unsupported codec');
    await writeOneVideoIncident(s.exportsRoot, 'inc-failed', MiB + 3);
    s.daemon();
    const status = await waitFor(
      async () => {
        const u = await uploadStatus(s);
        return u?.state === 'failed' ? u : undefined;
      },
      30_000,
      'upload failed',
    );
    expect(status.lastError).toMatch(/FAILED: Media processing failed: unsupported codec/);
    expect(s.tv.calls.filter((c) => c.route === 'complete').map((c) => c.status)).toEqual([202]);
    expect(s.tv.uploads().map((u) => u.status)).toEqual(['FAILED']);
  });

  it('lets the status decide when the answer to complete was lost', async (ctx) => {
    const s = await site(ctx);
    s.tv.resetNext('complete', 1, 'after');
    await deliverOneVideo(s, 'inc-lost', MiB + 9);
    await waitFor(async () => ((await uploadStatus(s))?.state === 'done' ? true : undefined), 10_000, 'status done');
    expect(s.tv.calls.filter((c) => c.route === 'complete').map((c) => c.status)).toEqual([0, 409]);
  });

  it('sends a start whose answer was lost once more: one media item completes, one stays an empty INITIALIZED orphan', async (ctx) => {
    const s = await site(ctx);
    s.tv.resetNext('start', 1, 'after');
    await deliverOneVideo(s, 'inc-orphan', MiB + 1);
    expect(s.tv.calls.filter((c) => c.route === 'start').map((c) => c.status)).toEqual([0, 201]);
    expect(
      s.tv
        .uploads()
        .map((u) => u.status)
        .sort(),
    ).toEqual(['COMPLETED', 'INITIALIZED']);
  });
});
