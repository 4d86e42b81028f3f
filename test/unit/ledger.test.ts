import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LedgerOpenError } from '../../src/ledger/database.js';
import { MIGRATIONS } from '../../src/ledger/migrations.js';
import { readStatus } from '../../src/ledger/status-snapshot.js';
import { UploadLedger, type HashedFile } from '../../src/ledger/upload-ledger.js';
import type { Manifest } from '../../src/watch/manifest.js';
import { tempDir } from '../support/files.js';

let dir: Awaited<ReturnType<typeof tempDir>>;
let ledger: UploadLedger;
let dbPath: string;

beforeEach(async () => {
  dir = await tempDir();
  dbPath = join(dir.path, 'ledger.db');
  ledger = UploadLedger.open(dbPath, ['alo']);
});
afterEach(async () => {
  ledger.close();
  await dir.cleanup();
});

const manifest = (videos: Manifest['videos'], title = 'Break-in'): Manifest => ({ incident: { id: 'inc-1', title }, videos });
const hashed = (sha: string, size = 100): HashedFile => ({ role: 'video', path: '/exports/inc-1/a.mp4', size, mtimeMs: 1, sha256: sha, contentType: 'video/mp4' });
const parts = [
  { number: 1, offset: 0, size: 60, md5: 'a'.repeat(32) },
  { number: 2, offset: 60, size: 40, md5: 'b'.repeat(32) },
];
const row = (sql: string, ...args: unknown[]): Record<string, unknown> => ledger.db.prepare(sql).get(...args) as Record<string, unknown>;

describe('UploadLedger', () => {
  it('records a manifest once per version and asks for a report', () => {
    const m = manifest([{ id: 'v1', file: 'a.mp4' }, { id: 'v2', errors: ['G64 export failed'] }]);
    expect(ledger.applyManifest('/exports/inc-1/incident.json', '/exports/inc-1', 'sha-1', m, ['alo'])).toBe(true);
    expect(ledger.applyManifest('/exports/inc-1/incident.json', '/exports/inc-1', 'sha-1', m, ['alo'])).toBe(false);
    expect(ledger.waitingVideos().map((v) => v.videoId)).toEqual(['v1']);
    expect(row(`SELECT state, errors FROM videos WHERE id = 'v2'`)).toEqual({ state: 'failed', errors: '["G64 export failed"]' });
    expect(ledger.reportsDue()).toEqual([{ incidentId: 'inc-1', target: 'alo', wanted: 1, attempts: 0 }]);
    const report = ledger.buildReport('inc-1', 'alo');
    expect(report.videos).toEqual([{ video: { id: 'v2' }, outcome: 'failed', errors: ['G64 export failed'] }]);
  });

  it('walks an upload from ready through parts to done, and reports it', () => {
    ledger.applyManifest('/m', '/exports/inc-1', 's', manifest([{ id: 'v1', file: 'a.mp4', camera_name: 'Cam 1' }]), ['alo']);
    ledger.reportAcked('inc-1', 'alo', 1);
    ledger.videoReady('inc-1', 'v1', [hashed('c0ffee')], [{ target: 'alo', role: 'video', parts }]);
    const [id] = ledger.queuedUploadIds(10, new Set());
    const upload = ledger.loadUpload(id!)!;
    expect(upload.file).toMatchObject({ name: 'a.mp4', size: 100, sha256: 'c0ffee', video: { id: 'v1', camera_name: 'Cam 1' } });
    expect(upload.parts.map((p) => p.state)).toEqual(['pending', 'pending']);

    ledger.uploadStarted(id!, { mode: 'multipart', upload_id: 'u' });
    ledger.partDone(id!, 1, 'etag-1');
    expect(ledger.loadUpload(id!)!.parts.map((p) => p.state)).toEqual(['done', 'pending']);
    expect(readStatus(ledger.db).incidents[0]!.videos[0]!.uploads[0]).toMatchObject({ state: 'uploading', bytesDone: 60, bytesTotal: 100 });
    expect(ledger.reportsDue()).toEqual([]);

    ledger.partDone(id!, 2, 'etag-2');
    ledger.uploadDone(id!, { s3_key: 'k/a.mp4' });
    expect(ledger.loadUpload(id!)).toBeNull();
    expect(ledger.reportsDue()).toHaveLength(1);
    expect(ledger.buildReport('inc-1', 'alo').videos).toEqual([
      { video: { id: 'v1', camera_name: 'Cam 1' }, outcome: 'uploaded', results: { video: { s3_key: 'k/a.mp4' } } },
    ]);
  });

  it('never sends the same content twice to a target within an incident', () => {
    ledger.applyManifest('/m', '/exports/inc-1', 's', manifest([{ id: 'v1', file: 'a.mp4' }, { id: 'v2', file: 'b.mp4' }]), ['alo']);
    ledger.videoReady('inc-1', 'v1', [hashed('same')], [{ target: 'alo', role: 'video', parts }]);
    ledger.videoReady('inc-1', 'v2', [hashed('same')], [{ target: 'alo', role: 'video', parts }]);
    const ids = ledger.queuedUploadIds(10, new Set());
    expect(ids).toHaveLength(1);
    ledger.uploadDone(ids[0]!, { s3_key: 'k/a.mp4' });
    expect(row(`SELECT state, reused_from, result FROM uploads WHERE video_id = 'v2'`)).toEqual({ state: 'done', reused_from: ids[0], result: '{"s3_key":"k/a.mp4"}' });

    // Another incident with the same content is its own case: it is uploaded for that incident.
    ledger.applyManifest('/m2', '/exports/inc-2', 's2', { incident: { id: 'inc-2' }, videos: [{ id: 'v9', file: 'c.mp4' }] }, ['alo']);
    ledger.videoReady('inc-2', 'v9', [hashed('same')], [{ target: 'alo', role: 'video', parts }]);
    expect(row(`SELECT state, reused_from FROM uploads WHERE video_id = 'v9'`)).toEqual({ state: 'queued', reused_from: null });
    expect(ledger.queuedUploadIds(10, new Set())).toHaveLength(1);
  });

  it('records nothing for an upload withdrawn while it was under way, and says which uploads must stop', () => {
    ledger.applyManifest('/m', '/exports/inc-1', 's', manifest([{ id: 'v1', file: 'a.mp4' }]), ['alo']);
    ledger.videoReady('inc-1', 'v1', [hashed('old')], [{ target: 'alo', role: 'video', parts }]);
    const [id] = ledger.queuedUploadIds(10, new Set());
    expect(ledger.uploadStarted(id!, { mode: 'multipart', upload_id: 'u-1' })).toBe(true);
    expect(ledger.haltedUploads([id!])).toEqual(new Map());
    // The VMS rewrote the manifest with another file for v1: the upload under way is withdrawn.
    ledger.applyManifest('/m', '/exports/inc-1', 's2', manifest([{ id: 'v1', file: 'b.mp4' }]), ['alo']);
    expect(ledger.haltedUploads([id!, 999])).toEqual(new Map([[id!, 'withdrawn'], [999, 'withdrawn']]));
    expect(ledger.uploadStarted(id!, { mode: 'multipart', upload_id: 'u-2' })).toBe(false);
    ledger.partDone(id!, 1, 'e1');
    expect(ledger.uploadDone(id!, { s3_key: 'k/a.mp4' })).toBe(false);
    ledger.uploadFailed(id!, 'too late');
    expect(row('SELECT COUNT(*) AS n FROM uploads')).toEqual({ n: 0 });
    // The session it had is aborted once, from the withdrawal.
    expect(ledger.pendingAborts().map((a) => a.session)).toEqual([{ mode: 'multipart', upload_id: 'u-1' }]);
  });

  it('stops sending a report the platform refused for good until the incident changes or is retried', () => {
    ledger.applyManifest('/m', '/exports/inc-1', 's', manifest([{ id: 'v1', file: 'a.mp4' }]), ['alo']);
    const [due] = ledger.reportsDue();
    ledger.reportFailed('inc-1', 'alo', 'ALO answered 503');
    expect(ledger.reportsDue()).toHaveLength(1);
    ledger.reportRefused('inc-1', 'alo', due!.wanted, 'ALO answered 400: s3_key was never handed out for this incident');
    expect(ledger.reportsDue()).toEqual([]);
    expect(readStatus(ledger.db).incidents[0]!.reports[0]).toMatchObject({ state: 'refused', lastError: expect.stringContaining('never handed out') });
    // A video reaching a final state is a new version of the incident: it is sent again.
    ledger.videoReady('inc-1', 'v1', [hashed('x')], [{ target: 'alo', role: 'video', parts }]);
    ledger.uploadDone(ledger.queuedUploadIds(10, new Set())[0]!, { s3_key: 'k/a.mp4' });
    expect(ledger.reportsDue()).toHaveLength(1);
    ledger.reportRefused('inc-1', 'alo', ledger.reportsDue()[0]!.wanted, 'refused again');
    expect(ledger.reportsDue()).toEqual([]);
    expect(ledger.retry('inc-1')).toEqual({ uploads: 0, videos: 0, incident: 'inc-1' });
    expect(ledger.reportsDue()).toHaveLength(1);
  });

  it('sends a video whose file changed after its upload completed round again, keeping what the new upload supersedes', () => {
    ledger.applyManifest('/m', '/exports/inc-1', 's', manifest([{ id: 'v1', file: 'a.mp4' }]), ['alo']);
    ledger.videoReady('inc-1', 'v1', [hashed('short', 60)], [{ target: 'alo', role: 'video', parts: [parts[0]!] }]);
    const settledAt = Number(row(`SELECT settled_at FROM videos WHERE id = 'v1'`).settled_at);
    // Watched from the moment it is hashed, until it settled longer ago than the window.
    expect(ledger.watchedFiles(settledAt - 1, { paths: ['/exports/inc-1/a.mp4'] })).toMatchObject([{ videoId: 'v1', role: 'video', size: 60, mtimeMs: 1 }]);
    expect(ledger.watchedFiles(settledAt, { afterRow: 0, limit: 10 })).toEqual([]);
    const [id] = ledger.queuedUploadIds(10, new Set());
    ledger.uploadDone(id!, { s3_key: 'k/a.mp4' });
    expect(ledger.uploadedUnhandled(['alo'], settledAt - 1)).toEqual([]);

    expect(ledger.fileChanged('inc-1', 'v1', 'a.mp4 grew after it was uploaded (60 → 100 bytes): uploaded again')).toEqual([
      { target: 'alo', role: 'video', result: { s3_key: 'k/a.mp4' } },
    ]);
    expect(ledger.waitingVideos().map((v) => v.videoId)).toEqual(['v1']);
    ledger.videoReady('inc-1', 'v1', [hashed('final', 100)], [{ target: 'alo', role: 'video', parts }]);
    const [again] = ledger.queuedUploadIds(10, new Set());
    expect(ledger.loadUpload(again!)).toMatchObject({ file: { sha256: 'final', size: 100 }, superseded: { s3_key: 'k/a.mp4' } });
    const video = readStatus(ledger.db).incidents[0]!.videos[0]!;
    expect(video).toMatchObject({ changedAfterUpload: 1, changeNote: 'a.mp4 grew after it was uploaded (60 → 100 bytes): uploaded again', restarts: 0 });
    // A change before any upload completed is a restart, not a change after upload.
    expect(ledger.fileChanged('inc-1', 'v1', 'grew again')).toEqual([]);
    expect(readStatus(ledger.db).incidents[0]!.videos[0]!).toMatchObject({ changedAfterUpload: 1, restarts: 1 });
  });

  it('fails an upload with the message, queues the abort of its session, and retries on request', () => {
    ledger.applyManifest('/m', '/exports/inc-1', 's', manifest([{ id: 'v1', file: 'a.mp4' }]), ['alo']);
    ledger.videoReady('inc-1', 'v1', [hashed('x')], [{ target: 'alo', role: 'video', parts }]);
    const [id] = ledger.queuedUploadIds(10, new Set());
    ledger.uploadStarted(id!, { mode: 'multipart', upload_id: 'u-1' });
    ledger.partDone(id!, 1, 'e1');
    ledger.uploadFailed(id!, 'ALO answered 400: bad part');
    expect(ledger.pendingAborts().map((a) => a.session)).toEqual([{ mode: 'multipart', upload_id: 'u-1' }]);
    expect(ledger.buildReport('inc-1', 'alo').videos).toEqual([{ video: { id: 'v1' }, outcome: 'failed', errors: ['upload failed: ALO answered 400: bad part'] }]);

    expect(ledger.retry(String(id))).toEqual({ uploads: 1, videos: 0, incident: null });
    const again = ledger.loadUpload(id!)!;
    expect(again.session).toBeNull();
    expect(again.parts.every((p) => p.state === 'pending')).toBe(true);
    expect(ledger.retry('no-such-incident')).toBeNull();
  });

  it('drops unfinished uploads of a file that changed and waits for it again', () => {
    ledger.applyManifest('/m', '/exports/inc-1', 's', manifest([{ id: 'v1', file: 'a.mp4' }]), ['alo']);
    ledger.videoReady('inc-1', 'v1', [hashed('v1-old')], [{ target: 'alo', role: 'video', parts }]);
    const [id] = ledger.queuedUploadIds(10, new Set());
    ledger.uploadStarted(id!, { mode: 'multipart', upload_id: 'u-old' });
    ledger.videoChanged('inc-1', 'v1', 'restarted: part 1 no longer matches');
    expect(ledger.queuedUploadIds(10, new Set())).toEqual([]);
    expect(ledger.waitingVideos().map((v) => v.videoId)).toEqual(['v1']);
    expect(ledger.pendingAborts()).toHaveLength(1);
    ledger.videoReady('inc-1', 'v1', [hashed('v1-new')], [{ target: 'alo', role: 'video', parts }]);
    expect(ledger.loadUpload(ledger.queuedUploadIds(10, new Set())[0]!)!.file.sha256).toBe('v1-new');
  });

  it('applies a manifest rewrite: new videos wait, changed metadata is kept, the incident is reported again', () => {
    ledger.applyManifest('/m', '/exports/inc-1', 's1', manifest([{ id: 'v1', file: 'a.mp4' }]), ['alo']);
    ledger.reportAcked('inc-1', 'alo', 1);
    ledger.applyManifest('/m', '/exports/inc-1', 's2', manifest([{ id: 'v1', file: 'a.mp4', camera_name: 'renamed' }, { id: 'v2', file: 'b.mp4' }], 'Break-in (updated)'), ['alo']);
    expect(ledger.waitingVideos().map((v) => v.videoId)).toEqual(['v1', 'v2']);
    expect(ledger.videoContext('inc-1', 'v1').info.camera_name).toBe('renamed');
    expect(ledger.buildReport('inc-1', 'alo').incident.title).toBe('Break-in (updated)');
    expect(ledger.reportsDue()).toHaveLength(1);
  });

  it('reports a video whose thumbnail failed as uploaded, without the thumbnail', () => {
    ledger.applyManifest('/m', '/exports/inc-1', 's', manifest([{ id: 'v1', file: 'a.mp4', thumbnail: 'a.jpg' }]), ['alo']);
    const thumb: HashedFile = { ...hashed('t'), role: 'thumbnail', path: '/exports/inc-1/a.jpg' };
    ledger.videoReady('inc-1', 'v1', [hashed('v'), thumb], [
      { target: 'alo', role: 'video', parts },
      { target: 'alo', role: 'thumbnail', parts: [{ number: 1, offset: 0, size: 100, md5: 'c'.repeat(32) }] },
    ]);
    const [videoUpload, thumbUpload] = ledger.queuedUploadIds(10, new Set());
    ledger.uploadFailed(thumbUpload!, 'refused');
    expect(ledger.buildReport('inc-1', 'alo').videos).toEqual([]);
    ledger.uploadDone(videoUpload!, { s3_key: 'k/a.mp4' });
    expect(ledger.buildReport('inc-1', 'alo').videos).toEqual([{ video: { id: 'v1' }, outcome: 'uploaded', results: { video: { s3_key: 'k/a.mp4' } } }]);
  });

  it('reports an incident only to the targets its route chose', () => {
    const both = UploadLedger.open(join(dir.path, 'routed.db'), ['alo', 'alo2']);
    both.applyManifest('/m', '/exports/north/inc-1', 's', manifest([{ id: 'v1', errors: ['failed'] }]), ['alo2']);
    expect(both.reportsDue().map((r) => r.target)).toEqual(['alo2']);
    expect(both.videoContext('inc-1', 'v1').targets).toEqual(['alo2']);
    both.close();
  });

  it('logs an invalid manifest once per version', () => {
    expect(ledger.recordManifestError('/m', 'fp1', ['videos[0].id: Required'])).toBe(true);
    expect(ledger.recordManifestError('/m', 'fp1', ['videos[0].id: Required'])).toBe(false);
    expect(ledger.recordManifestError('/m', 'fp2', ['incident.id: Required'])).toBe(true);
  });

  it('keeps every committed change across a reopen', () => {
    ledger.applyManifest('/m', '/exports/inc-1', 's', manifest([{ id: 'v1', file: 'a.mp4' }]), ['alo']);
    ledger.close();
    ledger = UploadLedger.open(dbPath, ['alo']);
    expect(ledger.waitingVideos()).toHaveLength(1);
    expect(new Database(dbPath, { readonly: true }).pragma('journal_mode', { simple: true })).toBe('wal');
  });
});

describe('opening a ledger', () => {
  it('refuses a corrupt file with a recovery hint instead of guessing', async () => {
    const path = join(dir.path, 'broken.db');
    await writeFile(path, Buffer.concat([Buffer.from('SQLite format 3\0'), Buffer.alloc(4096, 0x5a)]));
    expect(() => UploadLedger.open(path)).toThrow(LedgerOpenError);
    expect(() => UploadLedger.open(path)).toThrow(/corrupt.*mv .*broken\.db/s);
  });

  it('plans again the videos an older version marked done with another incident\'s upload (schema 6)', () => {
    const path = join(dir.path, 'v5.db');
    const old = new Database(path);
    for (const sql of MIGRATIONS.slice(0, 5)) old.exec(sql);
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
        (3, 'inc-2', 'c', 'video', 'alo', 'same', 9, 'done', '{"s3_key":"k/inc-1/a.mp4"}', 2, 2, 2);`);
    old.close();
    const upgraded = UploadLedger.open(path, ['alo']);
    try {
      // inc-2's videos named inc-1's key: they are hashed and uploaded again, for inc-2.
      expect(upgraded.waitingVideos().map((v) => `${v.incidentId}/${v.videoId}`)).toEqual(['inc-2/b', 'inc-2/c']);
      expect(upgraded.db.prepare('SELECT id FROM uploads ORDER BY id').all()).toEqual([{ id: 1 }]);
    } finally {
      upgraded.close();
    }
  });

  it('refuses a ledger written by a newer version', () => {
    ledger.db.pragma('user_version = 99');
    ledger.close();
    expect(() => UploadLedger.open(dbPath)).toThrow(/newer than this vms-uplink/);
  });
});
