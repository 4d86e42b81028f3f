/**
 * After upload, through the real daemon and two ALO targets: `after_upload: delete | move` acts
 * only once both targets have a video (and ALO acknowledged the report), never on a video whose
 * upload failed somewhere; the incident folder goes once all its videos are handled; retention
 * deletes only files confirmed uploaded longer ago than its age. Files on disk and ledger rows
 * are asserted, not logs.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { appendFile, mkdtemp, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it, type TestContext } from 'vitest';
import { startAloEmulator, type AloEmulator } from '../emulators/alo.js';
import { startS3Store, type S3Store } from '../emulators/s3-store.js';
import { aloTargetConfig } from '../support/alo-site.js';
import { waitFor } from '../support/daemon-process.js';
import { MiB, sha256File, writeThumbnail } from '../support/files.js';
import { harness } from '../support/harness.js';
import { ledgerRowsSoFar } from '../support/ledger.js';
import { writeIncident } from '../support/manifest.js';
import { writeSiteConfig, type SiteFiles } from '../support/site.js';

interface Fleet extends SiteFiles {
  store: S3Store;
  a: AloEmulator;
  b: AloEmulator;
  start(): void;
}

/**
 * Targets `a` and `b` (two ALO emulators on one store) and a daemon (started by `start()`). Files
 * are handled once they settled longer ago than `watch.missing_file_seconds` (the window in which
 * a stalled exporter may still write to them): 2 s here, unless `watch` says otherwise.
 */
async function fleet(
  ctx: TestContext,
  sections: Record<string, unknown>,
  watch: Record<string, unknown> = { missing_file_seconds: 2 },
): Promise<Fleet> {
  const h = harness(ctx);
  const store = h.closeAtEnd(await startS3Store());
  const a = h.closeAtEnd(await startAloEmulator({ store }));
  const b = h.closeAtEnd(await startAloEmulator({ store }));
  const files = await writeSiteConfig(await h.dir(), {
    targets: { a: aloTargetConfig(a.baseUrl), b: aloTargetConfig(b.baseUrl) },
    sections,
    watch,
  });
  return { ...files, store, a, b, start: () => void h.daemon(files) };
}

/** When the video settled (was last hashed), ms; undefined while it waits. */
const settledAt = (f: SiteFiles, incidentId: string, videoId: string): number | undefined =>
  ledgerRowsSoFar<{ settled_at: number | null }>(
    f.ledgerPath,
    'SELECT settled_at FROM videos WHERE incident_id = ? AND id = ?',
    incidentId,
    videoId,
  )[0]?.settled_at ?? undefined;

/** What ALO `alo` holds under the key its incident report names for the video. */
async function reportedSha(f: Fleet, alo: AloEmulator, incidentId: string, videoId: string): Promise<string | undefined> {
  const key = alo.incident(incidentId)?.uploaded_videos.find((v) => v.id === videoId)?.s3_key;
  return key && f.store.hasObject(key) ? f.store.objectSha256(key) : undefined;
}

/** One incident of one 1 MiB video, `<id>-v1` in cam01.mp4; returns the file's path. */
async function exportOneVideo(f: Fleet, id: string): Promise<string> {
  await writeIncident(f.exportsRoot, id, [{ id: `${id}-v1`, file: 'cam01.mp4', size: 1 * MiB }]);
  return join(f.exportsRoot, id, 'cam01.mp4');
}

interface VideoRow {
  id: string;
  files_handled: string | null;
  files_handled_at: number | null;
}
const videoRows = (f: SiteFiles, incidentId: string): VideoRow[] =>
  ledgerRowsSoFar<VideoRow>(
    f.ledgerPath,
    'SELECT id, files_handled, files_handled_at FROM videos WHERE incident_id = ? ORDER BY position',
    incidentId,
  );
const videoRow = (f: SiteFiles, incidentId: string, videoId: string): VideoRow | undefined =>
  videoRows(f, incidentId).find((v) => v.id === videoId);
const folderHandled = (f: SiteFiles, incidentId: string): string | null | undefined =>
  ledgerRowsSoFar<{ folder_handled: string | null }>(f.ledgerPath, 'SELECT folder_handled FROM incidents WHERE id = ?', incidentId)[0]
    ?.folder_handled;
const uploadStates = (f: SiteFiles, incidentId: string, videoId: string): Record<string, string> =>
  Object.fromEntries(
    ledgerRowsSoFar<{ target: string; role: string; state: string }>(
      f.ledgerPath,
      'SELECT target, role, state FROM uploads WHERE incident_id = ? AND video_id = ?',
      incidentId,
      videoId,
    ).map((u) => [`${u.target}/${u.role}`, u.state]),
  );

/**
 * An incident in `folder`: video `<id>-v1` (cam01.mp4 + cam01.jpg) and `<id>-v2` (cam02.mp4) of
 * 6 MiB, and a failed export `<id>-bad`. Returns the SHA-256 of each file, by relative path.
 */
async function exportIncident(root: string, id: string, folder: string): Promise<Map<string, string>> {
  const shas = new Map<string, string>();
  shas.set('cam01.jpg', await writeThumbnail(join(root, folder, 'cam01.jpg')));
  const videos = await writeIncident(
    root,
    id,
    [
      { id: `${id}-v1`, file: 'cam01.mp4', thumbnail: 'cam01.jpg', size: 6 * MiB },
      { id: `${id}-v2`, file: 'cam02.mp4', size: 6 * MiB + 7 },
      { id: `${id}-bad`, errors: ['G64 export failed with: No video available for the camera during the selected time period.'] },
    ],
    { folder },
  );
  shas.set('cam01.mp4', videos.get(`${id}-v1`)!);
  shas.set('cam02.mp4', videos.get(`${id}-v2`)!);
  return shas;
}

describe('after_upload', () => {
  it('delete: removes the files and the folder only once both targets have every video', async (ctx) => {
    const f = await fleet(ctx, { after_upload: 'delete' });
    const folder = join(f.exportsRoot, 'north', 'inc-del');
    await exportIncident(f.exportsRoot, 'inc-del', 'north/inc-del');
    // b answers its first upload_urls calls with 503: it gets the videos seconds after a.
    f.b.failNext('upload_urls', 25, 503);
    f.start();
    // a has v1 (video and thumbnail) while b has not: the files are still there.
    await waitFor(
      () => {
        const u = uploadStates(f, 'inc-del', 'inc-del-v1');
        return u['a/video'] === 'done' && u['a/thumbnail'] === 'done' && u['b/video'] !== 'done';
      },
      30_000,
      'v1 on a only',
    );
    expect(existsSync(join(folder, 'cam01.mp4'))).toBe(true);
    expect(existsSync(join(folder, 'cam01.jpg'))).toBe(true);
    expect(videoRow(f, 'inc-del', 'inc-del-v1')?.files_handled).toBeNull();

    await waitFor(() => folderHandled(f, 'inc-del') === 'delete', 45_000, 'the folder handled');
    for (const v of ['inc-del-v1', 'inc-del-v2']) {
      expect(uploadStates(f, 'inc-del', v)).toMatchObject({ 'a/video': 'done', 'b/video': 'done' });
      expect(videoRow(f, 'inc-del', v)?.files_handled).toBe('delete');
    }
    // The failed export had no file; it counts as handled without a mark of its own.
    expect(videoRow(f, 'inc-del', 'inc-del-bad')?.files_handled).toBeNull();
    expect(f.a.incident('inc-del')?.failed_videos).toHaveLength(1);
    expect(f.b.incident('inc-del')?.uploaded_videos).toHaveLength(2);
    expect(existsSync(folder)).toBe(false);
    // Only the incident folder goes; the export root and its other folders stay.
    expect(existsSync(join(f.exportsRoot, 'north'))).toBe(true);
  });

  it('delete: a video refused by one target keeps its files, and so does the folder', async (ctx) => {
    const f = await fleet(ctx, { after_upload: 'delete' });
    const folder = join(f.exportsRoot, 'inc-ref');
    const shas = await exportIncident(f.exportsRoot, 'inc-ref', 'inc-ref');
    f.b.refuseFile('inc-ref-v1', 'media rejected by policy (after-upload test)');
    f.start();
    await waitFor(() => videoRow(f, 'inc-ref', 'inc-ref-v2')?.files_handled === 'delete', 45_000, 'v2 deleted');
    await waitFor(() => uploadStates(f, 'inc-ref', 'inc-ref-v1')['b/video'] === 'failed', 30_000, 'v1 failed on b');
    // ALO acknowledged the report that lists v1 as failed: nothing more will happen to it.
    await waitFor(() => f.b.incident('inc-ref')?.failed_videos.some((v) => v.id === 'inc-ref-v1'), 30_000, 'b reported v1 failed');
    await new Promise((r) => setTimeout(r, 2500)); // several after-upload steps
    expect(uploadStates(f, 'inc-ref', 'inc-ref-v1')['a/video']).toBe('done');
    expect(videoRow(f, 'inc-ref', 'inc-ref-v1')?.files_handled).toBeNull();
    expect(await sha256File(join(folder, 'cam01.mp4'))).toBe(shas.get('cam01.mp4'));
    expect(await sha256File(join(folder, 'cam01.jpg'))).toBe(shas.get('cam01.jpg'));
    expect(existsSync(join(folder, 'cam02.mp4'))).toBe(false);
    expect(existsSync(join(folder, 'incident.json'))).toBe(true);
    expect(folderHandled(f, 'inc-ref')).toBeNull();
  });

  it('delete: a file its exporter goes on writing after it was uploaded stays until the final version is on every target', async (ctx) => {
    const f = await fleet(ctx, { after_upload: 'delete' }, { missing_file_seconds: 3 });
    const path = await exportOneVideo(f, 'inc-grow');
    f.start();
    await waitFor(
      () => {
        const u = uploadStates(f, 'inc-grow', 'inc-grow-v1');
        return u['a/video'] === 'done' && u['b/video'] === 'done';
      },
      30_000,
      'the first version on a and b',
    );
    // The exporter had only paused: it writes the rest, within the change window.
    await appendFile(path, randomBytes(2 * MiB));
    const finalSha = await sha256File(path);
    await waitFor(() => videoRow(f, 'inc-grow', 'inc-grow-v1')?.files_handled === 'delete', 45_000, 'the file deleted');
    expect(existsSync(path)).toBe(false);
    for (const alo of [f.a, f.b]) expect(await reportedSha(f, alo, 'inc-grow', 'inc-grow-v1')).toBe(finalSha);
  });

  it('move: never moves a file that changed since it was uploaded, even after the change window', async (ctx) => {
    const h = harness(ctx);
    const moved = await h.dir();
    const f = await fleet(ctx, { after_upload: 'move', after_upload_dir: moved }, { missing_file_seconds: 1 });
    // b does not acknowledge reports for now, which holds the move back past the change window.
    f.b.failNext('put_incident', 10_000, 503);
    const path = await exportOneVideo(f, 'inc-late');
    f.start();
    await waitFor(
      () => {
        const u = uploadStates(f, 'inc-late', 'inc-late-v1');
        const at = settledAt(f, 'inc-late', 'inc-late-v1');
        return u['a/video'] === 'done' && u['b/video'] === 'done' && at !== undefined && Date.now() - at > 1500;
      },
      30_000,
      'the first version on a and b, settled longer ago than the window',
    );
    await appendFile(path, randomBytes(2 * MiB));
    const finalSha = await sha256File(path);
    f.b.clearFaults('put_incident');
    await waitFor(() => videoRow(f, 'inc-late', 'inc-late-v1')?.files_handled === 'move', 45_000, 'the file moved');
    expect(await sha256File(join(moved, 'inc-late', 'cam01.mp4'))).toBe(finalSha);
    for (const alo of [f.a, f.b]) expect(await reportedSha(f, alo, 'inc-late', 'inc-late-v1')).toBe(finalSha);
  });

  it('move: puts the files and the manifest under after_upload_dir with the same relative path (across filesystems when /dev/shm is one)', async (ctx) => {
    const h = harness(ctx);
    // /dev/shm is a tmpfs on Linux: a move there from the temp dir cannot be a rename.
    const base = existsSync('/dev/shm') ? '/dev/shm' : await h.dir();
    const moved = await mkdtemp(join(base, 'vms-uplink-moved-'));
    h.closeAtEnd({ close: () => rm(moved, { recursive: true, force: true }) });
    const f = await fleet(ctx, { after_upload: 'move', after_upload_dir: moved });
    const crossDevice = statSync(moved).dev !== statSync(f.exportsRoot).dev;
    const shas = await exportIncident(f.exportsRoot, 'inc-mv', 'site-a/2024/inc-mv');
    f.start();
    await waitFor(() => folderHandled(f, 'inc-mv') === 'move', 45_000, 'the folder moved');
    const dest = join(moved, 'site-a', '2024', 'inc-mv');
    for (const [name, sha] of shas) expect(await sha256File(join(dest, name)), name).toBe(sha);
    expect((await readdir(dest)).sort()).toEqual(['cam01.jpg', 'cam01.mp4', 'cam02.mp4', 'incident.json']);
    expect(existsSync(join(f.exportsRoot, 'site-a', '2024', 'inc-mv'))).toBe(false);
    expect(videoRows(f, 'inc-mv').map((v) => v.files_handled)).toEqual(['move', 'move', null]);
    expect(uploadStates(f, 'inc-mv', 'inc-mv-v1')).toMatchObject({
      'a/video': 'done',
      'b/video': 'done',
      'a/thumbnail': 'done',
      'b/thumbnail': 'done',
    });
    void ctx.annotate(
      `after_upload_dir ${crossDevice ? 'on another filesystem (copy + fsync + unlink)' : 'on the same filesystem (rename)'}`,
    );
  });
});

describe('retention', () => {
  it('deletes only files confirmed uploaded on every target, and only once they are older than the age', async (ctx) => {
    const f = await fleet(ctx, { retention: { delete_uploaded_after: '2s' } });
    const folder = join(f.exportsRoot, 'inc-ret');
    const shas = await exportIncident(f.exportsRoot, 'inc-ret', 'inc-ret');
    f.b.refuseFile('inc-ret-v1', 'media rejected by policy (retention test)');
    f.start();
    const v2 = await waitFor(
      () => {
        const row = videoRow(f, 'inc-ret', 'inc-ret-v2');
        return row?.files_handled === 'retention' ? row : undefined;
      },
      45_000,
      'v2 deleted by retention',
    );
    // Deleted no sooner than 2 s after the last confirmation (the last upload, or ALO's ack).
    const confirmed = ledgerRowsSoFar<{ at: number }>(
      f.ledgerPath,
      `SELECT MAX(at) AS at FROM (SELECT completed_at AS at FROM uploads WHERE incident_id = 'inc-ret' AND video_id = 'inc-ret-v2'
                                 UNION ALL SELECT acked_at FROM reports WHERE incident_id = 'inc-ret')`,
    )[0]!.at;
    expect(v2.files_handled_at! - confirmed).toBeGreaterThanOrEqual(2000);
    expect(existsSync(join(folder, 'cam02.mp4'))).toBe(false);
    await waitFor(() => uploadStates(f, 'inc-ret', 'inc-ret-v1')['b/video'] === 'failed', 30_000, 'v1 failed on b');
    await new Promise((r) => setTimeout(r, 3500)); // past the age, several sweeps
    // v1 is on a but failed on b: not confirmed uploaded, never deleted; the folder stays.
    expect(videoRow(f, 'inc-ret', 'inc-ret-v1')?.files_handled).toBeNull();
    expect(await sha256File(join(folder, 'cam01.mp4'))).toBe(shas.get('cam01.mp4'));
    expect(await sha256File(join(folder, 'cam01.jpg'))).toBe(shas.get('cam01.jpg'));
    expect(existsSync(join(folder, 'incident.json'))).toBe(true);
    expect(folderHandled(f, 'inc-ret')).toBeNull();
  });
});
