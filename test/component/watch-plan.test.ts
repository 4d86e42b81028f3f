/**
 * The folder watcher (chokidar on a real folder) and the video planner in this process, with a
 * real ledger file. Settling is measured on the test's clock: a file is stepped through "still
 * changing" and "settled" by moving the clock (and, on a local disk where mtimes count, the
 * file's mtime with it), never by waiting for real seconds.
 */
import { appendFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import chokidar, { type FSWatcher } from 'chokidar';
import { describe, expect, it, type TestContext } from 'vitest';
import { stringify } from 'yaml';
import type { Logger } from '../../src/log/logger.js';
import { FileIdentities } from '../../src/plan/identity.js';
import { VideoPlanner } from '../../src/plan/video-planner.js';
import { FolderWatcher, type WatchFactory, type WatcherOptions } from '../../src/watch/folder-watcher.js';
import type { WatchFallback } from '../../src/watch/watch-fallback.js';
import { waitFor } from '../support/daemon-process.js';
import { MiB, writeVideo } from '../support/files.js';
import { harness } from '../support/harness.js';
import { incidentManifest, writeManifest } from '../support/manifest.js';
import {
  aloTarget,
  FakeClock,
  openLedger,
  PART_SIZE,
  recordingLog,
  refusingWatch,
  testLog,
  touchAt,
  watchLimitError,
  type LedgerFile,
} from './fixtures.js';

const SETTLE_MS = 5000;

interface Bench {
  l: LedgerFile;
  root: string;
  clock: FakeClock;
  log: Logger;
  /** A watcher on the root, stopped when the test finishes; `events` are the non-manifest files it reported. */
  watcher(options?: Partial<WatcherOptions>): Promise<{ watcher: FolderWatcher; events: string[] }>;
  incidents(): Array<{ id: string; folder: string; title: string }>;
}

async function bench(ctx: TestContext, reportingTargets: readonly string[] = ['alo'], log = testLog(ctx)): Promise<Bench> {
  const h = harness(ctx);
  const l = await openLedger(h, reportingTargets);
  const root = join(await h.dir(), 'exports');
  await mkdir(root);
  const clock = new FakeClock();
  return {
    l,
    root,
    clock,
    log,
    watcher: async (options = {}) => {
      const events: string[] = [];
      const watcher = new FolderWatcher({
        root,
        poll: false,
        pollIntervalMs: 1000,
        settleMs: SETTLE_MS,
        ledger: l.ledger.watch,
        route: () => ['alo'],
        onFileEvent: (path) => events.push(path),
        log,
        clock,
        ...options,
      });
      ctx.onTestFinished(() => watcher.stop());
      await watcher.start();
      return { watcher, events };
    },
    incidents: () =>
      l
        .rows<{ id: string; folder: string; info: string }>('SELECT id, folder, info FROM incidents ORDER BY id')
        .map((r) => ({ id: r.id, folder: r.folder, title: (JSON.parse(r.info) as { title: string }).title })),
  };
}

/** Ticks `watcher` until `done()`, failing after `timeoutMs` of real time. */
async function tickUntil(watcher: FolderWatcher, done: () => boolean, what: string, timeoutMs: number): Promise<void> {
  await waitFor(
    async () => {
      await watcher.tick();
      return done();
    },
    timeoutMs,
    what,
  );
}

describe('FolderWatcher', () => {
  it('reads a manifest found at start-up once it has settled', async (ctx) => {
    const b = await bench(ctx);
    const folder = join(b.root, '2024-02-02', 'inc-1');
    const manifest = await writeManifest(folder, incidentManifest('inc-1', [{ id: 'v1', file: 'cam01.mp4' }]));
    await touchAt(manifest, b.clock.now());
    const { watcher } = await b.watcher();

    // The start-up walk finds it; it was written just now, so it may still be being written.
    await watcher.tick();
    expect(b.incidents()).toEqual([]);
    b.clock.advance(SETTLE_MS - 1);
    await watcher.tick();
    expect(b.incidents()).toEqual([]);

    b.clock.advance(1);
    await watcher.tick();
    expect(b.incidents()).toEqual([{ id: 'inc-1', folder, title: 'Test incident' }]);
    expect(b.l.rows('SELECT id, state FROM videos')).toEqual([{ id: 'v1', state: 'waiting' }]);
    expect(b.l.ledger.watch.manifestStamp(manifest)).not.toBeNull();
    // Read once: the same version is not applied again.
    const applied = b.l.rows('SELECT id, updated_at FROM incidents');
    b.clock.advance(SETTLE_MS);
    await watcher.tick();
    expect(b.l.rows('SELECT id, updated_at FROM incidents')).toEqual(applied);
  });

  it('applies the manifest of an incident folder that appears while it watches', async (ctx) => {
    const b = await bench(ctx);
    const { watcher } = await b.watcher();
    await watcher.tick();
    expect(b.incidents()).toEqual([]);

    const folder = join(b.root, 'inc-new');
    await writeVideo(join(folder, 'cam01.mp4'), 64 * 1024);
    const manifest = await writeManifest(folder, incidentManifest('inc-new', [{ id: 'v1', file: 'cam01.mp4', thumbnail: 'cam01.jpg' }]));
    await touchAt(manifest, b.clock.now());
    b.clock.advance(SETTLE_MS);
    // No rescan is due: only the watch's events can bring it in.
    await tickUntil(watcher, () => b.incidents().length > 0, 'the new manifest applied', 10_000);
    expect(b.incidents()).toEqual([{ id: 'inc-new', folder, title: 'Test incident' }]);
    expect(b.l.rows('SELECT video_id, role, rel_path FROM video_files ORDER BY role')).toEqual([
      { video_id: 'v1', role: 'thumbnail', rel_path: 'cam01.jpg' },
      { video_id: 'v1', role: 'video', rel_path: 'cam01.mp4' },
    ]);
  });

  it('watches a folder made while it started, which chokidar read before it watched it, and reads what lands there later', async (ctx) => {
    const b = await bench(ctx);
    const folder = join(b.root, 'inc-late');
    await writeVideo(join(folder, 'cam01.mp4'), 64 * 1024);
    // chokidar reads a folder, then watches it: one made in between is never looked at. Here it
    // does not see inc-late until it is ready, as if the exporter made it in that gap.
    let starting = true;
    const missing: WatchFactory = (root, options) => {
      const w = chokidar.watch(root, {
        ...options,
        ignored: (path, stats) => (starting && path.startsWith(folder)) || options.ignored(path, stats),
      });
      w.once('ready', () => (starting = false));
      return w;
    };
    const { watcher } = await b.watcher({ watchFactory: missing });
    await watcher.tick();

    // The manifest lands after the start-up walk went through the folder.
    const manifest = await writeManifest(folder, incidentManifest('inc-late', [{ id: 'v1', file: 'cam01.mp4' }], 'First'));
    await touchAt(manifest, b.clock.now());
    b.clock.advance(SETTLE_MS);
    await tickUntil(watcher, () => b.incidents().length > 0, 'the manifest written after the start-up walk applied', 10_000);
    expect(b.incidents()).toEqual([{ id: 'inc-late', folder, title: 'First' }]);

    // Long after, when the folder is no longer scanned on every tick, the watch brings a change in.
    b.clock.advance(60_000);
    await watcher.tick();
    await writeManifest(folder, incidentManifest('inc-late', [{ id: 'v1', file: 'cam01.mp4' }], 'Second'));
    await touchAt(manifest, b.clock.now());
    b.clock.advance(SETTLE_MS);
    await tickUntil(watcher, () => b.incidents()[0]?.title === 'Second', 'the rewritten manifest applied', 10_000);
  });

  it('no longer watches the folder of an incident every target finished with', async (ctx) => {
    // Without a reporting target, an incident of failed exports is finished as soon as it is read.
    const b = await bench(ctx, []);
    const done = join(b.root, 'inc-done');
    const live = join(b.root, 'inc-live');
    const doneManifest = await writeManifest(done, incidentManifest('inc-done', [{ id: 'v1', errors: ['export failed'] }], 'Finished'));
    const liveManifest = await writeManifest(live, incidentManifest('inc-live', [{ id: 'v1', file: 'cam01.mp4' }], 'Live'));
    for (const m of [doneManifest, liveManifest]) await touchAt(m, b.clock.now());
    b.clock.advance(SETTLE_MS);
    let chokidarWatcher: FSWatcher | undefined;
    const { watcher, events } = await b.watcher({ watchFactory: (root, options) => (chokidarWatcher = chokidar.watch(root, options)) });
    await watcher.tick();
    expect(b.incidents().map((i) => i.id)).toEqual(['inc-done', 'inc-live']);

    // Watched until then: a file written there is reported.
    await writeFile(join(done, 'before.mp4'), 'x');
    await waitFor(() => events.includes(join(done, 'before.mp4')), 5_000, 'the event of a file in the incident folder');

    const finished = b.l.ledger.watch.finishIncidents(Date.now(), false, 10);
    expect(finished).toEqual([done]);
    watcher.unwatch(finished);
    // chokidar's unwatch() leaves each path in a list it matches every later path against, one by
    // one (with 20,000 folders let go of, 165 ms a check): the watcher takes them out again.
    expect([...chokidarWatcher!._ignoredPaths]).toEqual([]);

    // The VMS writes into the finished folder, then into the live one; once the live one's
    // events came, twice, the finished one's would have too.
    await writeFile(join(done, 'after.mp4'), 'x');
    // A file that was there already (chokidar watched it on its own) is let go as well.
    await writeFile(doneManifest, JSON.stringify(incidentManifest('inc-done', [{ id: 'v1', errors: ['export failed'] }], 'Rewritten')));
    await touchAt(doneManifest, b.clock.now());
    const second = join(done, 'incident.yaml');
    await writeFile(second, stringify(incidentManifest('inc-done', [{ id: 'v1', errors: ['export failed'] }], 'Exported again')));
    await touchAt(second, b.clock.now());
    for (const name of ['cam01.mp4', 'cam02.mp4']) {
      await writeFile(join(live, name), 'x');
      await waitFor(() => events.includes(join(live, name)), 5_000, `the event of ${name} in the live folder`);
    }
    expect(events.filter((e) => e.startsWith(done))).toEqual([join(done, 'before.mp4')]);

    // Nor does a rescan enter it: the manifest that appeared there is not read.
    b.clock.advance(SETTLE_MS);
    watcher.rescan();
    for (let i = 0; i < 3; i++) await watcher.tick();
    expect(b.incidents().find((i) => i.id === 'inc-done')!.title).toBe('Finished');
    expect(b.l.ledger.watch.manifestStamp(second)).toBeNull();
  });
});

/**
 * A watcher on the root through `watchFactory`, once it took in that one folder was refused;
 * `fallbacks` is what it told of the fallback since.
 */
async function refusedWatcher(b: Bench, watchFactory: WatchFactory) {
  const fallbacks: Array<WatchFallback | null> = [];
  const started = await b.watcher({ watchFactory, fallbackRescanMs: 10_000, onFallback: (f) => fallbacks.push(f) });
  await tickUntil(started.watcher, () => fallbacks.length > 0, 'the refusal taken in', 5_000);
  expect(fallbacks).toEqual([{ folders: 1, rescanSeconds: 10, since: b.clock.now() }]);
  return { ...started, fallbacks };
}

describe('FolderWatcher when the OS refuses more watches (ENOSPC)', () => {
  it('rescans the folders it could not watch, so a new export there is read; watches them again once watches are freed', async (ctx) => {
    const { log, events: logged } = recordingLog(ctx);
    const b = await bench(ctx, [], log);
    const refused = join(b.root, 'site-a');
    const watched = join(b.root, 'site-b');
    await mkdir(refused);
    await mkdir(watched);
    // Made long before the daemon started (a folder made during start-up is scanned on every tick for a while).
    for (const dir of [refused, watched]) await touchAt(dir, b.clock.now() - 60_000);
    let refusing = true;
    const { watcher, events, fallbacks } = await refusedWatcher(
      b,
      refusingWatch((folder) => refusing && folder === refused),
    );

    // An incident exported into the refused folder produces no event; one in the watched folder does.
    const lostManifest = await writeManifest(join(refused, 'inc-a'), incidentManifest('inc-a', [{ id: 'v1', errors: ['export failed'] }]));
    await touchAt(lostManifest, b.clock.now() - SETTLE_MS);
    await writeFile(join(watched, 'probe.mp4'), 'x');
    await waitFor(() => events.includes(join(watched, 'probe.mp4')), 5_000, 'the event of a file in the watched folder');
    b.clock.advance(10_000 - 1);
    await watcher.tick();
    expect(b.incidents()).toEqual([]);
    // The rescan comes round: the manifest is read.
    b.clock.advance(1);
    await tickUntil(watcher, () => b.incidents().length > 0, 'the manifest in the refused folder read by the rescan', 5_000);
    expect(b.incidents().map((i) => i.folder)).toEqual([join(refused, 'inc-a')]);
    expect(events.filter((e) => e.startsWith(refused))).toEqual([]);
    expect(fallbacks).toHaveLength(1);

    // An incident in the watched folder finishes and lets go of its watches (the limit no longer
    // bites): the refused folder is asked for again, and is watched.
    const doneManifest = await writeManifest(join(watched, 'inc-b'), incidentManifest('inc-b', [{ id: 'v1', errors: ['export failed'] }]));
    await touchAt(doneManifest, b.clock.now() - SETTLE_MS);
    await tickUntil(watcher, () => b.incidents().length === 2, 'the manifest in the watched folder read', 5_000);
    refusing = false;
    const finished = b.l.ledger.watch.finishIncidents(Date.now(), false, 10);
    expect(finished.sort()).toEqual([join(refused, 'inc-a'), join(watched, 'inc-b')]);
    watcher.unwatch(finished);
    b.clock.advance(10_000);
    await watcher.tick();
    b.clock.advance(10_000);
    await watcher.tick();
    expect(fallbacks.at(-1)).toBeNull();
    await writeFile(join(refused, 'after.mp4'), 'x');
    await waitFor(() => events.includes(join(refused, 'after.mp4')), 5_000, 'the event of a file in the folder watched again');

    // Said once when it began, once when it ended.
    expect(logged('watch.fallback').map((l) => [l.level, l.folders, l.rescanSeconds])).toEqual([['warn', 1, 10]]);
    expect(String(logged('watch.fallback')[0]!.msg)).toMatch(/refused to watch 1 folder\(s\).*fs\.inotify\.max_user_watches/);
    expect(logged('watch.fallback.ended')).toHaveLength(1);
  });

  it('falls back on rescanning the whole root when the root itself cannot be watched', async (ctx) => {
    const b = await bench(ctx, []);
    const { watcher } = await refusedWatcher(b, (root, options) => {
      const w = chokidar.watch(root, { ...options, ignored: () => true });
      setImmediate(() => w.emit('error', watchLimitError(root)));
      return w;
    });
    const manifest = await writeManifest(join(b.root, 'deep', 'inc-r'), incidentManifest('inc-r', [{ id: 'v1', errors: ['x'] }]));
    await touchAt(manifest, b.clock.now() - SETTLE_MS);
    b.clock.advance(10_000);
    await watcher.tick();
    await watcher.tick();
    expect(b.incidents().map((i) => i.id)).toEqual(['inc-r']);
  });
});

describe('FolderWatcher over its watch budget', () => {
  it('rescans the new folders beyond it instead of watching them, without calling that a problem, and watches them as incidents finish', async (ctx) => {
    const { log, events: logged } = recordingLog(ctx);
    const b = await bench(ctx, [], log);
    const folders = ['inc-1', 'inc-2', 'inc-3', 'inc-4'].map((name) => join(b.root, name));
    for (const folder of folders) {
      await mkdir(folder);
      await touchAt(folder, b.clock.now() - 60_000);
    }
    const fallbacks: Array<WatchFallback | null> = [];
    const { watcher, events } = await b.watcher({ watchBudget: 2, fallbackRescanMs: 10_000, onFallback: (f) => fallbacks.push(f) });
    await watcher.tick();
    expect(logged('watch.budget').map((l) => [l.level, l.budget, l.rescanSeconds])).toEqual([['info', 2, 10]]);

    // Two of the four folders are watched: a file written in each is reported from those two only.
    for (const folder of folders) await writeFile(join(folder, 'probe.mp4'), 'x');
    const reported = (): string[] => folders.filter((f) => events.includes(join(f, 'probe.mp4')));
    await waitFor(() => reported().length === 2, 5_000, 'the events of two folders');
    await new Promise((r) => setTimeout(r, 300));
    expect(reported()).toHaveLength(2);
    const [beyond, stillEmpty] = folders.filter((f) => !reported().includes(f)) as [string, string];

    // An export there is noticed by the rescan, FALLBACK_RESCAN_MS later.
    const waiting = await writeManifest(beyond, incidentManifest('beyond', [{ id: 'v1', file: 'cam01.mp4' }]));
    await touchAt(waiting, b.clock.now() - SETTLE_MS);
    await watcher.tick();
    expect(b.incidents()).toEqual([]);
    b.clock.advance(10_000);
    await tickUntil(watcher, () => b.incidents().length === 1, 'the manifest beyond the budget read by the rescan', 5_000);

    // An incident in a watched folder finishes: its folder is let go of, and the folder beyond the
    // budget still without a manifest is watched in its place (the one read is left to the regular rescan).
    const done = reported()[0]!;
    const doneManifest = await writeManifest(done, incidentManifest('done', [{ id: 'v1', errors: ['export failed'] }]));
    await touchAt(doneManifest, b.clock.now() - SETTLE_MS);
    await tickUntil(watcher, () => b.incidents().length === 2, 'the finished incident read', 5_000);
    expect(b.l.ledger.watch.finishIncidents(Date.now(), false, 10)).toEqual([done]);
    watcher.unwatch([done]);
    for (let i = 0; i < 2; i++) {
      b.clock.advance(10_000);
      await watcher.tick();
    }
    await writeFile(join(stillEmpty, 'after.mp4'), 'x');
    await waitFor(() => events.includes(join(stillEmpty, 'after.mp4')), 5_000, 'the event of a file in the folder now watched');
    // Never a problem for the log, status or /healthz.
    expect(fallbacks).toEqual([]);
    expect(logged('watch.fallback')).toEqual([]);
    expect(logged('watch.budget')).toHaveLength(1);
  });
});

describe('FolderWatcher with watch.ignore_older', () => {
  const DAY = 86_400_000;

  it('skips incidents whose manifest is older than the setting at first sight, says how many once, and takes one in on retry', async (ctx) => {
    const { log, events: logged } = recordingLog(ctx);
    const b = await bench(ctx, ['alo'], log);
    const old = join(b.root, '2023', 'inc-old');
    const young = join(b.root, '2024', 'inc-young');
    const oldManifest = await writeManifest(old, incidentManifest('inc-old', [{ id: 'v1', file: 'cam01.mp4' }], 'Old'));
    await touchAt(oldManifest, b.clock.now() - 31 * DAY);
    await touchAt(
      await writeManifest(young, incidentManifest('inc-young', [{ id: 'v1', file: 'cam01.mp4' }], 'Young')),
      b.clock.now() - 29 * DAY,
    );
    const { watcher, events } = await b.watcher({ ignoreOlderSeconds: 30 * 86400 });
    await watcher.tick();

    expect(b.incidents().map((i) => i.id)).toEqual(['inc-young']);
    expect(b.l.rows('SELECT id, folder, taken_in_at FROM skipped_incidents')).toEqual([{ id: 'inc-old', folder: old, taken_in_at: null }]);
    expect(logged('watch.ignored_older').map((l) => [l.skipped, l.skippedNow, l.ignoreOlder])).toEqual([[1, 1, '30d']]);
    // The skipped folder is let go of: what the VMS writes there is not reported.
    await writeFile(join(old, 'cam01.mp4'), 'x');
    await writeFile(join(young, 'cam01.mp4'), 'x');
    await waitFor(() => events.includes(join(young, 'cam01.mp4')), 5_000, 'the event in the young folder');
    // Nor is it read again by a rescan, however often.
    watcher.rescan();
    for (let i = 0; i < 3; i++) await watcher.tick();
    expect(b.incidents().map((i) => i.id)).toEqual(['inc-young']);
    expect(logged('watch.ignored_older')).toHaveLength(1);

    expect(b.l.ledger.operator.retry('inc-old')?.takenIn).toBe(true);
    await watcher.tick();
    expect(b.incidents().map((i) => i.id)).toEqual(['inc-old', 'inc-young']);
    expect(b.l.rows('SELECT incident_id, state FROM videos ORDER BY incident_id')).toEqual([
      { incident_id: 'inc-old', state: 'waiting' },
      { incident_id: 'inc-young', state: 'waiting' },
    ]);
    // Its folder is watched again.
    await writeFile(join(old, 'cam02.mp4'), 'x');
    await waitFor(() => events.includes(join(old, 'cam02.mp4')), 5_000, 'the event in the folder taken in');
    expect(events.filter((e) => e === join(old, 'cam01.mp4'))).toEqual([]);
  });
});

/** A planner on the test's clock, and one incident of one 3 MiB video read into the ledger, waiting to settle. */
async function plannerBench(ctx: TestContext, b: Bench, trustMtime: boolean) {
  const planner = new VideoPlanner({
    ledger: b.l.ledger.plan,
    identities: new FileIdentities(b.l.ledger.plan),
    targets: [aloTarget(ctx, 'http://127.0.0.1:9/v1')],
    preferredPartSize: PART_SIZE,
    settleMs: SETTLE_MS,
    missingMs: 3600_000,
    trustMtime,
    log: b.log,
    clock: b.clock,
  });
  const folder = join(b.root, 'inc-1');
  const video = join(folder, 'cam01.mp4');
  await writeVideo(video, 3 * MiB);
  await touchAt(video, b.clock.now());
  await touchAt(await writeManifest(folder, incidentManifest('inc-1', [{ id: 'v1', file: 'cam01.mp4' }])), b.clock.now());
  const { watcher } = await b.watcher();
  b.clock.advance(SETTLE_MS);
  await watcher.tick();
  expect(b.incidents().map((i) => i.id)).toEqual(['inc-1']);
  return {
    planner,
    video,
    signal: new AbortController().signal,
    state: (): string => b.l.rows<{ state: string }>('SELECT state FROM videos')[0]!.state,
    uploads: (): unknown[] => b.l.rows('SELECT size FROM uploads'),
  };
}

/** 1 ms before settle_seconds have passed since the file last grew it still waits, nothing planned; then it is planned. */
async function plannedExactlyAtSettle(b: Bench, p: Awaited<ReturnType<typeof plannerBench>>): Promise<void> {
  b.clock.advance(SETTLE_MS - 1);
  expect(await p.planner.tick(p.signal)).toBe(false);
  expect(p.state()).toBe('waiting');
  expect(p.uploads()).toEqual([]);
  b.clock.advance(1);
  expect(await p.planner.tick(p.signal)).toBe(true);
}

describe('VideoPlanner', () => {
  it('plans a video only once its file has stopped growing for settle_seconds', async (ctx) => {
    const b = await bench(ctx);
    const p = await plannerBench(ctx, b, true);
    const { planner, video, signal, state, uploads } = p;

    // Written 5 s ago by its mtime: settled, were it not for the exporter going on right now.
    await appendFile(video, Buffer.alloc(3 * MiB, 1));
    await touchAt(video, b.clock.now());
    expect(await planner.tick(signal)).toBe(false);
    b.clock.advance(3000);
    await appendFile(video, Buffer.alloc(2 * MiB, 2));
    await touchAt(video, b.clock.now());
    expect(await planner.tick(signal)).toBe(false);
    await plannedExactlyAtSettle(b, p);
    expect(state()).toBe('ready');
    // Planned for the whole file as it ended up: 8 MiB in two parts.
    expect(uploads()).toEqual([{ size: 8 * MiB }]);
    expect(b.l.rows('SELECT number, size FROM parts ORDER BY number')).toEqual([
      { number: 1, size: 5 * MiB },
      { number: 2, size: 3 * MiB },
    ]);
    expect(b.l.rows('SELECT size FROM video_files')).toEqual([{ size: 8 * MiB }]);
  });

  it('on a network mount, trusts no mtime: a growing file waits settle_seconds by the local clock', async (ctx) => {
    const b = await bench(ctx);
    const p = await plannerBench(ctx, b, false);
    const { planner, video, signal, uploads } = p;
    // The file server's clock is an hour behind: by its mtimes the file has been still for long.
    const serverTime = (): number => b.clock.now() - 3600_000;
    await touchAt(video, serverTime());
    expect(await planner.tick(signal)).toBe(false);
    b.clock.advance(2000);
    await appendFile(video, Buffer.alloc(MiB, 1));
    await touchAt(video, serverTime());
    expect(await planner.tick(signal)).toBe(false);
    await plannedExactlyAtSettle(b, p);
    expect(uploads()).toEqual([{ size: 4 * MiB }]);
  });
});
