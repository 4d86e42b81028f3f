/**
 * The upload ledger: the single source of truth for what has been seen, sent and acknowledged.
 *
 * Every method that changes state is one SQLite transaction, and none of them does network I/O:
 * the engine talks to a platform first, then records what the platform acknowledged. A part is
 * `done` only after its acknowledgement; an upload is `done` only after the platform completed it.
 *
 * States:
 *   video:  waiting → ready → (uploads per target)      or → failed (export error, bad file)
 *   upload: queued → done | failed                      (parts: pending → done)
 *   report: wanted > acked means the platform has not seen the latest state of the incident;
 *           refused = wanted means it refused that state for good (sent again once it changes).
 *
 * Storage faults (a full disk, an I/O error): a write that meets one is rolled back, the ledger
 * enters its fault state and `onFault` is told. Writes that record progress (a part, an upload,
 * an acknowledged report…) throw LedgerFaultError, so their caller stops as if shut down and the
 * work is done again later; writes that only record trouble or a give-up (a retried error, a
 * failed upload, an abort) are dropped and will be made again when the work is retried. While in
 * the fault state no new work is handed out (no queued uploads, waiting videos, reports or
 * aborts), until `probe()` finds that a write commits again.
 */
import type { Manifest } from '../watch/manifest.js';
import type {
  FileRole,
  IncidentInfo,
  IncidentReport,
  ReportedVideo,
  SessionState,
  SourceFile,
  UploadResult,
  VideoInfo,
} from '../targets/target.js';
import { openDatabase, type Db } from './database.js';
import { isStorageFault, LedgerFaultError, testFaultHook, type LedgerFault } from './faults.js';

export interface PlannedPart {
  number: number;
  offset: number;
  size: number;
  md5: string;
}

export interface HashedFile {
  role: FileRole;
  path: string;
  size: number;
  mtimeMs: number;
  sha256: string;
  contentType: string;
}

export type UploadPlan =
  | { target: string; role: FileRole; parts: PlannedPart[] | null }
  | { target: string; role: FileRole; refused: string };

export interface WaitingVideo {
  incidentId: string;
  videoId: string;
  folder: string;
  /** The targets the incident's route chose; null: every target. */
  targets: string[] | null;
  firstSeenAt: number;
  files: Array<{ role: FileRole; relPath: string }>;
}

export interface QueuedUpload {
  id: number;
  target: string;
  session: SessionState | null;
  file: SourceFile;
  mtimeMs: number;
  parts: Array<PlannedPart & { state: 'pending' | 'done'; etag: string | null }>;
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

export interface ReportDue {
  incidentId: string;
  target: string;
  wanted: number;
  attempts: number;
}

/** What was done with a video's files after upload: by `after_upload`, or by `retention`. */
export type FilesAction = 'delete' | 'move' | 'retention';

export interface UploadedVideo {
  incidentId: string;
  videoId: string;
  folder: string;
  /** As they were uploaded: a file that no longer has this size and mtime changed since. */
  files: WatchedFile[];
  /** When the last target confirmed it (its last upload completed or report acknowledged), ms. */
  confirmedAt: number;
}

/** A file of a video whose upload completed, as it was when it was hashed. */
export interface WatchedFile {
  incidentId: string;
  videoId: string;
  role: FileRole;
  path: string;
  size: number;
  mtimeMs: number;
}

export interface FolderToHandle {
  incidentId: string;
  folder: string;
  manifestPath: string;
  manifestSha256: string;
  /** What was done with its videos' files (empty: only failed exports). */
  handled: FilesAction[];
}

type Row = Record<string, unknown>;

const now = (): number => Date.now();
const json = (v: unknown): string => JSON.stringify(v);

export class UploadLedger {
  private currentFault: LedgerFault | null = null;
  private readonly injectFault = testFaultHook();
  /** Told when a write first fails for its storage (the start of a fault episode). */
  onFault: ((fault: LedgerFault) => void) | null = null;

  private constructor(
    readonly db: Db,
    /** Targets that receive whole incidents (ALO); their report rows are kept up to date. */
    private readonly reportingTargets: readonly string[],
  ) {}

  static open(path: string, reportingTargets: readonly string[] = []): UploadLedger {
    return new UploadLedger(openDatabase(path), reportingTargets);
  }

  /** The storage fault writes are meeting, or null while they commit. */
  get fault(): LedgerFault | null {
    return this.currentFault;
  }

  /** Runs a write; a storage fault rolls it back, enters the fault state and throws LedgerFaultError. */
  private write<T>(fn: () => T): T {
    try {
      this.injectFault();
      return fn();
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

  /** A write that only records trouble or a give-up: under a storage fault it is dropped. */
  private note(fn: () => void): void {
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
      this.injectFault();
      this.db.prepare('INSERT INTO ledger_probe (id, probed_at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at').run(now());
    } catch (err) {
      if (!isStorageFault(err)) throw err;
      this.currentFault = { ...this.currentFault, code: err.code, message: `ledger write failed: ${err.message} (${err.code})` };
      return false;
    }
    this.currentFault = null;
    return true;
  }

  close(): void {
    if (this.db.open) this.db.close();
  }

  // ---- watch stage -------------------------------------------------------------------------

  /**
   * Applies a valid manifest. A manifest seen before with the same content changes nothing;
   * a rewrite updates metadata, adds new videos, sends changed files round again, and asks for
   * the incident to be reported again.
   */
  applyManifest(manifestPath: string, folder: string, manifestSha256: string, manifest: Manifest, targets: string[]): boolean {
    return this.write(() => this.db.transaction(() => {
      const existing = this.db.prepare('SELECT manifest_sha256, folder, targets FROM incidents WHERE id = ?').get(manifest.incident.id) as Row | undefined;
      if (existing && existing.manifest_sha256 === manifestSha256 && existing.folder === folder && existing.targets === json(targets)) return false;
      const t = now();
      const info: IncidentInfo = manifest.incident;
      this.db
        .prepare(
          `INSERT INTO incidents (id, folder, manifest_path, manifest_sha256, info, targets, created_at, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (id) DO UPDATE SET folder = excluded.folder, manifest_path = excluded.manifest_path,
             manifest_sha256 = excluded.manifest_sha256, info = excluded.info, targets = excluded.targets, updated_at = excluded.updated_at,
             folder_handled = NULL, folder_handled_at = NULL`,
        )
        .run(info.id, folder, manifestPath, manifestSha256, json(info), json(targets), t, t);
      manifest.videos.forEach((video, position) => this.applyManifestVideo(info.id, video, position, t));
      this.db.prepare('DELETE FROM manifest_errors WHERE path = ?').run(manifestPath);
      this.bumpReports(info.id);
      return true;
    })());
  }

  private applyManifestVideo(incidentId: string, video: Manifest['videos'][number], position: number, t: number): void {
    const { errors, file, thumbnail, ...rest } = video;
    const info: VideoInfo = rest;
    const exportErrors = errors && errors.length > 0 ? errors : null;
    const old = this.db.prepare('SELECT state, errors FROM videos WHERE incident_id = ? AND id = ?').get(incidentId, video.id) as Row | undefined;
    const files = this.db
      .prepare('SELECT role, rel_path FROM video_files WHERE incident_id = ? AND video_id = ?')
      .all(incidentId, video.id) as Array<{ role: FileRole; rel_path: string }>;
    const wanted = new Map<FileRole, string>();
    if (!exportErrors && file) wanted.set('video', file);
    if (!exportErrors && file && thumbnail) wanted.set('thumbnail', thumbnail);
    const filesChanged =
      files.length !== wanted.size || files.some((f) => wanted.get(f.role) !== f.rel_path);
    const exportFailedBefore = old?.state === 'failed' && old.errors === json(exportErrors);

    if (!old) {
      this.db
        .prepare(
          `INSERT INTO videos (incident_id, id, info, position, state, errors, first_seen_at, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(incidentId, video.id, json(info), position, exportErrors ? 'failed' : 'waiting', exportErrors ? json(exportErrors) : null, t, t);
    } else {
      this.db.prepare('UPDATE videos SET info = ?, position = ?, updated_at = ? WHERE incident_id = ? AND id = ?').run(json(info), position, t, incidentId, video.id);
      if (exportErrors && !exportFailedBefore) {
        this.discardUnfinishedUploads(incidentId, video.id);
        this.db.prepare(`UPDATE videos SET state = 'failed', errors = ?, updated_at = ? WHERE incident_id = ? AND id = ?`).run(json(exportErrors), t, incidentId, video.id);
      } else if (!exportErrors && (filesChanged || old.state === 'failed')) {
        this.discardUnfinishedUploads(incidentId, video.id);
        this.db
          .prepare(`UPDATE videos SET state = 'waiting', errors = NULL, notes = NULL, first_seen_at = ?, settled_at = NULL, files_handled = NULL, files_handled_at = NULL, updated_at = ? WHERE incident_id = ? AND id = ?`)
          .run(t, t, incidentId, video.id);
      }
    }
    if (filesChanged) {
      this.db.prepare('DELETE FROM video_files WHERE incident_id = ? AND video_id = ?').run(incidentId, video.id);
      const insert = this.db.prepare('INSERT INTO video_files (incident_id, video_id, role, rel_path) VALUES (?, ?, ?, ?)');
      for (const [role, relPath] of wanted) insert.run(incidentId, video.id, role, relPath);
    }
  }

  /** Records a manifest that does not validate; true when this version was not seen before (log it). */
  recordManifestError(path: string, fingerprint: string, problems: string[]): boolean {
    return this.write(() => this.db.transaction(() => {
      const old = this.db.prepare('SELECT fingerprint FROM manifest_errors WHERE path = ?').get(path) as Row | undefined;
      if (old?.fingerprint === fingerprint) return false;
      this.db
        .prepare(
          `INSERT INTO manifest_errors (path, fingerprint, problems, seen_at) VALUES (?, ?, ?, ?)
           ON CONFLICT (path) DO UPDATE SET fingerprint = excluded.fingerprint, problems = excluded.problems, seen_at = excluded.seen_at`,
        )
        .run(path, fingerprint, json(problems), now());
      return true;
    })());
  }

  waitingVideos(): WaitingVideo[] {
    if (this.currentFault) return [];
    const rows = this.db
      .prepare(
        `SELECT v.incident_id, v.id, v.first_seen_at, i.folder, i.targets, f.role, f.rel_path
         FROM videos v JOIN incidents i ON i.id = v.incident_id
         LEFT JOIN video_files f ON f.incident_id = v.incident_id AND f.video_id = v.id
         WHERE v.state = 'waiting' ORDER BY v.first_seen_at, v.incident_id, v.position`,
      )
      .all() as Row[];
    const byKey = new Map<string, WaitingVideo>();
    for (const r of rows) {
      const key = `${String(r.incident_id)}\u0000${String(r.id)}`;
      let v = byKey.get(key);
      if (!v) {
        v = {
          incidentId: String(r.incident_id),
          videoId: String(r.id),
          folder: String(r.folder),
          targets: r.targets ? (JSON.parse(String(r.targets)) as string[]) : null,
          firstSeenAt: Number(r.first_seen_at),
          files: [],
        };
        byKey.set(key, v);
      }
      if (r.role) v.files.push({ role: r.role as FileRole, relPath: String(r.rel_path) });
    }
    return [...byKey.values()];
  }

  /** A video with its incident, and the targets its incident goes to (null: every target). */
  videoContext(incidentId: string, videoId: string): { incident: IncidentInfo; info: VideoInfo; targets: string[] | null } {
    const row = this.db
      .prepare('SELECT i.info AS incident_info, i.targets, v.info AS video_info FROM videos v JOIN incidents i ON i.id = v.incident_id WHERE v.incident_id = ? AND v.id = ?')
      .get(incidentId, videoId) as Row;
    return {
      incident: JSON.parse(String(row.incident_info)) as IncidentInfo,
      info: JSON.parse(String(row.video_info)) as VideoInfo,
      targets: row.targets ? (JSON.parse(String(row.targets)) as string[]) : null,
    };
  }

  /** A video that cannot be uploaded (refused path, missing, empty, not a video). */
  failVideo(incidentId: string, videoId: string, errors: string[]): void {
    this.write(() => this.db.transaction(() => {
      this.discardUnfinishedUploads(incidentId, videoId);
      this.db
        .prepare(`UPDATE videos SET state = 'failed', errors = ?, updated_at = ? WHERE incident_id = ? AND id = ?`)
        .run(json(errors), now(), incidentId, videoId);
      this.bumpReports(incidentId);
    })());
  }

  /**
   * The video's files settled and were hashed: record them and create one upload per target and
   * role. An upload whose content some earlier upload to the same target already delivered is
   * done at once (the same content is never sent twice to a target).
   */
  videoReady(incidentId: string, videoId: string, files: HashedFile[], plans: UploadPlan[], notes: string[] = []): void {
    this.write(() => this.db.transaction(() => {
      const t = now();
      const setFile = this.db.prepare(
        `UPDATE video_files SET path = ?, size = ?, mtime_ms = ?, sha256 = ?, content_type = ? WHERE incident_id = ? AND video_id = ? AND role = ?`,
      );
      for (const f of files) setFile.run(f.path, f.size, f.mtimeMs, f.sha256, f.contentType, incidentId, videoId, f.role);
      this.db
        .prepare(`UPDATE videos SET state = 'ready', errors = NULL, notes = ?, settled_at = ?, updated_at = ? WHERE incident_id = ? AND id = ?`)
        .run(notes.length ? json(notes) : null, t, t, incidentId, videoId);
      for (const plan of plans) {
        const file = files.find((f) => f.role === plan.role);
        if (file) this.planUpload(incidentId, videoId, file, plan, t);
      }
      // A thumbnail dropped this time (missing, not an image) has no upload.
      const roles = new Set(files.map((f) => f.role));
      for (const u of this.db.prepare('SELECT id, role FROM uploads WHERE incident_id = ? AND video_id = ?').all(incidentId, videoId) as Row[]) {
        if (roles.has(u.role as FileRole)) continue;
        this.queueAbortFor(Number(u.id));
        this.db.prepare('DELETE FROM uploads WHERE id = ?').run(u.id);
      }
      this.bumpReportsIfFinal(incidentId, videoId);
    })());
  }

  private planUpload(incidentId: string, videoId: string, file: HashedFile, plan: UploadPlan, t: number): void {
    const old = this.db
      .prepare('SELECT id, sha256, state, result FROM uploads WHERE incident_id = ? AND video_id = ? AND role = ? AND target = ?')
      .get(incidentId, videoId, plan.role, plan.target) as Row | undefined;
    if (old && old.sha256 === file.sha256 && old.state !== 'failed') return;
    // A completed upload of other content is replaced; the result it had is kept for the log.
    const superseded = old?.state === 'done' ? (old.result as string | null) : null;
    if (old) {
      this.queueAbortFor(Number(old.id));
      this.db.prepare('DELETE FROM uploads WHERE id = ?').run(old.id);
    }
    if ('refused' in plan) {
      this.db
        .prepare(
          `INSERT INTO uploads (incident_id, video_id, role, target, sha256, size, state, last_error, created_at, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, 'failed', ?, ?, ?)`,
        )
        .run(incidentId, videoId, plan.role, plan.target, file.sha256, file.size, plan.refused, t, t);
      return;
    }
    // Content is shared within one incident only: another incident's key or media is not this one's.
    const twin = this.db
      .prepare(`SELECT id, result FROM uploads WHERE incident_id = ? AND target = ? AND role = ? AND sha256 = ? AND state = 'done' ORDER BY id LIMIT 1`)
      .get(incidentId, plan.target, plan.role, file.sha256) as Row | undefined;
    const info = this.db
      .prepare(
        `INSERT INTO uploads (incident_id, video_id, role, target, sha256, size, state, result, reused_from, superseded, created_at, updated_at, completed_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
        incidentId, videoId, plan.role, plan.target, file.sha256, file.size,
        twin ? 'done' : 'queued', twin ? twin.result : null, twin ? twin.id : null, superseded, t, t, twin ? t : null,
      );
    if (!twin && plan.parts) this.insertParts(Number(info.lastInsertRowid), plan.parts);
  }

  private insertParts(uploadId: number, parts: PlannedPart[]): void {
    const insert = this.db.prepare(`INSERT INTO parts (upload_id, number, offset, size, md5, state) VALUES (?, ?, ?, ?, ?, 'pending')`);
    for (const p of parts) insert.run(uploadId, p.number, p.offset, p.size, p.md5);
  }

  // ---- upload stage ------------------------------------------------------------------------

  /**
   * Uploads ready to send, oldest first. An upload waits while its camera is paused, and while
   * an older upload of the same content to the same target in the same incident is still queued:
   * when that one completes, this one is done too.
   */
  queuedUploadIds(limit: number, exclude: ReadonlySet<number>): number[] {
    if (this.currentFault) return [];
    const rows = this.db
      .prepare(
        `SELECT u.id FROM uploads u JOIN videos v ON v.incident_id = u.incident_id AND v.id = u.video_id
         WHERE u.state = 'queued' AND v.state = 'ready'
           AND NOT EXISTS (SELECT 1 FROM cameras c WHERE c.id = json_extract(v.info, '$.camera_id') AND c.state = 'paused')
           AND NOT EXISTS (SELECT 1 FROM uploads o WHERE o.incident_id = u.incident_id AND o.target = u.target AND o.role = u.role
                           AND o.sha256 = u.sha256 AND o.state = 'queued' AND o.id < u.id)
         ORDER BY u.id LIMIT ?`,
      )
      .all(limit + exclude.size) as Array<{ id: number }>;
    return rows.map((r) => r.id).filter((id) => !exclude.has(id)).slice(0, limit);
  }

  loadUpload(id: number): QueuedUpload | null {
    const u = this.db
      .prepare(
        `SELECT u.*, f.path, f.mtime_ms, f.content_type, f.rel_path, i.info AS incident_info, v.info AS video_info
         FROM uploads u
         JOIN video_files f ON f.incident_id = u.incident_id AND f.video_id = u.video_id AND f.role = u.role
         JOIN videos v ON v.incident_id = u.incident_id AND v.id = u.video_id
         JOIN incidents i ON i.id = u.incident_id
         WHERE u.id = ? AND u.state = 'queued' AND v.state = 'ready'`,
      )
      .get(id) as Row | undefined;
    if (!u) return null;
    const parts = this.db.prepare('SELECT number, offset, size, md5, state, etag FROM parts WHERE upload_id = ? ORDER BY number').all(id) as QueuedUpload['parts'];
    return {
      id,
      target: String(u.target),
      session: u.session ? (JSON.parse(String(u.session)) as SessionState) : null,
      mtimeMs: Number(u.mtime_ms),
      file: this.sourceFile(u),
      parts,
      superseded: u.superseded ? (JSON.parse(String(u.superseded)) as UploadResult) : null,
    };
  }

  private sourceFile(u: Row): SourceFile {
    const relPath = String(u.rel_path);
    return {
      role: u.role as FileRole,
      path: String(u.path),
      name: relPath.split(/[\\/]/).pop() ?? relPath,
      size: Number(u.size),
      sha256: String(u.sha256),
      contentType: String(u.content_type),
      incident: JSON.parse(String(u.incident_info)) as IncidentInfo,
      video: JSON.parse(String(u.video_info)) as VideoInfo,
    };
  }

  /**
   * The platform opened the upload; when it decided the layout, its parts replace ours. False
   * when the upload was withdrawn meanwhile (see {@link isQueued}): the caller releases the session.
   */
  uploadStarted(uploadId: number, session: SessionState, serverParts?: PlannedPart[]): boolean {
    return this.write(() => this.db.transaction(() => {
      if (!this.isQueued(uploadId)) return false;
      const t = now();
      this.db.prepare('UPDATE uploads SET session = ?, started_at = COALESCE(started_at, ?), updated_at = ? WHERE id = ?').run(json(session), t, t, uploadId);
      if (serverParts) {
        this.db.prepare('DELETE FROM parts WHERE upload_id = ?').run(uploadId);
        this.insertParts(uploadId, serverParts);
      }
      return true;
    })());
  }

  /**
   * Whether the upload is still queued for a video that is ready. A manifest rewrite or a file
   * that changed can withdraw an upload while the engine is sending it: the engine then stops it,
   * and nothing it learns afterwards is recorded.
   */
  private isQueued(uploadId: number): boolean {
    return (
      this.db
        .prepare(`SELECT 1 FROM uploads u JOIN videos v ON v.incident_id = u.incident_id AND v.id = u.video_id WHERE u.id = ? AND u.state = 'queued' AND v.state = 'ready'`)
        .get(uploadId) !== undefined
    );
  }

  /**
   * Of the uploads given (those under way), the ones that may not go on: withdrawn (see
   * {@link isQueued}), or of a camera that was paused.
   */
  haltedUploads(ids: readonly number[]): Map<number, 'withdrawn' | 'paused'> {
    const halted = new Map<number, 'withdrawn' | 'paused'>();
    if (ids.length === 0) return halted;
    const rows = this.db
      .prepare(
        `SELECT u.id, u.state = 'queued' AND v.state = 'ready' AS runnable,
                EXISTS (SELECT 1 FROM cameras c WHERE c.id = json_extract(v.info, '$.camera_id') AND c.state = 'paused') AS paused
         FROM uploads u JOIN videos v ON v.incident_id = u.incident_id AND v.id = u.video_id
         WHERE u.id IN (SELECT value FROM json_each(?))`,
      )
      .all(json(ids)) as Array<{ id: number; runnable: number; paused: number }>;
    const found = new Map(rows.map((r) => [r.id, r]));
    for (const id of ids) {
      const r = found.get(id);
      if (!r || !r.runnable) halted.set(id, 'withdrawn');
      else if (r.paused) halted.set(id, 'paused');
    }
    return halted;
  }

  partDone(uploadId: number, number: number, etag: string | null, session?: SessionState): void {
    this.write(() => this.db.transaction(() => {
      if (!this.isQueued(uploadId)) return;
      this.db
        .prepare(`UPDATE parts SET state = 'done', etag = ?, done_at = ?, last_error = NULL WHERE upload_id = ? AND number = ?`)
        .run(etag, now(), uploadId, number);
      if (session) this.db.prepare('UPDATE uploads SET session = ?, updated_at = ? WHERE id = ?').run(json(session), now(), uploadId);
    })());
  }

  partFailed(uploadId: number, number: number, error: string): void {
    this.note(() => this.db.transaction(() => {
      this.db.prepare('UPDATE parts SET attempts = attempts + 1, last_error = ? WHERE upload_id = ? AND number = ?').run(error, uploadId, number);
      this.setTrouble(uploadId, `part ${number}: ${error}`);
    })());
  }

  /**
   * Completed by the platform: done, along with every queued upload of the same content to that
   * target in the same incident. False when the upload was withdrawn meanwhile (nothing recorded).
   */
  uploadDone(uploadId: number, result: UploadResult): boolean {
    return this.write(() => this.db.transaction(() => {
      if (!this.isQueued(uploadId)) return false;
      const t = now();
      const u = this.db.prepare('SELECT incident_id, target, role, sha256 FROM uploads WHERE id = ?').get(uploadId) as Row;
      this.db
        .prepare(`UPDATE uploads SET state = 'done', result = ?, last_error = NULL, completed_at = ?, updated_at = ? WHERE id = ?`)
        .run(json(result), t, t, uploadId);
      const twins = this.db
        .prepare(`SELECT id, incident_id, video_id FROM uploads WHERE incident_id = ? AND target = ? AND role = ? AND sha256 = ? AND state = 'queued'`)
        .all(u.incident_id, u.target, u.role, u.sha256) as Row[];
      for (const twin of twins) {
        this.db.prepare('DELETE FROM parts WHERE upload_id = ?').run(twin.id);
        this.db
          .prepare(`UPDATE uploads SET state = 'done', result = ?, reused_from = ?, session = NULL, completed_at = ?, updated_at = ? WHERE id = ?`)
          .run(json(result), uploadId, t, t, twin.id);
      }
      for (const row of [this.uploadOwner(uploadId), ...twins]) {
        this.bumpReportsIfFinal(String(row.incident_id), String(row.video_id));
      }
      return true;
    })());
  }

  /** Given up: the upload fails with the platform's message, and its remote session is released. */
  uploadFailed(uploadId: number, error: string): void {
    this.note(() => this.db.transaction(() => {
      if (!this.isQueued(uploadId)) return;
      this.queueAbortFor(uploadId);
      this.db.prepare(`UPDATE uploads SET state = 'failed', session = NULL, last_error = ?, updated_at = ? WHERE id = ?`).run(error, now(), uploadId);
      this.db.prepare(`UPDATE parts SET state = 'pending', etag = NULL WHERE upload_id = ?`).run(uploadId);
      const owner = this.uploadOwner(uploadId);
      this.bumpReportsIfFinal(String(owner.incident_id), String(owner.video_id));
    })());
  }

  /** A retryable problem worth showing in status while the upload keeps going. */
  uploadTrouble(uploadId: number, error: string): void {
    this.note(() => this.setTrouble(uploadId, error));
  }

  private setTrouble(uploadId: number, error: string): void {
    this.db.prepare('UPDATE uploads SET last_error = ?, updated_at = ? WHERE id = ?').run(error, now(), uploadId);
  }

  /**
   * The file changed after it was hashed: nothing sent of it may be completed. Its unfinished
   * uploads are dropped (their remote sessions aborted) and the video settles and hashes again.
   */
  videoChanged(incidentId: string, videoId: string, reason: string): void {
    this.note(() => this.db.transaction(() => {
      this.discardUnfinishedUploads(incidentId, videoId);
      this.db
        .prepare(`UPDATE videos SET state = 'waiting', notes = ?, restarts = restarts + 1, settled_at = NULL, updated_at = ? WHERE incident_id = ? AND id = ?`)
        .run(json([reason]), now(), incidentId, videoId);
    })());
  }

  /**
   * Files of hashed videos that settled after `settledAfter` (the window in which an exporter may
   * still change them): `paths` only, or a page of all of them after `afterRow`.
   */
  watchedFiles(settledAfter: number, select: { paths: readonly string[] } | { afterRow: number; limit: number }): Array<WatchedFile & { row: number }> {
    if (this.currentFault) return [];
    const byPath = 'paths' in select;
    const rows = this.db
      .prepare(
        `SELECT f.rowid AS row, f.incident_id, f.video_id, f.role, f.path, f.size, f.mtime_ms
         FROM video_files f JOIN videos v ON v.incident_id = f.incident_id AND v.id = f.video_id
         WHERE v.state = 'ready' AND v.files_handled IS NULL AND v.settled_at > @settledAfter AND f.path IS NOT NULL
           AND ${byPath ? 'f.path IN (SELECT value FROM json_each(@paths))' : 'f.rowid > @afterRow'}
         ORDER BY f.rowid ${byPath ? '' : 'LIMIT @limit'}`,
      )
      .all(byPath ? { settledAfter, paths: json(select.paths) } : { settledAfter, afterRow: select.afterRow, limit: select.limit }) as Row[];
    return rows.map((r) => ({
      row: Number(r.row),
      incidentId: String(r.incident_id),
      videoId: String(r.video_id),
      role: r.role as FileRole,
      path: String(r.path),
      size: Number(r.size),
      mtimeMs: Number(r.mtime_ms),
    }));
  }

  /**
   * A file of a hashed video changed (an exporter that paused for longer than settle_seconds):
   * the video settles and is hashed again, its unfinished uploads are withdrawn, and each
   * completed one is replaced by a new upload once the new content differs. Returns the results
   * of the completed uploads, which the new ones will supersede: when there are any, the file
   * changed after its upload and the video counts it (`note`); otherwise it is a restart.
   */
  fileChanged(incidentId: string, videoId: string, note: string): Array<{ target: string; role: FileRole; result: UploadResult }> {
    return this.write(() => this.db.transaction(() => {
      const done = this.db
        .prepare(`SELECT target, role, result FROM uploads WHERE incident_id = ? AND video_id = ? AND state = 'done' ORDER BY target, role`)
        .all(incidentId, videoId) as Row[];
      this.discardUnfinishedUploads(incidentId, videoId);
      const counted = done.length > 0 ? 'changed_after_upload = changed_after_upload + 1, change_note = @note' : 'restarts = restarts + 1';
      this.db
        .prepare(`UPDATE videos SET state = 'waiting', settled_at = NULL, ${counted}, updated_at = @t WHERE incident_id = @incidentId AND id = @videoId`)
        .run({ note, t: now(), incidentId, videoId });
      return done.map((u) => ({ target: String(u.target), role: u.role as FileRole, result: JSON.parse(String(u.result)) as UploadResult }));
    })());
  }

  private discardUnfinishedUploads(incidentId: string, videoId: string): void {
    const rows = this.db.prepare(`SELECT id FROM uploads WHERE incident_id = ? AND video_id = ? AND state != 'done'`).all(incidentId, videoId) as Row[];
    for (const r of rows) {
      this.queueAbortFor(Number(r.id));
      this.db.prepare('DELETE FROM uploads WHERE id = ?').run(r.id);
    }
  }

  private uploadOwner(uploadId: number): Row {
    return this.db.prepare('SELECT incident_id, video_id FROM uploads WHERE id = ?').get(uploadId) as Row;
  }

  private queueAbortFor(uploadId: number): void {
    const u = this.db
      .prepare(
        `SELECT u.*, f.path, f.content_type, f.rel_path, i.info AS incident_info, v.info AS video_info
         FROM uploads u
         JOIN video_files f ON f.incident_id = u.incident_id AND f.video_id = u.video_id AND f.role = u.role
         JOIN videos v ON v.incident_id = u.incident_id AND v.id = u.video_id
         JOIN incidents i ON i.id = u.incident_id
         WHERE u.id = ? AND u.session IS NOT NULL AND u.state = 'queued'`,
      )
      .get(uploadId) as Row | undefined;
    if (!u) return;
    this.db
      .prepare('INSERT INTO pending_aborts (target, session, file, created_at) VALUES (?, ?, ?, ?)')
      .run(u.target, u.session, json(this.sourceFile(u)), now());
  }

  pendingAborts(): PendingAbort[] {
    if (this.currentFault) return [];
    return (this.db.prepare('SELECT * FROM pending_aborts ORDER BY id').all() as Row[]).map((r) => ({
      id: Number(r.id),
      target: String(r.target),
      session: JSON.parse(String(r.session)) as SessionState,
      file: JSON.parse(String(r.file)) as SourceFile,
      attempts: Number(r.attempts),
    }));
  }

  /** Dropped under a storage fault: the abort is simply made again later (a repeat is harmless). */
  abortDone(id: number): void {
    this.note(() => this.db.prepare('DELETE FROM pending_aborts WHERE id = ?').run(id));
  }

  abortFailed(id: number, error: string): void {
    this.note(() => this.db.prepare('UPDATE pending_aborts SET attempts = attempts + 1, last_error = ? WHERE id = ?').run(error, id));
  }

  // ---- report stage ------------------------------------------------------------------------

  private bumpReports(incidentId: string): void {
    for (const target of this.reportingTargetsOf(incidentId)) this.bumpReport(incidentId, target);
  }

  /** Asks for a new report when this video reached a final state for some reporting target. */
  private bumpReportsIfFinal(incidentId: string, videoId: string): void {
    for (const target of this.reportingTargetsOf(incidentId)) {
      if (this.videoOutcome(incidentId, videoId, target) !== 'pending') this.bumpReport(incidentId, target);
    }
  }

  private bumpReport(incidentId: string, target: string): void {
    this.db
      .prepare(
        `INSERT INTO reports (incident_id, target, wanted) VALUES (?, ?, 1)
         ON CONFLICT (incident_id, target) DO UPDATE SET wanted = wanted + 1`,
      )
      .run(incidentId, target);
  }

  /** The reporting targets this incident goes to (its route's, or all of them). */
  private reportingTargetsOf(incidentId: string): readonly string[] {
    const row = this.db.prepare('SELECT targets FROM incidents WHERE id = ?').get(incidentId) as Row | undefined;
    if (!row?.targets) return this.reportingTargets;
    const routed = JSON.parse(String(row.targets)) as string[];
    return this.reportingTargets.filter((t) => routed.includes(t));
  }

  /**
   * A video is final for a target once its video upload is done or failed and nothing of it is
   * still queued. A thumbnail that failed does not fail the video: it is reported without it.
   */
  private videoOutcome(incidentId: string, videoId: string, target: string): 'pending' | 'uploaded' | 'failed' {
    const v = this.db.prepare('SELECT state FROM videos WHERE incident_id = ? AND id = ?').get(incidentId, videoId) as Row | undefined;
    if (!v || v.state === 'waiting') return 'pending';
    if (v.state === 'failed') return 'failed';
    const uploads = this.db.prepare('SELECT role, state FROM uploads WHERE incident_id = ? AND video_id = ? AND target = ?').all(incidentId, videoId, target) as Row[];
    const video = uploads.find((u) => u.role === 'video');
    if (!video || uploads.some((u) => u.state === 'queued')) return 'pending';
    return video.state === 'done' ? 'uploaded' : 'failed';
  }

  /** Reports the platform has not acknowledged, except those it refused in their current version. */
  reportsDue(): ReportDue[] {
    if (this.currentFault) return [];
    return (this.db.prepare('SELECT incident_id, target, wanted, attempts FROM reports WHERE wanted > acked AND wanted > refused ORDER BY incident_id').all() as Row[]).map((r) => ({
      incidentId: String(r.incident_id),
      target: String(r.target),
      wanted: Number(r.wanted),
      attempts: Number(r.attempts),
    }));
  }

  /** The incident as the target should see it now: every video in a final state for it. */
  buildReport(incidentId: string, target: string): IncidentReport {
    const incident = this.db.prepare('SELECT info FROM incidents WHERE id = ?').get(incidentId) as Row;
    const videos = this.db.prepare('SELECT id, info, state, errors FROM videos WHERE incident_id = ? ORDER BY position, id').all(incidentId) as Row[];
    const reported: ReportedVideo[] = [];
    for (const v of videos) {
      const info = JSON.parse(String(v.info)) as VideoInfo;
      if (v.state === 'failed') {
        reported.push({ video: info, outcome: 'failed', errors: JSON.parse(String(v.errors)) as string[] });
        continue;
      }
      const outcome = this.videoOutcome(incidentId, String(v.id), target);
      const uploads = this.db.prepare('SELECT role, result, last_error, state FROM uploads WHERE incident_id = ? AND video_id = ? AND target = ?').all(incidentId, v.id, target) as Row[];
      if (outcome === 'uploaded') {
        const results: Partial<Record<FileRole, UploadResult>> = {};
        for (const u of uploads.filter((u) => u.state === 'done')) results[u.role as FileRole] = JSON.parse(String(u.result)) as UploadResult;
        reported.push({ video: info, outcome, results });
      } else if (outcome === 'failed') {
        const errors = uploads.filter((u) => u.role === 'video' && u.state === 'failed').map((u) => `upload failed: ${String(u.last_error)}`);
        reported.push({ video: info, outcome, errors });
      }
    }
    return { incident: JSON.parse(String(incident.info)) as IncidentInfo, videos: reported };
  }

  reportAcked(incidentId: string, target: string, version: number): void {
    this.write(() =>
      this.db
        .prepare('UPDATE reports SET acked = MAX(acked, ?), attempts = 0, last_error = NULL, acked_at = ? WHERE incident_id = ? AND target = ?')
        .run(version, now(), incidentId, target),
    );
  }

  /** A temporary failure: the report is sent again after a backoff. */
  reportFailed(incidentId: string, target: string, error: string): void {
    this.note(() => this.db.prepare('UPDATE reports SET attempts = attempts + 1, last_error = ? WHERE incident_id = ? AND target = ?').run(error, incidentId, target));
  }

  /**
   * The platform refused this version of the report for good: it is not sent again until the
   * incident changes (a video reaches a final state, the manifest is rewritten) or is retried.
   */
  reportRefused(incidentId: string, target: string, version: number, error: string): void {
    this.note(() =>
      this.db
        .prepare('UPDATE reports SET refused = MAX(refused, ?), attempts = attempts + 1, last_error = ? WHERE incident_id = ? AND target = ?')
        .run(version, error, incidentId, target),
    );
  }

  // ---- after-upload stage ------------------------------------------------------------------

  /**
   * Videos whose files were not handled yet and that every target they go to has: every upload
   * of every hashed file is done (a failed or queued one anywhere keeps the video out), each
   * target has each file, and every reporting target (ALO) acknowledged the latest report of the
   * incident. `allTargets`: the configured targets, for incidents that go to every target.
   */
  uploadedUnhandled(allTargets: readonly string[], settledBefore: number): UploadedVideo[] {
    if (this.currentFault) return [];
    const rows = this.db
      .prepare(
        `SELECT v.incident_id, v.id, i.folder, i.targets FROM videos v JOIN incidents i ON i.id = v.incident_id
         WHERE v.state = 'ready' AND v.files_handled IS NULL AND v.settled_at <= ? ORDER BY v.settled_at, v.incident_id, v.position`,
      )
      .all(settledBefore) as Row[];
    const out: UploadedVideo[] = [];
    for (const r of rows) {
      const incidentId = String(r.incident_id);
      const videoId = String(r.id);
      const targets = r.targets ? (JSON.parse(String(r.targets)) as string[]) : allTargets;
      if (targets.length === 0) continue;
      const files = this.db
        .prepare('SELECT role, path, size, mtime_ms FROM video_files WHERE incident_id = ? AND video_id = ? AND path IS NOT NULL')
        .all(incidentId, videoId) as Array<{ role: FileRole; path: string; size: number; mtime_ms: number }>;
      if (!files.some((f) => f.role === 'video')) continue;
      const uploads = this.db
        .prepare('SELECT role, target, state, completed_at FROM uploads WHERE incident_id = ? AND video_id = ?')
        .all(incidentId, videoId) as Array<{ role: string; target: string; state: string; completed_at: number | null }>;
      if (uploads.some((u) => u.state !== 'done')) continue;
      const everywhere = targets.every((t) => files.every((f) => uploads.some((u) => u.target === t && u.role === f.role)));
      if (!everywhere || !this.reportsAcked(incidentId)) continue;
      const confirmedAt = Math.max(...uploads.map((u) => Number(u.completed_at ?? 0)), this.lastAck(incidentId));
      const stamped = files.map((f) => ({ incidentId, videoId, role: f.role, path: f.path, size: f.size, mtimeMs: f.mtime_ms }));
      out.push({ incidentId, videoId, folder: String(r.folder), files: stamped, confirmedAt });
    }
    return out;
  }

  /** Every reporting target of the incident acknowledged its latest state. */
  private reportsAcked(incidentId: string): boolean {
    for (const target of this.reportingTargetsOf(incidentId)) {
      const r = this.db.prepare('SELECT wanted, acked FROM reports WHERE incident_id = ? AND target = ?').get(incidentId, target) as Row | undefined;
      if (!r || Number(r.acked) < Number(r.wanted) || Number(r.acked) === 0) return false;
    }
    return true;
  }

  private lastAck(incidentId: string): number {
    const r = this.db.prepare('SELECT MAX(acked_at) AS at FROM reports WHERE incident_id = ?').get(incidentId) as Row;
    return Number(r.at ?? 0);
  }

  /** The video's files were deleted or moved: never again (status shows it). */
  filesHandled(incidentId: string, videoId: string, action: FilesAction): void {
    this.write(() =>
      this.db
        .prepare('UPDATE videos SET files_handled = ?, files_handled_at = ? WHERE incident_id = ? AND id = ? AND files_handled IS NULL')
        .run(action, now(), incidentId, videoId),
    );
  }

  /**
   * Incidents whose folder was not handled yet and all of whose videos are: their files handled,
   * or failed exports that will never upload (no file). Reporting targets must have acknowledged
   * the incident's latest state. `handled` lists what was done to the videos' files.
   */
  foldersToHandle(): FolderToHandle[] {
    if (this.currentFault) return [];
    const rows = this.db
      .prepare(
        `SELECT i.id, i.folder, i.manifest_path, i.manifest_sha256 FROM incidents i
         WHERE i.folder_handled IS NULL
           AND EXISTS (SELECT 1 FROM videos v WHERE v.incident_id = i.id)
           AND NOT EXISTS (SELECT 1 FROM videos v WHERE v.incident_id = i.id AND v.files_handled IS NULL
                           AND NOT (v.state = 'failed' AND NOT EXISTS (SELECT 1 FROM video_files f WHERE f.incident_id = v.incident_id AND f.video_id = v.id)))
         ORDER BY i.created_at, i.id`,
      )
      .all() as Row[];
    return rows
      .filter((r) => this.reportsAcked(String(r.id)))
      .map((r) => ({
        incidentId: String(r.id),
        folder: String(r.folder),
        manifestPath: String(r.manifest_path),
        manifestSha256: String(r.manifest_sha256),
        handled: (this.db.prepare('SELECT DISTINCT files_handled AS a FROM videos WHERE incident_id = ? AND files_handled IS NOT NULL').all(r.id) as Row[]).map(
          (v) => String(v.a) as FilesAction,
        ),
      }));
  }

  folderHandled(incidentId: string, action: FilesAction): void {
    this.write(() =>
      this.db.prepare('UPDATE incidents SET folder_handled = ?, folder_handled_at = ? WHERE id = ? AND folder_handled IS NULL').run(action, now(), incidentId),
    );
  }

  // ---- operator actions --------------------------------------------------------------------

  /**
   * Pauses or resumes the uploads of a camera's videos. False when no manifest ever named that
   * camera. A paused camera's videos are still hashed; their uploads wait in the queue.
   */
  setCameraState(cameraId: string, state: 'running' | 'paused'): boolean {
    return this.write(() => this.db.transaction(() => {
      if (!this.db.prepare(`SELECT 1 FROM videos WHERE json_extract(info, '$.camera_id') = ? LIMIT 1`).get(cameraId)) return false;
      this.db
        .prepare('INSERT INTO cameras (id, state, updated_at) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at')
        .run(cameraId, state, now());
      return true;
    })());
  }

  /** An upload's state (queued, done, failed), or null when there is no such upload. */
  uploadState(uploadId: number): string | null {
    const row = this.db.prepare('SELECT state FROM uploads WHERE id = ?').get(uploadId) as Row | undefined;
    return row ? String(row.state) : null;
  }

  /**
   * Puts a failed upload (by its number) or everything failed in an incident (by its id) back in
   * the queue. Returns what was requeued, or null when nothing matched.
   */
  retry(id: string): { uploads: number; videos: number; incident: string | null } | null {
    return this.write(() => this.db.transaction(() => {
      const t = now();
      if (/^\d+$/.test(id)) {
        const r = this.db.prepare(`UPDATE uploads SET state = 'queued', last_error = NULL, updated_at = ? WHERE id = ? AND state = 'failed'`).run(t, Number(id));
        if (!r.changes) return null;
        this.db.prepare('UPDATE reports SET wanted = wanted + 1 WHERE incident_id = (SELECT incident_id FROM uploads WHERE id = ?)').run(Number(id));
        return { uploads: r.changes, videos: 0, incident: null };
      }
      if (!this.db.prepare('SELECT 1 FROM incidents WHERE id = ?').get(id)) return null;
      const uploads = this.db.prepare(`UPDATE uploads SET state = 'queued', last_error = NULL, updated_at = ? WHERE incident_id = ? AND state = 'failed'`).run(t, id).changes;
      // Failed exports stay failed: only the VMS can fix those (by rewriting the manifest).
      const videos = this.db
        .prepare(
          `UPDATE videos SET state = 'waiting', errors = NULL, first_seen_at = ?, updated_at = ?
           WHERE incident_id = ? AND state = 'failed' AND EXISTS (SELECT 1 FROM video_files f WHERE f.incident_id = videos.incident_id AND f.video_id = videos.id)`,
        )
        .run(t, t, id).changes;
      this.db.prepare('UPDATE reports SET wanted = wanted + 1 WHERE incident_id = ?').run(id);
      return { uploads, videos, incident: id };
    })());
  }
}

