/**
 * The watch stage's part of the ledger: manifests as read from the export folder, the incidents
 * every target has finished with (their folders are no longer watched), and those skipped as
 * older than watch.ignore_older when first seen (not watched either, until retry takes one in).
 */
import type { Manifest } from '../watch/manifest.js';
import type { IncidentInfo, VideoInfo } from '../targets/target.js';
import type { LedgerDb } from './database.js';
import { json, numOrNull, str, strOrNull, type Row } from './rows.js';
import type { Transitions } from './transitions.js';

/** What finishIncidents saw when it last found nothing to finish. */
interface NothingToFinish {
  commits: number;
  folderHandlingOn: boolean;
  /** The earliest settled_at of a video that kept an incident within the change window (Infinity: none did). */
  nextSettledAt: number;
}

export class WatchLedger {
  private nothingToFinish: NothingToFinish | null = null;

  constructor(
    private readonly db: LedgerDb,
    private readonly transitions: Transitions,
  ) {}

  /**
   * The stamp (size and mtime) of the version of the manifest at `path` that was last read,
   * applied or refused: a rescan reads only manifests whose stamp changed. Null when never read.
   */
  manifestStamp(path: string): string | null {
    return (
      this.db.get(
        'SELECT manifest_stamp AS stamp FROM incidents WHERE manifest_path = ? ORDER BY updated_at DESC LIMIT 1',
        (r) => strOrNull(r.stamp),
        path,
      ) ??
      this.db.get('SELECT stamp FROM manifest_errors WHERE path = ?', (r) => strOrNull(r.stamp), path) ??
      this.db.get(
        'SELECT manifest_stamp AS stamp FROM skipped_incidents WHERE manifest_path = ? AND taken_in_at IS NULL',
        (r) => strOrNull(r.stamp),
        path,
      ) ??
      null
    );
  }

  /**
   * watch.ignore_older: whether the incident of a manifest just read stays out. The first time
   * the ledger meets an incident, a manifest last modified before `olderThan` (epoch ms; null:
   * the setting is off) records it as skipped ('skipped'). An incident skipped before stays so,
   * whatever its manifest now says or the setting is ('still skipped'; the version read is
   * remembered, so it is not read again). 'take' for an incident the ledger already holds (it
   * was first seen while young), one `retry` took in, and one young enough.
   */
  async skipIfOld(
    manifestPath: string,
    folder: string,
    stamp: string,
    incidentId: string,
    manifestMtimeMs: number,
    olderThan: number | null,
  ): Promise<'skipped' | 'still skipped' | 'take'> {
    const decide = (): 'skip' | 'keep skipped' | 'take' => {
      const known = this.db.get(
        `SELECT EXISTS (SELECT 1 FROM incidents WHERE id = @id) AS applied,
                (SELECT taken_in_at IS NULL FROM skipped_incidents WHERE id = @id) AS skipped`,
        (r) => ({ applied: r.applied === 1, skipped: r.skipped === null ? null : r.skipped === 1 }),
        { id: incidentId },
      )!;
      if (known.applied || known.skipped === false) return 'take';
      if (known.skipped) return 'keep skipped';
      return olderThan !== null && manifestMtimeMs < olderThan ? 'skip' : 'take';
    };
    // Most manifests read belong to incidents applied before, or young ones: a read, not a write.
    if (decide() === 'take') return 'take';
    return this.db.writeSoon(() => {
      const decision = decide();
      if (decision === 'take') return 'take';
      if (decision === 'keep skipped') {
        this.db.run(
          'UPDATE skipped_incidents SET folder = ?, manifest_path = ?, manifest_stamp = ?, manifest_mtime = ? WHERE id = ?',
          folder,
          manifestPath,
          stamp,
          manifestMtimeMs,
          incidentId,
        );
        return 'still skipped';
      }
      this.db.run(
        `INSERT INTO skipped_incidents (id, folder, manifest_path, manifest_stamp, manifest_mtime, skipped_at) VALUES (?, ?, ?, ?, ?, ?)`,
        incidentId,
        folder,
        manifestPath,
        stamp,
        manifestMtimeMs,
        Date.now(),
      );
      return 'skipped';
    });
  }

  /** How many incidents are skipped as older than watch.ignore_older (retry takes one in). */
  skippedCount(): number {
    return this.db.get('SELECT COUNT(*) AS n FROM skipped_incidents WHERE taken_in_at IS NULL', (r) => Number(r.n)) ?? 0;
  }

  /** Manifests of skipped incidents `retry` took in that are not applied yet: the watcher reads them now. */
  takenIn(): Array<{ id: string; folder: string; manifestPath: string }> {
    return this.db.all(
      `SELECT s.id, s.folder, s.manifest_path FROM skipped_incidents s
       WHERE s.taken_in_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM incidents i WHERE i.id = s.id)`,
      (r) => ({ id: str(r.id), folder: str(r.folder), manifestPath: str(r.manifest_path) }),
    );
  }

  /**
   * Applies a valid manifest. A manifest seen before with the same content changes nothing (but
   * its stamp, so it is not read again); a rewrite updates metadata, adds new videos, sends
   * changed files round again, and asks for the incident to be reported again.
   */
  applyManifest(
    manifestPath: string,
    folder: string,
    manifestSha256: string,
    stamp: string,
    manifest: Manifest,
    targets: string[],
  ): Promise<boolean> {
    return this.db.writeSoon(() => {
      const existing = this.db.get('SELECT manifest_sha256, folder, targets FROM incidents WHERE id = ?', (r) => r, manifest.incident.id);
      if (existing && existing.manifest_sha256 === manifestSha256 && existing.folder === folder && existing.targets === json(targets)) {
        this.db.run('UPDATE incidents SET manifest_path = ?, manifest_stamp = ? WHERE id = ?', manifestPath, stamp, manifest.incident.id);
        return false;
      }
      const t = Date.now();
      const info: IncidentInfo = manifest.incident;
      this.db.run(
        `INSERT INTO incidents (id, folder, manifest_path, manifest_sha256, manifest_stamp, info, targets, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET folder = excluded.folder, manifest_path = excluded.manifest_path,
           manifest_sha256 = excluded.manifest_sha256, manifest_stamp = excluded.manifest_stamp, info = excluded.info,
           targets = excluded.targets, updated_at = excluded.updated_at, folder_handled = NULL, folder_handled_at = NULL, finished_at = NULL`,
        info.id,
        folder,
        manifestPath,
        manifestSha256,
        stamp,
        json(info),
        json(targets),
        t,
        t,
      );
      manifest.videos.forEach((video, position) => this.applyManifestVideo(info.id, video, position, t));
      this.db.run('DELETE FROM manifest_errors WHERE path = ?', manifestPath);
      this.transitions.bumpReports(info.id);
      return true;
    });
  }

  private applyManifestVideo(incidentId: string, video: Manifest['videos'][number], position: number, t: number): void {
    const { errors, file, thumbnail, ...rest } = video;
    const info: VideoInfo = rest;
    const exportErrors = errors && errors.length > 0 ? errors : null;
    const old = this.db.get('SELECT state, errors FROM videos WHERE incident_id = ? AND id = ?', (r) => r, incidentId, video.id);
    const files = this.db.all(
      'SELECT role, rel_path FROM video_files WHERE incident_id = ? AND video_id = ?',
      (r) => r as { role: string; rel_path: string },
      incidentId,
      video.id,
    );
    const wanted = new Map<string, string>();
    if (!exportErrors && file) wanted.set('video', file);
    if (!exportErrors && file && thumbnail) wanted.set('thumbnail', thumbnail);
    const filesChanged = files.length !== wanted.size || files.some((f) => wanted.get(f.role) !== f.rel_path);
    const exportFailedBefore = old?.state === 'failed' && old.errors === json(exportErrors);

    if (!old) {
      this.db.run(
        `INSERT INTO videos (incident_id, id, info, position, state, errors, first_seen_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
        incidentId,
        video.id,
        json(info),
        position,
        exportErrors ? 'failed' : 'waiting',
        exportErrors ? json(exportErrors) : null,
        t,
        t,
      );
    } else {
      this.db.run(
        'UPDATE videos SET info = ?, position = ?, updated_at = ? WHERE incident_id = ? AND id = ?',
        json(info),
        position,
        t,
        incidentId,
        video.id,
      );
      if (exportErrors && !exportFailedBefore) {
        this.transitions.discardUnfinishedUploads(incidentId, video.id);
        this.db.run(
          `UPDATE videos SET state = 'failed', errors = ?, updated_at = ? WHERE incident_id = ? AND id = ?`,
          json(exportErrors),
          t,
          incidentId,
          video.id,
        );
      } else if (!exportErrors && (filesChanged || old.state === 'failed')) {
        this.transitions.discardUnfinishedUploads(incidentId, video.id);
        this.db.run(
          `UPDATE videos SET state = 'waiting', errors = NULL, notes = NULL, first_seen_at = ?, settled_at = NULL, files_handled = NULL,
             files_handled_at = NULL, updated_at = ? WHERE incident_id = ? AND id = ?`,
          t,
          t,
          incidentId,
          video.id,
        );
      }
    }
    if (filesChanged) {
      this.db.run('DELETE FROM video_files WHERE incident_id = ? AND video_id = ?', incidentId, video.id);
      for (const [role, relPath] of wanted) {
        this.db.run(
          'INSERT INTO video_files (incident_id, video_id, role, rel_path) VALUES (?, ?, ?, ?)',
          incidentId,
          video.id,
          role,
          relPath,
        );
      }
    }
  }

  /** Records a manifest that does not validate; true when this version was not seen before (log it). */
  recordManifestError(path: string, fingerprint: string, stamp: string, problems: string[]): Promise<boolean> {
    return this.db.writeSoon(() => {
      const old = this.db.get('SELECT fingerprint FROM manifest_errors WHERE path = ?', (r) => str(r.fingerprint), path);
      this.db.run(
        `INSERT INTO manifest_errors (path, fingerprint, stamp, problems, seen_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (path) DO UPDATE SET fingerprint = excluded.fingerprint, stamp = excluded.stamp, problems = excluded.problems,
           seen_at = CASE WHEN manifest_errors.fingerprint = excluded.fingerprint THEN manifest_errors.seen_at ELSE excluded.seen_at END`,
        path,
        fingerprint,
        stamp,
        json(problems),
        Date.now(),
      );
      return old !== fingerprint;
    });
  }

  /**
   * Whether `folder` is the folder of an incident every target finished with, or of one skipped
   * as older than watch.ignore_older: neither is watched.
   */
  isFinishedFolder(folder: string): boolean {
    return (
      this.db.get(
        `SELECT EXISTS (SELECT 1 FROM incidents WHERE folder = @folder AND finished_at IS NOT NULL)
             OR EXISTS (SELECT 1 FROM skipped_incidents WHERE folder = @folder AND taken_in_at IS NULL) AS finished`,
        (r) => r.finished === 1,
        { folder },
      ) ?? false
    );
  }

  /** Whether a manifest in `folder` was read: it is the folder of an incident, or of one skipped. */
  isKnownFolder(folder: string): boolean {
    return (
      this.db.get(
        `SELECT EXISTS (SELECT 1 FROM incidents WHERE folder = @folder)
             OR EXISTS (SELECT 1 FROM skipped_incidents WHERE folder = @folder) AS known`,
        (r) => r.known === 1,
        { folder },
      ) ?? false
    );
  }

  /**
   * Marks incidents that every target finished with: nothing of them waits, is queued or due to
   * be reported, their files settled before `settledBefore` (the change window), and after-upload
   * handling, when configured, has moved or removed their folder. Returns their folders.
   */
  finishIncidents(settledBefore: number, folderHandlingOn: boolean, limit: number): string[] {
    // Nothing written since a look that found nothing, and the change window has not passed a
    // video that held one back: nothing can be finished yet. This keeps the daemon idle for the
    // hour after a backlog, when every incident is within the window (a look at 10,000 took 15 ms).
    const last = this.nothingToFinish;
    if (last && last.commits === this.db.commits && last.folderHandlingOn === folderHandlingOn && settledBefore < last.nextSettledAt)
      return [];
    const folders = this.finish(settledBefore, folderHandlingOn, limit);
    this.nothingToFinish =
      folders.length > 0 ? null : { commits: this.db.commits, folderHandlingOn, nextSettledAt: this.nextSettledAt(settledBefore) };
    return folders;
  }

  /** The earliest settled_at after `settledBefore` among the ready videos of unfinished incidents. */
  private nextSettledAt(settledBefore: number): number {
    const next = this.db.get(
      `SELECT MIN(v.settled_at) AS next FROM videos v JOIN incidents i ON i.id = v.incident_id
       WHERE i.finished_at IS NULL AND v.state = 'ready' AND v.settled_at > ?`,
      (r) => numOrNull(r.next),
      settledBefore,
    );
    return next ?? Infinity;
  }

  private finish(settledBefore: number, folderHandlingOn: boolean, limit: number): string[] {
    return this.db.write(() => {
      const rows = this.db.all(
        `SELECT i.id, i.folder FROM incidents i
         WHERE i.finished_at IS NULL ${folderHandlingOn ? 'AND i.folder_handled IS NOT NULL' : ''}
           AND NOT EXISTS (SELECT 1 FROM videos v WHERE v.incident_id = i.id AND (v.state = 'waiting' OR (v.state = 'ready' AND v.settled_at > ?)))
           AND NOT EXISTS (SELECT 1 FROM uploads u WHERE u.incident_id = i.id AND u.state = 'queued')
           AND NOT EXISTS (SELECT 1 FROM reports r WHERE r.incident_id = i.id AND r.wanted > r.acked AND r.wanted > r.refused)
         LIMIT ?`,
        (r: Row) => ({ id: str(r.id), folder: str(r.folder) }),
        settledBefore,
        limit,
      );
      for (const r of rows) this.db.run('UPDATE incidents SET finished_at = ? WHERE id = ?', Date.now(), r.id);
      return rows.map((r) => r.folder);
    });
  }
}
