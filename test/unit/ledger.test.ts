import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LedgerOpenError } from '../../src/ledger/database.js';
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

  it('never sends the same content twice to a target', () => {
    ledger.applyManifest('/m', '/exports/inc-1', 's', manifest([{ id: 'v1', file: 'a.mp4' }, { id: 'v2', file: 'b.mp4' }]), ['alo']);
    ledger.videoReady('inc-1', 'v1', [hashed('same')], [{ target: 'alo', role: 'video', parts }]);
    ledger.videoReady('inc-1', 'v2', [hashed('same')], [{ target: 'alo', role: 'video', parts }]);
    const ids = ledger.queuedUploadIds(10, new Set());
    expect(ids).toHaveLength(1);
    ledger.uploadDone(ids[0]!, { s3_key: 'k/a.mp4' });
    expect(row(`SELECT state, reused_from, result FROM uploads WHERE video_id = 'v2'`)).toEqual({ state: 'done', reused_from: ids[0], result: '{"s3_key":"k/a.mp4"}' });

    // A later incident with the same content is done at once.
    ledger.applyManifest('/m2', '/exports/inc-2', 's2', { incident: { id: 'inc-2' }, videos: [{ id: 'v9', file: 'c.mp4' }] }, ['alo']);
    ledger.videoReady('inc-2', 'v9', [hashed('same')], [{ target: 'alo', role: 'video', parts }]);
    expect(row(`SELECT state, reused_from FROM uploads WHERE video_id = 'v9'`)).toEqual({ state: 'done', reused_from: ids[0] });
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

  it('refuses a ledger written by a newer version', () => {
    ledger.db.pragma('user_version = 99');
    ledger.close();
    expect(() => UploadLedger.open(dbPath)).toThrow(/newer than this vms-uplink/);
  });
});
