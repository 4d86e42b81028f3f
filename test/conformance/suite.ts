/**
 * The conformance suite: the same scenarios, through the real daemon, against every platform's
 * emulator. A platform is done when it passes this suite: test/conformance/<platform>.test.ts runs
 * it against the fixture in test/conformance/fixtures/<platform>.ts (one file each, so that vitest
 * runs the platforms side by side).
 */
import { randomBytes } from 'node:crypto';
import { appendFile, copyFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it, type TestContext } from 'vitest';
import { startS3Store, type S3Store } from '../emulators/s3-store.js';
import { runCli, USER_AGENT, waitFor, type DaemonProcess } from '../support/daemon-process.js';
import { MiB, sha256File } from '../support/files.js';
import { harness } from '../support/harness.js';
import { ledgerRowsSoFar } from '../support/ledger.js';
import { exportVideos, incidentManifest, writeManifest, type ExportedVideoRef } from '../support/manifest.js';
import { writeSiteConfig, type SiteFiles } from '../support/site.js';
import type { PlatformFixture, PlatformSite, ReceivedVideo, VideoRef } from './platform-fixture.js';

const CONCURRENCY = 2;

interface Site extends SiteFiles {
  platform: PlatformSite;
  store: S3Store;
  daemon(): DaemonProcess;
}

/** A platform, its store, an export folder and a daemon config; torn down when the test ends. */
async function site(ctx: TestContext, fixture: PlatformFixture): Promise<Site> {
  const h = harness(ctx);
  const dir = await h.dir();
  const store = h.closeAtEnd(await startS3Store());
  const platform = h.closeAtEnd(await fixture.start(store));
  const files = await writeSiteConfig(dir, { upload: { concurrency: CONCURRENCY }, targets: { [fixture.type]: platform.targetConfig } });
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

/** Once the daemon has nothing left to do for the incident: its videos as `status --json` shows them. */
async function settledVideos(s: Site, incidentId: string): Promise<Array<{ id: string; changedAfterUpload: number }>> {
  return waitFor(
    async () => {
      const out = JSON.parse((await runCli(['status', '--json', '--config', s.configPath])).stdout) as {
        incidents: Array<{
          id: string;
          reports: Array<{ state: string }>;
          videos: Array<{ id: string; state: string; changedAfterUpload: number; uploads: Array<{ state: string }> }>;
        }>;
      };
      const incident = out.incidents.find((i) => i.id === incidentId);
      const busy =
        !incident ||
        incident.reports.some((r) => r.state !== 'acknowledged') ||
        incident.videos.some((v) => v.state !== 'ready' || v.uploads.some((u) => u.state !== 'done'));
      return busy ? undefined : incident.videos;
    },
    30_000,
    `incident ${incidentId} settled`,
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

function partsOf(s: Site, video: VideoRef): Array<{ number: number; state: string }> {
  return ledgerRowsSoFar(
    s.ledgerPath,
    `SELECT p.number, p.state FROM parts p JOIN uploads u ON u.id = p.upload_id WHERE u.incident_id = ? AND u.video_id = ? AND u.role = 'video'`,
    video.incidentId,
    video.id,
  );
}

interface UploadRow {
  state: string;
  lastError: string | null;
}

async function uploadStatus(s: Site, video: VideoRef): Promise<UploadRow | undefined> {
  const out = JSON.parse((await runCli(['status', '--json', '--config', s.configPath])).stdout) as {
    incidents: Array<{ id: string; videos: Array<{ id: string; uploads: Array<UploadRow & { role: string }> }> }>;
  };
  return out.incidents
    .find((i) => i.id === video.incidentId)
    ?.videos.find((v) => v.id === video.id)
    ?.uploads.find((u) => u.role === 'video');
}

/** Every scenario, against one platform. */
export function conformanceSuite(fixture: PlatformFixture): void {
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
    });

    it('resumes after SIGKILL at the first unfinished part, re-sending at most the parts in flight', async (ctx) => {
      const s = await site(ctx, fixture);
      s.platform.setLatency(300);
      const [video] = await incident(s, [32 * MiB + 5]);
      const first = s.daemon();
      await waitFor(() => partsOf(s, video!).filter((p) => p.state === 'done').length >= 1, 45_000, 'a part acknowledged');
      first.kill('SIGKILL');
      await first.exited;
      const parts = partsOf(s, video!);
      const doneBefore = parts.filter((p) => p.state === 'done').map((p) => p.number);
      expect(doneBefore.length).toBeLessThan(parts.length);

      s.platform.setLatency(0);
      s.daemon();
      await receivedIntact(s, video!);
      expect(s.platform.completions(video!)).toBe(1);
      const accepted = s.platform.acceptedParts(video!);
      for (const n of doneBefore) expect(accepted.get(n), `part ${n} acknowledged before the kill`).toBe(1);
      const sent = [...accepted.values()].reduce((a, b) => a + b, 0);
      expect(sent - partsOf(s, video!).length).toBeLessThanOrEqual(CONCURRENCY);
    });

    it('carries on when presigned URLs expire mid-upload', async (ctx) => {
      const s = await site(ctx, fixture);
      s.platform.setUrlExpiry(2);
      s.platform.setLatency(400);
      const [video] = await incident(s, [25 * MiB]);
      s.daemon();
      await receivedIntact(s, video!);
    });

    it('rides out 503s and connection resets', async (ctx) => {
      const s = await site(ctx, fixture);
      s.platform.failNextParts(2);
      s.platform.resetNextParts(1);
      const [video] = await incident(s, [12 * MiB + 3]);
      s.daemon();
      await receivedIntact(s, video!);
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
      for (const videos of [first, second, third]) {
        await settledVideos(s, videos[0]!.incidentId);
        const report = s.platform.incidentReport?.(videos[0]!.incidentId);
        if (report) expect(report.uploaded.sort()).toEqual(videos.map((v) => v.id).sort());
      }
      expect(s.platform.refusedReports?.() ?? 0).toBe(0);
    });

    it('uploads again a file its exporter went on writing after it was uploaded, and ends with the final file', async (ctx) => {
      const s = await site(ctx, fixture);
      const [multipart, single] = await incident(s, [6 * MiB + 1, 1 * MiB + 3]);
      s.daemon();
      for (const v of [multipart!, single!]) await receivedIntact(s, v);
      // Long after settle_seconds, the stalled exporter writes the rest of both files.
      const final = [await exporterGoesOn(s, multipart!, 7 * MiB), await exporterGoesOn(s, single!, 2 * MiB)];
      for (const v of final) await receivedIntact(s, v);
      const videos = await settledVideos(s, multipart!.incidentId);
      expect(videos.map((v) => [v.id, v.changedAfterUpload])).toEqual(final.map((v) => [v.id, 1]));
      // The last report (platforms that keep incidents) lists both, with the final files' keys.
      const report = s.platform.incidentReport?.(multipart!.incidentId);
      if (report) expect(report.uploaded.sort()).toEqual(final.map((v) => v.id).sort());
      for (const v of final) expect((await s.platform.received(v))?.sha256).toBe(v.sha256);
      expect(s.platform.refusedReports?.() ?? 0).toBe(0);
    });

    it("fails a refused upload with the platform's message, cleans up, and carries on with the others", async (ctx) => {
      const s = await site(ctx, fixture);
      const [refused, other] = await incident(s, [12 * MiB, 3 * MiB]);
      s.platform.refuseVideo(refused!, 'policy forbids this clip');
      s.daemon();
      await receivedIntact(s, other!);
      const failed = await waitFor(
        async () => {
          const u = await uploadStatus(s, refused!);
          return u?.state === 'failed' ? u : undefined;
        },
        30_000,
        'the refused upload failed',
      );
      expect(failed.lastError).toContain('policy forbids this clip');
      if (fixture.limits.abortsGivenUp) await waitFor(() => s.platform.openUploads() === 0, 15_000, 'the remote upload aborted');
      expect(s.platform.openUploads()).toBe(0);
    });
  });
}
