/**
 * The daemon's SQLite ledger as tests read it: opened read-only for one query, so the daemon
 * can go on writing it (or be SIGKILLed) meanwhile.
 */
import Database from 'better-sqlite3';
import { waitFor } from './daemon-process.js';

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

/** A video file's upload row, as tests follow it. */
export interface UploadRow {
  id: number;
  video_id: string;
  state: string;
  session: string | null;
}

/** The upload of the video's file (its first, for a video sent to several targets); undefined until it is planned. */
export function uploadOf(ledgerPath: string, videoId: string): UploadRow | undefined {
  return ledgerRowsSoFar<UploadRow>(
    ledgerPath,
    `SELECT id, video_id, state, session FROM uploads WHERE role = 'video' AND video_id = ? ORDER BY id LIMIT 1`,
    videoId,
  )[0];
}

/** The numbers of the upload's parts the ledger has as done. */
export function partsDone(ledgerPath: string, uploadId: number): number[] {
  return ledgerRowsSoFar<{ number: number }>(
    ledgerPath,
    `SELECT number FROM parts WHERE upload_id = ? AND state = 'done' ORDER BY number`,
    uploadId,
  ).map((p) => p.number);
}

/** Waits until the video's upload is in `state`, and returns it. */
export function uploadReaches(ledgerPath: string, videoId: string, state: string, timeoutMs = 30_000): Promise<UploadRow> {
  return waitFor(
    () => {
      const u = uploadOf(ledgerPath, videoId);
      return u?.state === state ? u : undefined;
    },
    timeoutMs,
    `the upload of ${videoId} ${state}`,
  );
}
