/**
 * The plan stage's part of the ledger: videos waiting for their files to settle, the uploads
 * planned for them once they have, their files' identities (SHA-256), and the files watched for
 * changes after their upload.
 */
import type { PartSlice } from '../plan/part-plan.js';
import type { FileRole, IncidentInfo, UploadResult, VideoInfo } from '../targets/target.js';
import type { LedgerDb } from './database.js';
import { incidentInfo, json, num, role, str, strOrNull, strings, videoInfo, type Row } from './rows.js';
import type { Transitions } from './transitions.js';

export interface WaitingVideo {
  incidentId: string;
  videoId: string;
  folder: string;
  /** The targets the incident's route chose; null: every target. */
  targets: string[] | null;
  firstSeenAt: number;
  position: number;
  files: Array<{ role: FileRole; relPath: string }>;
}

/** Where a page of waiting videos ends: the next page starts after it. */
export interface VideoCursor {
  firstSeenAt: number;
  incidentId: string;
  position: number;
}

/** A file that settled: where it is, what it is, and (when known already) its identity. */
export interface SettledFile {
  role: FileRole;
  path: string;
  size: number;
  mtimeMs: number;
  stamp: string;
  sha256: string | null;
  contentType: string;
}

export type UploadPlan =
  { target: string; role: FileRole; parts: readonly PartSlice[] | null } | { target: string; role: FileRole; refused: string };

export interface ReadyVideo {
  incidentId: string;
  videoId: string;
  files: SettledFile[];
  plans: UploadPlan[];
  notes: string[];
}

/** A file of a hashed video, as it was when it settled. */
export interface WatchedFile {
  incidentId: string;
  videoId: string;
  role: FileRole;
  path: string;
  size: number;
  stamp: string;
}

/** One version of an export's file, as its stamp names it. */
type FileVersion = { incidentId: string; videoId: string; role: FileRole; stamp: string };

export class PlanLedger {
  constructor(
    private readonly db: LedgerDb,
    private readonly transitions: Transitions,
  ) {}

  /** Waiting videos after `after` (from the oldest when null), oldest first, at most `limit`. */
  waiting(after: VideoCursor | null, limit: number): WaitingVideo[] {
    if (this.db.fault) return [];
    const from = after ?? { firstSeenAt: -1, incidentId: '', position: -1 };
    const videos = this.db.all(
      `SELECT v.incident_id, v.id, v.first_seen_at, v.position, i.folder, i.targets FROM videos v JOIN incidents i ON i.id = v.incident_id
       WHERE v.state = 'waiting' AND (v.first_seen_at, v.incident_id, v.position) > (?, ?, ?)
       ORDER BY v.first_seen_at, v.incident_id, v.position LIMIT ?`,
      (r): WaitingVideo => ({
        incidentId: str(r.incident_id),
        videoId: str(r.id),
        folder: str(r.folder),
        targets: r.targets === null ? null : strings(r.targets),
        firstSeenAt: num(r.first_seen_at),
        position: num(r.position),
        files: [],
      }),
      from.firstSeenAt,
      from.incidentId,
      from.position,
      limit,
    );
    for (const v of videos) {
      v.files = this.db.all(
        'SELECT role, rel_path FROM video_files WHERE incident_id = ? AND video_id = ?',
        (r) => ({ role: role(r.role), relPath: str(r.rel_path) }),
        v.incidentId,
        v.videoId,
      );
    }
    return videos;
  }

  /** A video with its incident. */
  videoContext(incidentId: string, videoId: string): { incident: IncidentInfo; info: VideoInfo } {
    const context = this.db.get(
      'SELECT i.info AS incident_info, v.info AS video_info FROM videos v JOIN incidents i ON i.id = v.incident_id WHERE v.incident_id = ? AND v.id = ?',
      (r) => ({ incident: incidentInfo(r.incident_info), info: videoInfo(r.video_info) }),
      incidentId,
      videoId,
    );
    if (!context) throw new Error(`the ledger has no video ${videoId} of incident ${incidentId}`);
    return context;
  }

  /** A video that cannot be uploaded (refused path, missing, empty, not a video). */
  failVideo(incidentId: string, videoId: string, errors: string[]): void {
    this.db.write(() => {
      this.transitions.discardUnfinishedUploads(incidentId, videoId);
      this.db.run(
        `UPDATE videos SET state = 'failed', errors = ?, updated_at = ? WHERE incident_id = ? AND id = ?`,
        json(errors),
        Date.now(),
        incidentId,
        videoId,
      );
      this.transitions.bumpReports(incidentId);
    });
  }

  /**
   * Whether a file of `size` bytes may hold the same content as an upload of the incident (the
   * same role, any video, itself included): only then must its identity be known before its
   * uploads are planned, so that the same content is never sent twice within an incident.
   */
  mayShareContent(incidentId: string, fileRole: FileRole, size: number): boolean {
    return (
      this.db.get(
        `SELECT 1 FROM uploads WHERE incident_id = ? AND role = ? AND size = ? AND state != 'failed' LIMIT 1`,
        (r) => r,
        incidentId,
        fileRole,
        size,
      ) !== undefined
    );
  }

  /**
   * Videos whose files settled: their files are recorded and one upload per target and role is
   * planned, all in one transaction. An upload whose content an earlier upload of the incident
   * already delivered to that target is done at once.
   */
  videosReady(videos: readonly ReadyVideo[]): void {
    if (videos.length === 0) return;
    this.db.write(() => {
      const t = Date.now();
      for (const v of videos) this.videoReady(v, t);
    });
  }

  private videoReady({ incidentId, videoId, files, plans, notes }: ReadyVideo, t: number): void {
    for (const f of files) {
      this.db.run(
        `UPDATE video_files SET path = ?, size = ?, mtime_ms = ?, stamp = ?, sha256 = ?, content_type = ? WHERE incident_id = ? AND video_id = ? AND role = ?`,
        f.path,
        f.size,
        f.mtimeMs,
        f.stamp,
        f.sha256,
        f.contentType,
        incidentId,
        videoId,
        f.role,
      );
    }
    this.db.run(
      `UPDATE videos SET state = 'ready', errors = NULL, notes = ?, settled_at = ?, updated_at = ? WHERE incident_id = ? AND id = ?`,
      notes.length ? json(notes) : null,
      t,
      t,
      incidentId,
      videoId,
    );
    for (const plan of plans) {
      const file = files.find((f) => f.role === plan.role);
      if (file) this.planUpload(incidentId, videoId, file, plan, t);
    }
    // A thumbnail dropped this time (missing, not an image) has no upload.
    const roles = new Set(files.map((f) => f.role));
    for (const u of this.db.all(
      'SELECT id, role FROM uploads WHERE incident_id = ? AND video_id = ?',
      (r) => ({ id: num(r.id), role: str(r.role) }),
      incidentId,
      videoId,
    )) {
      if (!roles.has(u.role as FileRole)) this.transitions.dropUpload(u.id);
    }
    this.transitions.bumpReportsIfFinal(incidentId, videoId);
  }

  private planUpload(incidentId: string, videoId: string, file: SettledFile, plan: UploadPlan, t: number): void {
    const old = this.db.get(
      'SELECT id, sha256, state, result FROM uploads WHERE incident_id = ? AND video_id = ? AND role = ? AND target = ?',
      (r) => r,
      incidentId,
      videoId,
      plan.role,
      plan.target,
    );
    // The same content as before (a rewritten manifest, a file touched): nothing to send.
    if (old && file.sha256 !== null && old.sha256 === file.sha256 && old.state !== 'failed') return;
    // A completed upload of other content is replaced; the result it had is kept for the log.
    const superseded = old?.state === 'done' ? (old.result as string | null) : null;
    if (old) this.transitions.dropUpload(Number(old.id));
    if ('refused' in plan) {
      this.db.run(
        `INSERT INTO uploads (incident_id, video_id, role, target, sha256, size, state, last_error, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'failed', ?, ?, ?)`,
        incidentId,
        videoId,
        plan.role,
        plan.target,
        file.sha256,
        file.size,
        plan.refused,
        t,
        t,
      );
      return;
    }
    // Content is shared within one incident only: another incident's key or media is not this one's.
    const twin =
      file.sha256 === null
        ? undefined
        : this.db.get(
            `SELECT id, result FROM uploads WHERE incident_id = ? AND target = ? AND role = ? AND sha256 = ? AND state = 'done' ORDER BY id LIMIT 1`,
            (r) => ({ id: num(r.id), result: str(r.result) }),
            incidentId,
            plan.target,
            plan.role,
            file.sha256,
          );
    const inserted = this.db.run(
      `INSERT INTO uploads (incident_id, video_id, role, target, sha256, size, state, result, reused_from, superseded, created_at, updated_at, completed_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      incidentId,
      videoId,
      plan.role,
      plan.target,
      file.sha256,
      file.size,
      twin ? 'done' : 'queued',
      twin?.result ?? null,
      twin?.id ?? null,
      superseded,
      t,
      t,
      twin ? t : null,
    );
    if (twin || !plan.parts) return;
    const uploadId = Number(inserted.lastInsertRowid);
    for (const p of plan.parts) {
      this.db.run(
        `INSERT INTO parts (upload_id, number, offset, size, state) VALUES (?, ?, ?, ?, 'pending')`,
        uploadId,
        p.number,
        p.offset,
        p.size,
      );
    }
  }

  /** The identity (SHA-256) recorded for the file as stamped, or null. */
  knownIdentity(file: FileVersion): string | null {
    return this.recordedIdentity(file) ?? null;
  }

  /** The file's row as stamped: its identity, null while unknown; undefined when there is no such row. */
  private recordedIdentity(file: FileVersion): string | null | undefined {
    return this.db.get(
      'SELECT sha256 FROM video_files WHERE incident_id = ? AND video_id = ? AND role = ? AND stamp = ?',
      (r) => strOrNull(r.sha256),
      file.incidentId,
      file.videoId,
      file.role,
      file.stamp,
    );
  }

  /** The identity pass of the file as stamped ended: its uploads that did not know it yet do now. */
  async identityKnown(file: FileVersion, sha256: string): Promise<void> {
    // Mostly the planner's pass for a file not planned yet: nothing to record, and no commit to wait for.
    const recorded = this.recordedIdentity(file);
    if (recorded === undefined || recorded === sha256) return;
    await this.db.writeSoon(() => {
      const updated = this.db.run(
        'UPDATE video_files SET sha256 = ? WHERE incident_id = ? AND video_id = ? AND role = ? AND stamp = ?',
        sha256,
        file.incidentId,
        file.videoId,
        file.role,
        file.stamp,
      );
      if (updated.changes === 0) return; // planned again meanwhile: this identity is of a version gone
      this.db.run(
        'UPDATE uploads SET sha256 = ? WHERE incident_id = ? AND video_id = ? AND role = ? AND sha256 IS NULL',
        sha256,
        file.incidentId,
        file.videoId,
        file.role,
      );
    });
  }

  /**
   * Files of hashed videos that settled after `settledAfter` (the window in which an exporter may
   * still change them): `paths` only, or a page of all of them after `afterRow`.
   */
  watchedFiles(
    settledAfter: number,
    select: { paths: readonly string[] } | { afterRow: number; limit: number },
  ): Array<WatchedFile & { row: number }> {
    if (this.db.fault) return [];
    const byPath = 'paths' in select;
    return this.db.all(
      `SELECT f.rowid AS row, f.incident_id, f.video_id, f.role, f.path, f.size, f.stamp
       FROM video_files f JOIN videos v ON v.incident_id = f.incident_id AND v.id = f.video_id
       WHERE v.state = 'ready' AND v.files_handled IS NULL AND v.settled_at > @settledAfter AND f.path IS NOT NULL
         AND ${byPath ? 'f.path IN (SELECT value FROM json_each(@paths))' : 'f.rowid > @afterRow'}
       ORDER BY f.rowid ${byPath ? '' : 'LIMIT @limit'}`,
      (r) => ({ row: num(r.row), ...watchedFile(r) }),
      byPath ? { settledAfter, paths: json(select.paths) } : { settledAfter, afterRow: select.afterRow, limit: select.limit },
    );
  }

  /** A file of a hashed video changed: see Transitions.videoChanged. */
  fileChanged(incidentId: string, videoId: string, note: string): Array<{ target: string; role: FileRole; result: UploadResult }> {
    return this.db.write(() => this.transitions.videoChanged(incidentId, videoId, note));
  }
}

export function watchedFile(r: Row): WatchedFile {
  return {
    incidentId: str(r.incident_id),
    videoId: str(r.video_id),
    role: role(r.role),
    path: str(r.path),
    size: num(r.size),
    stamp: strOrNull(r.stamp) ?? '',
  };
}
