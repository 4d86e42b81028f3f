/**
 * The watch-folder rules of CONTRACT §3, one by one, through the real daemon and the ALO emulator:
 * what ALO ends up holding, the bytes in the store, the ledger as `status --json` shows it.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { appendFile, copyFile, mkdir, rename, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { describe, expect, it } from 'vitest';
import type { AloIncident } from '../emulators/alo.js';
import { troubles, waitIncident, type AloSite } from '../support/alo-site.js';
import { harness, type Harness } from '../support/harness.js';
import { type DaemonProcess, runCli, waitFor } from '../support/daemon-process.js';
import { ledgerRowsSoFar } from '../support/ledger.js';
import { mp4Header, sha256File, writeVideo } from '../support/files.js';
import { incidentManifest, writeManifest } from '../support/manifest.js';

const KiB = 1024;
/** How long a test waits for what ALO holds (see the concurrent group below). */
const ALO_WAIT_MS = 60_000;

const settledCount = (n: number) => (i: AloIncident) => i.uploaded_videos.length + i.failed_videos.length === n;

function uploaded(i: AloIncident, videoId: string) {
  const v = i.uploaded_videos.find((u) => u.id === videoId);
  if (!v) throw new Error(`video ${videoId} is not among the uploaded videos: ${JSON.stringify(i, null, 2)}`);
  return v;
}

function failedErrors(i: AloIncident, videoId: string): string[] {
  const v = i.failed_videos.find((f) => f.id === videoId);
  if (!v) throw new Error(`video ${videoId} is not among the failed videos: ${JSON.stringify(i, null, 2)}`);
  return v.upload_errors;
}

/** Successful PUTs the store accepted (single objects and parts). */
function okPuts(s: AloSite) {
  return s.store.requests.filter((r) => r.method === 'PUT' && r.status === 200);
}

interface Snapshot {
  incidents: Array<{
    id: string;
    title: string | null;
    reports: Array<{ upToDate: boolean }>;
    videos: Array<{ id: string; state: string; errors: string[]; notes: string[]; uploads: Array<{ role: string; state: string }> }>;
  }>;
  invalidManifests: Array<{ path: string; problems: string[] }>;
  totals: Record<string, number>;
}

async function statusJson(s: AloSite): Promise<Snapshot> {
  const r = await runCli(['status', '--json', '--config', s.configPath]);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Snapshot;
}

/** A manifest written as exporters do (temp name, then rename), with any text, valid or not. */
async function writeManifestText(folder: string, text: string, name = 'incident.json'): Promise<string> {
  await mkdir(folder, { recursive: true });
  const path = join(folder, name);
  await writeFile(`${path}.tmp`, text);
  await rename(`${path}.tmp`, path);
  return path;
}

/** The state of a video in the ledger, undefined before the daemon read its manifest. */
function videoState(s: AloSite, incidentId: string, videoId: string): string | undefined {
  return ledgerRowsSoFar<{ state: string }>(
    s.ledgerPath,
    `SELECT state FROM videos WHERE incident_id = ? AND id = ?`,
    incidentId,
    videoId,
  )[0]?.state;
}

/** Incident ids the daemon has read a manifest of (each has its videos in the ledger). */
function incidentsRead(s: AloSite): Set<string> {
  return new Set(
    ledgerRowsSoFar<{ incident_id: string }>(s.ledgerPath, `SELECT DISTINCT incident_id FROM videos`).map((r) => r.incident_id),
  );
}

/**
 * Writes a control incident (a failed export only: nothing to upload) in a folder of its own (new,
 * unless `folder` names one) and waits until the daemon has read it: proof that the daemon came
 * round its loop, and read what was due, after this moment. Returns the control incident's id.
 */
async function controlRead(s: AloSite, d: DaemonProcess, what: string, folder?: string): Promise<string> {
  const id = randomUUID();
  await writeManifest(folder ?? join(s.exportsRoot, `control-${id}`), incidentManifest(id, [{ id: 'lost', errors: ['export failed'] }]));
  await waitFor(() => videoState(s, id, 'lost') !== undefined, 30_000, what).catch((err: Error) => {
    const last = d.logs.slice(-15).map((l) => JSON.stringify(l).slice(0, 300));
    throw new Error(`${err.message}; the daemon's last log lines:\n${last.join('\n')}\n${troubles(d)}`, { cause: err });
  });
  return id;
}

/**
 * The daemon, past its start-up: it logged `daemon.started`, and then read a manifest written after
 * that, so its first walk of the root is over and its watcher is live. Tests that write into the
 * tree after this meet the running daemon, not its start-up. The manifest goes into a folder made
 * before the spawn (a manifest written there during start-up is noticed: a test of its own below);
 * `daemon.started` comes before the watch on the root is set up.
 */
async function startedDaemon(h: Harness, s: AloSite): Promise<DaemonProcess> {
  const folder = join(s.exportsRoot, 'control-start');
  await mkdir(folder, { recursive: true });
  const d = h.daemon(s);
  await waitFor(() => d.events('daemon.started').length > 0, 30_000, 'the daemon started');
  await controlRead(s, d, 'a manifest written after the start read', folder);
  return d;
}

// These two depend on the pace of the test's own writes, so they run alone, before the concurrent group.
describe('watch folder rules with timing (CONTRACT §3)', () => {
  it('uploads a file that is still being written only once it is complete', async (ctx) => {
    const h = harness(ctx);
    // The writer appends every 50 ms, settle_seconds is 2 s: the file never stands still for settle_seconds
    // while it grows (checked below, from the writer's own record of its pauses).
    const settleMs = 2_000;
    const paceMs = 50;
    const s = await h.site({ watch: { settle_seconds: settleMs / 1000 } });
    const folder = join(s.exportsRoot, 'growing');
    const path = join(folder, 'growing.mp4');
    await mkdir(folder, { recursive: true });
    await writeFile(path, Buffer.concat([mp4Header(), randomBytes(128 * KiB)]));
    const id = randomUUID();
    await writeManifest(folder, incidentManifest(id, [{ id: 'growing', file: 'growing.mp4' }]));

    const d = h.daemon(s);
    // Growing from before the daemon started until it has watched the file for two settle windows.
    const appendedAt: number[] = [performance.now()];
    let watchedFrom: number | null = null;
    while (watchedFrom === null || performance.now() - watchedFrom < 2 * settleMs) {
      await sleep(paceMs);
      await appendFile(path, randomBytes(16 * KiB));
      appendedAt.push(performance.now());
      if (watchedFrom === null && videoState(s, id, 'growing') !== undefined) watchedFrom = performance.now();
      if (watchedFrom === null && appendedAt.length > 30_000 / paceMs)
        throw new Error(`the daemon never read the manifest:\n${troubles(d)}`);
    }
    // The precondition, checked: the file grew without a pause as long as settle_seconds, and the daemon
    // took it as still being written all along (waiting in the ledger, nothing sent).
    const pauses = appendedAt.slice(1).map((t, i) => t - appendedAt[i]!);
    expect(Math.max(...pauses), 'the longest pause of the writer').toBeLessThan(settleMs);
    expect(videoState(s, id, 'growing')).toBe('waiting');
    expect(s.store.requests).toEqual([]);
    const finalSha = await sha256File(path);
    const finalSize = (await stat(path)).size;

    const incident = await waitIncident(s, d, id, settledCount(1), 'the video in a final state');
    const video = uploaded(incident, 'growing');
    expect(await s.store.objectSha256(video.s3_key)).toBe(finalSha);
    expect(s.store.objectSize(video.s3_key)).toBe(finalSize);
    // One PUT (below the multipart threshold), of the complete file: no shorter version was ever sent.
    expect(okPuts(s).map((p) => p.bytesReceived)).toEqual([finalSize]);
  });

  it('fails a file that never appears after missing_file_seconds, and uploads one that appears late but in time', async (ctx) => {
    const h = harness(ctx);
    const s = await h.site({ watch: { missing_file_seconds: 2 } });
    const folder = join(s.exportsRoot, 'missing');
    await mkdir(folder, { recursive: true });
    const id = randomUUID();
    // Past the start-up, into a folder that already existed: manifests written at other moments have tests of their own below.
    const d = await startedDaemon(h, s);

    // The daemon reads the manifest no sooner than it was written, so nothing may fail before writtenAt + 2 s.
    const writtenAt = Date.now();
    await writeManifest(
      folder,
      incidentManifest(id, [
        { id: 'never', file: 'never.mp4' },
        { id: 'late', file: 'late.mp4' },
      ]),
    );
    // Late: the daemon read the manifest and waits for the file; in time: it still waits once the file is there.
    await waitFor(() => videoState(s, id, 'late') === 'waiting', 10_000, 'the manifest read, late.mp4 waited for');
    const lateSha = await writeVideo(join(folder, 'late.mp4'), 300 * KiB);
    expect(videoState(s, id, 'late'), 'late.mp4 still awaited once written').toBe('waiting');

    await waitIncident(s, d, id, (i) => i.failed_videos.some((v) => v.id === 'never'), 'never.mp4 failed', 10_000);
    const failedAt = Date.now();
    expect(failedAt - writtenAt).toBeGreaterThanOrEqual(2_000);
    const incident = await waitIncident(s, d, id, settledCount(2), 'both videos in a final state');

    expect(failedErrors(incident, 'never')).toEqual([expect.stringContaining('did not appear within 2 s')]);
    expect(failedErrors(incident, 'never').join()).toContain('never.mp4');
    expect(incident.uploaded_videos.map((v) => v.id)).toEqual(['late']);
    expect(await s.store.objectSha256(uploaded(incident, 'late').s3_key)).toBe(lateSha);
  });
});

// Up to five of these run at once, each with a daemon and its platform: the waits and the tests' own
// timeouts leave room for that on a loaded 2-core machine (they bound waits for conditions, and cost nothing when met).
describe.concurrent('watch folder rules (CONTRACT §3)', { timeout: 120_000 }, () => {
  it('refuses a `..` path, an absolute path, a symlink leading out of the folder and a temp name, and uploads the good video', async (ctx) => {
    const h = harness(ctx);
    const s = await h.site();
    const folder = join(s.exportsRoot, 'paths');
    const outside = join(s.dir, 'outside');
    const goodSha = await writeVideo(join(folder, 'good.mp4'), 300 * KiB);
    // Real video files where each refused path leads, so that only the rule can stop the upload.
    await writeVideo(join(s.exportsRoot, 'escape.mp4'), 200 * KiB);
    const absolute = join(outside, 'absolute.mp4');
    await writeVideo(absolute, 210 * KiB);
    await writeVideo(join(outside, 'secret.mp4'), 220 * KiB);
    await symlink(join(outside, 'secret.mp4'), join(folder, 'link.mp4'));
    await writeVideo(join(folder, 'clip.mp4.part'), 230 * KiB);
    const id = randomUUID();
    await writeManifest(
      folder,
      incidentManifest(id, [
        { id: 'good', file: 'good.mp4' },
        { id: 'dotdot', file: '../escape.mp4' },
        { id: 'absolute', file: absolute },
        { id: 'symlink', file: 'link.mp4' },
        { id: 'temp', file: 'clip.mp4.part' },
      ]),
    );

    const d = h.daemon(s);
    const incident = await waitIncident(s, d, id, settledCount(5), 'all five videos in a final state', ALO_WAIT_MS);

    expect(incident.uploaded_videos.map((v) => v.id)).toEqual(['good']);
    expect(await s.store.objectSha256(uploaded(incident, 'good').s3_key)).toBe(goodSha);

    const dotdot = failedErrors(incident, 'dotdot').join('\n');
    expect(dotdot).toContain('../escape.mp4');
    expect(dotdot).toMatch(/leaves the incident folder|outside|\.\./i);

    const abs = failedErrors(incident, 'absolute').join('\n');
    expect(abs).toContain(absolute);
    expect(abs).toMatch(/absolute/i);

    const link = failedErrors(incident, 'symlink').join('\n');
    expect(link).toContain('link.mp4');
    expect(link).toMatch(/leaves the incident folder|outside/i);

    const temp = failedErrors(incident, 'temp').join('\n');
    expect(temp).toContain('clip.mp4.part');
    expect(temp).toMatch(/ignored|partial|temp/i);

    // Nothing but the good video reached the store.
    expect(okPuts(s).map((r) => r.key)).toEqual([uploaded(incident, 'good').s3_key]);
  });

  it('fails an empty file and a text file named .mp4, and uploads the good video', async (ctx) => {
    const h = harness(ctx);
    const s = await h.site();
    const folder = join(s.exportsRoot, 'bad-content');
    const goodSha = await writeVideo(join(folder, 'good.mp4'), 300 * KiB);
    await writeFile(join(folder, 'empty.mp4'), Buffer.alloc(0));
    await writeFile(join(folder, 'notes.mp4'), 'These are the operator notes, not a video.\n'.repeat(200));
    const id = randomUUID();
    await writeManifest(
      folder,
      incidentManifest(id, [
        { id: 'good', file: 'good.mp4' },
        { id: 'empty', file: 'empty.mp4' },
        { id: 'text', file: 'notes.mp4' },
      ]),
    );

    const d = h.daemon(s);
    const incident = await waitIncident(s, d, id, settledCount(3), 'all three videos in a final state', ALO_WAIT_MS);

    expect(incident.uploaded_videos.map((v) => v.id)).toEqual(['good']);
    expect(await s.store.objectSha256(uploaded(incident, 'good').s3_key)).toBe(goodSha);
    const empty = failedErrors(incident, 'empty').join('\n');
    expect(empty).toContain('empty.mp4');
    expect(empty).toContain('is empty');
    const text = failedErrors(incident, 'text').join('\n');
    expect(text).toContain('notes.mp4');
    expect(text).toContain('not a known video container');
    expect(okPuts(s)).toHaveLength(1);
  });

  it('uploads a video whose thumbnail is not an image without the thumbnail, with a note in status', async (ctx) => {
    const h = harness(ctx);
    const s = await h.site();
    const folder = join(s.exportsRoot, 'bad-thumb');
    const sha = await writeVideo(join(folder, 'cam01.mp4'), 300 * KiB);
    await writeFile(join(folder, 'cam01.jpg'), 'not a jpeg at all, just text\n'.repeat(50));
    const id = randomUUID();
    await writeManifest(folder, incidentManifest(id, [{ id: 'cam01', file: 'cam01.mp4', thumbnail: 'cam01.jpg' }]));

    const d = h.daemon(s);
    const incident = await waitIncident(s, d, id, settledCount(1), 'the video in a final state', ALO_WAIT_MS);

    const video = uploaded(incident, 'cam01');
    expect(video.s3_thumbnail_key).toBeNull();
    expect(await s.store.objectSha256(video.s3_key)).toBe(sha);
    // The last report carried no s3_thumbnail_key at all, and the thumbnail was never sent.
    const last = s.alo.reports.filter((r) => r.incidentId === id).at(-1)!.body as {
      vms_incident: { uploaded_videos: Array<Record<string, unknown>> };
    };
    expect(last.vms_incident.uploaded_videos[0]).not.toHaveProperty('s3_thumbnail_key');
    expect(okPuts(s).map((r) => r.key)).toEqual([video.s3_key]);

    const status = await statusJson(s);
    const notes = status.incidents.find((i) => i.id === id)!.videos.find((v) => v.id === 'cam01')!.notes;
    expect(notes.join('\n')).toContain('cam01.jpg');
  });

  it('logs an invalid manifest once per version, lists it in status, carries on with other incidents, and reads it again once fixed', async (ctx) => {
    const h = harness(ctx);
    const s = await h.site();
    const goodFolder = join(s.exportsRoot, 'good');
    const goodId = randomUUID();
    const goodSha = await writeVideo(join(goodFolder, 'good.mp4'), 300 * KiB);
    await writeManifest(goodFolder, incidentManifest(goodId, [{ id: 'good', file: 'good.mp4' }]));

    const brokenFolder = join(s.exportsRoot, 'broken');
    const brokenId = randomUUID();
    const brokenSha = await writeVideo(join(brokenFolder, 'cam.mp4'), 300 * KiB);
    const manifestPath = await writeManifestText(brokenFolder, `{ "incident": { "id": "${brokenId}", "title": "cut off`);

    const d = h.daemon(s);
    const good = await waitIncident(s, d, goodId, settledCount(1), 'the valid incident uploaded', ALO_WAIT_MS);
    expect(await s.store.objectSha256(uploaded(good, 'good').s3_key)).toBe(goodSha);

    const logged = () => d.events('manifest.invalid').filter((l) => l.path === manifestPath);
    const listed = async () => (await statusJson(s)).invalidManifests.find((m) => m.path === manifestPath);
    await waitFor(() => logged().length > 0, 10_000, 'the broken manifest logged');
    // The daemon carries on (a manifest written after the log is read), and the same version is not logged again.
    await controlRead(s, d, 'a control manifest read after the broken one was logged');
    const v1 = await listed();
    expect(v1, 'the broken manifest in status --json invalidManifests').toBeDefined();
    expect(v1!.problems.join('\n')).toMatch(/JSON|syntax/i);
    expect(logged().map((l) => l.problem)).toEqual(v1!.problems);
    // The reason names the file and where in it (CONTRACT §3).
    for (const line of logged()) expect(line.msg).toContain(manifestPath);
    expect(s.alo.incident(brokenId)).toBeUndefined();

    // A second, different broken version (valid JSON, invalid fields) is logged again, once.
    await writeManifestText(brokenFolder, JSON.stringify({ incident: { title: 42 }, videos: [{ file: 'cam.mp4' }] }));
    await waitFor(() => logged().length > v1!.problems.length, 10_000, 'the second version logged');
    await controlRead(s, d, 'a control manifest read after the second version was logged');
    const v2 = await listed();
    expect(v2, 'the second version in status --json invalidManifests').toBeDefined();
    expect(v2!.problems).not.toEqual(v1!.problems);
    expect(v2!.problems.join('\n')).toContain('incident.id');
    expect(logged().map((l) => l.problem)).toEqual([...v1!.problems, ...v2!.problems]);

    // Fixed: read again without a restart or a forced rescan, and uploaded.
    await writeManifest(brokenFolder, incidentManifest(brokenId, [{ id: 'cam', file: 'cam.mp4' }]));
    const fixed = await waitIncident(s, d, brokenId, settledCount(1), 'the fixed incident uploaded', ALO_WAIT_MS);
    expect(await s.store.objectSha256(uploaded(fixed, 'cam').s3_key)).toBe(brokenSha);
    expect(await listed()).toBeUndefined();
    expect(logged()).toHaveLength(v1!.problems.length + v2!.problems.length);
  });

  it('does not log the same broken manifest again on periodic rescans or after a restart', async (ctx) => {
    const h = harness(ctx);
    // Polled, with a poll interval far beyond the test: the watch itself notices nothing new, so a
    // manifest is found only by a walk of the root (every rescan_interval, 0.5 s). A control manifest
    // that the daemon reads was found by a walk after it was written, and that walk passed the broken
    // manifest too, in the same tick: the rescans under test really happened.
    // A video waiting for its file keeps the daemon at work, so that its main loop comes round every
    // tick and walks at every rescan_interval (an idle daemon sleeps up to 5 s between turns).
    const s = await h.site({ watch: { rescan_interval: 0.5, poll: true, poll_interval: 3600, missing_file_seconds: 600 } });
    const waitingId = randomUUID();
    await writeManifest(join(s.exportsRoot, 'waiting'), incidentManifest(waitingId, [{ id: 'later', file: 'later.mp4' }]));
    const manifestPath = await writeManifestText(join(s.exportsRoot, 'broken'), '{"incident": {"id": "x"}, "videos": [ { "id": 1 } ]}');
    const countLogged = (d: DaemonProcess) => d.events('manifest.invalid').filter((l) => l.path === manifestPath).length;

    const first = h.daemon(s);
    await waitFor(() => countLogged(first) > 0, 30_000, 'the broken manifest logged');
    const listed = (await statusJson(s)).invalidManifests.find((m) => m.path === manifestPath);
    expect(listed).toBeDefined();
    // One line per problem, logged together (they may reach the test in more than one read of the daemon's output).
    await waitFor(() => countLogged(first) >= listed!.problems.length, 10_000, 'every problem of the broken manifest logged');
    expect(countLogged(first)).toBe(listed!.problems.length);
    await waitFor(() => videoState(s, waitingId, 'later') === 'waiting', 30_000, 'a video waiting for its file');
    for (let walk = 1; walk <= 3; walk++) await controlRead(s, first, `a control manifest found by rescan ${walk}`);
    expect(countLogged(first)).toBe(listed!.problems.length);
    first.kill('SIGTERM');
    expect(await first.exited).toEqual({ code: 0, signal: null });

    // Once this incident (written while the daemon was down) is reported, the restarted daemon has read the broken manifest too.
    const controlId = randomUUID();
    const control = join(s.exportsRoot, 'control');
    await writeVideo(join(control, 'c.mp4'), 100 * KiB);
    await writeManifest(control, incidentManifest(controlId, [{ id: 'c', file: 'c.mp4' }]));
    const second = h.daemon(s);
    await waitIncident(s, second, controlId, settledCount(1), 'the control incident uploaded', ALO_WAIT_MS);
    await controlRead(s, second, 'a control manifest found by a rescan after the restart');
    expect(countLogged(second)).toBe(0);
    expect((await statusJson(s)).invalidManifests.map((m) => m.path)).toEqual([manifestPath]);
  });

  it('notices incident folders created while it runs, their manifest renamed into place, without waiting for a rescan', async (ctx) => {
    const h = harness(ctx);
    const s = await h.site(); // rescan_interval stays at its default, 300 s
    const d = await startedDaemon(h, s);

    // As a VMS exports: a new folder, the videos (if any), then the manifest under a temp name and a rename,
    // at slightly different paces (the rename 0-9 ms after the temp file).
    const written: Array<{ id: string; folder: string; withVideo: boolean }> = [];
    for (let i = 0; i < 30; i++) {
      const withVideo = i % 3 === 2;
      const folder = join(s.exportsRoot, '2024-02-02', `export-${i}`);
      const id = randomUUID();
      await mkdir(folder, { recursive: true });
      if (withVideo) await writeVideo(join(folder, 'cam01.mp4'), 50 * KiB);
      const manifest = incidentManifest(id, [
        withVideo
          ? { id: 'cam01', file: 'cam01.mp4' }
          : { id: 'lost', errors: ['No video available for the camera during the selected time period.'] },
      ]);
      const path = join(folder, 'incident.json');
      await writeFile(`${path}.tmp`, JSON.stringify(manifest));
      await sleep(i % 10);
      await rename(`${path}.tmp`, path);
      written.push({ id, folder, withVideo });
      await sleep(50);
    }
    // Noticed without a rescan (the next one is 300 s away): each incident reaches ALO within the wait.
    const missed = (): string[] =>
      written
        .filter((w) => s.alo.incident(w.id) === undefined)
        .map((w) => `${w.folder}${w.withVideo ? ' (with a video)' : ' (failed exports only)'}`);
    await waitFor(() => missed().length === 0, 40_000, 'every incident folder noticed').catch((err: Error) => {
      throw new Error(`${err.message}; not noticed: ${missed().join(', ')}\n${troubles(d)}`, { cause: err });
    });
  });

  it('notices manifests written while it starts up, without waiting for a rescan', async (ctx) => {
    const h = harness(ctx);
    const s = await h.site(); // rescan_interval stays at its default, 300 s
    // Folders that exist before the spawn (enough for a start-up of 30 s at this pace; empty ones cost the walk nothing).
    const folders: string[] = [];
    for (let i = 0; i < 2000; i++) {
      folders.push(join(s.exportsRoot, `incident-${String(i).padStart(4, '0')}`));
      await mkdir(folders[i]!, { recursive: true });
    }
    // A manifest every ~15 ms, from the spawn until 40 manifests after the daemon says it started.
    const d = h.daemon(s);
    const ids: string[] = [];
    let afterStart = 0;
    for (const folder of folders) {
      const id = randomUUID();
      await writeManifest(folder, incidentManifest(id, [{ id: 'lost', errors: ['export failed'] }]));
      ids.push(id);
      if (d.events('daemon.started').length > 0 && ++afterStart >= 40) break;
      await sleep(10);
    }
    expect(afterStart, `manifests written once the daemon had started (of ${ids.length})`).toBe(40);
    // Noticed without a rescan (the next one is 300 s away): each manifest is read into the ledger within the wait.
    const missed = (): string[] => {
      const read = incidentsRead(s);
      return ids.map((id, i) => (read.has(id) ? null : folders[i]!)).filter((f) => f !== null);
    };
    await waitFor(() => missed().length === 0, 40_000, 'every manifest written during start-up noticed').catch((err: Error) => {
      throw new Error(`${err.message}; not noticed: ${missed().join(', ')}\n${troubles(d)}`, { cause: err });
    });
  });

  it('reads a YAML manifest (incident.yaml, incident.yml)', async (ctx) => {
    const h = harness(ctx);
    const s = await h.site();
    const folder = join(s.exportsRoot, 'yaml');
    const sha = await writeVideo(join(folder, 'cam01.mov'), 300 * KiB);
    const id = randomUUID();
    const manifest = incidentManifest(
      id,
      [
        { id: 'cam01', file: 'cam01.mov' },
        { id: 'failed', errors: ['export failed: no recording'] },
      ],
      'From YAML',
    );
    const text = stringify(manifest);
    expect(text.trimStart().startsWith('{')).toBe(false); // block YAML, not JSON in disguise
    await writeManifestText(folder, text, 'incident.yaml');

    // The short name too.
    const ymlFolder = join(s.exportsRoot, 'yml');
    const ymlSha = await writeVideo(join(ymlFolder, 'cam02.mp4'), 200 * KiB);
    const ymlId = randomUUID();
    await writeManifestText(
      ymlFolder,
      stringify(incidentManifest(ymlId, [{ id: 'cam02', file: 'cam02.mp4' }], 'From YML')),
      'incident.yml',
    );

    const d = h.daemon(s);
    const incident = await waitIncident(s, d, id, settledCount(2), 'both videos in a final state', ALO_WAIT_MS);
    expect(incident.title).toBe('From YAML');
    expect(await s.store.objectSha256(uploaded(incident, 'cam01').s3_key)).toBe(sha);
    expect(failedErrors(incident, 'failed')).toEqual(['export failed: no recording']);
    const yml = await waitIncident(s, d, ymlId, settledCount(1), 'the incident.yml video uploaded', ALO_WAIT_MS);
    expect(yml.title).toBe('From YML');
    expect(await s.store.objectSha256(uploaded(yml, 'cam02').s3_key)).toBe(ymlSha);
  });

  it('applies a rewritten manifest: uploads the new video, reports again with the new title, never re-sends the first video', async (ctx) => {
    const h = harness(ctx);
    const s = await h.site();
    const folder = join(s.exportsRoot, 'rewrite');
    const id = randomUUID();
    const firstSha = await writeVideo(join(folder, 'cam01.mp4'), 300 * KiB);
    await writeManifest(folder, incidentManifest(id, [{ id: 'cam01', file: 'cam01.mp4' }], 'First title'));

    const d = h.daemon(s);
    const before = await waitIncident(s, d, id, settledCount(1), 'the first video reported', ALO_WAIT_MS);
    const firstKey = uploaded(before, 'cam01').s3_key;
    await waitFor(
      async () => (await statusJson(s)).incidents.find((i) => i.id === id)?.reports.every((r) => r.upToDate),
      10_000,
      'the report acknowledged',
    );
    const reportsBefore = s.alo.reports.filter((r) => r.incidentId === id).length;

    const secondSha = await writeVideo(join(folder, 'cam02.mp4'), 310 * KiB);
    await writeManifest(
      folder,
      incidentManifest(
        id,
        [
          { id: 'cam01', file: 'cam01.mp4' },
          { id: 'cam02', file: 'cam02.mp4' },
        ],
        'Second title',
      ),
    );

    const after = await waitIncident(
      s,
      d,
      id,
      (i) => i.uploaded_videos.length === 2 && i.title === 'Second title',
      'both videos and the new title',
      ALO_WAIT_MS,
    );
    expect(uploaded(after, 'cam01').s3_key).toBe(firstKey);
    expect(await s.store.objectSha256(firstKey)).toBe(firstSha);
    expect(await s.store.objectSha256(uploaded(after, 'cam02').s3_key)).toBe(secondSha);
    const reports = s.alo.reports.filter((r) => r.incidentId === id);
    expect(reports.length).toBeGreaterThan(reportsBefore);
    const last = reports.at(-1)!.body as { vms_incident: { title: string; uploaded_videos: Array<{ id: string }> } };
    expect(last.vms_incident.title).toBe('Second title');
    expect(last.vms_incident.uploaded_videos.map((v) => v.id).sort()).toEqual(['cam01', 'cam02']);
    expect(okPuts(s).filter((r) => r.key === firstKey)).toHaveLength(1);
    expect(okPuts(s)).toHaveLength(2);
  });

  it('uploads the same content once when two videos carry it, and reports both with the same key', async (ctx) => {
    const h = harness(ctx);
    const s = await h.site();
    const folder = join(s.exportsRoot, 'twins');
    const sha = await writeVideo(join(folder, 'a.mp4'), 400 * KiB);
    await copyFile(join(folder, 'a.mp4'), join(folder, 'b.mp4'));
    const id = randomUUID();
    await writeManifest(
      folder,
      incidentManifest(id, [
        { id: 'a', file: 'a.mp4' },
        { id: 'b', file: 'b.mp4' },
      ]),
    );

    const d = h.daemon(s);
    const incident = await waitIncident(s, d, id, (i) => i.uploaded_videos.length === 2, 'both videos reported', ALO_WAIT_MS);
    const a = uploaded(incident, 'a');
    const b = uploaded(incident, 'b');
    expect(b.s3_key).toBe(a.s3_key);
    expect(await s.store.objectSha256(a.s3_key)).toBe(sha);
    // One PUT of that content in all (the file is below the multipart threshold), one URL asked for.
    expect(okPuts(s)).toHaveLength(1);
    expect(s.alo.calls.filter((c) => c.route === 'upload_urls')).toHaveLength(1);
  });

  it('leaves a folder with video files and no manifest alone', async (ctx) => {
    const h = harness(ctx);
    const s = await h.site();
    await writeVideo(join(s.exportsRoot, 'in-progress', 'cam01.mp4'), 300 * KiB);
    await writeVideo(join(s.exportsRoot, 'in-progress', 'sub', 'cam02.mov'), 300 * KiB);
    await writeVideo(join(s.exportsRoot, 'loose.mp4'), 300 * KiB);
    // A valid incident elsewhere shows the daemon was at work all along.
    const id = randomUUID();
    const folder = join(s.exportsRoot, 'control');
    await writeVideo(join(folder, 'control.mp4'), 300 * KiB);
    await writeManifest(folder, incidentManifest(id, [{ id: 'control', file: 'control.mp4' }]));

    const d = h.daemon(s);
    const incident = await waitIncident(s, d, id, settledCount(1), 'the control incident uploaded', ALO_WAIT_MS);
    // And it went on watching: a manifest written afterwards (a failed export only) is read.
    const later = await controlRead(s, d, 'a manifest written after the upload read');
    const status = await statusJson(s);
    const key = uploaded(incident, 'control').s3_key;
    expect(s.store.requests.map((r) => r.key)).toEqual([key]);
    expect(new Set(s.alo.calls.map((c) => c.incidentId).filter((i) => i !== later))).toEqual(new Set([id]));
    expect(status.incidents.map((i) => i.id).sort()).toEqual([id, later].sort());
    expect(status.totals).toMatchObject({ done: 1, queued: 0, uploading: 0, failed: 0, waiting: 0 });
  });
});
