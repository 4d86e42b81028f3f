/**
 * `targets.<name>.request_timeout` bounds every API call of a target (login included), and only
 * those: a part PUT has no overall limit (the engine's stall watchdog, upload.stall_timeout,
 * watches it instead; test/e2e/network-faults.test.ts runs both through the real daemon).
 *
 * The platform here is a real HTTP server on 127.0.0.1 that accepts each request, reads it whole,
 * and answers it never (or, for the part PUTs, late): what is asserted is how the call ends, when,
 * and that the server saw the request and the client hang up.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable, Transform } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { Secrets } from '../../src/log/redact.js';
import { MiB } from '../../src/plan/part-plan.js';
import { createTargets } from '../../src/targets/registry.js';
import { TargetError, type SendPartRequest, type Target } from '../../src/targets/target.js';
import { HttpClient } from '../../src/upload/http.js';
import { StallError, StallWatchdog } from '../../src/upload/part-body.js';
import { videoSource } from '../support/source-file.js';

/** Seconds: short, so that a call bounded by it ends quickly, and far below what "never" would take. */
const REQUEST_TIMEOUT = 0.4;
const RT_MS = REQUEST_TIMEOUT * 1000;
/** How late a timer may fire on a loaded 2-core machine (3.3 s seen while other suites ran). */
const SLACK_MS = 5_000;

interface Seen {
  method: string;
  url: string;
  at: number;
  /** When the client closed the connection without an answer. */
  closedAt?: number;
}

interface Platform {
  origin: string;
  seen: Seen[];
  /** PUTs of part bodies (under /bucket/) are answered 200 with an ETag this long after their body arrived. */
  putDelayMs: number;
  close(): Promise<void>;
}

const closers: Array<() => Promise<void>> = [];
const clients: HttpClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) await c.close();
  for (const close of closers.splice(0)) await close();
});

/**
 * Answers nothing but two things: `POST …/upload_urls` (when `urls` is set: a single-PUT URL on
 * this server) and part PUTs under /bucket/ (after `putDelayMs`). Everything else is read and held until the client gives up.
 */
async function hangingPlatform(options: { urls?: boolean; putDelayMs?: number } = {}): Promise<Platform> {
  const seen: Seen[] = [];
  const platform: Platform = { origin: '', seen, putDelayMs: options.putDelayMs ?? 0, close: async () => undefined };
  const server = http.createServer((req, res) => {
    const record: Seen = { method: req.method ?? '', url: req.url ?? '', at: performance.now() };
    seen.push(record);
    res.on('close', () => {
      if (!res.writableEnded) record.closedAt = performance.now();
    });
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (options.urls && req.method === 'POST' && req.url?.endsWith('/upload_urls')) {
        const files = (JSON.parse(Buffer.concat(chunks).toString()) as { files: Record<string, unknown> }).files;
        const [fileId] = Object.keys(files);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(
          JSON.stringify({
            uploads: { [fileId!]: { s3_key: 'k/cam01.mp4', signed_urls: `${platform.origin}/bucket/k/cam01.mp4?X-Amz-Signature=x` } },
          }),
        );
      } else if (req.method === 'PUT' && req.url?.startsWith('/bucket/')) {
        setTimeout(() => {
          res.writeHead(200, { etag: '"0123456789abcdef0123456789abcdef"', 'content-length': '0' });
          res.end();
        }, platform.putDelayMs);
      }
      // Anything else: never answered.
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  platform.origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  platform.close = async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  };
  closers.push(() => platform.close());
  return platform;
}

/** An ALO target on the platform, as the daemon builds it from its configuration. */
function aloTarget(origin: string, auth: string): Target {
  const config = parseConfig(
    `
watch: { root: /srv/exports }
ledger: { path: /tmp/unused.db }
targets:
  alo: { type: alo, base_url: "${origin}/v1", auth: ${auth}, request_timeout: ${REQUEST_TIMEOUT} }
`,
    { env: {} },
  );
  const secrets = new Secrets();
  const client = new HttpClient({ connectionsPerOrigin: 4 }, secrets);
  clients.push(client);
  return createTargets(config.targets, { http: client, secrets }).get('alo')!;
}

/** The one part of a 1 MiB single-PUT upload, as the engine asks for it. */
function onePart(signal: AbortSignal): SendPartRequest {
  return {
    session: { mode: 'single', file_id: 'v1-video' },
    file: videoSource(1 * MiB),
    part: { number: 1, offset: 0, size: 1 * MiB },
    body: () => Readable.from([Buffer.alloc(1 * MiB)]),
    sentMd5: () => '',
    signal,
  };
}

/** Passes a body through, calling `touch` for every chunk (as the engine's part body touches its stall watchdog). */
function touching(touch: () => void): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      touch();
      done(null, chunk);
    },
  });
}

/** The incident report of an incident with no video final yet. */
function report(t: Target, signal: AbortSignal): Promise<void> {
  if (!t.report) throw new Error(`${t.name} sends no incident reports`);
  return t.report({ incident: { id: 'inc-1' }, videos: [] }, signal);
}

/** How the call ended and after how long (ms). */
async function outcome(call: () => Promise<unknown>): Promise<{ ms: number; error: unknown }> {
  const started = performance.now();
  try {
    await call();
    return { ms: performance.now() - started, error: null };
  } catch (error) {
    return { ms: performance.now() - started, error };
  }
}

const multipart = { mode: 'multipart', file_id: 'v1-video', s3_key: 'k/cam01.mp4', upload_id: 'up-1', part_count: 3 };

describe('request_timeout bounds every API call of a target', () => {
  const calls: Array<[string, RegExp, (t: Target, signal: AbortSignal) => Promise<unknown>]> = [
    [
      'start (create_multipart_upload)',
      /^GET \/v1\/.*\/create_multipart_upload\?/,
      (t, signal) => t.start(videoSource(200 * MiB), t.layout(videoSource(200 * MiB), 8 * MiB), signal),
    ],
    ['sendPart (upload_urls, before the part goes out)', /^POST \/v1\/.*\/upload_urls$/, (t, signal) => t.sendPart(onePart(signal))],
    [
      'complete (complete_multipart_upload)',
      /^POST \/v1\/.*\/complete_multipart_upload$/,
      (t, signal) => t.complete(multipart, videoSource(200 * MiB), [{ number: 1, size: 8 * MiB, etag: 'e1' }], signal),
    ],
    [
      'abort (abort_multipart_upload)',
      /^GET \/v1\/.*\/abort_multipart_upload\?/,
      (t, signal) => t.abort(multipart, videoSource(200 * MiB), signal),
    ],
    ['report (the incident PUT)', /^PUT \/v1\/vms\/incidents\/inc-1$/, (t, signal) => report(t, signal)],
  ];

  it.each(calls)('%s: fails as retryable after request_timeout, having been sent', async (_name, request, call) => {
    const platform = await hangingPlatform();
    const target = aloTarget(platform.origin, '{ bearer: t }');
    const { ms, error } = await outcome(() => call(target, new AbortController().signal));
    expect(error).toBeInstanceOf(TargetError);
    expect((error as TargetError).kind).toBe('retryable');
    expect((error as TargetError).message).toMatch(/ETIMEDOUT no complete answer within 400 ms/);
    // After request_timeout: not sooner, and not never (the message names the limit it met).
    expect(ms).toBeGreaterThanOrEqual(RT_MS - 20);
    expect(ms).toBeLessThan(RT_MS + SLACK_MS);
    // The platform got the request, and the client hung up on it.
    expect(platform.seen.map((r) => `${r.method} ${r.url}`)).toEqual([expect.stringMatching(request)]);
    await expect.poll(() => platform.seen[0]!.closedAt, { timeout: 2_000 }).toBeDefined();
  });

  it('the login of a target that logs in is bounded too', async () => {
    const platform = await hangingPlatform();
    const target = aloTarget(
      platform.origin,
      `{ login: { url: "${platform.origin}/v1/login", body: { username: u, password: p }, token_field: token }, send_as: { header: Authorization } }`,
    );
    const { ms, error } = await outcome(() => report(target, new AbortController().signal));
    expect(error).toBeInstanceOf(TargetError);
    expect((error as TargetError).kind).toBe('retryable');
    expect(ms).toBeGreaterThanOrEqual(RT_MS - 20);
    expect(ms).toBeLessThan(RT_MS + SLACK_MS);
    // Only the login went out: the report waits for its token.
    expect(platform.seen.map((r) => `${r.method} ${r.url}`)).toEqual(['POST /v1/login']);
  });
});

describe('a part PUT is not bounded by request_timeout', () => {
  it('completes when its answer takes several times request_timeout', async () => {
    // upload_urls answers at once; the PUT is answered 3 × request_timeout after its body arrived.
    const platform = await hangingPlatform({ urls: true, putDelayMs: 3 * RT_MS });
    const target = aloTarget(platform.origin, '{ bearer: t }');
    const { ms, error } = await outcome(() => target.sendPart(onePart(new AbortController().signal)));
    expect(error).toBeNull();
    expect(ms).toBeGreaterThanOrEqual(3 * RT_MS - 20);
    expect(platform.seen.map((r) => [r.method, r.url.split('?')[0], r.closedAt])).toEqual([
      ['POST', expect.stringMatching(/\/upload_urls$/), undefined],
      ['PUT', '/bucket/k/cam01.mp4', undefined],
    ]);
  });

  it('waits for an answer that never comes until the stall watchdog (upload.stall_timeout) ends it', async () => {
    const platform = await hangingPlatform({ urls: true, putDelayMs: 60_000 });
    const target = aloTarget(platform.origin, '{ bearer: t }');
    // As the engine sends a part: the attempt's signal is the stall watchdog's, armed for
    // upload.stall_timeout (here 5 × request_timeout) and touched by every chunk of the body.
    const stallMs = 5 * RT_MS;
    const ctl = new AbortController();
    const watchdog = new StallWatchdog(stallMs, ctl);
    let lastTouch = performance.now();
    const touch = (): void => {
      lastTouch = performance.now();
      watchdog.touch();
    };
    const part = onePart(ctl.signal);
    const { error } = await outcome(() =>
      target.sendPart({ ...part, body: () => part.body().pipe(touching(touch)) }).finally(() => watchdog.stop()),
    );
    const endedAt = performance.now();
    expect(error, String(error)).toBeInstanceOf(StallError);
    expect((error as Error).message).toBe('no progress for 2 s');
    // Cut stall_timeout after the body's last byte went (not request_timeout, not never).
    expect(endedAt - lastTouch).toBeGreaterThanOrEqual(stallMs - 20);
    expect(endedAt - lastTouch).toBeLessThan(stallMs + SLACK_MS);
    expect(platform.seen.map((r) => r.method)).toEqual(['POST', 'PUT']);
    await expect.poll(() => platform.seen[1]!.closedAt, { timeout: 2_000 }).toBeDefined();
  });
});
