/**
 * The ledger's database core: opening the file (durability settings, an integrity check, schema
 * migrations), a cache of prepared statements, and the one place where writes meet storage
 * faults. The stage modules (watch-ledger.ts, plan-ledger.ts, …) hold the SQL; nothing outside
 * src/ledger/ holds the database handle.
 *
 * WAL with synchronous=FULL means a transaction that returned is on disk, even across a power
 * cut; readers (`vms-uplink status`) never block the daemon's writes.
 *
 * A damaged ledger is never opened for writing: its files are checked by hand first
 * (preflight.ts), then `PRAGMA quick_check` runs on a read-only connection, which cannot
 * checkpoint or delete the write-ahead log. The broken files stay exactly as they were.
 *
 * Storage faults (a full disk, an I/O error): a write that meets one is rolled back, the ledger
 * enters its fault state and `onFault` is told. Writes that record progress throw
 * LedgerFaultError, so their caller stops as if shut down and the work is done again later;
 * `note` writes (a retried error, a give-up) are dropped and made again when the work is
 * retried. While in the fault state the stages hand out no new work, until `probe()` finds that a
 * write commits again.
 */
import Database from 'better-sqlite3';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { isStorageFault, LedgerFaultError, type LedgerFault } from './faults.js';
import { MIGRATIONS } from './migrations.js';
import { checkDatabaseFile, checkWalFile } from './preflight.js';

/**
 * How long a group commit waits for more writes to join it. Each commit fsyncs (synchronous=FULL)
 * on the main thread: on a backlog of small exports, gathering 20 ms of acknowledgements instead
 * of one event-loop turn's took a 3,000-incident backlog from 46 s to 32 s and its CPU by a third.
 * Nothing counts as recorded before its commit, so the wait delays what follows a write, never
 * weakens it.
 */
const GROUP_COMMIT_MS = 20;

type Db = Database.Database;
type Params = unknown[] | [Record<string, unknown>];

/** How a ledger is opened. */
export interface LedgerOptions {
  /** `vms-uplink status`: a read-only connection that never blocks the daemon's writes. */
  readonly?: boolean;
  /**
   * Runs before every write; a test makes it throw a storage fault (SqliteError SQLITE_FULL) to
   * see the daemon through a full disk without filling one.
   */
  beforeWrite?: () => void;
}

export class LedgerDb {
  private readonly statements = new Map<string, Database.Statement>();
  private currentFault: LedgerFault | null = null;
  /** Writes waiting for the next group commit (writeSoon). */
  private pending: Array<{ fn: () => unknown; resolve: (value: unknown) => void; reject: (err: unknown) => void }> | null = null;
  /** Told when a write first fails for its storage (the start of a fault episode). */
  onFault: ((fault: LedgerFault) => void) | null = null;
  /** Write transactions committed by this connection: a reader can tell that nothing changed since it last looked. */
  private committed = 0;

  private constructor(
    private readonly db: Db,
    private readonly beforeWrite: () => void,
  ) {}

  static open(path: string, options: LedgerOptions = {}): LedgerDb {
    return new LedgerDb(openDatabase(path, options), options.beforeWrite ?? (() => undefined));
  }

  get commits(): number {
    return this.committed;
  }

  get isOpen(): boolean {
    return this.db.open;
  }

  /** The storage fault writes are meeting, or null while they commit. */
  get fault(): LedgerFault | null {
    return this.currentFault;
  }

  /** The statement for `sql`, prepared once. */
  stmt(sql: string): Database.Statement {
    let statement = this.statements.get(sql);
    if (!statement) this.statements.set(sql, (statement = this.db.prepare(sql)));
    return statement;
  }

  /** Every row `sql` selects, each decoded (and its JSON columns validated) by `decode`. */
  all<T>(sql: string, decode: (row: Record<string, unknown>) => T, ...params: Params): T[] {
    return (this.stmt(sql).all(...params) as Array<Record<string, unknown>>).map(decode);
  }

  /** The first row `sql` selects, decoded; undefined when there is none. */
  get<T>(sql: string, decode: (row: Record<string, unknown>) => T, ...params: Params): T | undefined {
    const row = this.stmt(sql).get(...params) as Record<string, unknown> | undefined;
    return row === undefined ? undefined : decode(row);
  }

  /** The rows of `sql`, one at a time: for listing a ledger of any size in constant memory. */
  *iterate<T>(sql: string, decode: (row: Record<string, unknown>) => T, ...params: Params): Generator<T> {
    // An iterating statement is busy until it is done: a fresh one, so that the cache stays usable meanwhile.
    for (const row of this.db.prepare(sql).iterate(...params) as IterableIterator<Record<string, unknown>>) yield decode(row);
  }

  run(sql: string, ...params: Params): Database.RunResult {
    return this.stmt(sql).run(...params);
  }

  /**
   * One transaction that records progress: a storage fault rolls it back, enters the fault state
   * and throws LedgerFaultError.
   */
  write<T>(fn: () => T): T {
    try {
      this.beforeWrite();
      const result = this.db.transaction(fn)();
      this.committed++;
      return result;
    } catch (err) {
      if (!isStorageFault(err)) throw err;
      const message = `ledger write failed: ${err.message} (${err.code})`;
      if (!this.currentFault) {
        this.currentFault = { code: err.code, message, since: Date.now() };
        this.onFault?.(this.currentFault);
      }
      throw new LedgerFaultError(err.code, message);
    }
  }

  /**
   * A write committed together with the others asked for within GROUP_COMMIT_MS of it: one
   * transaction (one fsync) for many acknowledgements that arrive together, each in a savepoint
   * of its own so that one failing leaves the others in. The promise settles once the
   * transaction committed (or failed): nothing is taken as recorded before it is on disk.
   */
  writeSoon<T>(fn: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (!this.pending) {
        this.pending = [];
        setTimeout(() => this.commitPending(), GROUP_COMMIT_MS);
      }
      this.pending.push({ fn, resolve: resolve as (value: unknown) => void, reject });
    });
  }

  private commitPending(): void {
    const batch = this.pending;
    // Already committed by close().
    if (!batch) return;
    this.pending = null;
    const outcomes: Array<{ ok: true; value: unknown } | { ok: false; error: unknown }> = [];
    try {
      this.write(() => {
        for (const item of batch) {
          try {
            outcomes.push({ ok: true, value: this.db.transaction(item.fn)() });
          } catch (error) {
            if (isStorageFault(error)) throw error;
            outcomes.push({ ok: false, error });
          }
        }
      });
    } catch (err) {
      for (const item of batch) item.reject(err);
      return;
    }
    batch.forEach((item, i) => {
      const outcome = outcomes[i]!;
      if (outcome.ok) item.resolve(outcome.value);
      else item.reject(outcome.error);
    });
  }

  /** A write that only records trouble or a give-up: under a storage fault it is dropped. */
  note(fn: () => void): void {
    try {
      this.write(fn);
    } catch (err) {
      if (!(err instanceof LedgerFaultError)) throw err;
    }
  }

  /**
   * In the fault state: tries to checkpoint the log (which can give space back) and to commit a
   * write. True, and the fault state ends, when the write committed.
   */
  probe(): boolean {
    if (!this.currentFault) return true;
    try {
      this.db.pragma('wal_checkpoint(TRUNCATE)');
    } catch {
      // Not enough room to checkpoint either; the write below decides.
    }
    try {
      this.beforeWrite();
      this.run(
        'INSERT INTO ledger_probe (id, probed_at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at',
        Date.now(),
      );
    } catch (err) {
      if (!isStorageFault(err)) throw err;
      this.currentFault = { ...this.currentFault, code: err.code, message: `ledger write failed: ${err.message} (${err.code})` };
      return false;
    }
    this.currentFault = null;
    return true;
  }

  /**
   * Whether the schema is this version's: false for a ledger a daemon is creating right now (no
   * tables yet), or one an older daemon wrote and this version has not migrated yet.
   */
  schemaIsCurrent(): boolean {
    return (this.db.pragma('user_version', { simple: true }) as number) === MIGRATIONS.length;
  }

  close(): void {
    // Writes still gathering for a group commit are committed, not dropped.
    if (this.pending && this.db.open) this.commitPending();
    if (this.db.open) this.db.close();
  }
}

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

function openDatabase(path: string, options: LedgerOptions): Db {
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
    // Statement journals and temporary b-trees in memory (they are small: every query is paged):
    // SQLite otherwise wants a writable temp directory, and a container's root is read-only
    // (--read-only: every write failed with SQLITE_IOERR_GETTEMPPATH).
    db.pragma('temp_store = MEMORY');
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
    const migration = MIGRATIONS[v]!;
    // foreign_keys cannot change inside a transaction.
    if (migration.rebuildsTables) db.pragma('foreign_keys = OFF');
    db.transaction(() => {
      db.exec(migration.sql);
      if (migration.rebuildsTables && (db.pragma('foreign_key_check') as unknown[]).length > 0) {
        throw new LedgerOpenError(`ledger ${path}: migration ${v + 1} would break its foreign keys; it was rolled back`);
      }
      db.pragma(`user_version = ${v + 1}`);
    })();
    if (migration.rebuildsTables) db.pragma('foreign_keys = ON');
  }
}
