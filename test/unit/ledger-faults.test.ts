/**
 * The ledger under storage faults (a full disk), through the test hook VMS_UPLINK_TEST_LEDGER_FULL,
 * and the hand checks of its files before it is opened for writing (src/ledger/preflight.ts).
 */
import { copyFileSync, existsSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync, closeSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LedgerFaultError, TEST_FULL_ENV } from '../../src/ledger/faults.js';
import { checkDatabaseFile, checkWalFile } from '../../src/ledger/preflight.js';
import { UploadLedger, type HashedFile } from '../../src/ledger/upload-ledger.js';
import { tempDir } from '../support/files.js';

let dir: Awaited<ReturnType<typeof tempDir>>;

beforeEach(async () => {
  dir = await tempDir();
});
afterEach(async () => {
  delete process.env[TEST_FULL_ENV];
  await dir.cleanup();
});

const hashed: HashedFile = { role: 'video', path: '/exports/inc-1/a.mp4', size: 100, mtimeMs: 1, sha256: 'c0ffee', contentType: 'video/mp4' };
const parts = [
  { number: 1, offset: 0, size: 60, md5: 'a'.repeat(32) },
  { number: 2, offset: 60, size: 40, md5: 'b'.repeat(32) },
];

describe('ledger storage faults', () => {
  it('rolls back, pauses new work, drops only trouble notes, and resumes once a write commits', () => {
    const flag = join(dir.path, 'full');
    process.env[TEST_FULL_ENV] = flag;
    const ledger = UploadLedger.open(join(dir.path, 'ledger.db'), ['alo']);
    const faults: string[] = [];
    ledger.onFault = (f) => faults.push(f.code);
    try {
      ledger.applyManifest('/m', '/exports/inc-1', 's', { incident: { id: 'inc-1' }, videos: [{ id: 'v1', file: 'a.mp4' }] }, ['alo']);
      ledger.videoReady('inc-1', 'v1', [hashed], [{ target: 'alo', role: 'video', parts }]);
      const [id] = ledger.queuedUploadIds(10, new Set());
      ledger.uploadStarted(id!, { mode: 'multipart', upload_id: 'u' });
      ledger.partDone(id!, 1, 'etag-1');

      writeFileSync(flag, '');
      // Progress is not recorded, and says so: the caller stops as if shut down.
      expect(() => ledger.partDone(id!, 2, 'etag-2')).toThrow(LedgerFaultError);
      expect(() => ledger.uploadDone(id!, { s3_key: 'k' })).toThrow(LedgerFaultError);
      expect(() => ledger.reportAcked('inc-1', 'alo', 1)).toThrow(LedgerFaultError);
      expect(faults).toEqual(['SQLITE_FULL']); // told once per episode
      expect(ledger.fault?.code).toBe('SQLITE_FULL');
      // Give-ups and trouble notes are dropped, not thrown (the upload is retried later instead of failed now).
      expect(() => ledger.uploadFailed(id!, 'database or disk is full')).not.toThrow();
      expect(() => ledger.partFailed(id!, 2, 'x')).not.toThrow();
      expect(() => ledger.abortDone(1)).not.toThrow();
      // Nothing new is handed out while writes fail.
      expect(ledger.queuedUploadIds(10, new Set())).toEqual([]);
      expect(ledger.reportsDue()).toEqual([]);
      expect(ledger.waitingVideos()).toEqual([]);
      expect(ledger.pendingAborts()).toEqual([]);
      expect(ledger.probe()).toBe(false);
      // The rows say exactly what committed before the fault.
      const rows = ledger.db.prepare('SELECT number, state, etag FROM parts ORDER BY number').all();
      expect(rows).toEqual([{ number: 1, state: 'done', etag: 'etag-1' }, { number: 2, state: 'pending', etag: null }]);
      expect(ledger.db.prepare('SELECT state, last_error FROM uploads').get()).toEqual({ state: 'queued', last_error: null });

      rmSync(flag);
      expect(ledger.probe()).toBe(true);
      expect(ledger.fault).toBeNull();
      expect(ledger.queuedUploadIds(10, new Set())).toEqual([id]);
      ledger.partDone(id!, 2, 'etag-2');
      ledger.uploadDone(id!, { s3_key: 'k' });
      expect(ledger.db.prepare('SELECT state FROM uploads').get()).toEqual({ state: 'done' });
      expect(ledger.reportsDue()).toHaveLength(1);
    } finally {
      ledger.close();
    }
  });

  it('meets a real SQLITE_FULL (max_page_count) the same way', () => {
    const ledger = UploadLedger.open(join(dir.path, 'ledger.db'), ['alo']);
    try {
      const pages = ledger.db.pragma('page_count', { simple: true }) as number;
      ledger.db.pragma(`max_page_count = ${pages}`);
      const big = 'x'.repeat(64 * 1024);
      expect(() => ledger.applyManifest('/m', '/exports/inc-1', 's', { incident: { id: 'inc-1', title: big }, videos: [] }, ['alo'])).toThrow(LedgerFaultError);
      expect(ledger.fault?.code).toBe('SQLITE_FULL');
      expect(ledger.db.prepare('SELECT COUNT(*) AS n FROM incidents').get()).toEqual({ n: 0 });
      expect(ledger.probe()).toBe(true); // the probe row fits in the pages there are
      ledger.db.pragma('max_page_count = 1000000');
      ledger.applyManifest('/m', '/exports/inc-1', 's', { incident: { id: 'inc-1', title: big }, videos: [] }, ['alo']);
      expect(ledger.db.prepare('SELECT COUNT(*) AS n FROM incidents').get()).toEqual({ n: 1 });
    } finally {
      ledger.close();
    }
  });
});

/** A WAL-mode database with `commits` committed transactions left in its log (copied while open). */
function ledgerWithWal(name: string, commits: number): { db: string; wal: string } {
  const src = join(dir.path, `${name}-src.db`);
  const db = new Database(src);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma('wal_autocheckpoint = 0');
  db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)');
  for (let i = 0; i < commits; i++) db.prepare('INSERT INTO t (v) VALUES (?)').run('v'.repeat(3000));
  const out = { db: join(dir.path, `${name}.db`), wal: join(dir.path, `${name}.db-wal`) };
  copyFileSync(src, out.db);
  copyFileSync(`${src}-wal`, out.wal);
  db.close();
  return out;
}

function overwrite(path: string, offset: number, bytes: Buffer): void {
  const fd = openSync(path, 'r+');
  writeSync(fd, bytes, 0, bytes.length, offset);
  closeSync(fd);
}

const FRAME = 24 + 4096;

describe('ledger file checks before a read-write open', () => {
  it('accepts an intact log, and one whose last frame is torn (a power cut mid-commit)', () => {
    const { db, wal } = ledgerWithWal('ok', 12);
    expect(checkDatabaseFile(db)).toBeNull();
    expect(checkWalFile(wal)).toBeNull();
    truncateSync(wal, statSync(wal).size - 1000);
    expect(checkWalFile(wal)).toBeNull();
    expect(checkWalFile(join(dir.path, 'missing-wal'))).toBeNull();
  });

  it('refuses a log with a damaged header, and one damaged before committed transactions', () => {
    const a = ledgerWithWal('header', 6);
    overwrite(a.wal, 0, Buffer.alloc(32, 0x5a));
    expect(checkWalFile(a.wal)).toMatch(/no valid header/);

    const b = ledgerWithWal('checksum', 6);
    overwrite(b.wal, 20, Buffer.from([1, 2, 3, 4])); // a salt: the header checksum no longer holds
    expect(checkWalFile(b.wal)).toMatch(/damaged header/);

    const c = ledgerWithWal('middle', 12);
    overwrite(c.wal, 32 + 3 * FRAME + 24 + 100, Buffer.alloc(512, 0xee));
    expect(checkWalFile(c.wal)).toMatch(/damaged at frame 4, and \d+ committed transactions follow it/);
    // What SQLite itself would do with it: drop every later transaction without a word.
    const copy = join(dir.path, 'sqlite-view.db');
    copyFileSync(c.db, copy);
    copyFileSync(c.wal, `${copy}-wal`);
    const seen = new Database(copy, { readonly: true });
    expect((seen.prepare('SELECT COUNT(*) AS n FROM t').get() as { n: number }).n).toBeLessThan(12);
    seen.close();
  });

  it('refuses a database file cut short, or that is not SQLite', () => {
    const { db } = ledgerWithWal('db', 3);
    const walless = join(dir.path, 'checkpointed.db');
    const full = new Database(join(dir.path, 'full.db'));
    full.exec('CREATE TABLE t (v TEXT)');
    for (let i = 0; i < 20; i++) full.prepare('INSERT INTO t VALUES (?)').run('v'.repeat(3000));
    full.close();
    copyFileSync(join(dir.path, 'full.db'), walless);
    const size = statSync(walless).size;
    truncateSync(walless, size / 2);
    expect(checkDatabaseFile(walless)).toMatch(/truncated/);
    truncateSync(walless, size / 2 + 100);
    expect(checkDatabaseFile(walless)).toMatch(/not a whole number of 4096-byte pages/);
    writeFileSync(walless, Buffer.alloc(8192, 1));
    expect(checkDatabaseFile(walless)).toMatch(/does not start with the SQLite header/);
    expect(checkDatabaseFile(db)).toBeNull();
    expect(existsSync(join(dir.path, 'nothing.db'))).toBe(false);
    expect(checkDatabaseFile(join(dir.path, 'nothing.db'))).toBeNull();
    expect(readFileSync(db).length).toBeGreaterThan(0);
  });
});
