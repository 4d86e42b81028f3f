/**
 * Opening the ledger file: durability settings, an integrity check, schema migrations.
 *
 * WAL with synchronous=FULL means a transaction that returned is on disk, even across a power
 * cut; readers (`vms-uplink status`) never block the daemon's writes.
 *
 * A damaged ledger is never opened for writing: its files are checked by hand first
 * (preflight.ts), then `PRAGMA quick_check` runs on a read-only connection, which cannot
 * checkpoint or delete the write-ahead log. The broken files stay exactly as they were.
 */
import Database from 'better-sqlite3';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { MIGRATIONS } from './migrations.js';
import { checkDatabaseFile, checkWalFile } from './preflight.js';

export type Db = Database.Database;

/** The ledger cannot be trusted or used; the daemon stops rather than guess. */
export class LedgerOpenError extends Error {
  override readonly name = 'LedgerOpenError';
}

/** The shell commands that set a broken ledger aside, keeping every file of it (README, Troubleshooting). */
export function recoveryCommand(path: string): string {
  return `mv ${path} ${path}.broken && { [ ! -e ${path}-wal ] || mv ${path}-wal ${path}.broken-wal; } && rm -f ${path}-shm`;
}

function recoveryHint(path: string): string {
  return (
    `The file was left untouched. Stop the daemon, then restore a backup, or set the broken ledger aside ` +
    `and start from an empty one: ${recoveryCommand(path)} — ` +
    `an empty ledger re-reads every incident folder and uploads again what it finds (ALO gets each incident again).`
  );
}

function corrupt(path: string, what: string): LedgerOpenError {
  return new LedgerOpenError(`ledger ${path} is corrupt: ${what}. ${recoveryHint(path)}`);
}

/** Checks the files, then runs quick_check on a read-only connection; throws LedgerOpenError. */
function verify(path: string): void {
  const problem = checkDatabaseFile(path) ?? checkWalFile(`${path}-wal`);
  if (problem) throw corrupt(path, problem);
  let db: Db;
  try {
    db = new Database(path, { readonly: true, fileMustExist: true });
  } catch (err) {
    const code = (err as { code?: string }).code ?? '';
    if (code === 'SQLITE_CANTOPEN') return; // e.g. no -shm yet and a read-only folder: the read-write open decides
    if (/^SQLITE_(CORRUPT|NOTADB)/.test(code)) throw corrupt(path, (err as Error).message);
    throw new LedgerOpenError(`cannot open ledger ${path}: ${(err as Error).message}`);
  }
  try {
    const check = db.pragma('quick_check', { simple: true });
    if (check !== 'ok') throw corrupt(path, `quick_check: ${String(check)}`);
  } catch (err) {
    if (err instanceof LedgerOpenError) throw err;
    throw corrupt(path, (err as Error).message);
  } finally {
    db.close();
  }
}

export function openDatabase(path: string, options: { readonly?: boolean } = {}): Db {
  const readonly = options.readonly ?? false;
  // A read-only connection cannot checkpoint or drop the log; the hand checks are for writers
  // (and would race a daemon writing the log while `status` reads it).
  if (!readonly && existsSync(path)) verify(path);
  let db: Db;
  try {
    if (!readonly) mkdirSync(dirname(path), { recursive: true });
    db = new Database(path, { readonly, fileMustExist: readonly });
  } catch (err) {
    throw new LedgerOpenError(`cannot open ledger ${path}: ${(err as Error).message}`);
  }
  try {
    if (!readonly) {
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = FULL');
    }
    db.pragma('foreign_keys = ON');
    db.pragma('busy_timeout = 5000');
    if (readonly) {
      const check = db.pragma('quick_check', { simple: true });
      if (check !== 'ok') throw corrupt(path, `quick_check: ${String(check)}`);
    } else migrate(db, path);
  } catch (err) {
    if (db.open) db.close();
    if (err instanceof LedgerOpenError) throw err;
    if (/^SQLITE_(CORRUPT|NOTADB)/.test((err as { code?: string }).code ?? '')) throw corrupt(path, (err as Error).message);
    throw new LedgerOpenError(`cannot prepare ledger ${path}: ${(err as Error).message}`);
  }
  return db;
}

function migrate(db: Db, path: string): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > MIGRATIONS.length) {
    db.close();
    throw new LedgerOpenError(
      `ledger ${path} has schema version ${version}, newer than this vms-uplink understands (${MIGRATIONS.length}); upgrade vms-uplink`,
    );
  }
  for (let v = version; v < MIGRATIONS.length; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v]!);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
}
