/**
 * The conformance suite: the same scenarios, through the real daemon, against every platform's
 * emulator. A platform is done when it passes this suite: test/conformance/<platform>.test.ts runs
 * it against the fixture in test/conformance/fixtures/<platform>.ts (one file each, so that vitest
 * runs the platforms side by side). Where a platform cannot do something (its fixture's `limits`),
 * the scenario asserts the alternative that holds for it instead.
 */
import { createHash, randomBytes } from 'node:crypto';
import { appendFile, copyFile, mkdir, open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it, type TestContext } from 'vitest';
import { startS3Store, type S3RequestRecord, type S3Store } from '../emulators/s3-store.js';
import { runCli, USER_AGENT, waitFor, type DaemonProcess } from '../support/daemon-process.js';
import { MiB, sha256File } from '../support/files.js';
import { harness } from '../support/harness.js';
import { ledgerRows, ledgerRowsSoFar } from '../support/ledger.js';
import { exportVideos, incidentManifest, writeManifest, type ExportedVideoRef } from '../support/manifest.js';
import { writeSiteConfig, type SiteFiles } from '../support/site.js';
import type { PlatformFixture, PlatformSite, ReceivedVideo, VideoRef } from './platform-fixture.js';

const CONCURRENCY = 2;

interface Site extends SiteFiles {
  platform: PlatformSite;
  /** The S3 store every platform with presigned URLs hands them out for. */
  store: S3Store;
  daemon(): DaemonProcess;
}

/** A platform, its store, an export folder and a daemon config; torn down when the test ends. */
async function site(ctx: TestContext, fixture: PlatformFixture, upload: Record<string, unknown> = {}): Promise<Site> {
  const h = harness(ctx);
  const dir = await h.dir();
  const store = h.closeAtEnd(await startS3Store());
  const platform = h.closeAtEnd(await fixture.start(store));
  const files = await writeSiteConfig(dir, {
    upload: { concurrency: CONCURRENCY, ...upload },
    targets: { [fixture.type]: platform.targetConfig },
  });
  return { ...files, platform, store, daemon: () => h.daemon(files) };
}

let counter = 0;

/** Writes an incident of fresh videos (sizes in bytes) and returns them as the platform should see them. */
function incident(s: Site, sizes: number[]): Promise<ExportedVideoRef[]> {
  const n = ++counter;
  return exportVideos(s.exportsRoot, { id: `conf-${process.pid}-${n}`, title: `Conformance ${n}` }, sizes, (i) => `cam0${i + 1}_${n}.mp4`);
}

/**
 * Another incident whose videos are byte-identical copies of `of` (the same camera and period
 * exported twice), under file names of its own.
 */
async function sameVideosAs(s: Site, of: ExportedVideoRef[]): Promise<ExportedVideoRef[]> {
  const n = ++counter;
  const id = `conf-${process.pid}-${n}`;
  const folder = join(s.exportsRoot, id);
  await mkdir(folder, { recursive: true });
  const videos = of.map((v, i) => ({
    ...v,
    id: `${id}-v${i + 1}`,
    incidentId: id,
    incidentTitle: `Conformance ${n}`,
    file: `cam0${i + 1}_${n}.mp4`,
  }));
  for (const [i, v] of videos.entries()) await copyFile(join(s.exportsRoot, of[i]!.incidentId, of[i]!.file), join(folder, v.file));
  await writeManifest(
    folder,
    incidentManifest(
      id,
      videos.map((v) => ({ id: v.id, file: v.file })),
      `Conformance ${n}`,
    ),
  );
  return videos;
}

/** The exporter goes on writing `bytes` more to the video's file; returns it as it is now. */
async function exporterGoesOn(s: Site, video: ExportedVideoRef, bytes: number): Promise<ExportedVideoRef> {
  const path = join(s.exportsRoot, video.incidentId, video.file);
  await appendFile(path, randomBytes(bytes));
  return { ...video, size: video.size + bytes, sha256: await sha256File(path) };
}

interface StatusJson {
  pendingAborts: number;
  incidents: Array<{
    id: string;
    reports: Array<{ state: string }>;
    videos: Array<{ id: string; state: string; changedAfterUpload: number; uploads: Array<UploadRow & { role: string }> }>;
  }>;
}

async function status(s: Site): Promise<StatusJson> {
  return JSON.parse((await runCli(['status', '--json', '--config', s.configPath])).stdout) as StatusJson;
}

interface SettledVideo {
  id: string;
  changedAfterUpload: number;
}

/** Once the daemon has nothing left to do for the incidents: the videos of each as `status --json` shows them. */
async function settledIncidents(s: Site, incidentIds: string[]): Promise<SettledVideo[][]> {
  // Each `status` is a process of its own, about a second of CPU: wait on the ledger, cheap to read,
  // until it says the same, then ask `status` what the operator sees.
  for (const id of incidentIds) {
    await waitFor(
      () =>
        ledgerRowsSoFar<{ busy: number }>(
          s.ledgerPath,
          `SELECT (SELECT COUNT(*) FROM videos WHERE incident_id = @id AND state != 'ready')
                + (SELECT COUNT(*) FROM uploads WHERE incident_id = @id AND state != 'done')
                + (SELECT COUNT(*) FROM reports WHERE incident_id = @id AND acked < wanted) AS busy`,
          { id },
        )[0]?.busy === 0,
      30_000,
      `incident ${id} settled in the ledger`,
    );
  }
  return waitFor(
    async () => {
      const { incidents } = await status(s);
      const settled = incidentIds.map((id) => incidents.find((i) => i.id === id));
      const busy = settled.some(
        (incident) =>
          !incident ||
          incident.reports.some((r) => r.state !== 'acknowledged') ||
          incident.videos.some((v) => v.state !== 'ready' || v.uploads.some((u) => u.state !== 'done')),
      );
      return busy ? undefined : settled.map((incident) => incident!.videos);
    },
    30_000,
    `incidents ${incidentIds.join(', ')} settled`,
  );
}

function receivedIntact(s: Site, video: VideoRef & { sha256: string }, timeoutMs = 45_000): Promise<ReceivedVideo> {
  return waitFor(
    async () => {
      const r = await s.platform.received(video);
      return r && r.sha256 === video.sha256 && r.size === video.size ? r : undefined;
    },
    timeoutMs,
    `${video.id} received intact`,
  );
}

/**
 * What the platform ended with once the daemon settled the upload: its copy, or the upload as the
 * ledger failed it. Lets a test that expects the copy fail at once, saying what went wrong.
 */
function delivery(s: Site, video: VideoRef, timeoutMs = 45_000): Promise<ReceivedVideo | { failed: string | null }> {
  return waitFor(
    async () => {
      const received = await s.platform.received(video);
      if (received) return received;
      const upload = uploadRow(s, video);
      return upload?.state === 'failed' ? { failed: upload.last_error } : undefined;
    },
    timeoutMs,
    `${video.id} delivered or failed`,
  );
}

/** The video's upload as the ledger holds it (read directly: cheap enough to poll). */
function uploadRow(s: Site, video: VideoRef): { state: string; last_error: string | null; session: string | null } | undefined {
  return ledgerRowsSoFar<{ state: string; last_error: string | null; session: string | null }>(
    s.ledgerPath,
    `SELECT state, last_error, session FROM uploads WHERE incident_id = ? AND video_id = ? AND role = 'video'`,
    video.incidentId,
    video.id,
  )[0];
}

interface PartRow {
  number: number;
  offset: number;
  size: number;
  state: string;
  md5: string | null;
  etag: string | null;
  attempts: number;
}

function partsOf(s: Site, video: VideoRef): PartRow[] {
  return ledgerRowsSoFar(
    s.ledgerPath,
    `SELECT p.number, p.offset, p.size, p.state, p.md5, p.etag, p.attempts FROM parts p JOIN uploads u ON u.id = p.upload_id
     WHERE u.incident_id = ? AND u.video_id = ? AND u.role = 'video' ORDER BY p.number`,
    video.incidentId,
    video.id,
  );
}

interface UploadRow {
  state: string;
  lastError: string | null;
}

async function uploadStatus(s: Site, video: VideoRef): Promise<UploadRow | undefined> {
  return (await status(s)).incidents
    .find((i) => i.id === video.incidentId)
    ?.videos.find((v) => v.id === video.id)
    ?.uploads.find((u) => u.role === 'video');
}

const total = (counts: Map<number, number>): number => [...counts.values()].reduce((a, b) => a + b, 0);

/** Parts the daemon may have had in flight at once for one upload. */
const inFlight = (fixture: PlatformFixture): number => (fixture.limits.sequentialParts ? 1 : CONCURRENCY);

const signatureOf = (url: string): string | undefined => /[?&]X-Amz-Signature=([0-9a-f]{64})/.exec(url)?.[1];

/** When a presigned URL stops being accepted: X-Amz-Date + X-Amz-Expires. */
function expiryOf(url: string): number {
  const date = /[?&]X-Amz-Date=(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z/.exec(url);
  const expires = /[?&]X-Amz-Expires=(\d+)/.exec(url)?.[1];
  if (!date || !expires) throw new Error(`not a presigned URL: ${url}`);
  const [, y, mo, d, h, mi, sec] = date;
  return Date.parse(`${y}-${mo}-${d}T${h}:${mi}:${sec}Z`) + Number(expires) * 1000;
}

/** The PUTs that reached the store on a URL the platform handed out for the video, in arrival order. */
function putsOf(s: Site, video: VideoRef): S3RequestRecord[] {
  const ours = new Set(s.platform.urlsHandedOut(video).map((u) => signatureOf(u.url)));
  return s.store.requests.filter((r) => r.method === 'PUT' && ours.has(signatureOf(r.url))).sort((a, b) => a.at - b.at);
}

/** MD5 of the bytes of the video's file that a part covers. */
async function md5Of(s: Site, video: VideoRef, part: { offset: number; size: number }): Promise<string> {
  const file = await open(join(s.exportsRoot, video.incidentId, video.file));
  try {
    const bytes = Buffer.alloc(part.size);
    await file.read(bytes, 0, part.size, part.offset);
    return createHash('md5').update(bytes).digest('hex');
  } finally {
    await file.close();
  }
}

/**
 * No platform credential ever reached S3: no request the store recorded carries an Authorization
 * header, nor any credential or token of the platform anywhere in its headers or URL. A platform
 * that takes the bytes itself (Valt) sends S3 nothing at all.
 */
function expectNoCredentialReachedS3(s: Site, fixture: PlatformFixture): void {
  if (!fixture.limits.presignedUrls) {
    expect(s.store.requests).toEqual([]);
    return;
  }
  const credentials = s.platform.credentials();
  expect(credentials.length).toBeGreaterThan(0);
  expect(s.store.requests.length).toBeGreaterThan(0);
  const leaks: string[] = [];
  for (const r of s.store.requests) {
    if (r.headers['authorization'] !== undefined) leaks.push(`${r.method} ${r.key}: Authorization header`);
    const seen = [r.url, decodeURIComponent(r.url), ...Object.entries(r.headers).map(([name, value]) => `${name}: ${value}`)];
    for (const credential of credentials) {
      if (seen.some((text) => text.includes(credential))) leaks.push(`${r.method} ${r.key}: carries ${credential.slice(0, 6)}…`);
    }
  }
  expect(leaks).toEqual([]);
}

/** Two-step platforms (Aionvision): every part was confirmed exactly once. */
function expectEachPartConfirmedOnce(s: Site, video: VideoRef): void {
  const confirmations = s.platform.confirmations?.(video);
  if (!confirmations) return;
  const parts = partsOf(s, video).map((p) => p.number);
  expect([...confirmations].sort(([a], [b]) => a - b)).toEqual(parts.map((n) => [n, 1]));
}

/** The ledger (its file and its write-ahead log) holds none of the platform's credentials. */
async function expectNoCredentialInLedger(s: Site): Promise<void> {
  const bytes = Buffer.concat([await readFile(s.ledgerPath), await readFile(`${s.ledgerPath}-wal`).catch(() => Buffer.alloc(0))]);
  const text = bytes.toString('latin1');
  const credentials = s.platform.credentials();
  expect(credentials.length).toBeGreaterThan(0);
  expect(credentials.filter((c) => text.includes(c)).map((c) => `${c.slice(0, 6)}…`)).toEqual([]);
}

/**
 * After a SIGKILL: the daemon started again, the platform answering at once, until the video is on
 * the platform, completed once in the remote upload the first daemon opened. Returns when it restarted.
 */
async function restartUntilDelivered(s: Site, video: VideoRef & { sha256: string }): Promise<number> {
  s.platform.setLatency(0);
  const restartedAt = Date.now();
  s.daemon();
  await receivedIntact(s, video);
  expect(s.platform.completions(video)).toBe(1);
  expect(s.platform.uploadsOpened(video)).toBe(1);
  return restartedAt;
}

/** Every scenario, against one platform. */
export function conformanceSuite(fixture: PlatformFixture): void {
  const { limits } = fixture;

  describe(`${fixture.type} conforms`, () => {
    it('delivers every video byte-identical, with the metadata the platform expects', async (ctx) => {
      const s = await site(ctx, fixture);
      const videos = await incident(s, [12 * MiB + 1234, 1 * MiB + 7]);
      s.daemon();
      for (const v of videos) expect((await receivedIntact(s, v)).metadata).toMatchObject(fixture.expectedMetadata(v));

      // Every request said which version sent it: API calls, logins, and the parts PUT to presigned
      // URLs (which S3, and the store, accept with that header unsigned).
      expect(s.platform.arrivals.length).toBeGreaterThan(0);
      expect(s.platform.arrivals.filter((a) => a.userAgent !== USER_AGENT)).toEqual([]);
      const puts = s.store.requests.filter((r) => r.method === 'PUT' && r.status === 200);
      expect(puts.length > 0).toBe(fixture.limits.presignedUrls);
      expect(s.store.requests.filter((r) => r.headers['user-agent'] !== USER_AGENT).map((r) => [r.method, r.key, r.headers])).toEqual([]);
      expectNoCredentialReachedS3(s, fixture);
    });

    it('resumes after SIGKILL at the first unfinished part, in the same remote upload, re-sending at most the parts in flight', async (ctx) => {
      const s = await site(ctx, fixture);
      s.platform.setLatency(300);
      const [video] = await incident(s, [32 * MiB + 5]);
      const first = s.daemon();
      await waitFor(() => partsOf(s, video!).filter((p) => p.state === 'done').length >= 1, 45_000, 'a part acknowledged');
      first.kill('SIGKILL');
      await first.exited;
      expect(ledgerRows<{ integrity_check: string }>(s.ledgerPath, 'PRAGMA integrity_check')).toEqual([{ integrity_check: 'ok' }]);
      // What the next start resumes from holds no credential: a token is fetched again, never reused.
      await expectNoCredentialInLedger(s);
      const parts = partsOf(s, video!);
      const doneBefore = parts.filter((p) => p.state === 'done').map((p) => p.number);
      expect(doneBefore.length).toBeLessThan(parts.length);

      const restartedAt = await restartUntilDelivered(s, video!);
      const accepted = s.platform.acceptedParts(video!);
      for (const n of doneBefore) expect(accepted.get(n), `part ${n} acknowledged before the kill`).toBe(1);
      expect(total(accepted) - parts.length).toBeLessThanOrEqual(inFlight(fixture));
      expectEachPartConfirmedOnce(s, video!);
      if (limits.presignedUrls) {
        // URLs live in memory only: after the restart every part went out on a URL handed out after it.
        const handed = s.platform.urlsHandedOut(video!);
        const fresh = new Set(handed.filter((u) => u.at >= restartedAt).map((u) => signatureOf(u.url)));
        const afterRestart = putsOf(s, video!).filter((r) => r.at >= restartedAt);
        expect(afterRestart.length).toBeGreaterThan(0);
        for (const put of afterRestart) expect(fresh.has(signatureOf(put.url)), `part ${put.partNumber} on a fresh URL`).toBe(true);
      }
      expectNoCredentialReachedS3(s, fixture);
    });

    it('after SIGKILL, does not send again a part the platform kept whose answer the kill cut off, where the platform tells', async (ctx) => {
      const s = await site(ctx, fixture);
      // The other parts are answered slowly: the kill leaves some of them to send after the restart.
      s.platform.setLatency(1000);
      s.platform.holdNextPartAnswer();
      const [video] = await incident(s, [21 * MiB + 5]);
      const first = s.daemon();
      const held = await waitFor(() => s.platform.heldPart(video!), 45_000, 'a part kept, its answer held');
      first.kill('SIGKILL');
      await first.exited;
      // Only the platform knows it has that part: the ledger never heard, though it holds the session.
      expect(uploadRow(s, video!)?.session).toEqual(expect.any(String));
      const atKill = partsOf(s, video!);
      expect(atKill.find((p) => p.number === held)?.state).toBe('pending');
      const pendingAtKill = atKill.filter((p) => p.state === 'pending' && p.number !== held).map((p) => p.number);
      expect(pendingAtKill.length).toBeGreaterThan(0);

      const restartedAt = await restartUntilDelivered(s, video!);
      if (limits.tellsHeldParts) {
        // Asked after the restart, the platform said it holds the part: it was not sent again.
        expect(s.platform.acceptedParts(video!).get(held)).toBe(1);
      } else {
        // The platform cannot say what it holds (documented): the part is sent again once, and the
        // platform ends with it once (S3 replaces a part; Valt acknowledges an exact repeat of its last chunk).
        expect(s.platform.acceptedParts(video!).get(held)).toBe(2);
      }
      expectEachPartConfirmedOnce(s, video!);
      if (limits.presignedUrls) {
        const partsGivenUrls = [
          ...new Set(
            s.platform
              .urlsHandedOut(video!)
              .filter((u) => u.at >= restartedAt)
              .map((u) => u.part),
          ),
        ];
        if (limits.urlsForAllParts) {
          // One call hands out every part's URL (ALO): the parts still to send got theirs among them.
          for (const n of pendingAtKill) expect(partsGivenUrls, `a URL for part ${n}`).toContain(n);
        } else {
          // URLs were asked for only for parts that still had to be sent, never for the held one.
          for (const n of partsGivenUrls) expect(pendingAtKill, `part ${n} needed a URL`).toContain(n);
        }
      }
      expectNoCredentialReachedS3(s, fixture);
    });

    it('carries on when what authorises a part expires mid-upload, and when S3 refuses a URL', async (ctx) => {
      // One part at a time, each answered after 1 s: the upload outlives the 2 s the URLs (or tokens) live.
      const s = await site(ctx, fixture, { concurrency: 1 });
      s.platform.setLatency(1000);
      const [video] = await incident(s, [21 * MiB]);
      if (limits.presignedUrls) {
        s.platform.setUrlExpiry(2);
        s.store.injectFaults({ kind: 'status', status: 403, code: 'AccessDenied', partNumber: 2 });
      } else {
        s.platform.setTokenExpiry!(2);
      }
      s.daemon();
      await receivedIntact(s, video!);
      expect(s.platform.uploadsOpened(video!)).toBe(1);
      const parts = partsOf(s, video!);
      if (limits.presignedUrls) {
        const handed = s.platform.urlsHandedOut(video!);
        const puts = putsOf(s, video!);
        const accepted = puts.filter((r) => r.status === 200);
        // The upload outlived the first URLs it was given…
        expect(Math.max(...accepted.map((r) => r.at))).toBeGreaterThan(expiryOf(handed[0]!.url));
        // …so fresh ones were handed out, before any expired: S3 never refused one as expired.
        expect(handed.length).toBeGreaterThan(parts.length);
        expect(s.platform.expiredRefusals(video!)).toBe(0);
        // The URL S3 refused was replaced by one handed out after the refusal, and the part went through on it.
        const refused = puts.find((r) => r.status === 403 && r.partNumber === 2);
        expect(refused).toBeDefined();
        const replacements = new Set(handed.filter((u) => u.part === 2 && u.at >= refused!.at).map((u) => signatureOf(u.url)));
        expect(accepted.filter((r) => r.partNumber === 2 && replacements.has(signatureOf(r.url)))).toHaveLength(1);
      } else {
        // No URLs (Valt): the login token rides on every chunk. Chunks met the expired token, the
        // daemon logged in again and went on in the same record, and a refused chunk was not kept.
        expect(s.platform.expiredRefusals(video!)).toBeGreaterThanOrEqual(1);
        const [, ...issuedTokens] = s.platform.credentials();
        expect(issuedTokens.length).toBeGreaterThanOrEqual(2);
        expect([...s.platform.acceptedParts(video!).values()]).toEqual(parts.map(() => 1));
      }
      // Nor did a token issued on the way reach the ledger.
      await expectNoCredentialInLedger(s);
      expectNoCredentialReachedS3(s, fixture);
    });

    it('rides out 503s and connection resets', async (ctx) => {
      const s = await site(ctx, fixture);
      s.platform.failNextParts(2);
      s.platform.resetNextParts(1);
      const [video] = await incident(s, [12 * MiB + 3]);
      s.daemon();
      await receivedIntact(s, video!);
      await waitFor(() => uploadRow(s, video!)?.state === 'done', 15_000, 'the upload done in the ledger');
      // The faults were met: each cost the part it hit one attempt, and the part went through after it.
      const parts = partsOf(s, video!);
      expect(parts.every((p) => p.state === 'done')).toBe(true);
      expect(parts.reduce((n, p) => n + p.attempts, 0)).toBe(3);
      expectNoCredentialReachedS3(s, fixture);
    });

    it('sends a part again whose answer cannot be trusted, and completes only the bytes of the file', async (ctx) => {
      const s = await site(ctx, fixture);
      const [video] = await incident(s, [12 * MiB + 3]);
      /** Failed attempts the faults below cost each part, and the copies of it the platform then kept. */
      let failures: Record<number, number>;
      let kept: Record<number, number>;
      if (limits.etags) {
        // Part 1 arrives corrupt, and its second copy is answered with an ETag that is not its MD5;
        // part 2 arrives corrupt. Each answer differs from the MD5 of what was sent; S3 kept every copy.
        s.store.injectFaults({ kind: 'corrupt', partNumber: 1 }, { kind: 'wrong-etag', partNumber: 1 }, { kind: 'corrupt', partNumber: 2 });
        failures = { 1: 2, 2: 1 };
        kept = { 1: 3, 2: 2 };
      } else {
        // No ETag to compare (Valt): what holds instead is that a chunk answered with an error, or
        // whose answer was lost after Valt appended it, is sent again, and appended once: its last
        // copy is acknowledged as an exact repeat.
        s.platform.failNextParts(1);
        s.platform.loseNextPartAnswers!(1);
        failures = { 1: 2 };
        kept = { 1: 2 };
      }
      s.daemon();
      expect(await delivery(s, video!)).toMatchObject({ sha256: video!.sha256, size: video!.size });
      expect(s.platform.completions(video!)).toBe(1);
      await waitFor(() => uploadRow(s, video!)?.state === 'done', 15_000, 'the upload done in the ledger');
      const parts = partsOf(s, video!);
      expect(parts.length).toBeGreaterThanOrEqual(2);
      const accepted = s.platform.acceptedParts(video!);
      expect(parts.map((p) => ({ part: p.number, attempts: p.attempts, kept: accepted.get(p.number) }))).toEqual(
        parts.map((p) => ({ part: p.number, attempts: failures[p.number] ?? 0, kept: kept[p.number] ?? 1 })),
      );
      if (limits.etags) {
        const broken = putsOf(s, video!)
          .filter((r) => r.code?.startsWith('Injected'))
          .map((r) => `${r.partNumber} ${r.code}`)
          .sort();
        expect(broken).toEqual(['1 InjectedCorruption', '1 InjectedWrongETag', '2 InjectedCorruption']);
        // What the ledger holds of each part is the MD5 of the file's bytes, and the ETag S3 last answered matched it.
        for (const p of parts) {
          const md5 = await md5Of(s, video!, p);
          expect({ part: p.number, md5: p.md5, etag: p.etag }).toEqual({ part: p.number, md5, etag: md5 });
        }
      }
      expectNoCredentialReachedS3(s, fixture);
    });

    it('gives each of three incidents with byte-identical videos its own uploads, over and under the multipart threshold', async (ctx) => {
      const s = await site(ctx, fixture);
      const first = await incident(s, [12 * MiB + 1234, 1 * MiB + 7]);
      const second = await sameVideosAs(s, first);
      s.daemon();
      for (const v of [...first, ...second]) await receivedIntact(s, v);
      // A third export of the same clips, once the first two are on the platform.
      const third = await sameVideosAs(s, first);
      for (const v of third) await receivedIntact(s, v);
      for (const v of [...first, ...second, ...third]) expect(s.platform.completions(v), `${v.id} completed once`).toBe(1);
      await settledIncidents(
        s,
        [first, second, third].map((videos) => videos[0]!.incidentId),
      );
      for (const videos of [first, second, third]) {
        const report = s.platform.incidentReport?.(videos[0]!.incidentId);
        if (report) expect(report.uploaded.sort()).toEqual(videos.map((v) => v.id).sort());
      }
      expect(s.platform.refusedReports?.() ?? 0).toBe(0);
      expectNoCredentialReachedS3(s, fixture);
    });

    it('uploads again a file its exporter went on writing after it was uploaded, and ends with the final file', async (ctx) => {
      const s = await site(ctx, fixture);
      const [multipart, single] = await incident(s, [6 * MiB + 1, 1 * MiB + 3]);
      s.daemon();
      for (const v of [multipart!, single!]) await receivedIntact(s, v);
      // Long after settle_seconds, the stalled exporter writes the rest of both files.
      const final = [await exporterGoesOn(s, multipart!, 7 * MiB), await exporterGoesOn(s, single!, 2 * MiB)];
      for (const v of final) await receivedIntact(s, v);
      const [videos] = (await settledIncidents(s, [multipart!.incidentId])) as [SettledVideo[]];
      expect(videos.map((v) => [v.id, v.changedAfterUpload])).toEqual(final.map((v) => [v.id, 1]));
      // The last report (platforms that keep incidents) lists both, with the final files' keys.
      const report = s.platform.incidentReport?.(multipart!.incidentId);
      if (report) expect(report.uploaded.sort()).toEqual(final.map((v) => v.id).sort());
      for (const v of final) expect((await s.platform.received(v))?.sha256).toBe(v.sha256);
      expect(s.platform.refusedReports?.() ?? 0).toBe(0);
      expectNoCredentialReachedS3(s, fixture);
    });

    it("fails an upload the platform refuses once it exists, with the platform's message, releases it where it can, and carries on", async (ctx) => {
      const s = await site(ctx, fixture);
      const [refused, other] = await incident(s, [12 * MiB, 3 * MiB]);
      s.platform.refuseVideo(refused!, 'policy forbids this clip');
      s.daemon();
      await receivedIntact(s, other!);
      await waitFor(() => uploadRow(s, refused!)?.state === 'failed', 30_000, 'the refused upload failed');
      // The operator sees it failed with the platform's own words.
      expect(await uploadStatus(s, refused!)).toMatchObject({
        state: 'failed',
        lastError: expect.stringContaining('policy forbids this clip'),
      });
      // The refusal came once the platform had opened an upload for the video and taken parts of it…
      expect(s.platform.uploadsOpened(refused!)).toBe(1);
      expect(total(s.platform.acceptedParts(refused!))).toBeGreaterThan(0);
      // …for good: never asked again beyond the parts in flight, never completed, never started again.
      expect(s.platform.refusals(refused!)).toBeGreaterThanOrEqual(1);
      expect(s.platform.refusals(refused!)).toBeLessThanOrEqual(inFlight(fixture));
      expect(s.platform.completions(refused!)).toBe(0);
      // Nothing is left for the daemon to release or resume: no abort queued, no session kept.
      await waitFor(
        () => ledgerRows<{ n: number }>(s.ledgerPath, 'SELECT COUNT(*) AS n FROM pending_aborts')[0]!.n === 0,
        15_000,
        'no abort left queued',
      );
      expect(uploadRow(s, refused!)?.session).toBeNull();
      expect((await status(s)).pendingAborts).toBe(0);
      if (limits.abortsGivenUp) {
        await waitFor(() => s.platform.openUploads() === 0, 15_000, 'the remote upload aborted');
      } else {
        // The platform's API has no abort (documented): its upload stays open there, and the daemon
        // sends it nothing more.
        expect(s.platform.openUploads()).toBe(1);
        expect(s.platform.partsAfterRefusal(refused!)).toBe(0);
      }
      expectNoCredentialReachedS3(s, fixture);
    });
  });
}
