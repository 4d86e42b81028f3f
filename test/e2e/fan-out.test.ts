/**
 * Fan-out: every incident goes to every target, or to the ones `routes` picks by folder; each
 * (video, target) pair progresses on its own, and a target that is down holds back no other.
 */
import { describe, expect, it, type TestContext } from 'vitest';
import { startAloEmulator, type AloEmulator } from '../emulators/alo.js';
import { startS3Store, type S3Store } from '../emulators/s3-store.js';
import { aionvisionFixture } from '../conformance/fixtures/aionvision.js';
import { aloFixture } from '../conformance/fixtures/alo.js';
import { truvideoFixture } from '../conformance/fixtures/truvideo.js';
import { valtFixture } from '../conformance/fixtures/valt.js';
import type { PlatformFixture, PlatformSite } from '../conformance/platform-fixture.js';
import { aloTargetConfig } from '../support/alo-site.js';
import { runCli, waitFor } from '../support/daemon-process.js';
import { MiB } from '../support/files.js';
import { bytesRead } from '../support/proc-io.js';
import { harness } from '../support/harness.js';
import { ledgerRows, ledgerRowsSoFar } from '../support/ledger.js';
import { exportVideos, writeOneVideoIncident, type ExportedVideoRef } from '../support/manifest.js';
import { writeSiteConfig, type SiteFiles } from '../support/site.js';

interface Fleet extends SiteFiles {
  store: S3Store;
  a: AloEmulator;
  b: AloEmulator;
}

/** Targets `a` and `b` (two ALO emulators on one store, b unreachable if `bDown`) and a daemon sending to them. */
async function fleet(ctx: TestContext, sections: Record<string, unknown> = {}, bDown = false): Promise<Fleet> {
  const h = harness(ctx);
  const store = h.closeAtEnd(await startS3Store());
  const a = h.closeAtEnd(await startAloEmulator({ store }));
  const b = h.closeAtEnd(await startAloEmulator({ store }));
  const files = await writeSiteConfig(await h.dir(), {
    // Port 1 on loopback: nothing listens, every connection is refused.
    targets: { a: aloTargetConfig(a.baseUrl), b: aloTargetConfig(bDown ? 'http://127.0.0.1:1/v1' : b.baseUrl) },
    sections,
  });
  h.daemon(files);
  return { ...files, store, a, b };
}

/** A one-video incident of 6 MiB in `folder` under the export root; returns the file's SHA-256. */
const exportIncident = (f: Fleet, folder: string, id: string): Promise<string> =>
  writeOneVideoIncident(f.exportsRoot, id, 6 * MiB, { folder });

const uploadedKey = (alo: AloEmulator, id: string): string | undefined => alo.incident(id)?.uploaded_videos[0]?.s3_key;

describe('fan-out to several targets', () => {
  it('sends every incident to every target, each with its own upload', async (ctx) => {
    const f = await fleet(ctx);
    const sha = await exportIncident(f, 'inc-1', 'inc-1');
    const keyA = await waitFor(() => uploadedKey(f.a, 'inc-1'), 30_000, 'target a');
    const keyB = await waitFor(() => uploadedKey(f.b, 'inc-1'), 30_000, 'target b');
    expect(keyA).not.toBe(keyB);
    expect(await f.store.objectSha256(keyA)).toBe(sha);
    expect(await f.store.objectSha256(keyB)).toBe(sha);
  });

  it('completes on the target that is up while the other is down, and shows why the other waits', async (ctx) => {
    const f = await fleet(ctx, {}, true);
    const sha = await exportIncident(f, 'inc-2', 'inc-2');
    const keyA = await waitFor(() => uploadedKey(f.a, 'inc-2'), 30_000, 'target a despite b being down');
    expect(await f.store.objectSha256(keyA)).toBe(sha);
    const status = JSON.parse((await runCli(['status', '--json', '--config', f.configPath])).stdout) as {
      incidents: Array<{ videos: Array<{ uploads: Array<{ target: string; state: string; lastError: string | null }> }> }>;
    };
    const uploads = status.incidents[0]!.videos[0]!.uploads;
    expect(uploads.find((u) => u.target === 'a')?.state).toBe('done');
    const b = uploads.find((u) => u.target === 'b')!;
    expect(b.state).toBe('queued');
    expect(b.lastError ?? '').toMatch(/ECONNREFUSED|connect/i);
  });

  it('sends an incident only to the targets of the first route that matches its folder', async (ctx) => {
    const f = await fleet(ctx, {
      routes: [
        { match: 'north/**', targets: ['b'] },
        { match: 'south/*', targets: ['a'] },
      ],
    });
    await exportIncident(f, 'north/2024/inc-n', 'inc-n');
    await exportIncident(f, 'south/inc-s', 'inc-s');
    await exportIncident(f, 'west/inc-w', 'inc-w');
    await waitFor(() => uploadedKey(f.b, 'inc-n'), 30_000, 'north on b');
    await waitFor(() => uploadedKey(f.a, 'inc-s'), 30_000, 'south on a');
    const status = await waitFor(
      async () => {
        const s = JSON.parse((await runCli(['status', '--json', '--config', f.configPath])).stdout) as {
          incidents: Array<{ id: string; videos: Array<{ state: string; errors: string[] }> }>;
        };
        const west = s.incidents.find((i) => i.id === 'inc-w');
        return west?.videos[0]?.state === 'failed' ? west : undefined;
      },
      15_000,
      'the unrouted incident shown as failed',
    );
    expect(status.videos[0]!.errors[0]).toMatch(/no route in `routes` matches the incident folder .*west/);
    expect(f.a.incident('inc-n')).toBeUndefined();
    expect(f.b.incident('inc-s')).toBeUndefined();
    expect(f.a.incident('inc-w')).toBeUndefined();
    expect(f.b.incident('inc-w')).toBeUndefined();
  });
});

/** One site sending to all four platforms, one store behind the ones that use S3. */
async function everyPlatform(ctx: TestContext, fixtures: PlatformFixture[], down: string[] = []) {
  const h = harness(ctx);
  const store = h.closeAtEnd(await startS3Store());
  const sites = new Map<string, PlatformSite>();
  for (const fixture of fixtures) sites.set(fixture.type, h.closeAtEnd(await fixture.start(store)));
  const targets = Object.fromEntries(
    // A platform that is down: its config points at a loopback port nothing listens on.
    [...sites].map(([type, s]) => [type, down.includes(type) ? { ...s.targetConfig, base_url: 'http://127.0.0.1:1/api' } : s.targetConfig]),
  );
  const files = await writeSiteConfig(await h.dir(), { targets });
  return { ...files, sites, daemon: () => h.daemon(files) };
}

async function oneVideo(exportsRoot: string, id: string, size: number): Promise<ExportedVideoRef> {
  const [video] = await exportVideos(exportsRoot, { id, title: `Fan-out ${id}` }, [size]);
  return video!;
}

describe('fan-out to all four platforms', () => {
  const FIXTURES = [aloFixture, aionvisionFixture, truvideoFixture, valtFixture];

  it('delivers the same video byte-identical to ALO, Aionvision, TruVideo and Valt', async (ctx) => {
    const f = await everyPlatform(ctx, FIXTURES);
    const video = await oneVideo(f.exportsRoot, 'all-4', 12 * MiB + 3);
    f.daemon();
    for (const [type, site] of f.sites) {
      const received = await waitFor(() => site.received(video), 45_000, `the video on ${type}`);
      expect(received, type).toMatchObject({ sha256: video.sha256, size: video.size });
    }
    // One upload per (video, target) in the ledger, each done on its own.
    const uploads = () =>
      ledgerRows<{ target: string; state: string }>(f.ledgerPath, `SELECT target, state FROM uploads WHERE role = 'video' ORDER BY target`);
    await waitFor(() => uploads().every((u) => u.state === 'done'), 10_000, 'every upload done in the ledger');
    expect(uploads()).toEqual(['aionvision', 'alo', 'truvideo', 'valt'].map((target) => ({ target, state: 'done' })));
  });

  it('reads the video once for its identity and once per platform, and no more', async (ctx) => {
    const f = await everyPlatform(ctx, FIXTURES);
    const daemon = f.daemon();
    await waitFor(() => daemon.events('daemon.started')[0], 15_000, 'the daemon started');
    const before = (await bytesRead(daemon.pid))!;
    // Large enough that one more pass over it could not hide in what else the daemon reads.
    const video = await oneVideo(f.exportsRoot, 'reads', 48 * MiB + 5);
    for (const [type, site] of f.sites) await waitFor(() => site.received(video), 60_000, `the video on ${type}`);
    const uploads = () => ledgerRows<{ state: string }>(f.ledgerPath, `SELECT state FROM uploads WHERE role = 'video'`);
    await waitFor(() => uploads().length === 4 && uploads().every((u) => u.state === 'done'), 10_000, 'every upload done');
    // rchar counts every read(2) of the process: the file, and also the manifest, the ledger and
    // the platforms' answers, which stay far below one more pass over the file.
    const passes = ((await bytesRead(daemon.pid))! - before) / video.size;
    console.log(`fan-out reads: the daemon read ${passes.toFixed(3)} × the ${video.size}-byte file for 4 platforms`);
    expect(passes).toBeGreaterThanOrEqual(5);
    expect(passes).toBeLessThan(5.25);
  });

  it('one platform down and one refusing hold back neither of the others', async (ctx) => {
    const f = await everyPlatform(ctx, FIXTURES, ['valt']);
    const video = await oneVideo(f.exportsRoot, 'two-bad', 6 * MiB + 1);
    f.sites.get('truvideo')!.refuseVideo(video, 'media rejected by policy (fan-out test)');
    f.daemon();
    for (const type of ['alo', 'aionvision']) {
      const received = await waitFor(() => f.sites.get(type)!.received(video), 45_000, `the video on ${type}`);
      expect(received.sha256, type).toBe(video.sha256);
    }
    const state = (target: string) =>
      ledgerRowsSoFar<{ state: string; last_error: string | null }>(
        f.ledgerPath,
        `SELECT state, last_error FROM uploads WHERE role = 'video' AND target = ?`,
        target,
      )[0];
    const truvideo = await waitFor(
      () => (state('truvideo')?.state === 'failed' ? state('truvideo') : undefined),
      30_000,
      'the refused upload failed',
    );
    expect(truvideo.last_error).toContain('media rejected by policy (fan-out test)');
    const valt = state('valt')!;
    expect(valt.state).toBe('queued');
    expect(valt.last_error ?? '').toMatch(/ECONNREFUSED|connect/i);
  });
});
