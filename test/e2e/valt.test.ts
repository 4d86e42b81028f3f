/**
 * What only Valt does, through the real daemon (Valt's API document and the contract): one record
 * per video named `<incident title> — <camera>`, the file appended in RFC 9110 Content-Range chunks,
 * one POST at a time, answers with and without the `data` wrapper, Valt's own message when it
 * refuses a record, and the access token (a query parameter) never shown anywhere. Resume after a
 * crash from the last acknowledged chunk in the same record, and a new login when the token expires
 * mid-upload, are proven by the conformance suite (test/conformance), as for every platform.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it, type TestContext } from 'vitest';
import type { ValtEmulator, ValtRecord } from '../emulators/valt.js';
import { startValt, VALT_PASSWORD, VALT_USERNAME, valtTargetConfig } from '../conformance/fixtures/valt.js';
import { runCli, waitFor, type DaemonProcess } from '../support/daemon-process.js';
import { MiB, writeThumbnail } from '../support/files.js';
import { harness } from '../support/harness.js';
import { ledgerRows, ledgerRowsSoFar } from '../support/ledger.js';
import { writeIncident } from '../support/manifest.js';
import { writeSiteConfig, type SiteFiles } from '../support/site.js';

interface Site extends SiteFiles {
  valt: ValtEmulator;
  daemon(): DaemonProcess;
  /** Everything the daemons printed so far, for the secret checks. */
  output(): string;
}

/** Valt and a daemon config for it, in 1 MiB chunks unless `target` says otherwise. */
async function valtSite(ctx: TestContext, target: Record<string, unknown> = {}): Promise<Site> {
  const h = harness(ctx);
  const valt = h.closeAtEnd(await startValt());
  const files = await writeSiteConfig(await h.dir(), { targets: { valt: valtTargetConfig(valt, { chunk_size: '1MiB', ...target }) } });
  const daemons: DaemonProcess[] = [];
  return {
    ...files,
    valt,
    daemon() {
      const d = h.daemon(files);
      daemons.push(d);
      return d;
    },
    output: () => daemons.map((d) => d.output()).join('\n'),
  };
}

function completeRecord(s: Site, name: string, timeoutMs = 30_000): Promise<ValtRecord> {
  // Complete and answered: the last chunk's call is in the emulator's log.
  return waitFor(
    () => s.valt.records.find((r) => r.name === name && r.complete && r.chunksInFlight === 0),
    timeoutMs,
    `record "${name}" complete`,
  );
}

async function statusJson(s: Site): Promise<{ text: string; snapshot: StatusSnapshot }> {
  const out = await runCli(['status', '--json', '--config', s.configPath]);
  expect(out.code).toBe(0);
  return { text: out.stdout, snapshot: JSON.parse(out.stdout) as StatusSnapshot };
}

interface StatusSnapshot {
  totals: Record<string, number>;
  incidents: Array<{
    id: string;
    videos: Array<{ id: string; state: string; uploads: Array<{ state: string; lastError: string | null }> }>;
  }>;
}

/** No access token Valt handed out appears in the logs, `status --json` or the ledger file. */
async function expectNoTokenShown(s: Site): Promise<void> {
  const { text } = await statusJson(s);
  const ledgerBytes = Buffer.concat([
    await readFile(s.ledgerPath),
    await readFile(`${s.ledgerPath}-wal`).catch(() => Buffer.alloc(0)),
  ]).toString('latin1');
  expect(s.valt.issuedTokens.length).toBeGreaterThan(0);
  for (const token of s.valt.issuedTokens) {
    expect(s.output()).not.toContain(token);
    expect(text).not.toContain(token);
    expect(ledgerBytes).not.toContain(token);
  }
}

const chunkCalls = (s: Site) => s.valt.calls.filter((c) => c.route === 'chunk');
const okCalls = (s: Site, route: string) => s.valt.calls.filter((c) => c.route === route && c.status === 200);

/** An incident of two videos of about 1 MiB on cameras 01 and 02. */
function twoCameras(s: Site, id: string, title: string): Promise<Map<string, string>> {
  return writeIncident(
    s.exportsRoot,
    id,
    [
      { id: 'v1', file: 'cam01.mp4', size: MiB + 5 },
      { id: 'v2', file: 'cam02.mp4', size: MiB + 7 },
    ],
    { title },
  );
}

/** The Content-Range of each chunk of `size` bytes in chunks of `chunk`, RFC 9110 form. */
function ranges(size: number, chunk: number): string[] {
  const out: string[] = [];
  for (let first = 0; first < size; first += chunk) out.push(`bytes ${first}-${Math.min(first + chunk, size) - 1}/${size}`);
  return out;
}

describe('Valt', () => {
  it('creates one record per video named "<title> — <camera>", with the template and share of the config, and the bytes intact', async (ctx) => {
    const template = { '1': 'Field Value 1', '2': 'Field Value 2' };
    const share = { users: [1, 2, 3], groups: [4, 5, 6] };
    const s = await valtSite(ctx, { template, share });
    const folder = join(s.exportsRoot, 'happy-1');
    await writeThumbnail(join(folder, 'cam01a_1149.jpg'));
    const shas = await writeIncident(
      s.exportsRoot,
      'happy-1',
      [
        {
          id: 'good-file-1',
          file: 'cam01a_1149.mp4',
          thumbnail: 'cam01a_1149.jpg',
          camera_name: '192.168.0.241 - Camera - 01a',
          size: 2 * MiB + 100,
        },
        { id: 'no-camera', file: 'cam09_1149.mp4', camera_name: undefined, size: MiB / 2 },
        { id: 'bad-file-2', errors: ['G64 export failed with: No video available for the camera during the selected time period.'] },
      ],
      { title: 'Hey There!' },
    );
    s.daemon();
    const cam = await completeRecord(s, 'Hey There! — 192.168.0.241 - Camera - 01a');
    const noCamera = await completeRecord(s, 'Hey There! — cam09_1149.mp4');

    // Only the two videos: no record for the failed export, no thumbnail (Valt takes videos only).
    expect(s.valt.records).toHaveLength(2);
    for (const [record, id, size] of [
      [cam, 'good-file-1', 2 * MiB + 100],
      [noCamera, 'no-camera', MiB / 2],
    ] as const) {
      expect(record).toMatchObject({ template, share, contentType: 'video/mp4', bytes: size, total: size, maxChunksInFlight: 1 });
      expect(await s.valt.assembledSha256(record.id)).toBe(shas.get(id));
      expect(record.sha256).toBe(shas.get(id));
      expect(record.contentRanges).toEqual(ranges(size, MiB));
      expect(record.chunks.every((c) => c.status === 200 && !c.repeat)).toBe(true);
    }
    expect(cam.filename).toBe('cam01a_1149.mp4');
    const bodies = s.valt.calls.filter((c) => c.route === 'create-upload').map((c) => c.body);
    expect(bodies).toContainEqual({ name: 'Hey There! — 192.168.0.241 - Camera - 01a', template, share });
    // Every chunk has an exact Content-Length, never a chunked body; one login served every call.
    for (const c of chunkCalls(s)) {
      expect(c.transferEncoding).toBeUndefined();
      expect(Number(c.contentLength)).toBeGreaterThan(0);
    }
    expect(okCalls(s, 'login')).toHaveLength(1);

    // The ledger keeps what Valt knows the video as: record, video and the download URL of the last answer.
    await waitFor(
      () => ledgerRowsSoFar(s.ledgerPath, `SELECT 1 FROM uploads WHERE state = 'done'`).length === 2,
      10_000,
      'both uploads done',
    );
    const results = ledgerRows<{ video_id: string; result: string }>(s.ledgerPath, `SELECT video_id, result FROM uploads`);
    expect(JSON.parse(results.find((r) => r.video_id === 'good-file-1')!.result)).toEqual({
      record_id: cam.id,
      video_id: cam.videoId,
      url: cam.url,
    });
    const { snapshot } = await statusJson(s);
    expect(snapshot.totals).toMatchObject({ done: 2, failed: 0, failedVideos: 1 });
    await expectNoTokenShown(s);
  });

  it('sends a 20 MiB + 3 file in 8 MiB chunks (the default) with RFC 9110 Content-Ranges, one POST at a time, in order', async (ctx) => {
    const s = await valtSite(ctx, { chunk_size: undefined });
    const size = 20 * MiB + 3;
    const shas = await writeIncident(s.exportsRoot, 'range-1', [{ id: 'v1', file: 'cam01.mp4', size }], { title: 'Ranges' });
    s.daemon();
    const record = await completeRecord(s, 'Ranges — 192.168.0.240 - Camera - 01');
    expect(chunkCalls(s).map((c) => c.contentRange)).toEqual([
      'bytes 0-8388607/20971523',
      'bytes 8388608-16777215/20971523',
      'bytes 16777216-20971522/20971523',
    ]);
    expect(record.maxChunksInFlight).toBe(1);
    expect(await s.valt.assembledSha256(record.id)).toBe(shas.get('v1'));
    // The multipart envelope around each chunk is a few hundred bytes: the chunk was streamed with an exact length.
    chunkCalls(s).forEach((c, i) => {
      const overhead = Number(c.contentLength) - [8 * MiB, 8 * MiB, 4 * MiB + 3][i]!;
      expect(overhead).toBeGreaterThan(100);
      expect(overhead).toBeLessThan(400);
    });
  });

  it('reads create-upload and chunk answers with and without the `data` wrapper', async (ctx) => {
    const s = await valtSite(ctx); // the emulator alternates: the first record bare, the second in `data`
    const shas = await twoCameras(s, 'shape-1', 'Shapes');
    s.daemon();
    const one = await completeRecord(s, 'Shapes — 192.168.0.240 - Camera - 01');
    const two = await completeRecord(s, 'Shapes — 192.168.0.241 - Camera - 02');
    expect(new Set([one.shape, two.shape])).toEqual(new Set(['plain', 'data']));
    expect(await s.valt.assembledSha256(one.id)).toBe(shas.get('v1'));
    expect(await s.valt.assembledSha256(two.id)).toBe(shas.get('v2'));
    await waitFor(
      () => ledgerRowsSoFar(s.ledgerPath, `SELECT 1 FROM uploads WHERE state = 'done'`).length === 2,
      10_000,
      'both uploads done',
    );
    const results = new Map(
      ledgerRows<{ video_id: string; result: string }>(s.ledgerPath, `SELECT video_id, result FROM uploads`).map((r) => [
        r.video_id,
        JSON.parse(r.result) as unknown,
      ]),
    );
    expect(results.get('v1')).toEqual({ record_id: one.id, video_id: one.videoId, url: one.url });
    expect(results.get('v2')).toEqual({ record_id: two.id, video_id: two.videoId, url: two.url });
  });

  it("fails the video whose record Valt refuses with Valt's message, and uploads the other", async (ctx) => {
    const s = await valtSite(ctx);
    s.valt.refuseName('Camera - 02', 'Recording name contains a forbidden word.');
    const shas = await twoCameras(s, 'refuse-1', 'Refused');
    s.daemon();
    const ok = await completeRecord(s, 'Refused — 192.168.0.240 - Camera - 01');
    expect(await s.valt.assembledSha256(ok.id)).toBe(shas.get('v1'));
    const failed = await waitFor(
      async () => {
        const { snapshot } = await statusJson(s);
        const upload = snapshot.incidents[0]?.videos.find((v) => v.id === 'v2')?.uploads[0];
        return upload?.state === 'failed' ? upload : undefined;
      },
      30_000,
      'v2 failed',
    );
    expect(failed.lastError).toContain('answered 400: Recording name contains a forbidden word.');
    // Refused for good: asked once, not retried, and nothing was opened on Valt for it.
    const refusedCalls = s.valt.calls.filter(
      (c) => c.route === 'create-upload' && (c.body as { name: string }).name.includes('Camera - 02'),
    );
    expect(refusedCalls.map((c) => c.status)).toEqual([400]);
    expect(s.valt.records).toHaveLength(1);
  });

  it('never shows the access token: failures are logged with access_token=***, status and ledger hold none', async (ctx) => {
    const s = await valtSite(ctx);
    s.valt.failNext('create-upload', 1, 503);
    s.valt.failNext('chunk', 1, 500);
    s.valt.resetNext('chunk', 1, 'before');
    const shas = await writeIncident(s.exportsRoot, 'secret-1', [{ id: 'v1', file: 'cam01.mp4', size: 2 * MiB + 1 }], { title: 'Secret' });
    const d = s.daemon();
    const record = await completeRecord(s, 'Secret — 192.168.0.240 - Camera - 01');
    expect(await s.valt.assembledSha256(record.id)).toBe(shas.get('v1'));
    expect(d.events('upload.retry').length).toBeGreaterThanOrEqual(3);
    // The connection reset is reported with the request's URL: its token is masked.
    expect(s.output()).toContain('access_token=***');
    await expectNoTokenShown(s);
  });
});

describe('the Valt emulator refuses what Valt would', () => {
  async function emulator(
    ctx: TestContext,
  ): Promise<{ valt: ValtEmulator; post: (path: string, init: RequestInit) => Promise<{ status: number; body: any }> }> {
    const valt = await startValt({ wrapInData: false });
    ctx.onTestFinished(() => valt.close());
    const post = async (path: string, init: RequestInit) => {
      const res = await fetch(`${valt.baseUrl}${path}`, { method: 'POST', ...init });
      return { status: res.status, body: (await res.json()) as any };
    };
    return { valt, post };
  }
  const json = (body: unknown): RequestInit => ({ headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

  it('logs in with the configured credentials only, and requires a live token as access_token', async (ctx) => {
    const { valt, post } = await emulator(ctx);
    expect(await post('/login', json({ username: VALT_USERNAME, password: 'wrong' }))).toEqual({
      status: 401,
      body: { error: { code: 401, message: 'Bad credentials.' } },
    });
    expect((await post('/login', json({ username: VALT_USERNAME }))).status).toBe(400);
    const login = await post('/login', json({ username: VALT_USERNAME, password: VALT_PASSWORD }));
    expect(login.status).toBe(200);
    const token = login.body.data.access_token as string;
    expect(token).toMatch(/^[0-9a-f]{32}$/);
    expect(await post('/records/create-upload', json({ name: 'x' }))).toEqual({
      status: 401,
      body: { error: { code: 401, message: 'No API token provided' } },
    });
    expect((await post(`/records/create-upload?access_token=${token}`, json({ name: 'x' }))).status).toBe(200);
    valt.expireTokens();
    expect((await post(`/records/create-upload?access_token=${token}`, json({ name: 'x' }))).status).toBe(401);
    // What it recorded of the calls never holds the token.
    expect(JSON.stringify(valt.calls)).not.toContain(token);
  });

  it('validates create-upload bodies: a name, template values as strings, share ids as integers, nothing else', async (ctx) => {
    const { post } = await emulator(ctx);
    const token = (await post('/login', json({ username: VALT_USERNAME, password: VALT_PASSWORD }))).body.data.access_token as string;
    const create = (body: unknown) => post(`/records/create-upload?access_token=${token}`, json(body));
    for (const [body, field] of [
      [{}, 'name'],
      [{ name: '  ' }, 'name'],
      [{ name: 'x', template: { '1': 2 } }, 'template.1'],
      [{ name: 'x', share: { users: ['a'] } }, 'share.users[0]'],
      [{ name: 'x', share: { teams: [1] } }, 'share'],
      [{ name: 'x', tags: ['a'] }, 'body'],
    ] as const) {
      const res = await create(body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.body.error.message).toContain(`${field}: `);
    }
    const ok = await create({
      name: 'Upload Recording',
      template: { '1': 'Field Value 1' },
      share: { users: [1, 2, 3], groups: [4, 5, 6] },
    });
    expect(ok.status).toBe(200);
    expect(ok.body).toEqual({ id: expect.any(String), videos: [expect.any(String)] });
  });

  it('refuses a record at its chunks after the first when told to, holds an answer, and hands out short-lived tokens', async (ctx) => {
    const { valt, post } = await emulator(ctx);
    const token = (await post('/login', json({ username: VALT_USERNAME, password: VALT_PASSWORD }))).body.data.access_token as string;
    valt.refuseName('Refused', 'Recording storage quota exceeded.', 'chunk');
    const record = (await post(`/records/create-upload?access_token=${token}`, json({ name: 'Refused clip' }))).body as {
      id: string;
      videos: string[];
    };
    const bytes = randomBytes(20);
    const chunk = (range: string, data: Buffer, signal?: AbortSignal) => {
      const form = new FormData();
      form.append('file', new Blob([data], { type: 'video/mp4' }), 'cam01.mp4');
      return fetch(`${valt.baseUrl}/records/${record.id}/videos/${record.videos[0]}?access_token=${token}`, {
        method: 'POST',
        body: form,
        headers: { 'content-range': range },
        signal,
      });
    };
    // The first chunk is held: appended, its answer never sent.
    valt.holdNext('chunk', 1);
    await expect(chunk('bytes 0-9/20', bytes.subarray(0, 10), AbortSignal.timeout(500))).rejects.toThrow();
    expect(valt.records[0]).toMatchObject({ bytes: 10, contentRanges: ['bytes 0-9/20'] });
    expect(valt.records[0]!.chunks[0]).toMatchObject({ accepted: true, held: true, status: 0 });
    // Every later chunk is refused; the record stays incomplete.
    const refused = await chunk('bytes 10-19/20', bytes.subarray(10));
    expect(refused.status).toBe(400);
    expect(await refused.json()).toEqual({ error: { code: 400, message: 'Recording storage quota exceeded.' } });
    expect(valt.records[0]).toMatchObject({ bytes: 10, complete: false });
    // Tokens handed out from now on live no time at all; the earlier one still works.
    valt.setTokenTtl(0);
    const dead = (await post('/login', json({ username: VALT_USERNAME, password: VALT_PASSWORD }))).body.data.access_token as string;
    expect((await post(`/records/create-upload?access_token=${dead}`, json({ name: 'x' }))).status).toBe(401);
    expect((await post(`/records/create-upload?access_token=${token}`, json({ name: 'x' }))).status).toBe(200);
  });

  it('appends only RFC 9110 ranges that continue the video, from real multipart bodies with a length', async (ctx) => {
    const { valt, post } = await emulator(ctx);
    const token = (await post('/login', json({ username: VALT_USERNAME, password: VALT_PASSWORD }))).body.data.access_token as string;
    const record = (await post(`/records/create-upload?access_token=${token}`, json({ name: 'Ranges' }))).body as {
      id: string;
      videos: string[];
    };
    const path = `/records/${record.id}/videos/${record.videos[0]}?access_token=${token}`;
    const bytes = randomBytes(30);
    const chunk = (range: string | null, data: Buffer, field = 'file') => {
      const form = new FormData();
      form.append(field, new Blob([data], { type: 'video/mp4' }), 'cam01.mp4');
      return post(path, { body: form, headers: range ? { 'content-range': range } : {} });
    };
    const refused = async (range: string | null, data: Buffer, words: string, field?: string) => {
      const res = await chunk(range, data, field);
      expect(res.status, range ?? 'no range').toBe(400);
      expect(res.body.error.message).toContain(words);
    };
    await refused('bytes 0-30/30', bytes, 'inclusive'); // the seed's example form, off by one
    await refused(null, bytes.subarray(0, 10), 'Content-Range: header is required');
    await refused('bytes=0-9/30', bytes.subarray(0, 10), 'expected "bytes FIRST-LAST/TOTAL"');
    await refused('bytes 0-9/30', bytes.subarray(0, 9), 'announces 10');
    await refused('bytes 0-9/30', bytes.subarray(0, 10), 'unexpected form field', 'video');
    expect((await chunk('bytes 0-9/30', bytes.subarray(0, 10))).status).toBe(200);
    await refused('bytes 20-29/30', bytes.subarray(20), 'a gap');
    await refused('bytes 5-14/30', bytes.subarray(5, 15), 'an overlap');
    await refused('bytes 10-19/31', bytes.subarray(10, 20), 'total 31 differs');
    await refused('bytes 0-9/30', randomBytes(10), 'different bytes');
    expect((await chunk('bytes 0-9/30', bytes.subarray(0, 10))).status).toBe(200); // an exact repeat: acknowledged, not appended
    // A chunked body (no Content-Length) is refused.
    const streamed = await fetch(`${valt.baseUrl}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'multipart/form-data; boundary=x', 'content-range': 'bytes 10-19/30' },
      body: new Blob(['--x--']).stream(),
      duplex: 'half',
    });
    expect(streamed.status).toBe(411);
    expect((await chunk('bytes 10-19/30', bytes.subarray(10, 20))).status).toBe(200);
    const last = await chunk('bytes 20-29/30', bytes.subarray(20));
    expect(last).toEqual({ status: 200, body: { id: record.id, videos: record.videos, url: expect.stringMatching(/^http:/) } });
    const [held] = valt.records;
    expect(held).toMatchObject({ complete: true, bytes: 30, filename: 'cam01.mp4', contentType: 'video/mp4' });
    expect(held!.contentRanges).toEqual(['bytes 0-9/30', 'bytes 0-9/30', 'bytes 10-19/30', 'bytes 20-29/30']);
    expect(await valt.assembledSha256(held!.id)).toBe(createHash('sha256').update(bytes).digest('hex'));
  });
});
