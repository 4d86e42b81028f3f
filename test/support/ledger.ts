/**
 * The daemon's SQLite ledger as tests read it: opened read-only for one query, so the daemon
 * can go on writing it (or be SIGKILLed) meanwhile.
 */
import Database from 'better-sqlite3';

/** The rows `sql` selects; throws when there is no ledger. */
export function ledgerRows<T>(ledgerPath: string, sql: string, ...params: unknown[]): T[] {
  const db = new Database(ledgerPath, { readonly: true });
  try {
    return db.prepare(sql).all(...params) as T[];
  } finally {
    db.close();
  }
}

/**
 * As ledgerRows, but none while the daemon has not created the ledger (its file or its tables)
 * yet: for polling from the moment the daemon starts.
 */
export function ledgerRowsSoFar<T>(ledgerPath: string, sql: string, ...params: unknown[]): T[] {
  try {
    return ledgerRows<T>(ledgerPath, sql, ...params);
  } catch {
    return [];
  }
}
