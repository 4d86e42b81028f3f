/**
 * The after-upload stage's part of the ledger: videos every target has, and what was done with
 * their files and incident folders (`delete`, `move` or `retention`).
 */
import type { FileRole } from '../targets/target.js';
import type { LedgerDb } from './database.js';
import { watchedFile, type WatchedFile } from './plan-ledger.js';
import { num, str, strings } from './rows.js';
import type { Transitions } from './transitions.js';

/** What was done with a video's files after upload: by `after_upload`, or by `retention`. */
export type FilesAction = 'delete' | 'move' | 'retention';

export interface UploadedVideo {
  incidentId: string;
  videoId: string;
  folder: string;
  /** As they were uploaded: a file whose stamp differs now changed since. */
  files: WatchedFile[];
  /** When the last target confirmed it (its last upload completed or report acknowledged), ms. */
  confirmedAt: number;
}

/** Where a page of uploaded videos ends: the next page starts after it. */
export interface UploadedCursor {
  settledAt: number;
  incidentId: string;
  position: number;
}

export interface FolderToHandle {
  incidentId: string;
  folder: string;
  manifestPath: string;
  manifestSha256: string;
  /** What was done with its videos' files (empty: only failed exports). */
  handled: FilesAction[];
}

export class AfterUploadLedger {
  constructor(
    private readonly db: LedgerDb,
    private readonly transitions: Transitions,
  ) {}

  /**
   * A page of videos whose files were not handled yet, that settled before `settledBefore`, and
   * that every target they go to has: every upload of every file done, each target has each file,
   * and every reporting target (ALO) acknowledged the incident's latest report. `allTargets`: the
   * configured targets, for incidents that go to every target. `next` is where the following
   * page starts (null: this was the last).
   */
  uploaded(
    allTargets: readonly string[],
    settledBefore: number,
    after: UploadedCursor | null,
    limit: number,
  ): { videos: UploadedVideo[]; next: UploadedCursor | null } {
    if (this.db.fault) return { videos: [], next: null };
    const from = after ?? { settledAt: -1, incidentId: '', position: -1 };
    const rows = this.db.all(
      `SELECT v.incident_id, v.id, v.settled_at, v.position, i.folder, i.targets FROM videos v JOIN incidents i ON i.id = v.incident_id
       WHERE v.state = 'ready' AND v.files_handled IS NULL AND v.settled_at <= ? AND (v.settled_at, v.incident_id, v.position) > (?, ?, ?)
         AND NOT EXISTS (SELECT 1 FROM uploads u WHERE u.incident_id = v.incident_id AND u.video_id = v.id AND u.state != 'done')
       ORDER BY v.settled_at, v.incident_id, v.position LIMIT ?`,
      (r) => ({
        incidentId: str(r.incident_id),
        videoId: str(r.id),
        settledAt: num(r.settled_at),
        position: num(r.position),
        folder: str(r.folder),
        targets: r.targets === null ? allTargets : strings(r.targets),
      }),
      settledBefore,
      from.settledAt,
      from.incidentId,
      from.position,
      limit,
    );
    const videos = rows.map((r) => this.ifEverywhere(r)).filter((v): v is UploadedVideo => v !== null);
    const last = rows.at(-1);
    return {
      videos,
      next: rows.length < limit || !last ? null : { settledAt: last.settledAt, incidentId: last.incidentId, position: last.position },
    };
  }

  private ifEverywhere(v: { incidentId: string; videoId: string; folder: string; targets: readonly string[] }): UploadedVideo | null {
    if (v.targets.length === 0) return null;
    const files = this.db.all(
      'SELECT incident_id, video_id, role, path, size, stamp FROM video_files WHERE incident_id = ? AND video_id = ? AND path IS NOT NULL',
      watchedFile,
      v.incidentId,
      v.videoId,
    );
    if (!files.some((f) => f.role === 'video')) return null;
    const uploads = this.db.all(
      'SELECT role, target, completed_at FROM uploads WHERE incident_id = ? AND video_id = ?',
      (r) => ({ role: r.role as FileRole, target: str(r.target), completedAt: num(r.completed_at ?? 0) }),
      v.incidentId,
      v.videoId,
    );
    const everywhere = v.targets.every((t) => files.every((f) => uploads.some((u) => u.target === t && u.role === f.role)));
    if (!everywhere || !this.reportsAcked(v.incidentId)) return null;
    const confirmedAt = Math.max(...uploads.map((u) => u.completedAt), this.lastAck(v.incidentId));
    return { incidentId: v.incidentId, videoId: v.videoId, folder: v.folder, files, confirmedAt };
  }

  /** Every reporting target of the incident acknowledged its latest state. */
  private reportsAcked(incidentId: string): boolean {
    return this.transitions.reportingTargetsOf(incidentId).every((target) => {
      const r = this.db.get(
        'SELECT wanted, acked FROM reports WHERE incident_id = ? AND target = ?',
        (row) => ({ wanted: num(row.wanted), acked: num(row.acked) }),
        incidentId,
        target,
      );
      return r !== undefined && r.acked >= r.wanted && r.acked > 0;
    });
  }

  private lastAck(incidentId: string): number {
    return this.db.get('SELECT MAX(acked_at) AS at FROM reports WHERE incident_id = ?', (r) => num(r.at ?? 0), incidentId) ?? 0;
  }

  /** The video's files were deleted or moved: never again (status shows it). */
  filesHandled(incidentId: string, videoId: string, action: FilesAction): void {
    this.db.write(() =>
      this.db.run(
        'UPDATE videos SET files_handled = ?, files_handled_at = ? WHERE incident_id = ? AND id = ? AND files_handled IS NULL',
        action,
        Date.now(),
        incidentId,
        videoId,
      ),
    );
  }

  /**
   * Incidents whose folder was not handled yet and all of whose videos are: their files handled,
   * or failed exports that will never upload (no file). Reporting targets must have acknowledged
   * the incident's latest state. `handled` lists what was done to the videos' files.
   */
  foldersToHandle(limit: number): FolderToHandle[] {
    if (this.db.fault) return [];
    const rows = this.db.all(
      `SELECT i.id, i.folder, i.manifest_path, i.manifest_sha256 FROM incidents i
       WHERE i.folder_handled IS NULL
         AND EXISTS (SELECT 1 FROM videos v WHERE v.incident_id = i.id)
         AND NOT EXISTS (SELECT 1 FROM videos v WHERE v.incident_id = i.id AND v.files_handled IS NULL
                         AND NOT (v.state = 'failed' AND NOT EXISTS (SELECT 1 FROM video_files f WHERE f.incident_id = v.incident_id AND f.video_id = v.id)))
       ORDER BY i.created_at, i.id LIMIT ?`,
      (r) => ({ incidentId: str(r.id), folder: str(r.folder), manifestPath: str(r.manifest_path), manifestSha256: str(r.manifest_sha256) }),
      limit,
    );
    return rows
      .filter((r) => this.reportsAcked(r.incidentId))
      .map((r) => ({
        ...r,
        handled: this.db.all(
          'SELECT DISTINCT files_handled AS a FROM videos WHERE incident_id = ? AND files_handled IS NOT NULL',
          (v) => str(v.a) as FilesAction,
          r.incidentId,
        ),
      }));
  }

  folderHandled(incidentId: string, action: FilesAction): void {
    this.db.write(() =>
      this.db.run(
        'UPDATE incidents SET folder_handled = ?, folder_handled_at = ? WHERE id = ? AND folder_handled IS NULL',
        action,
        Date.now(),
        incidentId,
      ),
    );
  }
}
