/**
 * What an operator does through the command line or the local API: pause and resume a camera,
 * put what failed back in the queue.
 */
import type { LedgerDb } from './database.js';
import { str } from './rows.js';

export interface Requeued {
  uploads: number;
  videos: number;
  /** The incident retried as a whole; null for one upload. */
  incident: string | null;
  /** The incident had been skipped as older than watch.ignore_older: the daemon now reads and uploads it. */
  takenIn: boolean;
}

export class OperatorLedger {
  constructor(private readonly db: LedgerDb) {}

  /**
   * Pauses or resumes the uploads of a camera's videos. False when no manifest ever named that
   * camera. A paused camera's videos are still hashed; their uploads wait in the queue.
   */
  setCameraState(cameraId: string, state: 'running' | 'paused'): boolean {
    return this.db.write(() => {
      if (!this.db.get(`SELECT 1 FROM videos WHERE json_extract(info, '$.camera_id') = ? LIMIT 1`, (r) => r, cameraId)) return false;
      this.db.run(
        'INSERT INTO cameras (id, state, updated_at) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at',
        cameraId,
        state,
        Date.now(),
      );
      return true;
    });
  }

  /** An upload's state (queued, done, failed), or null when there is no such upload. */
  uploadState(uploadId: number): string | null {
    return this.db.get('SELECT state FROM uploads WHERE id = ?', (r) => str(r.state), uploadId) ?? null;
  }

  /**
   * Puts a failed upload (by its number) or everything failed in an incident (by its id) back in
   * the queue, and asks for the incident to be reported again (a refused report is sent anew).
   * An incident skipped as older than watch.ignore_older is taken in: the daemon's watcher reads
   * its manifest again and applies it like any other. Returns what was requeued, or null when
   * nothing matched.
   */
  retry(id: string): Requeued | null {
    return this.db.write(() => {
      const t = Date.now();
      if (/^\d+$/.test(id)) {
        const r = this.db.run(
          `UPDATE uploads SET state = 'queued', last_error = NULL, updated_at = ? WHERE id = ? AND state = 'failed'`,
          t,
          Number(id),
        );
        if (!r.changes) return null;
        this.db.run(
          'UPDATE reports SET wanted = wanted + 1 WHERE incident_id = (SELECT incident_id FROM uploads WHERE id = ?)',
          Number(id),
        );
        this.db.run('UPDATE incidents SET finished_at = NULL WHERE id = (SELECT incident_id FROM uploads WHERE id = ?)', Number(id));
        return { uploads: r.changes, videos: 0, incident: null, takenIn: false };
      }
      if (!this.db.get('SELECT 1 FROM incidents WHERE id = ?', (r) => r, id)) {
        const skipped = this.db.run('UPDATE skipped_incidents SET taken_in_at = COALESCE(taken_in_at, ?) WHERE id = ?', t, id).changes;
        return skipped > 0 ? { uploads: 0, videos: 0, incident: id, takenIn: true } : null;
      }
      const uploads = this.db.run(
        `UPDATE uploads SET state = 'queued', last_error = NULL, updated_at = ? WHERE incident_id = ? AND state = 'failed'`,
        t,
        id,
      ).changes;
      // Failed exports stay failed: only the VMS can fix those (by rewriting the manifest).
      const videos = this.db.run(
        `UPDATE videos SET state = 'waiting', errors = NULL, first_seen_at = ?, updated_at = ?
         WHERE incident_id = ? AND state = 'failed' AND EXISTS (SELECT 1 FROM video_files f WHERE f.incident_id = videos.incident_id AND f.video_id = videos.id)`,
        t,
        t,
        id,
      ).changes;
      this.db.run('UPDATE reports SET wanted = wanted + 1 WHERE incident_id = ?', id);
      this.db.run('UPDATE incidents SET finished_at = NULL WHERE id = ?', id);
      return { uploads, videos, incident: id, takenIn: false };
    });
  }
}
