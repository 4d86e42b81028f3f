/**
 * Opening the ledger file: durability settings, an integrity check, schema migrations.
 *
 * WAL with synchronous=FULL means a transaction that returned is on disk, even across a power
 * cut; readers (`vms-uplink status`) never block the daemon's writes.
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { MIGRATIONS } from './migrations.js';

export type Db = Database.Database;

/** The ledger cannot be trusted or used; the daemon stops rather than guess. */
export class LedgerOpenError extends Error {
  override readonly name = 'LedgerOpenError';
}

function recoveryHint(path: string): string {
  return (
    `Stop the daemon, keep a copy (cp ${path} ${path}.broken), then either restore a backup or ` +
    `start from an empty ledger (mv ${path} ${path}.broken; rm -f ${path}-wal ${path}-shm). ` +
    `An empty ledger re-reads every incident folder and uploads what the platforms do not have yet.`
  );
}

export function openDatabase(path: string, options: { readonly?: boolean } = {}): Db {
  let db: Db;
  try {
    if (!options.readonly) mkdirSync(dirname(path), { recursive: true });
    db = new Database(path, { readonly: options.readonly ?? false, fileMustExist: options.readonly ?? false });
  } catch (err) {
    throw new LedgerOpenError(`cannot open ledger ${path}: ${(err as Error).message}`);
  }
  try {
    if (!options.readonly) {
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = FULL');
    }
    db.pragma('foreign_keys = ON');
    db.pragma('busy_timeout = 5000');
    const check = db.pragma('quick_check', { simple: true });
    if (check !== 'ok') throw new Error(`quick_check: ${String(check)}`);
  } catch (err) {
    db.close();
    throw new LedgerOpenError(`ledger ${path} is corrupt (${(err as Error).message}). ${recoveryHint(path)}`);
  }
  if (!options.readonly) migrate(db, path);
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
