/**
 * Write faults of the ledger's storage: a full disk (SQLITE_FULL), an I/O error (SQLITE_IOERR_*),
 * a filesystem remounted read-only (SQLITE_READONLY_*). Such a fault is nobody's bug and usually
 * passes (an operator frees space): the transaction that met it was rolled back, so the ledger
 * still says only what was committed; the daemon pauses new work and retries until a write
 * commits again.
 */
/** The SQLite error codes that mean "the storage refused the write", not "the ledger is wrong". */
export function isStorageFault(err: unknown): err is Error & { code: string } {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^SQLITE_(FULL|IOERR|READONLY)(_|$)/.test(code);
}

/**
 * A ledger write that did not commit because of its storage. Whoever gets it stops what it was
 * doing without recording a failure: the work resumes from the ledger once writes commit again.
 */
export class LedgerFaultError extends Error {
  override readonly name = 'LedgerFaultError';
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export interface LedgerFault {
  code: string;
  message: string;
  /** When the first failing write of this episode happened (ms since the epoch). */
  since: number;
}
