/**
 * Network faults, for every platform, through the real daemon: its API traffic and its S3 traffic
 * each go through a TCP fault proxy (test/support/fault-proxy.ts). Presigned URLs are minted for
 * the S3 proxy's origin, so their signatures hold through it.
 *
 * What is asserted is what the operator gets: the SHA-256 of what the platform holds, the ledger's
 * rows, and the proxy's counters of the faults it really injected. Not log lines.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { describe, expect, it, type TestContext } from 'vitest';
import { startS3Store, type S3Store } from '../emulators/s3-store.js';
import { aionvisionFixture } from '../conformance/fixtures/aionvision.js';
import { aloFixture } from '../conformance/fixtures/alo.js';
import { truvideoFixture } from '../conformance/fixtures/truvideo.js';
import { valtFixture } from '../conformance/fixtures/valt.js';
import type { PlatformFixture, PlatformSite, ReceivedVideo, VideoRef } from '../conformance/platform-fixture.js';
import { waitFor, type DaemonProcess } from '../support/daemon-process.js';
import { FaultProxy, type ProxiedRequest, type RequestMatch } from '../support/fault-proxy.js';
import { MiB } from '../support/files.js';
import { harness } from '../support/harness.js';
import { ledgerRowsSoFar } from '../support/ledger.js';
import { exportVideos, type ExportedVideoRef } from '../support/manifest.js';
import { writeSiteConfig, type SiteFiles } from '../support/site.js';

const FIXTURES: PlatformFixture[] = [aloFixture, aionvisionFixture, truvideoFixture, valtFixture];

/** How long the platform (API and store) is unreachable in the outage test. */
/** 20 s in CI; `VMS_UPLINK_OUTAGE_SECONDS=300 npx vitest run test/e2e/network-faults.test.ts -t unreachable` for the long one. */
const OUTAGE_MS = Number(process.env.VMS_UPLINK_OUTAGE_SECONDS ?? 20) * 1000;
/** The per-part stall timeout the daemon runs with here (seconds). */
const STALL_TIMEOUT_S = 2;
/** The backoff cap (seconds). */
const RETRY_MAX_S = 1;
const CONCURRENCY = 2;
/** How much RSS and how many fds the daemon may gain while the platform is down. */
const RSS_GROWTH_KIB = 24 * 1024;
const FD_GROWTH = 8;

interface Site extends SiteFiles {
  fixture: PlatformFixture;
  platform: PlatformSite;
  store: S3Store;
  /** Between the daemon and the platform's API (one per origin the target config names; usually one). */
  api: FaultProxy[];
  /** Between the daemon and the S3 store (Valt never uses it). */
  s3: FaultProxy;
  /** The proxy the part bodies go through. */
  partsProxy: FaultProxy;
  /** Which requests carry part bodies. */
  partMatch: RequestMatch;
  daemon(): DaemonProcess;
}

/** Replaces every http(s) origin in the target block's strings by a proxy for it. */
async function proxied(value: unknown, proxyFor: (origin: string) => Promise<FaultProxy>): Promise<unknown> {
  if (typeof value === 'string' && /^https?:\/\//.test(value)) return (await proxyFor(new URL(value).origin)).rewrite(value);
  if (Array.isArray(value)) return Promise.all(value.map((v) => proxied(v, proxyFor)));
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = await proxied(v, proxyFor);
    return out;
  }
  return value;
}

async function site(
  ctx: TestContext,
  fixture: PlatformFixture,
  upload: Record<string, unknown> = {},
  target: Record<string, unknown> = {},
): Promise<Site> {
  const h = harness(ctx);
  const dir = await h.dir();
  const store = h.closeAtEnd(await startS3Store());
  const s3 = h.closeAtEnd(await FaultProxy.start(store.origin));
  store.setPublicOrigin(s3.origin);
  const platform = h.closeAtEnd(await fixture.start(store));
  const byOrigin = new Map<string, FaultProxy>();
  const targetConfig = (await proxied(platform.targetConfig, async (origin) => {
    let p = byOrigin.get(origin);
    if (!p) byOrigin.set(origin, (p = h.closeAtEnd(await FaultProxy.start(origin))));
    return p;
  })) as Record<string, unknown>;
  const api = [...byOrigin.values()];
  expect(api.length).toBeGreaterThan(0);
  const files = await writeSiteConfig(dir, {
    upload: { concurrency: CONCURRENCY, stall_timeout: STALL_TIMEOUT_S, retry_initial: 0.05, retry_max: RETRY_MAX_S, ...upload },
    targets: { [fixture.type]: { ...targetConfig, ...target } },
  });
  const valt = !fixture.limits.presignedUrls;
  return {
    ...files,
    fixture,
    platform,
    store,
    api,
    s3,
    partsProxy: valt ? api[0]! : s3,
    partMatch: valt ? { method: 'POST', path: /\/records\/[^/]+\/videos\// } : { method: 'PUT' },
    daemon: () => {
      const d = h.daemon(files);
      // A failure says what the daemon was retrying, and what the proxies saw.
      ctx.onTestFailed(() => {
        const retries = d.logs.filter((l) => l.level !== 'raw' && (l.event === 'upload.retry' || l.event === 'upload.failed')).slice(-15);
        console.error(`[${fixture.type}] last retries:\n${retries.map((l) => `${String(l['what'])}: ${String(l.msg)}`).join('\n')}`);
        console.error(`[${fixture.type}] parts proxy: ${JSON.stringify(valt ? api[0]!.counters : s3.counters)}`);
      });
      return d;
    },
  };
}

let counter = 0;
type Video = ExportedVideoRef;

function incident(s: Site, sizes: number[]): Promise<Video[]> {
  const n = ++counter;
  return exportVideos(
    s.exportsRoot,
    { id: `net-${process.pid}-${n}`, title: `Network faults ${n}` },
    sizes,
    (i) => `cam0${i + 1}_${n}.mp4`,
  );
}

function receivedIntact(s: Site, video: Video, timeoutMs = 60_000): Promise<ReceivedVideo> {
  return waitFor(
    async () => {
      const r = await s.platform.received(video);
      return r && r.sha256 === video.sha256 && r.size === video.size ? r : undefined;
    },
    timeoutMs,
    `${s.fixture.type}: ${video.incidentId}/${video.id} received intact`,
  );
}

interface PartRow {
  number: number;
  state: string;
  attempts: number;
}

function partsOf(s: Site, video: VideoRef): PartRow[] {
  return ledgerRowsSoFar<PartRow>(
    s.ledgerPath,
    `SELECT p.number, p.state, p.attempts FROM parts p JOIN uploads u ON u.id = p.upload_id
     WHERE u.incident_id = ? AND u.video_id = ? AND u.role = 'video' ORDER BY p.number`,
    video.incidentId,
    video.id,
  );
}

function uploadState(s: Site, video: VideoRef): string | undefined {
  return ledgerRowsSoFar<{ state: string }>(
    s.ledgerPath,
    `SELECT state FROM uploads WHERE incident_id = ? AND video_id = ? AND role = 'video'`,
    video.incidentId,
    video.id,
  )[0]?.state;
}

/** Once the platform holds it: the ledger says done, every part done, and returns the parts. */
async function delivered(s: Site, video: Video): Promise<PartRow[]> {
  await receivedIntact(s, video);
  await waitFor(() => uploadState(s, video) === 'done', 15_000, `${video.id} done in the ledger`);
  const parts = partsOf(s, video);
  expect(parts.length).toBeGreaterThan(0);
  expect(parts.every((p) => p.state === 'done')).toBe(true);
  return parts;
}

const retried = (parts: PartRow[]): number => parts.reduce((n, p) => n + p.attempts, 0);

/** The daemon's resident memory (KiB) and open file descriptors, from /proc. */
function usage(pid: number): { rssKiB: number; fds: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rssKiB = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1]);
  return { rssKiB, fds: readdirSync(`/proc/${pid}/fd`).length };
}

/** The time (ms since epoch) a presigned URL's signature stops being accepted, from its query. */
function urlExpiry(path: string): number | undefined {
  const date = /[?&]X-Amz-Date=(\d{8}T\d{6}Z)/.exec(path)?.[1];
  const expires = /[?&]X-Amz-Expires=(\d+)/.exec(path)?.[1];
  if (!date || !expires) return undefined;
  const iso = `${date.slice(0, 4)}-${date.slice(4, 6)}-${date.slice(6, 8)}T${date.slice(9, 11)}:${date.slice(11, 13)}:${date.slice(13, 15)}Z`;
  return Date.parse(iso) + Number(expires) * 1000;
}

/** What the daemon's fds point at, counted (`socket`, `anon_inode:[eventpoll]`, a file path…): says what leaked. */
function fdKinds(pid: number): string {
  const kinds = new Map<string, number>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target = '?';
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`).replace(/:\[\d+\]$/, '');
    } catch {
      // closed meanwhile
    }
    kinds.set(target, (kinds.get(target) ?? 0) + 1);
  }
  return [...kinds].map(([k, n]) => `${n}× ${k}`).join(', ');
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe.each(FIXTURES)('$type through a faulty network', (fixture) => {
  it('retries a part whose connection is reset mid-body; the object is byte-identical', async (ctx) => {
    const s = await site(ctx, fixture);
    // Two resets, 1 MiB into the bodies of the first two parts that go out.
    s.partsProxy.resetNext(2, 1 * MiB, s.partMatch);
    const [video] = await incident(s, [12 * MiB + 321]);
    s.daemon();
    const parts = await delivered(s, video!);
    expect(s.partsProxy.counters.resets).toBe(2);
    expect(s.partsProxy.pendingFaults).toBe(0);
    // Both cut requests really were cut: their body never reached the end.
    const cut = s.partsProxy.requests.filter((r) => r.fault === 'reset');
    expect(cut).toHaveLength(2);
    for (const r of cut) expect(r.sentAt).toBeUndefined();
    expect(retried(parts)).toBeGreaterThanOrEqual(2);
  });

  it(`aborts a stalled part after upload.stall_timeout (${STALL_TIMEOUT_S} s) and sends it again`, async (ctx) => {
    const s = await site(ctx, fixture);
    s.partsProxy.stallNext(1, s.partMatch);
    const [video] = await incident(s, [11 * MiB + 5]);
    s.daemon();
    const parts = await delivered(s, video!);
    expect(s.partsProxy.counters.stalls).toBe(1);
    const stalled = s.partsProxy.requests.find((r) => r.fault === 'stall')!;
    // The daemon gave up on it (closed the connection) after the part timeout, not the
    // request timeout (30 s) and not never.
    expect(stalled.closedAt).toBeDefined();
    const heldMs = stalled.closedAt! - stalled.at;
    expect(heldMs).toBeGreaterThanOrEqual(STALL_TIMEOUT_S * 1000 - 200);
    expect(heldMs).toBeLessThan(STALL_TIMEOUT_S * 1000 + 6_000);
    expect(retried(parts)).toBeGreaterThanOrEqual(1);
  });

  it(
    'bounds every API call by request_timeout, and a part only by stall_timeout: a slow part completes, a stalled one is cut',
    { timeout: 120_000 },
    async (ctx) => {
      const REQUEST_TIMEOUT_S = 1;
      const STALL_S = 6;
      // One part at a time, so each part's time on the wire is its own.
      const s = await site(ctx, fixture, { concurrency: 1, stall_timeout: STALL_S }, { request_timeout: REQUEST_TIMEOUT_S });
      // Every distinct API request (method and path) hangs the first time it is sent: the platform accepts it and never answers.
      const valt = !fixture.limits.presignedUrls;
      for (const p of s.api) p.stallFirstOfEach({}, valt ? s.partMatch : undefined);
      // Parts go through a 2 MiB/s link (a 5 MiB part takes ~2.5 s, longer than request_timeout), and the first one stalls.
      s.partsProxy.setBandwidth(2 * MiB);
      s.partsProxy.stallNext(1, s.partMatch);
      const [video] = await incident(s, [11 * MiB + 5]);
      const d = s.daemon();
      await delivered(s, video!);

      const isPart = (r: ProxiedRequest): boolean =>
        r.method === s.partMatch.method && (s.partMatch.path === undefined || (s.partMatch.path as RegExp).test(r.path));
      const apiRequests = s.api.flatMap((p) => p.requests).filter((r) => !isPart(r));
      const hung = apiRequests.filter((r) => r.fault === 'stall');
      const key = (r: ProxiedRequest): string => `${r.method} ${r.path}`;
      // Every kind of API call the platform got was hung once: creating, URLs or chunks, completing, logging in, reporting…
      expect(hung.length).toBeGreaterThanOrEqual(2);
      expect(new Set(hung.map(key))).toEqual(new Set(apiRequests.map(key)));
      // The daemon's own account of each: the call met its request_timeout (the client's timer).
      const timedOut = d.logs
        .map((l) => String(l.msg ?? ''))
        .filter((m) => m.includes(`ETIMEDOUT no complete answer within ${REQUEST_TIMEOUT_S * 1000} ms`));
      for (const r of hung) {
        expect(
          timedOut.some((m) => m.includes(`${r.method} http`) && m.includes(r.path.split('?')[0]!)),
          `${key(r)} logged as cut by request_timeout, among: ${timedOut.join(' | ')}`,
        ).toBe(true);
        // Given up (the client closed it) within about request_timeout as the proxy saw it: the timer
        // started before the request reached the proxy, so never later than that plus a loaded
        // machine's delay, and far below the stall timeout…
        expect(r.closedAt, key(r)).toBeDefined();
        const heldMs = r.closedAt! - r.at;
        expect(heldMs, key(r)).toBeLessThan(REQUEST_TIMEOUT_S * 1000 + 2_500);
        // …as retryable: the same request was sent again, and went through.
        expect(
          apiRequests.some((again) => again !== r && key(again) === key(r) && again.at > r.at && again.fault === undefined),
          key(r),
        ).toBe(true);
      }

      const parts = s.partsProxy.requests.filter(isPart);
      const stalled = parts.filter((r) => r.fault === 'stall');
      expect(stalled).toHaveLength(1);
      // The stalled part was cut after stall_timeout, not after request_timeout.
      expect(stalled[0]!.closedAt).toBeDefined();
      const stalledMs = stalled[0]!.closedAt! - stalled[0]!.at;
      expect(stalledMs).toBeGreaterThanOrEqual(STALL_S * 1000 - 200);
      expect(stalledMs).toBeLessThan(STALL_S * 1000 + 6_000);
      // Parts that took more than twice request_timeout on the wire went through, none of them cut.
      const slow = parts.filter((r) => r.fault === undefined && r.sentAt !== undefined && r.sentAt - r.at > 2 * REQUEST_TIMEOUT_S * 1000);
      expect(slow.length).toBeGreaterThanOrEqual(1);
      expect(parts.filter((r) => r.fault === undefined && r.sentAt === undefined)).toEqual([]);
      console.info(
        `[network-faults] ${fixture.type}: ${hung.length} API calls hung once and cut after ${hung.map((r) => r.closedAt! - r.at).join(', ')} ms (${[...new Set(hung.map((r) => `${r.method} ${r.path.split('?')[0]!.replace(/[0-9a-f-]{16,}/g, '…')}`))].join('; ')}); stalled part cut after ${stalledMs} ms; slowest part ${Math.max(...slow.map((r) => r.sentAt! - r.at))} ms`,
      );
    },
  );

  it('aborts a part whose connection stops taking bytes (zero window) and sends it again', async (ctx) => {
    const s = await site(ctx, fixture);
    s.partsProxy.stallNext(1, s.partMatch, { read: false });
    const [video] = await incident(s, [11 * MiB + 5]);
    s.daemon();
    const parts = await delivered(s, video!);
    expect(s.partsProxy.counters.stalls).toBe(1);
    expect(s.partsProxy.requests.find((r) => r.fault === 'stall')!.sentAt).toBeUndefined();
    expect(retried(parts)).toBeGreaterThanOrEqual(1);
  });

  it('rides out 503 and 429 storms on the parts and on the API', async (ctx) => {
    const s = await site(ctx, fixture);
    // The platform itself refuses three parts with 503 (S3 SlowDown, Valt 503)…
    s.platform.failNextParts(3);
    // …the edge throttles four more part requests with 429…
    const s3Body =
      '<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>';
    s.partsProxy.respondNext(
      4,
      429,
      s.fixture.limits.presignedUrls ? { match: s.partMatch, body: s3Body, contentType: 'application/xml' } : { match: s.partMatch },
    );
    // …and the first four API calls (login, start, URLs…) are answered 503 / 429.
    s.api[0]!.respondNext(2, 503, { match: { method: 'POST' } });
    s.api[0]!.respondNext(2, 429, { headers: { 'retry-after': '0' } });
    const [video] = await incident(s, [12 * MiB + 77]);
    s.daemon();
    const parts = await delivered(s, video!);
    expect(s.partsProxy.pendingFaults).toBe(0);
    expect(s.api.reduce((n, p) => n + p.pendingFaults, 0)).toBe(0);
    expect(s.partsProxy.counters.injectedResponses).toBeGreaterThanOrEqual(4);
    expect(s.api.reduce((n, p) => n + p.counters.injectedResponses, 0)).toBeGreaterThanOrEqual(4);
    // Seven refused part requests, each counted on its part.
    expect(retried(parts)).toBeGreaterThanOrEqual(7);
  });

  it('carries on when presigned URLs expire mid-part (a slow uplink)', async (ctx) => {
    // The stall timeout stays above the time the socket buffers (several MiB on loopback) take to
    // drain at the capped rate: the daemon only sees bytes leave the file, not the wire (see the
    // stall test for the timeout itself).
    const s = await site(ctx, fixture, { stall_timeout: 15 });
    s.platform.setUrlExpiry(2);
    // 2 MiB/s shared by two parts in flight: a 5 MiB part takes ~5 s, longer than a URL lives.
    s.partsProxy.setBandwidth(2 * MiB);
    const [video] = await incident(s, [11 * MiB + 9]);
    s.daemon();
    await delivered(s, video!);
    const bodies = s.partsProxy.requests.filter((r) => r.bodyBytes >= 1 * MiB && r.sentAt !== undefined);
    expect(bodies.reduce((n, r) => n + r.bodyBytes, 0)).toBeGreaterThanOrEqual(video!.size);
    // Some parts took longer than a URL's life: the cap really made the upload that slow.
    const longest = Math.max(...bodies.map((r) => r.sentAt! - r.at));
    expect(longest).toBeGreaterThan(2_000);
    if (fixture.limits.presignedUrls) {
      // And a part was still going out after its URL had expired, and S3 kept it (the signature is
      // checked when the request starts): the object above is complete and intact.
      const outlived = bodies.filter((r) => r.sentAt! > (urlExpiry(r.path) ?? Infinity));
      expect(outlived.length).toBeGreaterThan(0);
    } else {
      // Valt has no presigned URLs (the documented alternative): chunks go to the API with the
      // login token, and the slow uplink only makes them slow.
      expect(bodies.every((r) => urlExpiry(r.path) === undefined)).toBe(true);
    }
  });
});

describe.concurrent('the platform unreachable for a while', () => {
  it.for(FIXTURES)(
    `$type: backs off (capped), keeps watching, stays flat, and completes once it returns (${OUTAGE_MS / 1000} s outage)`,
    { timeout: OUTAGE_MS + 100_000 },
    async (fixture, ctx) => {
      // Not about stalls: a stall timeout that four daemons and their platforms, all at work at once
      // on a loaded machine, do not run into before the outage (2 s did, part after part).
      const s = await site(ctx, fixture, { stall_timeout: 10 });
      s.platform.setLatency(150);
      const [before] = await incident(s, [16 * MiB + 3]);
      const daemon = s.daemon();
      await waitFor(() => partsOf(s, before!).some((p) => p.state === 'done'), 45_000, 'a part acknowledged');

      // Down: the API refuses every connection (accept and reset), the store's port is closed.
      await Promise.all([...s.api.map((p) => p.refuse('reset')), s.s3.refuse('listener')]);
      const downAt = Date.now();
      s.platform.setLatency(0);
      const samples: Array<{ at: number; rssKiB: number; fds: number }> = [];
      const sampler = setInterval(() => samples.push({ at: Date.now() - downAt, ...usage(daemon.pid) }), 250);
      try {
        await sleep(OUTAGE_MS * 0.2);
        // A new incident exported while the platform is down is still picked up.
        const [during] = await incident(s, [6 * MiB + 11]);
        await waitFor(
          () => partsOf(s, during!).length > 0 || uploadState(s, during!) !== undefined,
          OUTAGE_MS * 0.5,
          'the new incident planned while down',
        );
        const plannedAt = Date.now() - downAt;
        await sleep(Math.max(0, downAt + OUTAGE_MS - Date.now()));
        clearInterval(sampler);
        expect(uploadState(s, before!)).toBe('queued');
        expect(uploadState(s, during!)).toBe('queued');

        // Capped backoff: in the last half of the outage the daemon still tries (the interval
        // stopped growing at retry_max) but never hammers (a handful of retry loops, each at
        // most one attempt per retry_initial/2, on average one per retry_max/2).
        const lateFrom = downAt + OUTAGE_MS / 2;
        const late = s.api.reduce((n, p) => n + p.refusedAt.filter((t) => t >= lateFrom).length, 0);
        const lateSeconds = OUTAGE_MS / 2000;
        expect(late).toBeGreaterThanOrEqual(Math.floor(lateSeconds / RETRY_MAX_S / 2));
        expect(late).toBeLessThanOrEqual(8 * lateSeconds * (2 / RETRY_MAX_S));

        // Flat: RSS and fds in the last third of the outage against the 2.5 s after the new incident
        // was planned (its reading and planning are then in both). RSS by its floor in each window:
        // what the daemon keeps, where a leak shows; its peaks move with when V8 collects.
        const tailFrom = (OUTAGE_MS * 2) / 3;
        expect(plannedAt + 3_000, 'the new incident planned well before the last third of the outage').toBeLessThan(tailFrom);
        const base = samples.filter((x) => x.at >= plannedAt + 500 && x.at <= plannedAt + 3_000);
        const tail = samples.filter((x) => x.at >= tailFrom);
        expect(base.length).toBeGreaterThan(3);
        expect(tail.length).toBeGreaterThan(3);
        const baseRss = Math.min(...base.map((x) => x.rssKiB));
        const baseFds = Math.max(...base.map((x) => x.fds));
        const tailRss = Math.min(...tail.map((x) => x.rssKiB));
        const tailFds = Math.max(...tail.map((x) => x.fds));
        expect(tailRss - baseRss).toBeLessThanOrEqual(RSS_GROWTH_KIB);
        expect(tailFds - baseFds, `fds at the end of the outage: ${fdKinds(daemon.pid)}`).toBeLessThanOrEqual(FD_GROWTH);

        // Back: everything completes, promptly.
        const backAt = Date.now();
        await Promise.all([...s.api.map((p) => p.restore()), s.s3.restore()]);
        await delivered(s, before!);
        await delivered(s, during!);
        const recoveredMs = Date.now() - backAt;
        expect(recoveredMs).toBeLessThan(30_000);
        const after = usage(daemon.pid);
        console.info(
          `[network-faults] ${fixture.type}: outage ${OUTAGE_MS / 1000} s, ${s.api.reduce((n, p) => n + p.refusedAt.length, 0)} refused API connections, ` +
            `recovered in ${(recoveredMs / 1000).toFixed(1)} s; RSS floor ${Math.round(baseRss / 1024)} → ${Math.round(tailRss / 1024)} MiB during the outage ` +
            `(${Math.round(after.rssKiB / 1024)} MiB after), fds ${baseFds} → ${tailFds} (${after.fds} after)`,
        );
      } finally {
        clearInterval(sampler);
      }
    },
  );
});
