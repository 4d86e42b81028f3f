/**
 * State changes that several stages make as part of their own transactions: asking for a new
 * incident report, withdrawing a video's unfinished uploads, queueing the abort of a remote
 * upload. Each is called inside the caller's transaction, never on its own.
 */
import type { FileRole, ReportedVideo, SourceFile, UploadResult, VideoInfo } from '../targets/target.js';
import type { LedgerDb } from './database.js';
import { incidentInfo, json, num, result, role, str, strOrNull, strings, videoInfo, type Row } from './rows.js';

export class Transitions {
  constructor(
    private readonly db: LedgerDb,
    /** Targets that receive whole incidents (ALO); their report rows are kept up to date. */
    private reportingTargets: readonly string[],
  ) {}

  /** A reload changed the targets. */
  setReportingTargets(targets: readonly string[]): void {
    this.reportingTargets = targets;
  }

  /** The incident changed: every reporting target it goes to is due a new report. */
  bumpReports(incidentId: string): void {
    for (const target of this.reportingTargetsOf(incidentId)) this.bumpReport(incidentId, target);
  }

  /** Asks for a new report when this video reached a final state for some reporting target. */
  bumpReportsIfFinal(incidentId: string, videoId: string): void {
    for (const target of this.reportingTargetsOf(incidentId)) {
      if (this.videoOutcome(incidentId, videoId, target) !== 'pending') this.bumpReport(incidentId, target);
    }
  }

  private bumpReport(incidentId: string, target: string): void {
    this.db.run(
      `INSERT INTO reports (incident_id, target, wanted) VALUES (?, ?, 1)
       ON CONFLICT (incident_id, target) DO UPDATE SET wanted = wanted + 1`,
      incidentId,
      target,
    );
  }

  /** The reporting targets this incident goes to (its route's, or all of them). */
  reportingTargetsOf(incidentId: string): readonly string[] {
    const routed = this.db.get(
      'SELECT targets FROM incidents WHERE id = ?',
      (r) => (r.targets === null ? null : strings(r.targets)),
      incidentId,
    );
    if (!routed) return this.reportingTargets;
    return this.reportingTargets.filter((t) => routed.includes(t));
  }

  /**
   * A video is final for a target once its video upload is done or failed and nothing of it is
   * still queued. A thumbnail that failed does not fail the video: it is reported without it.
   */
  videoOutcome(incidentId: string, videoId: string, target: string): 'pending' | 'uploaded' | 'failed' {
    const state = this.db.get('SELECT state FROM videos WHERE incident_id = ? AND id = ?', (r) => str(r.state), incidentId, videoId);
    if (!state || state === 'waiting') return 'pending';
    if (state === 'failed') return 'failed';
    const uploads = this.db.all(
      'SELECT role, state FROM uploads WHERE incident_id = ? AND video_id = ? AND target = ?',
      (r) => r as { role: string; state: string },
      incidentId,
      videoId,
      target,
    );
    const video = uploads.find((u) => u.role === 'video');
    if (!video || uploads.some((u) => u.state === 'queued')) return 'pending';
    return video.state === 'done' ? 'uploaded' : 'failed';
  }

  /** The video as a report shows it to `target`; null while it is pending there. */
  reportedVideo(
    incidentId: string,
    v: { id: string; info: VideoInfo; state: string; errors: string[] | null },
    target: string,
  ): ReportedVideo | null {
    if (v.state === 'failed') return { video: v.info, outcome: 'failed', errors: v.errors ?? [] };
    const outcome = this.videoOutcome(incidentId, v.id, target);
    if (outcome === 'pending') return null;
    const uploads = this.db.all(
      'SELECT role, result, last_error, state FROM uploads WHERE incident_id = ? AND video_id = ? AND target = ?',
      (r) => r as { role: FileRole; result: string | null; last_error: string | null; state: string },
      incidentId,
      v.id,
      target,
    );
    if (outcome === 'failed') {
      const errors = uploads.filter((u) => u.role === 'video' && u.state === 'failed').map((u) => `upload failed: ${String(u.last_error)}`);
      return { video: v.info, outcome, errors };
    }
    const results: Partial<Record<FileRole, ReturnType<typeof result>>> = {};
    for (const u of uploads) if (u.state === 'done') results[u.role] = result(u.result);
    return { video: v.info, outcome, results };
  }

  /**
   * A file of a hashed video changed (an exporter that paused for longer than settle_seconds, or a
   * rewrite): the video settles and is hashed again, its unfinished uploads are withdrawn, and
   * each completed one is replaced by a new upload once the new content differs. Returns the
   * results of the completed uploads, which the new ones will supersede: when there are any, the
   * file changed after its upload and the video counts it (`note`); otherwise it is a restart.
   */
  videoChanged(incidentId: string, videoId: string, note: string): Array<{ target: string; role: FileRole; result: UploadResult }> {
    const done = this.db.all(
      `SELECT target, role, result FROM uploads WHERE incident_id = ? AND video_id = ? AND state = 'done' ORDER BY target, role`,
      (r) => ({ target: str(r.target), role: r.role as FileRole, result: result(r.result) }),
      incidentId,
      videoId,
    );
    this.discardUnfinishedUploads(incidentId, videoId);
    const counted =
      done.length > 0
        ? 'changed_after_upload = changed_after_upload + 1, change_note = @note'
        : 'restarts = restarts + 1, notes = json_array(@note)';
    this.db.run(
      `UPDATE videos SET state = 'waiting', settled_at = NULL, ${counted}, updated_at = @t WHERE incident_id = @incidentId AND id = @videoId`,
      {
        note,
        t: Date.now(),
        incidentId,
        videoId,
      },
    );
    return done;
  }

  /** The unfinished uploads of a video are withdrawn; the remote sessions they opened are to be aborted. */
  discardUnfinishedUploads(incidentId: string, videoId: string): void {
    const ids = this.db.all(
      `SELECT id FROM uploads WHERE incident_id = ? AND video_id = ? AND state != 'done'`,
      (r) => Number(r.id),
      incidentId,
      videoId,
    );
    for (const id of ids) this.dropUpload(id);
  }

  /** An upload is deleted; the remote session it opened, if any, is queued to be aborted. */
  dropUpload(uploadId: number): void {
    this.queueAbortFor(uploadId);
    this.db.run('DELETE FROM uploads WHERE id = ?', uploadId);
  }

  /** The remote session of a queued upload, queued to be released (a restart still does it). */
  queueAbortFor(uploadId: number): void {
    const row = this.db.get(`${SOURCE_FILE_SQL} WHERE u.id = ? AND u.session IS NOT NULL AND u.state = 'queued'`, (r) => r, uploadId);
    if (!row) return;
    this.db.run(
      'INSERT INTO pending_aborts (target, session, file, created_at) VALUES (?, ?, ?, ?)',
      row.target,
      row.session,
      json(sourceFile(row)),
      Date.now(),
    );
  }
}

/** An upload with what a target needs of its file, incident and video. */
export const SOURCE_FILE_SQL = `
  SELECT u.*, f.path, f.mtime_ms, f.stamp, f.content_type, f.rel_path, i.info AS incident_info, v.info AS video_info
  FROM uploads u
  JOIN video_files f ON f.incident_id = u.incident_id AND f.video_id = u.video_id AND f.role = u.role
  JOIN videos v ON v.incident_id = u.incident_id AND v.id = u.video_id
  JOIN incidents i ON i.id = u.incident_id`;

export function sourceFile(u: Row): SourceFile {
  const relPath = str(u.rel_path);
  return {
    role: role(u.role),
    path: str(u.path),
    name: relPath.split(/[\\/]/).pop() ?? relPath,
    size: num(u.size),
    sha256: strOrNull(u.sha256),
    stamp: strOrNull(u.stamp) ?? '',
    contentType: str(u.content_type),
    incident: incidentInfo(u.incident_info),
    video: videoInfo(u.video_info),
  };
}
