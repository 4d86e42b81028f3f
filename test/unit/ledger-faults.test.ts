/**
 * The ledger under storage faults (a full disk), made by a write hook given when the ledger is
 * opened (and once by a real SQLITE_FULL), and the hand checks of its files before it is opened
 * for writing (src/ledger/preflight.ts).
 */
import { copyFileSync, existsSync, openSync, readFileSync, statSync, writeFileSync, writeSync, closeSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isStorageFault, LedgerFaultError } from '../../src/ledger/faults.js';
import { Ledger } from '../../src/ledger/ledger.js';
import { checkDatabaseFile, checkWalFile } from '../../src/ledger/preflight.js';
import { tempDir } from '../support/files.js';
import { ledgerRows } from '../support/ledger.js';

let dir: Awaited<ReturnType<typeof tempDir>>;

beforeEach(async () => {
  dir = await tempDir();
});
afterEach(async () => {
  await dir.cleanup();
});

const settled = {
  role: 'video' as const,
  path: '/exports/inc-1/a.mp4',
  size: 100,
  mtimeMs: 1,
  stamp: '100:1',
  sha256: 'c0ffee',
  contentType: 'video/mp4',
};
const parts = [
  { number: 1, offset: 0, size: 60 },
  { number: 2, offset: 60, size: 40 },
];
const outcome = { result: { s3_key: 'k' }, sha256: 'c0ffee', session: {}, parts: [], startedAt: 1 };

/** A hook that makes every ledger write fail with SQLITE_FULL while `full.on` is true. */
function fullDisk(): { on: boolean; hook: () => void } {
  const full = {
    on: false,
    hook: () => {
      if (full.on) throw new Database.SqliteError('database or disk is full (made by the test)', 'SQLITE_FULL');
    },
  };
  return full;
}

describe('ledger storage faults', () => {
  it('rolls back, pauses new work, drops only trouble notes, and resumes once a write commits', async () => {
    const full = fullDisk();
    const path = join(dir.path, 'ledger.db');
    const ledger = Ledger.open(path, { reportingTargets: ['alo'], beforeWrite: full.hook });
    const faults: string[] = [];
    ledger.onFault = (f) => faults.push(f.code);
    try {
      await ledger.watch.applyManifest(
        '/m',
        '/exports/inc-1',
        's',
        'st',
        { incident: { id: 'inc-1' }, videos: [{ id: 'v1', file: 'a.mp4' }] },
        ['alo'],
      );
      ledger.plan.videosReady([
        { incidentId: 'inc-1', videoId: 'v1', files: [settled], plans: [{ target: 'alo', role: 'video', parts }], notes: [] },
      ]);
      const [id] = ledger.uploads.queued(10, new Set());
      ledger.uploads.started(id!, { mode: 'multipart', upload_id: 'u' });
      ledger.uploads.partDone(id!, { number: 1, etag: 'etag-1', md5: 'm1' });

      full.on = true;
      // Progress is not recorded, and says so: the caller stops as if shut down.
      expect(() => ledger.uploads.partDone(id!, { number: 2, etag: 'etag-2', md5: 'm2' })).toThrow(LedgerFaultError);
      await expect(ledger.uploads.done(id!, outcome)).rejects.toThrow(LedgerFaultError);
      await expect(ledger.reports.acked('inc-1', 'alo', 1)).rejects.toThrow(LedgerFaultError);
      expect(faults).toEqual(['SQLITE_FULL']); // told once per episode
      expect(ledger.fault?.code).toBe('SQLITE_FULL');
      // Give-ups and trouble notes are dropped, not thrown (the upload is retried later instead of failed now).
      expect(() => ledger.uploads.failed(id!, 'database or disk is full')).not.toThrow();
      expect(() => ledger.uploads.partFailed(id!, 2, 'x')).not.toThrow();
      expect(() => ledger.uploads.abortDone(1)).not.toThrow();
      // Nothing new is handed out while writes fail.
      expect(ledger.uploads.queued(10, new Set())).toEqual([]);
      expect(ledger.reports.due(null, 10)).toEqual([]);
      expect(ledger.plan.waiting(null, 10)).toEqual([]);
      expect(ledger.uploads.abortsDue(10)).toEqual([]);
      expect(ledger.probe()).toBe(false);
      // The rows say exactly what committed before the fault.
      expect(ledgerRows(path, 'SELECT number, state, etag FROM parts ORDER BY number')).toEqual([
        { number: 1, state: 'done', etag: 'etag-1' },
        { number: 2, state: 'pending', etag: null },
      ]);
      expect(ledgerRows(path, 'SELECT state, last_error FROM uploads')).toEqual([{ state: 'queued', last_error: null }]);

      full.on = false;
      expect(ledger.probe()).toBe(true);
      expect(ledger.fault).toBeNull();
      expect(ledger.uploads.queued(10, new Set())).toEqual([id]);
      ledger.uploads.partDone(id!, { number: 2, etag: 'etag-2', md5: 'm2' });
      await ledger.uploads.done(id!, outcome);
      expect(ledgerRows(path, 'SELECT state FROM uploads')).toEqual([{ state: 'done' }]);
      expect(ledger.reports.due(null, 10)).toHaveLength(1);
    } finally {
      ledger.close();
    }
  });

  it('takes the error SQLite raises on a full disk (max_page_count reached) for a storage fault', () => {
    const db = new Database(join(dir.path, 'small.db'));
    try {
      db.exec('CREATE TABLE t (v TEXT)');
      db.pragma(`max_page_count = ${db.pragma('page_count', { simple: true }) as number}`);
      let raised: unknown = null;
      try {
        db.prepare('INSERT INTO t VALUES (?)').run('x'.repeat(64 * 1024));
      } catch (err) {
        raised = err;
      }
      expect(raised).toMatchObject({ code: 'SQLITE_FULL' });
      expect(isStorageFault(raised)).toBe(true);
      expect(isStorageFault(Object.assign(new Error('constraint'), { code: 'SQLITE_CONSTRAINT_UNIQUE' }))).toBe(false);
    } finally {
      db.close();
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
