/**
 * No secret reaches a log line. The real daemon runs at `log.level: trace` against all four
 * platform emulators with credentials that are easy to find, and is driven down the error paths:
 * 401s that force a new login (TruVideo, Valt), presigned URLs refused mid-upload (403), 5xx
 * answers whose bodies echo the request back (URL with its `access_token` or signature, and every
 * header, Authorization and X-Api-Key included), connections reset by a fault proxy, a permanent
 * refusal, a manifest that does not validate, and a SIGTERM mid-upload.
 *
 * The secrets looked for are the ones really used: the configured credentials, every token a
 * login handed out, and the X-Amz-Signature and X-Amz-Credential of every presigned URL the store
 * signed. Emulator-side counts prove each error path was taken, so the test cannot pass on a run
 * that never met them. The same run checks that every line has an `event` name and that one
 * video can be followed by its ids from `export.settled` to the incident report.
 */
import { join } from 'node:path';
import { writeFile, mkdir } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { startAionvisionEmulator } from '../emulators/aionvision.js';
import { startAloEmulator } from '../emulators/alo.js';
import { startS3Store } from '../emulators/s3-store.js';
import { startTruvideoEmulator } from '../emulators/truvideo.js';
import { startValtEmulator } from '../emulators/valt.js';
import { runCli, waitFor, type DaemonProcess, type LogLine } from '../support/daemon-process.js';
import { FaultProxy } from '../support/fault-proxy.js';
import { MiB } from '../support/files.js';
import { harness } from '../support/harness.js';
import { writeIncident } from '../support/manifest.js';
import { writeSiteConfig } from '../support/site.js';

/** Credentials nobody could mistake for anything else in a log line. */
const SECRETS = {
  aloBearer: 'aloBearerSECRET7f3a9c2e51d84b06',
  aionKey: 'aionKeySECRET0c5e8b7d2a914f63',
  truvideoApiKey: 'truvideoApiKeySECRET93d1e7a4b2c6f850',
  valtPassword: 'valtPasswordSECRET5b8e2f0c7a1d4936',
};

const TARGETS = ['alo', 'aionvision', 'truvideo', 'valt'] as const;

/** The values of X-Amz-Signature and X-Amz-Credential in a presigned URL, as sent and decoded. */
function urlSecrets(url: string): string[] {
  const out: string[] = [];
  for (const name of ['X-Amz-Signature', 'X-Amz-Credential']) {
    const raw = new RegExp(`[?&]${name}=([^&]+)`).exec(url)?.[1];
    if (raw) out.push(raw, decodeURIComponent(raw));
  }
  return out;
}

const isEvent = (l: LogLine, event: string, fields: Record<string, unknown> = {}): boolean =>
  l.event === event && Object.entries(fields).every(([k, v]) => l[k] === v);

describe('log secrets', () => {
  it('no secret reaches any log line at trace level, through every error path', async (ctx) => {
    const h = harness(ctx);
    const dir = await h.dir();
    const store = h.closeAtEnd(await startS3Store());
    // Part bodies go through the proxy, which resets some of them mid-body.
    const s3 = h.closeAtEnd(await FaultProxy.start(store.origin));
    store.setPublicOrigin(s3.origin);
    const alo = h.closeAtEnd(await startAloEmulator({ store, auth: { header: 'authorization', value: `Bearer ${SECRETS.aloBearer}` } }));
    const aion = h.closeAtEnd(
      await startAionvisionEmulator({ store, chunkSizeBytes: 5 * MiB, auth: { header: 'x-api-key', value: SECRETS.aionKey } }),
    );
    const tv = h.closeAtEnd(await startTruvideoEmulator({ store, apiKey: SECRETS.truvideoApiKey, completeDelayMs: 100 }));
    const valt = h.closeAtEnd(await startValtEmulator({ username: 'vms-uplink', password: SECRETS.valtPassword }));

    const files = await writeSiteConfig(dir, {
      targets: {
        alo: { type: 'alo', base_url: alo.baseUrl, auth: { bearer: SECRETS.aloBearer }, multipart_threshold: '5MiB' },
        aionvision: { type: 'aionvision', base_url: aion.baseUrl, auth: { header: 'X-Api-Key', value: SECRETS.aionKey } },
        truvideo: {
          type: 'truvideo',
          base_url: tv.baseUrl,
          auth: { login: { url: tv.loginUrl, body: { apiKey: SECRETS.truvideoApiKey }, token_field: 'accessToken' } },
          poll_interval: 0.2,
        },
        valt: {
          type: 'valt',
          base_url: valt.baseUrl,
          chunk_size: '5MiB',
          auth: {
            login: {
              url: valt.loginUrl,
              body: { username: 'vms-uplink', password: SECRETS.valtPassword },
              token_field: 'data.access_token',
            },
            send_as: { query: 'access_token' },
          },
        },
      },
      upload: { stall_timeout: 5, drain_timeout: 1 },
      log: { level: 'trace' },
    });

    // The error paths, queued before the daemon starts: each is taken by the first call it matches.
    // 401s: the login targets log in again; the echoes answer 5xx with the request (token, headers) in the body.
    tv.failNext('start', 1, 401);
    tv.echoNext('start', 1, 503);
    valt.failNext('create-upload', 1, 401);
    valt.echoNext('chunk', 1, 500);
    valt.resetNext('chunk', 1);
    alo.echoNext('upload_urls', 1, 500);
    alo.echoNext('put_incident', 1, 502);
    aion.echoNext('initiate', 1, 500);
    // Part 2 of the multipart uploads: a refused (expired) URL, then 500s that echo the signed request line.
    store.injectFaults(
      { kind: 'status', status: 403, code: 'AccessDenied', partNumber: 2 },
      { kind: 'status', status: 500, code: 'InternalError', echo: true, partNumber: 2 },
      { kind: 'status', status: 500, code: 'InternalError', echo: true, partNumber: 2 },
    );
    // Resets hit part 1 only, so they cannot swallow the faults above.
    s3.resetNext(2, 64 * 1024, { method: 'PUT', path: /[?&]partNumber=1&/ });

    // One incident: a 6 MiB video (two parts everywhere), a small one ALO refuses for good, and a failed export.
    const incidentId = 'inc-secrets';
    alo.refuseFile(`${incidentId}-v2`, 'file refused by policy (log test)');
    await writeIncident(files.exportsRoot, incidentId, [
      { id: `${incidentId}-v1`, file: 'cam01.mp4', size: 6 * MiB + 1 },
      { id: `${incidentId}-v2`, file: 'cam02.mp4', size: MiB },
      { id: `${incidentId}-v3`, errors: ['G64 export failed with: No video available for the camera during the selected time period.'] },
    ]);
    // A manifest that does not validate.
    await mkdir(join(files.exportsRoot, 'broken'), { recursive: true });
    await writeFile(
      join(files.exportsRoot, 'broken', 'incident.json'),
      JSON.stringify({ incident: { id: 'broken' }, videos: [{ id: 7 }] }),
    );

    const first = h.daemon(files);
    const v1 = `${incidentId}-v1`;
    const v2 = `${incidentId}-v2`;
    const completed = (d: DaemonProcess, videoId: string, target: string) =>
      d.logs.some((l) => isEvent(l, 'upload.completed', { videoId, target }));
    await waitFor(
      () => TARGETS.every((t) => completed(first, v1, t)) && ['aionvision', 'truvideo', 'valt'].every((t) => completed(first, v2, t)),
      40_000,
      'both videos completed on every target that takes them',
    );
    await waitFor(
      () => first.logs.some((l) => isEvent(l, 'upload.failed', { videoId: v2, target: 'alo' })),
      10_000,
      'the refused upload failed',
    );
    await waitFor(
      () =>
        first.logs.some(
          (l) =>
            isEvent(l, 'incident.reported', { incidentId, target: 'alo' }) &&
            (l.uploadedVideoIds as string[]).includes(v1) &&
            (l.failedVideoIds as string[]).length === 2,
        ),
      10_000,
      'the final ALO report',
    );

    // A SIGTERM mid-upload: Valt answers slowly, so a second incident is in flight when it comes.
    valt.setLatency(2000);
    await writeIncident(files.exportsRoot, 'inc-term', [{ id: 'inc-term-v1', file: 'cam01.mp4', size: 6 * MiB + 7 }]);
    await waitFor(
      () => first.logs.some((l) => isEvent(l, 'upload.started', { videoId: 'inc-term-v1', target: 'valt' })),
      15_000,
      'the second upload started',
    );
    first.kill('SIGTERM');
    expect(await first.exited).toEqual({ code: 0, signal: null });

    // The error paths were really taken.
    expect(tv.calls.filter((c) => c.route === 'start' && c.status === 401).length).toBeGreaterThanOrEqual(1);
    expect(tv.calls.filter((c) => c.route === 'start' && c.status === 503).length).toBeGreaterThanOrEqual(1);
    expect(tv.issuedTokens.length).toBeGreaterThanOrEqual(2); // logged in again after the 401
    expect(valt.calls.filter((c) => c.route === 'create-upload' && c.status === 401).length).toBeGreaterThanOrEqual(1);
    expect(valt.calls.filter((c) => c.route === 'chunk' && c.status === 500).length).toBeGreaterThanOrEqual(1);
    expect(valt.calls.filter((c) => c.route === 'chunk' && c.status === 0).length).toBeGreaterThanOrEqual(1);
    expect(valt.issuedTokens.length).toBeGreaterThanOrEqual(2);
    expect(alo.calls.filter((c) => c.route === 'upload_urls' && c.status === 500).length).toBeGreaterThanOrEqual(1);
    expect(alo.calls.filter((c) => c.route === 'put_incident' && c.status === 502).length).toBeGreaterThanOrEqual(1);
    expect(alo.calls.filter((c) => c.route === 'upload_urls' && c.status === 422).length).toBeGreaterThanOrEqual(1);
    expect(aion.calls.filter((c) => c.route === 'initiate' && c.status === 500).length).toBeGreaterThanOrEqual(1);
    expect(store.requests.filter((r) => r.status === 403).length).toBeGreaterThanOrEqual(1);
    expect(store.requests.filter((r) => r.status === 500 && r.code === 'InternalError').length).toBeGreaterThanOrEqual(2);
    expect(s3.counters.resets).toBeGreaterThanOrEqual(2);
    // And the daemon saw them: retried by kind, a refused URL renewed, a manifest refused, a shutdown.
    const retries = first.events('upload.retry');
    for (const kind of ['reauth', 'new-url', 'retryable'])
      expect(
        retries.some((l) => l.kind === kind),
        kind,
      ).toBe(true);
    expect(first.events('incident.report.failed').length).toBeGreaterThanOrEqual(1);
    expect(first.events('manifest.invalid').length).toBeGreaterThanOrEqual(1);
    expect(first.events('daemon.signal')).toMatchObject([{ signal: 'SIGTERM' }]);
    expect(first.events('daemon.stopped')).toHaveLength(1);

    // The secrets: configured, issued by the logins, and signed into every presigned URL.
    const secrets = new Set<string>([
      ...Object.values(SECRETS),
      ...tv.issuedTokens,
      ...valt.issuedTokens,
      ...store.presignedUrls.flatMap(urlSecrets),
    ]);
    expect(store.presignedUrls.length).toBeGreaterThanOrEqual(6);
    for (const url of store.presignedUrls) expect(urlSecrets(url)).toHaveLength(4);
    // Signatures are unique per URL; tokens per login.
    expect(secrets.size).toBeGreaterThanOrEqual(Object.keys(SECRETS).length + 4 + store.presignedUrls.length);
    const status = await runCli(['status', '--json', '--config', files.configPath]);
    const printed = { stdout: first.stdout.join(''), stderr: first.stderr.join(''), status: status.stdout + status.stderr };
    const leaks: string[] = [];
    for (const secret of secrets) {
      for (const [stream, text] of Object.entries(printed)) {
        for (const line of text.split('\n').filter((l) => l.includes(secret)))
          leaks.push(`${stream}: secret ${secret.slice(0, 6)}… in ${line}`);
      }
    }
    expect(leaks).toEqual([]);

    // Every stdout line is JSON with a stable dotted event name; every level the run went through is there.
    const lines = printed.stdout.split('\n').filter((l) => l.trim() !== '');
    expect(lines.length).toBe(first.logs.length);
    for (const line of lines) {
      const parsed = JSON.parse(line) as LogLine;
      expect(parsed.event, line).toMatch(/^[a-z_]+(\.[a-z_]+)+$/);
    }
    const levels = new Set(first.logs.map((l) => l.level));
    for (const level of ['debug', 'info', 'warn', 'error']) expect(levels, level).toContain(level);

    // One video, followed by its ids: settled, then per target started → parts → completed, then ALO's report.
    const indexOf = (pred: (l: LogLine) => boolean, from = 0): number => {
      const i = first.logs.findIndex((l, j) => j >= from && pred(l));
      expect(i, 'the line is there').toBeGreaterThanOrEqual(0);
      return i;
    };
    const settled = indexOf((l) => isEvent(l, 'export.settled', { incidentId, videoId: v1 }));
    for (const target of TARGETS) {
      const ids = { incidentId, videoId: v1, target };
      const started = indexOf((l) => isEvent(l, 'upload.started', ids), settled);
      const uploadId = first.logs[started]!.uploadId;
      expect(uploadId, target).toBeDefined();
      const partLines = first.logs.filter((l) => isEvent(l, 'upload.part.done', { ...ids, uploadId }));
      const planned = first.logs[started]!.parts as number;
      expect(planned, target).toBeGreaterThanOrEqual(1);
      expect(
        partLines.map((l) => l.part as number).sort((a, b) => a - b),
        target,
      ).toEqual(Array.from({ length: planned }, (_, i) => i + 1));
      expect(partLines.every((l) => l.level === 'debug')).toBe(true);
      const lastPart = Math.max(...partLines.map((l) => first.logs.indexOf(l)));
      expect(lastPart, target).toBeGreaterThan(started);
      const done = indexOf((l) => isEvent(l, 'upload.completed', { ...ids, uploadId }), lastPart);
      if (target === 'alo') {
        indexOf((l) => isEvent(l, 'incident.reported', { incidentId, target }) && (l.uploadedVideoIds as string[]).includes(v1), done);
      }
    }
    // The failure lines carry the ids too.
    const failed = first.logs.find((l) => isEvent(l, 'upload.failed', { videoId: v2, target: 'alo' }))!;
    expect(failed).toMatchObject({ incidentId, uploadId: expect.any(Number) });
    // Every line about an upload names its incident, video and target; those of a running upload its number too.
    const about = first.logs.filter((l) => l.event?.startsWith('upload.'));
    expect(about.length).toBeGreaterThan(20);
    for (const line of about)
      expect(line, JSON.stringify(line)).toMatchObject({
        incidentId: expect.any(String),
        videoId: expect.any(String),
        target: expect.any(String),
      });
    for (const line of about.filter((l) => l.event === 'upload.retry' && String(l.what).startsWith('part ')))
      expect(line).toMatchObject({ part: expect.any(Number) });
    for (const line of about.filter((l) => !l.event!.startsWith('upload.abort'))) {
      expect(line, JSON.stringify(line)).toMatchObject({ incidentId: expect.any(String), uploadId: expect.any(Number) });
    }
  }, 60_000);
});
