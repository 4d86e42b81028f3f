/**
 * The upload stage's part of the ledger: queued uploads, their parts, what each platform
 * acknowledged, and remote uploads still to abort.
 *
 * Every method that changes state is one transaction, and none of them does network I/O: the
 * engine talks to a platform first, then records what the platform acknowledged. A part is
 * `done` only after its acknowledgement; an upload only after the platform completed it. An
 * upload the ledger withdrew meanwhile (its file changed, a manifest rewrite replaced it)
 * records nothing more: `halted` tells the engine to stop it.
 */
import type { PartSlice } from '../plan/part-plan.js';
import type { FileRole, SessionState, SourceFile, UploadResult } from '../targets/target.js';
import type { LedgerDb } from './database.js';
import { json, num, orNull, result, session, str, strOrNull, type Row } from './rows.js';
import { SOURCE_FILE_SQL, sourceFile, type Transitions } from './transitions.js';
import { z } from 'zod';

export interface QueuedPart extends PartSlice {
  state: 'pending' | 'done';
  etag: string | null;
  /** The MD5 of what was sent: known once the part is done. */
  md5: string | null;
}

export interface QueuedUpload {
  id: number;
  target: string;
  session: SessionState | null;
  file: SourceFile;
  parts: QueuedPart[];
  /** What this upload replaces on the platform: the result of an upload of an earlier version of the file. */
  superseded: UploadResult | null;
}

export interface PendingAbort {
  id: number;
  target: string;
  session: SessionState;
  file: SourceFile;
  attempts: number;
}

/** A part the platform acknowledged. */
export interface AcknowledgedPart {
  number: number;
  etag: string | null;
  md5: string;
}

/** What the engine records when the platform completed an upload. */
export interface UploadOutcome {
  result: UploadResult;
  /** The file's identity, known by now (the identity pass ran beside the parts). */
  sha256: string;
  /** The remote identifiers as they ended up (a single PUT learns its key on the way). */
  session: SessionState;
  /** Acknowledged parts the ledger has not recorded yet (a single PUT's one part). */
  parts: readonly AcknowledgedPart[];
  /** When sending began, for uploads that never opened a remote session first (ms). */
  startedAt: number;
}

/** The file of a pending abort, as recorded when it was queued. */
const abortedFile = z.looseObject({
  role: z.enum(['video', 'thumbnail']),
  path: z.string(),
  name: z.string(),
  incident: z.looseObject({ id: z.string() }),
  video: z.looseObject({ id: z.string() }),
});

export class UploadLedger {
  constructor(
    private readonly db: LedgerDb,
    private readonly transitions: Transitions,
  ) {}

  /**
   * Uploads ready to send, oldest first, except `exclude` (those under way). An upload waits
   * while its camera is paused, and while an older upload of the same content to the same target
   * in the same incident is still queued: when that one completes, this one is done too.
   */
  queued(limit: number, exclude: ReadonlySet<number>): number[] {
    if (this.db.fault) return [];
    const ids = this.db.all(
      `SELECT u.id FROM uploads u JOIN videos v ON v.incident_id = u.incident_id AND v.id = u.video_id
       WHERE u.state = 'queued' AND v.state = 'ready'
         AND NOT EXISTS (SELECT 1 FROM cameras c WHERE c.id = json_extract(v.info, '$.camera_id') AND c.state = 'paused')
         AND NOT EXISTS (SELECT 1 FROM uploads o WHERE o.incident_id = u.incident_id AND o.target = u.target AND o.role = u.role
                         AND o.sha256 = u.sha256 AND o.state = 'queued' AND o.id < u.id)
       ORDER BY u.id LIMIT ?`,
      (r) => num(r.id),
      limit + exclude.size,
    );
    return ids.filter((id) => !exclude.has(id)).slice(0, limit);
  }

  load(id: number): QueuedUpload | null {
    const u = this.db.get(`${SOURCE_FILE_SQL} WHERE u.id = ? AND u.state = 'queued' AND v.state = 'ready'`, (r) => r, id);
    if (!u) return null;
    const parts = this.db.all(
      'SELECT number, offset, size, md5, state, etag FROM parts WHERE upload_id = ? ORDER BY number',
      (r): QueuedPart => ({
        number: num(r.number),
        offset: num(r.offset),
        size: num(r.size),
        md5: strOrNull(r.md5),
        state: r.state === 'done' ? 'done' : 'pending',
        etag: strOrNull(r.etag),
      }),
      id,
    );
    return {
      id,
      target: str(u.target),
      session: orNull(session)(u.session),
      file: sourceFile(u),
      parts,
      superseded: orNull(result)(u.superseded),
    };
  }

  /**
   * The platform opened the upload; when it decided the layout, its parts replace ours. False
   * when the upload was withdrawn meanwhile: the caller releases the session.
   */
  started(uploadId: number, remoteSession: SessionState, serverParts?: readonly PartSlice[]): boolean {
    return this.db.write(() => {
      if (!this.isQueued(uploadId)) return false;
      const t = Date.now();
      this.db.run(
        'UPDATE uploads SET session = ?, started_at = COALESCE(started_at, ?), updated_at = ? WHERE id = ?',
        json(remoteSession),
        t,
        t,
        uploadId,
      );
      if (serverParts) {
        this.db.run('DELETE FROM parts WHERE upload_id = ?', uploadId);
        for (const p of serverParts) {
          this.db.run(
            `INSERT INTO parts (upload_id, number, offset, size, state) VALUES (?, ?, ?, ?, 'pending')`,
            uploadId,
            p.number,
            p.offset,
            p.size,
          );
        }
      }
      return true;
    });
  }

  /** Whether the upload is still queued for a video that is ready (not withdrawn). */
  private isQueued(uploadId: number): boolean {
    return (
      this.db.get(
        `SELECT 1 FROM uploads u JOIN videos v ON v.incident_id = u.incident_id AND v.id = u.video_id WHERE u.id = ? AND u.state = 'queued' AND v.state = 'ready'`,
        (r) => r,
        uploadId,
      ) !== undefined
    );
  }

  /** Of the uploads given (those under way), the ones that may not go on: withdrawn, or of a camera that was paused. */
  halted(ids: readonly number[]): Map<number, 'withdrawn' | 'paused'> {
    const halted = new Map<number, 'withdrawn' | 'paused'>();
    if (ids.length === 0) return halted;
    const found = new Map(
      this.db
        .all(
          `SELECT u.id, u.state = 'queued' AND v.state = 'ready' AS runnable,
                  EXISTS (SELECT 1 FROM cameras c WHERE c.id = json_extract(v.info, '$.camera_id') AND c.state = 'paused') AS paused
           FROM uploads u JOIN videos v ON v.incident_id = u.incident_id AND v.id = u.video_id
           WHERE u.id IN (SELECT value FROM json_each(?))`,
          (r) => ({ id: num(r.id), runnable: num(r.runnable) === 1, paused: num(r.paused) === 1 }),
          json(ids),
        )
        .map((r) => [r.id, r]),
    );
    for (const id of ids) {
      const r = found.get(id);
      if (!r?.runnable) halted.set(id, 'withdrawn');
      else if (r.paused) halted.set(id, 'paused');
    }
    return halted;
  }

  /** The platform acknowledged a part (and maybe changed the upload's remote identifiers). */
  partDone(uploadId: number, part: AcknowledgedPart, remoteSession?: SessionState): void {
    this.db.write(() => {
      if (!this.isQueued(uploadId)) return;
      this.recordPart(uploadId, part, Date.now());
      if (remoteSession)
        this.db.run('UPDATE uploads SET session = ?, updated_at = ? WHERE id = ?', json(remoteSession), Date.now(), uploadId);
    });
  }

  private recordPart(uploadId: number, part: AcknowledgedPart, t: number): void {
    this.db.run(
      `UPDATE parts SET state = 'done', etag = ?, md5 = ?, done_at = ?, last_error = NULL WHERE upload_id = ? AND number = ?`,
      part.etag,
      part.md5,
      t,
      uploadId,
      part.number,
    );
  }

  /** A part attempt failed and is retried; the error shows in `status`. */
  partFailed(uploadId: number, number: number, error: string): void {
    this.db.note(() => {
      this.db.run('UPDATE parts SET attempts = attempts + 1, last_error = ? WHERE upload_id = ? AND number = ?', error, uploadId, number);
      this.setTrouble(uploadId, `part ${number}: ${error}`);
    });
  }

  /**
   * Completed by the platform: done, along with every queued upload of the same content to that
   * target in the same incident, in one transaction with the parts not recorded yet. False when
   * the upload was withdrawn meanwhile (nothing recorded).
   */
  done(uploadId: number, outcome: UploadOutcome): Promise<boolean> {
    return this.db.writeSoon(() => {
      if (!this.isQueued(uploadId)) return false;
      const t = Date.now();
      for (const part of outcome.parts) this.recordPart(uploadId, part, t);
      this.db.run(
        `UPDATE uploads SET state = 'done', sha256 = ?, session = ?, result = ?, last_error = NULL, started_at = COALESCE(started_at, ?),
           completed_at = ?, updated_at = ? WHERE id = ?`,
        outcome.sha256,
        json(outcome.session),
        json(outcome.result),
        outcome.startedAt,
        t,
        t,
        uploadId,
      );
      const u = this.db.get('SELECT incident_id, video_id, target, role FROM uploads WHERE id = ?', (r) => r, uploadId)!;
      const twins = this.db.all(
        `SELECT id, incident_id, video_id FROM uploads WHERE incident_id = ? AND target = ? AND role = ? AND sha256 = ? AND state = 'queued'`,
        (r) => r,
        u.incident_id,
        u.target,
        u.role,
        outcome.sha256,
      );
      for (const twin of twins) {
        this.db.run('DELETE FROM parts WHERE upload_id = ?', twin.id);
        this.db.run(
          `UPDATE uploads SET state = 'done', result = ?, reused_from = ?, session = NULL, completed_at = ?, updated_at = ? WHERE id = ?`,
          json(outcome.result),
          uploadId,
          t,
          t,
          twin.id,
        );
      }
      for (const row of [u, ...twins]) this.transitions.bumpReportsIfFinal(str(row.incident_id), str(row.video_id));
      return true;
    });
  }

  /** Given up: the upload fails with the platform's message, and its remote session is released. */
  failed(uploadId: number, error: string): void {
    this.db.note(() => {
      if (!this.isQueued(uploadId)) return;
      this.transitions.queueAbortFor(uploadId);
      this.db.run(
        `UPDATE uploads SET state = 'failed', session = NULL, last_error = ?, updated_at = ? WHERE id = ?`,
        error,
        Date.now(),
        uploadId,
      );
      this.db.run(`UPDATE parts SET state = 'pending', etag = NULL, md5 = NULL WHERE upload_id = ?`, uploadId);
      const owner = this.db.get('SELECT incident_id, video_id FROM uploads WHERE id = ?', (r) => r, uploadId)!;
      this.transitions.bumpReportsIfFinal(str(owner.incident_id), str(owner.video_id));
    });
  }

  /** A retryable problem worth showing in status while the upload keeps going. */
  trouble(uploadId: number, error: string): void {
    this.db.note(() => this.setTrouble(uploadId, error));
  }

  private setTrouble(uploadId: number, error: string): void {
    this.db.run('UPDATE uploads SET last_error = ?, updated_at = ? WHERE id = ?', error, Date.now(), uploadId);
  }

  /**
   * The file changed while it was being sent: nothing sent of it may be completed. The video is
   * sent round again (see Transitions.videoChanged); returns what its completed uploads were.
   */
  fileChanged(incidentId: string, videoId: string, reason: string): Array<{ target: string; role: FileRole; result: UploadResult }> {
    let done: Array<{ target: string; role: FileRole; result: UploadResult }> = [];
    this.db.note(() => {
      done = this.transitions.videoChanged(incidentId, videoId, reason);
    });
    return done;
  }

  /** Remote uploads given up and still to release, oldest first. */
  abortsDue(limit: number): PendingAbort[] {
    if (this.db.fault) return [];
    return this.db.all(
      'SELECT * FROM pending_aborts ORDER BY id LIMIT ?',
      (r: Row) => ({
        id: num(r.id),
        target: str(r.target),
        session: session(r.session),
        file: abortedFile.parse(JSON.parse(str(r.file))) as unknown as SourceFile,
        attempts: num(r.attempts),
      }),
      limit,
    );
  }

  /** Dropped under a storage fault: the abort is simply made again later (a repeat is harmless). */
  abortDone(id: number): void {
    this.db.note(() => this.db.run('DELETE FROM pending_aborts WHERE id = ?', id));
  }

  abortFailed(id: number, error: string): void {
    this.db.note(() => this.db.run('UPDATE pending_aborts SET attempts = attempts + 1, last_error = ? WHERE id = ?', error, id));
  }
}
