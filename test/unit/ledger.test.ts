/**
 * The ledger's stages on a real SQLite file: each transition as the daemon makes it, read back
 * through the stage that uses it (and through a separate read-only connection, as `status` does).
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LedgerOpenError } from '../../src/ledger/database.js';
import { Ledger } from '../../src/ledger/ledger.js';
import { MIGRATIONS } from '../../src/ledger/migrations.js';
import { PAGE_SQL } from '../../src/ledger/views/status.js';
import type { SettledFile, UploadPlan } from '../../src/ledger/plan-ledger.js';
import type { Manifest } from '../../src/watch/manifest.js';
import { tempDir } from '../support/files.js';
import { ledgerRows } from '../support/ledger.js';

let dir: Awaited<ReturnType<typeof tempDir>>;
let ledger: Ledger;
let dbPath: string;

beforeEach(async () => {
  dir = await tempDir();
  dbPath = join(dir.path, 'ledger.db');
  ledger = Ledger.open(dbPath, { reportingTargets: ['alo'] });
});
afterEach(async () => {
  ledger.close();
  await dir.cleanup();
});

const manifest = (videos: Manifest['videos'], title = 'Break-in', id = 'inc-1'): Manifest => ({ incident: { id, title }, videos });
const apply = (m: Manifest, folder = `/exports/${m.incident.id}`, sha = JSON.stringify(m), targets = ['alo']): Promise<boolean> =>
  ledger.watch.applyManifest(`${folder}/incident.json`, folder, sha, `stamp-${sha.length}`, m, targets);
const settled = (sha256: string | null, size = 100, role: SettledFile['role'] = 'video'): SettledFile => ({
  role,
  path: `/exports/inc-1/${role === 'video' ? 'a.mp4' : 'a.jpg'}`,
  size,
  mtimeMs: 1,
  stamp: `${size}:1:1:1:${sha256 ?? 'x'}`,
  sha256,
  contentType: role === 'video' ? 'video/mp4' : 'image/jpeg',
});
const parts = [
  { number: 1, offset: 0, size: 60 },
  { number: 2, offset: 60, size: 40 },
];
const toAlo = (p: typeof parts | null = parts, role: SettledFile['role'] = 'video'): UploadPlan => ({ target: 'alo', role, parts: p });
const ready = (videoId: string, files: SettledFile[], plans: UploadPlan[] = [toAlo()], incidentId = 'inc-1'): void =>
  ledger.plan.videosReady([{ incidentId, videoId, files, plans, notes: [] }]);
const queued = (): number[] => ledger.uploads.queued(10, new Set(), ['alo']);
const done = (id: number, s3Key: string, sha256 = 'sha'): Promise<boolean> =>
  ledger.uploads.done(id, { result: { s3_key: s3Key }, sha256, session: { mode: 'single' }, parts: [], startedAt: 1 });
const row = (sql: string, ...args: unknown[]): Record<string, unknown> => ledgerRows<Record<string, unknown>>(dbPath, sql, ...args)[0]!;

describe('Ledger', () => {
  it('records a manifest once per version and asks for a report', async () => {
    const m = manifest([
      { id: 'v1', file: 'a.mp4' },
      { id: 'v2', errors: ['G64 export failed'] },
    ]);
    expect(await apply(m)).toBe(true);
    expect(await apply(m)).toBe(false);
    expect(ledger.plan.waiting(null, 10).map((v) => v.videoId)).toEqual(['v1']);
    expect(row(`SELECT state, errors FROM videos WHERE id = 'v2'`)).toEqual({ state: 'failed', errors: '["G64 export failed"]' });
    expect(ledger.reports.due(null, 10)).toEqual([{ incidentId: 'inc-1', target: 'alo', wanted: 1, attempts: 0 }]);
    expect(ledger.reports.build('inc-1', 'alo').videos).toEqual([
      { video: { id: 'v2' }, outcome: 'failed', errors: ['G64 export failed'] },
    ]);
  });

  it('commits writes gathered for a group commit when it closes, rather than dropping them', async () => {
    const applied = [apply(manifest([{ id: 'v1', file: 'a.mp4' }])), apply(manifest([{ id: 'v1', file: 'b.mp4' }], 'Theft', 'inc-2'))];
    ledger.close();
    expect(await Promise.all(applied)).toEqual([true, true]);
    expect(ledgerRows(dbPath, 'SELECT id FROM incidents ORDER BY id')).toEqual([{ id: 'inc-1' }, { id: 'inc-2' }]);
    ledger = Ledger.open(dbPath, { reportingTargets: ['alo'] });
  });

  it('remembers the stamp of the manifest version last read, so a rescan reads only what changed', async () => {
    const path = '/exports/inc-1/incident.json';
    expect(ledger.watch.manifestStamp(path)).toBeNull();
    await ledger.watch.applyManifest(path, '/exports/inc-1', 'sha-1', '10:1', manifest([{ id: 'v1', file: 'a.mp4' }]), ['alo']);
    expect(ledger.watch.manifestStamp(path)).toBe('10:1');
    // Touched, same content: nothing applied, but the new stamp is remembered.
    expect(
      await ledger.watch.applyManifest(path, '/exports/inc-1', 'sha-1', '10:2', manifest([{ id: 'v1', file: 'a.mp4' }]), ['alo']),
    ).toBe(false);
    expect(ledger.watch.manifestStamp(path)).toBe('10:2');
    expect(await ledger.watch.recordManifestError('/exports/bad/incident.json', 'fp', '3:3', ['incident.id: Required'])).toBe(true);
    expect(ledger.watch.manifestStamp('/exports/bad/incident.json')).toBe('3:3');
  });

  it('walks an upload from ready through parts to done, recording the MD5 of what was sent, and reports it', async () => {
    await apply(manifest([{ id: 'v1', file: 'a.mp4', camera_name: 'Cam 1' }]));
    await ledger.reports.acked('inc-1', 'alo', 1);
    ready('v1', [settled(null)]);
    const [id] = queued();
    const upload = ledger.uploads.load(id!)!;
    expect(upload.file).toMatchObject({
      name: 'a.mp4',
      size: 100,
      sha256: null,
      stamp: '100:1:1:1:x',
      video: { id: 'v1', camera_name: 'Cam 1' },
    });
    expect(upload.parts.map((p) => [p.state, p.md5])).toEqual([
      ['pending', null],
      ['pending', null],
    ]);

    expect(ledger.uploads.started(id!, { mode: 'multipart', upload_id: 'u' })).toBe(true);
    ledger.uploads.partDone(id!, { number: 1, etag: 'e1', md5: 'a'.repeat(32) });
    expect(ledger.uploads.load(id!)!.parts.map((p) => [p.state, p.md5])).toEqual([
      ['done', 'a'.repeat(32)],
      ['pending', null],
    ]);
    expect(ledger.status.snapshot().incidents[0]!.videos[0]!.uploads[0]).toMatchObject({
      state: 'uploading',
      bytesDone: 60,
      bytesTotal: 100,
    });
    expect(ledger.reports.due(null, 10)).toEqual([]);
    // The last part is recorded with the completion, in one transaction.
    await ledger.uploads.done(id!, {
      result: { s3_key: 'k/a.mp4' },
      sha256: 'c0ffee',
      session: { mode: 'multipart', upload_id: 'u' },
      parts: [{ number: 2, etag: 'e2', md5: 'b'.repeat(32) }],
      startedAt: 1,
    });
    expect(ledger.uploads.load(id!)).toBeNull();
    expect(row(`SELECT state, sha256 FROM uploads WHERE id = ?`, id)).toEqual({ state: 'done', sha256: 'c0ffee' });
    expect(row(`SELECT md5 FROM parts WHERE upload_id = ? AND number = 2`, id)).toEqual({ md5: 'b'.repeat(32) });
    expect(ledger.reports.due(null, 10)).toHaveLength(1);
    expect(ledger.reports.build('inc-1', 'alo').videos).toEqual([
      { video: { id: 'v1', camera_name: 'Cam 1' }, outcome: 'uploaded', results: { video: { s3_key: 'k/a.mp4' } } },
    ]);
  });

  it('never sends the same content twice to a target within an incident', async () => {
    await apply(
      manifest([
        { id: 'v1', file: 'a.mp4' },
        { id: 'v2', file: 'b.mp4' },
      ]),
    );
    ready('v1', [settled('same')]);
    ready('v2', [settled('same')]);
    const ids = queued();
    expect(ids).toHaveLength(1);
    await done(ids[0]!, 'k/a.mp4', 'same');
    expect(row(`SELECT state, reused_from, result FROM uploads WHERE video_id = 'v2'`)).toEqual({
      state: 'done',
      reused_from: ids[0],
      result: '{"s3_key":"k/a.mp4"}',
    });

    // Another incident with the same content is its own case: it is uploaded for that incident.
    await apply(manifest([{ id: 'v9', file: 'c.mp4' }], 'Other', 'inc-2'));
    ready('v9', [settled('same')], [toAlo()], 'inc-2');
    expect(row(`SELECT state, reused_from FROM uploads WHERE video_id = 'v9'`)).toEqual({ state: 'queued', reused_from: null });
    expect(queued()).toHaveLength(1);
  });

  it("offers only the uploads of configured targets: a removed target's wait for it, queued, and nothing else waits behind them", async () => {
    await apply(manifest([{ id: 'v1', file: 'a.mp4' }]), undefined, undefined, ['alo', 'gone']);
    ready('v1', [settled('sha-1')], [toAlo(), { ...toAlo(), target: 'gone' }]);
    const toGone = ledger.uploads.queued(10, new Set(), ['gone']);
    expect(toGone).toHaveLength(1);
    expect(ledger.uploads.queued(1, new Set(), ['alo'])).toEqual(queued());
    expect(queued()).not.toContain(toGone[0]);
    expect(ledger.uploads.queued(10, new Set(), [])).toEqual([]);
    expect(ledger.figures.workPending(['gone'])).toBe(true);
    expect(ledger.figures.workPending([])).toBe(false);
    await done(queued()[0]!, 'k/a.mp4', 'sha-1');
    expect(row(`SELECT state FROM uploads WHERE target = 'gone'`)).toEqual({ state: 'queued' });
  });

  it('asks for the identity first only when a file may hold content the incident already has (the same size)', async () => {
    await apply(
      manifest([
        { id: 'v1', file: 'a.mp4' },
        { id: 'v2', file: 'b.mp4' },
      ]),
    );
    expect(ledger.plan.mayShareContent('inc-1', 'video', 100)).toBe(false);
    ready('v1', [settled(null)]);
    expect(ledger.plan.mayShareContent('inc-1', 'video', 100)).toBe(true);
    expect(ledger.plan.mayShareContent('inc-1', 'video', 101)).toBe(false);
    expect(ledger.plan.mayShareContent('inc-1', 'thumbnail', 100)).toBe(false);
    expect(ledger.plan.mayShareContent('inc-2', 'video', 100)).toBe(false);
    // The identity pass of v1 ends: its upload knows it, and so does the next look-up.
    const file = { incidentId: 'inc-1', videoId: 'v1', role: 'video' as const, stamp: '100:1:1:1:x' };
    expect(ledger.plan.knownIdentity(file)).toBeNull();
    await ledger.plan.identityKnown(file, 'sha-v1');
    expect(ledger.plan.knownIdentity(file)).toBe('sha-v1');
    expect(row(`SELECT sha256 FROM uploads WHERE video_id = 'v1'`)).toEqual({ sha256: 'sha-v1' });
    // An identity of a version gone (another stamp) is not recorded.
    await ledger.plan.identityKnown({ ...file, stamp: 'old' }, 'sha-old');
    expect(ledger.plan.knownIdentity(file)).toBe('sha-v1');
  });

  it('records nothing for an upload withdrawn while it was under way, and says which uploads must stop', async () => {
    await apply(manifest([{ id: 'v1', file: 'a.mp4' }]));
    ready('v1', [settled('old')]);
    const [id] = queued();
    expect(ledger.uploads.started(id!, { mode: 'multipart', upload_id: 'u-1' })).toBe(true);
    expect(ledger.uploads.halted([id!])).toEqual(new Map());
    // The VMS rewrote the manifest with another file for v1: the upload under way is withdrawn.
    await apply(manifest([{ id: 'v1', file: 'b.mp4' }]));
    expect(ledger.uploads.halted([id!, 999])).toEqual(
      new Map([
        [id!, 'withdrawn'],
        [999, 'withdrawn'],
      ]),
    );
    expect(ledger.uploads.started(id!, { mode: 'multipart', upload_id: 'u-2' })).toBe(false);
    ledger.uploads.partDone(id!, { number: 1, etag: 'e1', md5: 'x' });
    expect(await done(id!, 'k/a.mp4')).toBe(false);
    ledger.uploads.failed(id!, 'too late');
    expect(row('SELECT COUNT(*) AS n FROM uploads')).toEqual({ n: 0 });
    // The session it had is aborted once, from the withdrawal.
    expect(ledger.uploads.abortsDue(10).map((a) => a.session)).toEqual([{ mode: 'multipart', upload_id: 'u-1' }]);
  });

  it('says which uploads under way belong to a paused camera', async () => {
    await apply(manifest([{ id: 'v1', file: 'a.mp4', camera_id: 'cam-1' }]));
    ready('v1', [settled(null)]);
    const [id] = queued();
    expect(ledger.operator.setCameraState('cam-1', 'paused')).toBe(true);
    expect(ledger.uploads.halted([id!])).toEqual(new Map([[id!, 'paused']]));
    expect(queued()).toEqual([]);
    expect(ledger.operator.setCameraState('cam-unknown', 'paused')).toBe(false);
  });

  it('stops sending a report the platform refused for good until the incident changes or is retried', async () => {
    await apply(manifest([{ id: 'v1', file: 'a.mp4' }]));
    const [due] = ledger.reports.due(null, 10);
    ledger.reports.failed('inc-1', 'alo', 'ALO answered 503');
    expect(ledger.reports.due(null, 10)).toHaveLength(1);
    ledger.reports.refused('inc-1', 'alo', due!.wanted, 'ALO answered 400: s3_key was never handed out for this incident');
    expect(ledger.reports.due(null, 10)).toEqual([]);
    expect(ledger.status.snapshot().incidents[0]!.reports[0]).toMatchObject({
      state: 'refused',
      lastError: expect.stringContaining('never handed out'),
    });
    expect(ledger.figures.refusedReportsByTarget()).toEqual(
      new Map([['alo', { count: 1, lastError: expect.stringContaining('never handed out') }]]),
    );
    // A video reaching a final state is a new version of the incident: it is sent again.
    ready('v1', [settled('x')]);
    await done(queued()[0]!, 'k/a.mp4');
    expect(ledger.reports.due(null, 10)).toHaveLength(1);
    ledger.reports.refused('inc-1', 'alo', ledger.reports.due(null, 10)[0]!.wanted, 'refused again');
    expect(ledger.reports.due(null, 10)).toEqual([]);
    expect(ledger.operator.retry('inc-1')).toEqual({ uploads: 0, videos: 0, incident: 'inc-1', takenIn: false });
    expect(ledger.reports.due(null, 10)).toHaveLength(1);
  });

  it('pages through due reports after a cursor', async () => {
    for (const id of ['inc-a', 'inc-b', 'inc-c']) await apply(manifest([{ id: 'v', errors: ['failed'] }], 't', id));
    const first = ledger.reports.due(null, 2);
    expect(first.map((r) => r.incidentId)).toEqual(['inc-a', 'inc-b']);
    expect(ledger.reports.due(first[1]!, 2).map((r) => r.incidentId)).toEqual(['inc-c']);
  });

  it('sends a video whose file changed after its upload completed round again, keeping what the new upload supersedes', async () => {
    await apply(manifest([{ id: 'v1', file: 'a.mp4' }]));
    ready('v1', [settled('short', 60)], [toAlo([parts[0]!])]);
    const settledAt = Number(row(`SELECT settled_at FROM videos WHERE id = 'v1'`).settled_at);
    // Watched from the moment it settled, until it settled longer ago than the window.
    expect(ledger.plan.watchedFiles(settledAt - 1, { paths: ['/exports/inc-1/a.mp4'] })).toMatchObject([
      { videoId: 'v1', role: 'video', size: 60, stamp: '60:1:1:1:short' },
    ]);
    expect(ledger.plan.watchedFiles(settledAt, { afterRow: 0, limit: 10 })).toEqual([]);
    await done(queued()[0]!, 'k/a.mp4', 'short');
    expect(ledger.after.uploaded(['alo'], settledAt - 1, null, 10).videos).toEqual([]);

    expect(ledger.plan.fileChanged('inc-1', 'v1', 'a.mp4 grew after it was uploaded (60 → 100 bytes): uploaded again')).toEqual([
      { target: 'alo', role: 'video', result: { s3_key: 'k/a.mp4' } },
    ]);
    expect(ledger.plan.waiting(null, 10).map((v) => v.videoId)).toEqual(['v1']);
    ready('v1', [settled(null, 100)]);
    const [again] = queued();
    expect(ledger.uploads.load(again!)).toMatchObject({ file: { sha256: null, size: 100 }, superseded: { s3_key: 'k/a.mp4' } });
    const video = ledger.status.snapshot().incidents[0]!.videos[0]!;
    expect(video).toMatchObject({
      changedAfterUpload: 1,
      changeNote: 'a.mp4 grew after it was uploaded (60 → 100 bytes): uploaded again',
      restarts: 0,
    });
    // A change before any upload completed is a restart, not a change after upload.
    expect(ledger.uploads.fileChanged('inc-1', 'v1', 'grew again')).toEqual([]);
    expect(ledger.status.snapshot().incidents[0]!.videos[0]!).toMatchObject({ changedAfterUpload: 1, restarts: 1 });
  });

  it('fails an upload with the message, queues the abort of its session, and retries on request', async () => {
    await apply(manifest([{ id: 'v1', file: 'a.mp4' }]));
    ready('v1', [settled('x')]);
    const [id] = queued();
    ledger.uploads.started(id!, { mode: 'multipart', upload_id: 'u-1' });
    ledger.uploads.partDone(id!, { number: 1, etag: 'e1', md5: 'm1' });
    ledger.uploads.failed(id!, 'ALO answered 400: bad part');
    expect(ledger.uploads.abortsDue(10).map((a) => a.session)).toEqual([{ mode: 'multipart', upload_id: 'u-1' }]);
    expect(ledger.reports.build('inc-1', 'alo').videos).toEqual([
      { video: { id: 'v1' }, outcome: 'failed', errors: ['upload failed: ALO answered 400: bad part'] },
    ]);

    expect(ledger.operator.retry(String(id))).toEqual({ uploads: 1, videos: 0, incident: null, takenIn: false });
    const again = ledger.uploads.load(id!)!;
    expect(again.session).toBeNull();
    expect(again.parts.every((p) => p.state === 'pending' && p.md5 === null)).toBe(true);
    expect(ledger.operator.retry('no-such-incident')).toBeNull();
  });

  it('drops unfinished uploads of a file that changed and waits for it again', async () => {
    await apply(manifest([{ id: 'v1', file: 'a.mp4' }]));
    ready('v1', [settled('v1-old')]);
    const [id] = queued();
    ledger.uploads.started(id!, { mode: 'multipart', upload_id: 'u-old' });
    ledger.uploads.fileChanged('inc-1', 'v1', 'restarted: part 1 changed while it was read');
    expect(queued()).toEqual([]);
    expect(ledger.plan.waiting(null, 10).map((v) => v.videoId)).toEqual(['v1']);
    expect(ledger.uploads.abortsDue(10)).toHaveLength(1);
    ready('v1', [settled('v1-new')]);
    expect(ledger.uploads.load(queued()[0]!)!.file.sha256).toBe('v1-new');
  });

  it('applies a manifest rewrite: new videos wait, changed metadata is kept, the incident is reported again', async () => {
    await apply(manifest([{ id: 'v1', file: 'a.mp4' }]), '/exports/inc-1', 's1');
    await ledger.reports.acked('inc-1', 'alo', 1);
    await apply(
      manifest(
        [
          { id: 'v1', file: 'a.mp4', camera_name: 'renamed' },
          { id: 'v2', file: 'b.mp4' },
        ],
        'Break-in (updated)',
      ),
      '/exports/inc-1',
      's2',
    );
    expect(ledger.plan.waiting(null, 10).map((v) => v.videoId)).toEqual(['v1', 'v2']);
    expect(ledger.plan.videoContext('inc-1', 'v1').info.camera_name).toBe('renamed');
    expect(ledger.reports.build('inc-1', 'alo').incident.title).toBe('Break-in (updated)');
    expect(ledger.reports.due(null, 10)).toHaveLength(1);
  });

  it('pages through waiting videos, oldest first, after a cursor', async () => {
    await apply(
      manifest([
        { id: 'a', file: 'a.mp4' },
        { id: 'b', file: 'b.mp4' },
        { id: 'c', file: 'c.mp4' },
      ]),
    );
    const first = ledger.plan.waiting(null, 2);
    expect(first.map((v) => v.videoId)).toEqual(['a', 'b']);
    expect(
      ledger.plan
        .waiting({ firstSeenAt: first[1]!.firstSeenAt, incidentId: 'inc-1', position: first[1]!.position }, 2)
        .map((v) => v.videoId),
    ).toEqual(['c']);
  });

  it('pages through incidents newest first (or oldest first) past a cursor, along an index rather than a sort of them all', async () => {
    for (const id of ['inc-c', 'inc-a', 'inc-d', 'inc-b']) await apply(manifest([{ id: 'v', file: 'v.mp4' }], 'Break-in', id));
    // First seen in the order applied; inc-a and inc-d in the same millisecond (the id breaks the tie).
    const raw = new Database(dbPath);
    const seen = raw.prepare('UPDATE incidents SET created_at = ? WHERE id = ?');
    [
      ['inc-c', 1000],
      ['inc-a', 2000],
      ['inc-d', 2000],
      ['inc-b', 3000],
    ].forEach(([id, at]) => seen.run(at, id));
    const plan = (sql: string): string =>
      (raw.prepare(`EXPLAIN QUERY PLAN ${sql}`).all({ at: 2000, id: 'inc-d', limit: 20 }) as Array<{ detail: string }>)
        .map((p) => p.detail)
        .join('; ');
    // Read along the index from where the page starts: never a sort of every incident, nor a walk from the newest.
    expect(plan(PAGE_SQL.newest.first)).toBe('SCAN incidents USING INDEX incidents_by_age');
    expect(plan(PAGE_SQL.newest.past)).toBe('SEARCH incidents USING INDEX incidents_by_age ((created_at,id)<(?,?))');
    expect(plan(PAGE_SQL.oldest.first)).toBe('SCAN incidents USING INDEX incidents_by_age');
    expect(plan(PAGE_SQL.oldest.past)).toBe('SEARCH incidents USING INDEX incidents_by_age ((created_at,id)>(?,?))');
    raw.close();
    const ids = (page: { id: string }[]): string[] => page.map((i) => i.id);
    expect(ids(ledger.status.incidentsBefore(null, 2))).toEqual(['inc-b', 'inc-d']);
    expect(ids(ledger.status.incidentsBefore('inc-d', 2))).toEqual(['inc-a', 'inc-c']);
    expect(ids(ledger.status.incidentsBefore('inc-c', 2))).toEqual([]);
    expect(ids(ledger.status.incidentsBefore('no-such-incident', 2))).toEqual([]);
    expect(ids(ledger.status.incidentsAfter(null, 3))).toEqual(['inc-c', 'inc-a', 'inc-d']);
    expect(ids(ledger.status.incidentsAfter('inc-d', 3))).toEqual(['inc-b']);
    expect(ledger.status.incidentsBefore(null, 1)[0]).toMatchObject({ id: 'inc-b', videos: [{ id: 'v', state: 'waiting' }] });
    expect(ledger.status.incidentCount()).toBe(4);
  });

  it('reports a video whose thumbnail failed as uploaded, without the thumbnail', async () => {
    await apply(manifest([{ id: 'v1', file: 'a.mp4', thumbnail: 'a.jpg' }]));
    ready('v1', [settled('v'), settled('t', 100, 'thumbnail')], [toAlo(), toAlo([{ number: 1, offset: 0, size: 100 }], 'thumbnail')]);
    const [videoUpload, thumbUpload] = queued();
    ledger.uploads.failed(thumbUpload!, 'refused');
    expect(ledger.reports.build('inc-1', 'alo').videos).toEqual([]);
    await done(videoUpload!, 'k/a.mp4');
    expect(ledger.reports.build('inc-1', 'alo').videos).toEqual([
      { video: { id: 'v1' }, outcome: 'uploaded', results: { video: { s3_key: 'k/a.mp4' } } },
    ]);
  });

  it('reports an incident only to the targets its route chose', async () => {
    const both = Ledger.open(join(dir.path, 'routed.db'), { reportingTargets: ['alo', 'alo2'] });
    await both.watch.applyManifest(
      '/m',
      '/exports/north/inc-1',
      's',
      'st',
      manifest([
        { id: 'v1', errors: ['failed'] },
        { id: 'v2', file: 'b.mp4' },
      ]),
      ['alo2'],
    );
    expect(both.reports.due(null, 10).map((r) => r.target)).toEqual(['alo2']);
    expect(both.plan.waiting(null, 10)[0]!.targets).toEqual(['alo2']);
    both.close();
  });

  it('logs an invalid manifest once per version', async () => {
    expect(await ledger.watch.recordManifestError('/m', 'fp1', 's1', ['videos[0].id: Required'])).toBe(true);
    expect(await ledger.watch.recordManifestError('/m', 'fp1', 's2', ['videos[0].id: Required'])).toBe(false);
    expect(await ledger.watch.recordManifestError('/m', 'fp2', 's3', ['incident.id: Required'])).toBe(true);
  });

  it('marks an incident every target finished with, once its files are out of the change window', async () => {
    expect(ledger.watch.isKnownFolder('/exports/inc-1')).toBe(false);
    await apply(manifest([{ id: 'v1', file: 'a.mp4' }]));
    expect(ledger.watch.isKnownFolder('/exports/inc-1')).toBe(true);
    expect(ledger.watch.isKnownFolder('/exports/inc-2')).toBe(false);
    ready('v1', [settled('x')]);
    const settledAt = Number(row(`SELECT settled_at FROM videos WHERE id = 'v1'`).settled_at);
    expect(ledger.watch.finishIncidents(settledAt + 1, false, 10)).toEqual([]); // still queued
    await done(queued()[0]!, 'k/a.mp4');
    await ledger.reports.acked('inc-1', 'alo', ledger.reports.due(null, 10)[0]!.wanted);
    expect(ledger.watch.finishIncidents(settledAt - 1, false, 10)).toEqual([]); // within the window
    expect(ledger.watch.finishIncidents(settledAt + 1, true, 10)).toEqual([]); // after_upload has not handled the folder
    expect(ledger.watch.finishIncidents(settledAt + 1, false, 10)).toEqual(['/exports/inc-1']);
    expect(ledger.watch.isFinishedFolder('/exports/inc-1')).toBe(true);
    // A retry takes it up again.
    ledger.operator.retry('inc-1');
    expect(ledger.watch.isFinishedFolder('/exports/inc-1')).toBe(false);
  });

  it('finishes an incident once the change window passed it, with nothing written meanwhile, and not before', async () => {
    await apply(manifest([{ id: 'v1', file: 'a.mp4' }]));
    ready('v1', [settled('x')]);
    const settledAt = Number(row(`SELECT settled_at FROM videos WHERE id = 'v1'`).settled_at);
    await done(queued()[0]!, 'k/a.mp4');
    await ledger.reports.acked('inc-1', 'alo', ledger.reports.due(null, 10)[0]!.wanted);
    // Looks that find nothing, with no write between them: the skipped ones must not hide the window's end.
    expect(ledger.watch.finishIncidents(settledAt - 2, false, 10)).toEqual([]);
    expect(ledger.watch.finishIncidents(settledAt - 1, false, 10)).toEqual([]);
    expect(ledger.watch.finishIncidents(settledAt, false, 10)).toEqual(['/exports/inc-1']);
    // Held back by its upload alone, out of the window: the write that completes it is seen at once.
    await apply(manifest([{ id: 'v2', file: 'b.mp4' }], 'Theft', 'inc-2'));
    ready('v2', [settled('y')], [toAlo()], 'inc-2');
    const later = Number(row(`SELECT settled_at FROM videos WHERE id = 'v2'`).settled_at) + 1;
    expect(ledger.watch.finishIncidents(later, false, 10)).toEqual([]); // still queued
    expect(ledger.watch.finishIncidents(later, false, 10)).toEqual([]);
    await done(queued()[0]!, 'k/b.mp4');
    await ledger.reports.acked('inc-2', 'alo', ledger.reports.due(null, 10)[0]!.wanted);
    expect(ledger.watch.finishIncidents(later, false, 10)).toEqual(['/exports/inc-2']);
  });

  it('keeps every committed change across a reopen', async () => {
    await apply(manifest([{ id: 'v1', file: 'a.mp4' }]));
    ledger.close();
    ledger = Ledger.open(dbPath, { reportingTargets: ['alo'] });
    expect(ledger.plan.waiting(null, 10)).toHaveLength(1);
    expect(new Database(dbPath, { readonly: true }).pragma('journal_mode', { simple: true })).toBe('wal');
  });
});

describe('watch.ignore_older in the ledger', () => {
  const DAY = 86_400_000;
  const now = Date.now();
  const folderOf = (id: string): string => `/exports/${id}`;
  const skipIfOld = (id: string, mtimeMs: number, olderThan: number | null, stamp = `s-${mtimeMs}`) =>
    ledger.watch.skipIfOld(`${folderOf(id)}/incident.json`, folderOf(id), stamp, id, mtimeMs, olderThan);

  it('skips an incident whose manifest is older than the setting when first seen, and leaves its folder unwatched', async () => {
    expect(await skipIfOld('old', now - 40 * DAY, now - 30 * DAY)).toBe('skipped');
    expect(await skipIfOld('young', now - 29 * DAY, now - 30 * DAY)).toBe('take');
    expect(ledger.watch.skippedCount()).toBe(1);
    expect(ledger.watch.isFinishedFolder(folderOf('old'))).toBe(true);
    expect(ledger.watch.isFinishedFolder(folderOf('young'))).toBe(false);
    // A rescan does not read the skipped manifest again while it is unchanged.
    expect(ledger.watch.manifestStamp(`${folderOf('old')}/incident.json`)).toBe(`s-${now - 40 * DAY}`);
    expect(ledger.status.overview(null).skippedIncidents).toBe(1);
    expect(row('SELECT id, manifest_mtime, taken_in_at FROM skipped_incidents')).toEqual({
      id: 'old',
      manifest_mtime: now - 40 * DAY,
      taken_in_at: null,
    });
  });

  it('never skips an incident first seen while young, however old its manifest is later', async () => {
    expect(await skipIfOld('inc-1', now, now - 30 * DAY)).toBe('take');
    await apply(manifest([{ id: 'v1', file: 'a.mp4' }]));
    expect(await skipIfOld('inc-1', now - 400 * DAY, now - 30 * DAY)).toBe('take');
    expect(ledger.watch.skippedCount()).toBe(0);
  });

  it('keeps a skipped incident skipped when its manifest changes or the setting is turned off, remembering the version read', async () => {
    expect(await skipIfOld('old', now - 40 * DAY, now - 30 * DAY)).toBe('skipped');
    expect(await skipIfOld('old', now, now - 30 * DAY, 'rewritten')).toBe('still skipped');
    expect(ledger.watch.manifestStamp(`${folderOf('old')}/incident.json`)).toBe('rewritten');
    expect(await skipIfOld('old', now, null, 'again')).toBe('still skipped');
    // Off: nothing new is skipped.
    expect(await skipIfOld('older', now - 400 * DAY, null)).toBe('take');
    expect(ledger.watch.skippedCount()).toBe(1);
  });

  it('takes a skipped incident in on retry: it is read and applied, and never skipped again', async () => {
    expect(await skipIfOld('inc-1', now - 40 * DAY, now - 30 * DAY)).toBe('skipped');
    expect(ledger.watch.takenIn()).toEqual([]);
    expect(ledger.operator.retry('inc-1')).toEqual({ uploads: 0, videos: 0, incident: 'inc-1', takenIn: true });
    expect(ledger.watch.skippedCount()).toBe(0);
    expect(ledger.watch.isFinishedFolder(folderOf('inc-1'))).toBe(false);
    // Its manifest is read again (no stamp is remembered for it) and taken.
    expect(ledger.watch.manifestStamp(`${folderOf('inc-1')}/incident.json`)).toBeNull();
    expect(ledger.watch.takenIn()).toEqual([
      { id: 'inc-1', folder: folderOf('inc-1'), manifestPath: `${folderOf('inc-1')}/incident.json` },
    ]);
    expect(await skipIfOld('inc-1', now - 40 * DAY, now - 30 * DAY)).toBe('take');
    await apply(manifest([{ id: 'v1', file: 'a.mp4' }]));
    expect(ledger.watch.takenIn()).toEqual([]);
    expect(ledger.plan.waiting(null, 10).map((v) => v.videoId)).toEqual(['v1']);
    expect(await skipIfOld('inc-1', now - 40 * DAY, now - 30 * DAY)).toBe('take');
    expect(ledger.operator.retry('no-such-incident')).toBeNull();
  });
});

describe('opening a ledger', () => {
  it('refuses a corrupt file with a recovery hint instead of guessing', async () => {
    const path = join(dir.path, 'broken.db');
    await writeFile(path, Buffer.concat([Buffer.from('SQLite format 3\0'), Buffer.alloc(4096, 0x5a)]));
    expect(() => Ledger.open(path)).toThrow(LedgerOpenError);
    expect(() => Ledger.open(path)).toThrow(/corrupt.*mv .*broken\.db/s);
  });

  it("plans again the videos an older version marked done with another incident's upload (schema 6), and keeps parts and uploads through the rebuild of schema 7", async () => {
    const path = join(dir.path, 'v5.db');
    const old = new Database(path);
    for (const m of MIGRATIONS.slice(0, 5)) old.exec(m.sql);
    old.pragma('user_version = 5');
    old.exec(`
      INSERT INTO incidents (id, folder, manifest_path, manifest_sha256, info, created_at, updated_at) VALUES
        ('inc-1', '/e/1', '/e/1/incident.json', 'm1', '{"id":"inc-1"}', 1, 1), ('inc-2', '/e/2', '/e/2/incident.json', 'm2', '{"id":"inc-2"}', 2, 2);
      INSERT INTO videos (incident_id, id, info, position, state, first_seen_at, settled_at, updated_at) VALUES
        ('inc-1', 'a', '{"id":"a"}', 0, 'ready', 1, 1, 1), ('inc-2', 'b', '{"id":"b"}', 0, 'ready', 2, 2, 2), ('inc-2', 'c', '{"id":"c"}', 1, 'ready', 2, 2, 2);
      INSERT INTO video_files (incident_id, video_id, role, rel_path, path, size, mtime_ms, sha256, content_type) VALUES
        ('inc-1', 'a', 'video', 'a.mp4', '/e/1/a.mp4', 9, 1, 'same', 'video/mp4'), ('inc-2', 'b', 'video', 'b.mp4', '/e/2/b.mp4', 9, 1, 'same', 'video/mp4'),
        ('inc-2', 'c', 'video', 'c.mp4', '/e/2/c.mp4', 9, 1, 'same', 'video/mp4');
      INSERT INTO uploads (id, incident_id, video_id, role, target, sha256, size, state, result, reused_from, created_at, updated_at) VALUES
        (1, 'inc-1', 'a', 'video', 'alo', 'same', 9, 'done', '{"s3_key":"k/inc-1/a.mp4"}', NULL, 1, 1),
        (2, 'inc-2', 'b', 'video', 'alo', 'same', 9, 'done', '{"s3_key":"k/inc-1/a.mp4"}', 1, 2, 2),
        (3, 'inc-2', 'c', 'video', 'alo', 'same', 9, 'done', '{"s3_key":"k/inc-1/a.mp4"}', 2, 2, 2);
      INSERT INTO parts (upload_id, number, offset, size, md5, etag, state) VALUES (1, 1, 0, 9, 'm', 'e', 'done');`);
    old.close();
    const upgraded = Ledger.open(path, { reportingTargets: ['alo'] });
    try {
      // inc-2's videos named inc-1's key: they are hashed and uploaded again, for inc-2.
      expect(upgraded.plan.waiting(null, 10).map((v) => `${v.incidentId}/${v.videoId}`)).toEqual(['inc-2/b', 'inc-2/c']);
      expect(ledgerRows(path, 'SELECT id FROM uploads ORDER BY id')).toEqual([{ id: 1 }]);
      expect(ledgerRows(path, 'SELECT upload_id, md5 FROM parts')).toEqual([{ upload_id: 1, md5: 'm' }]);
    } finally {
      upgraded.close();
    }
  });

  it('refuses a ledger written by a newer version', async () => {
    ledger.close();
    const raw = new Database(dbPath);
    raw.pragma('user_version = 99');
    raw.close();
    expect(() => Ledger.open(dbPath)).toThrow(/newer than this vms-uplink/);
    ledger = Ledger.open(join(dir.path, 'fresh.db'));
  });
});
