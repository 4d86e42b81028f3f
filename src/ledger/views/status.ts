/**
 * What `vms-uplink status` and the local API show, read straight from the ledger (also while the
 * daemon runs: WAL lets a reader see the last committed state without blocking the writer).
 * Everything here, transfer rates included, is computed from committed rows only: the status
 * command is a separate process and cannot ask the daemon.
 *
 * Two ways to read it, both in memory bounded whatever the ledger holds: a summary of constant
 * size (totals, uploads under way, the latest failures, the oldest waiting export), and every
 * incident with its videos and uploads, a page at a time.
 */
import type { LedgerDb } from '../database.js';
import { num, numOrNull, orNull, str, strOrNull, strings, type Row } from '../rows.js';

export interface UploadStatus {
  id: number;
  target: string;
  role: string;
  state: 'queued' | 'uploading' | 'done' | 'failed';
  bytesDone: number;
  bytesTotal: number;
  partsDone: number;
  partsTotal: number;
  lastError: string | null;
  reusedFrom: number | null;
  /** Bytes per second over the last minute while uploading (see RATE_WINDOW_MS); 0 otherwise. */
  rateBytesPerSecond: number;
  /** Seconds left at that rate; null when the rate is 0 or the upload is not uploading. */
  etaSeconds: number | null;
}

export interface VideoStatus {
  id: string;
  /** The manifest's `camera_id`; null when the manifest gives none. */
  cameraId: string | null;
  cameraName: string | null;
  /** Its camera is paused (a `cameras` row with state 'paused'): its uploads wait for it. */
  cameraPaused: boolean;
  file: string | null;
  state: 'waiting' | 'ready' | 'failed';
  errors: string[];
  notes: string[];
  /** How often its upload started over because the file changed after it was hashed. */
  restarts: number;
  /** How often its file changed after an upload of it completed, and was uploaded again. */
  changedAfterUpload: number;
  /** What the last such change was (sizes), for people. */
  changeNote: string | null;
  /** What after_upload or retention did with its files, and when; null: they are where they were. */
  filesHandled: Handled;
  uploads: UploadStatus[];
}

export interface ReportStatus {
  target: string;
  /** acknowledged: the platform has the latest state; refused: it refused the latest state for good. */
  state: 'acknowledged' | 'pending' | 'refused';
  upToDate: boolean;
  attempts: number;
  lastError: string | null;
  ackedAt: string | null;
}

export interface IncidentStatus {
  id: string;
  title: string | null;
  folder: string;
  /** What after_upload or retention did with the incident folder, and when; null: nothing yet. */
  folderHandled: Handled;
  reports: ReportStatus[];
  videos: VideoStatus[];
}

export interface PausedCamera {
  id: string;
  /** The camera_name of the most recently applied manifest that names this camera; null if none does. */
  name: string | null;
  /** When it was paused (ISO 8601). */
  since: string;
  /** Its videos with uploads still to go (for one incident, of that incident). */
  waiting: number;
}

export interface Totals {
  queued: number;
  uploading: number;
  done: number;
  failed: number;
  waiting: number;
  failedVideos: number;
  refusedReports: number;
}

/** What is true of the whole ledger (or of one incident), beside the incidents themselves. */
export interface StatusOverview {
  totals: Totals;
  /** Cameras paused now; for one incident, only those of its videos. */
  pausedCameras: PausedCamera[];
  invalidManifests: Array<{ path: string; problems: string[]; seenAt: string }>;
  /** Remote uploads still to abort, daemon-wide (an abort outlives the upload it came from). */
  pendingAborts: number;
  /** Incident folders skipped, not uploaded: their manifest was older than watch.ignore_older when first seen. */
  skippedIncidents: number;
}

/** A whole snapshot: the overview and every incident it covers (small ledgers, one incident, tests). */
export interface StatusSnapshot extends StatusOverview {
  incidents: IncidentStatus[];
}

/**
 * What `status` prints by default, of bounded size however many incidents the ledger holds: the
 * totals, and the incidents that matter now in full (uploads under way, the latest failures, then
 * the most recently active).
 */
export interface StatusSummary extends StatusOverview {
  /** Uploads per target and state. */
  byTarget: Array<{ target: string; queued: number; uploading: number; done: number; failed: number }>;
  /** At most SUMMARY_INCIDENTS, oldest first, as `--all` lists them. */
  incidents: IncidentStatus[];
  /** The export waiting longest for its file, or for its upload to start. */
  oldestWaiting: { incidentId: string; videoId: string; since: string; what: 'waiting for its file' | 'queued' } | null;
  /** How many incidents the ledger holds. */
  incidentCount: number;
}

export interface StatusOptions {
  /** The clock rates are measured against (ms epoch); tests pass a fixed one. Default Date.now(). */
  now?: number;
}

/** The rate is the bytes of parts finished within this last stretch of time… */
export const RATE_WINDOW_MS = 60_000;
/**
 * …divided by the time that stretch actually covers for this upload: min(window, now − its first
 * finished part), but never less than this. A part's bytes were on the wire before its done_at,
 * so right after the first part finishes "now − done_at" is near 0 and would make the rate
 * absurdly high; a floor of a few seconds keeps the first figures sane (they err low, not high).
 */
export const MIN_RATE_SPAN_MS = 5_000;
/** Incidents the summary shows at most. */
export const SUMMARY_INCIDENTS = 20;

type Handled = { action: 'delete' | 'move' | 'retention'; at: string } | null;
const iso = (ms: unknown): string | null => (typeof ms === 'number' ? new Date(ms).toISOString() : null);
const list = orNull(strings);

function handled(action: unknown, at: unknown): Handled {
  return typeof action === 'string' ? { action: action as 'delete' | 'move' | 'retention', at: iso(at) ?? '' } : null;
}

/** Bytes per second from the parts finished within RATE_WINDOW_MS (see MIN_RATE_SPAN_MS). */
export function transferRate(recentBytes: number, firstDoneAt: number | null, now: number): number {
  if (recentBytes <= 0 || firstDoneAt === null) return 0;
  const span = Math.max(MIN_RATE_SPAN_MS, Math.min(RATE_WINDOW_MS, now - firstDoneAt));
  return recentBytes / (span / 1000);
}

export function emptyOverview(): StatusOverview {
  return {
    totals: { queued: 0, uploading: 0, done: 0, failed: 0, waiting: 0, failedVideos: 0, refusedReports: 0 },
    pausedCameras: [],
    invalidManifests: [],
    pendingAborts: 0,
    skippedIncidents: 0,
  };
}

/** Uploads with their parts summed; `where` selects them. */
const UPLOADS_SQL = (where: string): string => `
  SELECT u.id, u.incident_id, u.video_id, u.target, u.role, u.state, u.size, u.last_error, u.reused_from, u.session,
         COALESCE(SUM(CASE WHEN p.state = 'done' THEN p.size END), 0) AS bytes_done,
         COUNT(p.number) AS parts_total,
         COALESCE(SUM(p.state = 'done'), 0) AS parts_done,
         COALESCE(SUM(CASE WHEN p.state = 'done' AND p.done_at > @since THEN p.size END), 0) AS recent_bytes,
         MIN(CASE WHEN p.state = 'done' THEN p.done_at END) AS first_done_at
  FROM uploads u LEFT JOIN parts p ON p.upload_id = u.id
  WHERE ${where}
  GROUP BY u.id`;

/** The ledger's uploads under way: queued with a remote session or a finished part. */
const UNDER_WAY = `u.state = 'queued' AND (u.session IS NOT NULL OR EXISTS (SELECT 1 FROM parts q WHERE q.upload_id = u.id AND q.state = 'done'))`;

/**
 * The incidents the summary shows: those with uploads under way first, then those whose latest
 * failure (an upload, an export, a refused report) is most recent, then the most recently active.
 */
const SUMMARY_SQL = `
  SELECT incident_id FROM (
    SELECT incident_id, 3 AS rank, MAX(updated_at) AS at FROM uploads u WHERE ${UNDER_WAY} GROUP BY incident_id
    UNION ALL SELECT incident_id, 2, MAX(updated_at) FROM uploads WHERE state = 'failed' GROUP BY incident_id
    UNION ALL SELECT incident_id, 2, MAX(updated_at) FROM videos WHERE state = 'failed' GROUP BY incident_id
    UNION ALL SELECT incident_id, 2, MAX(refused_at) FROM reports WHERE refused >= wanted AND acked < wanted GROUP BY incident_id
    UNION ALL SELECT incident_id, 1, MAX(updated_at) FROM uploads GROUP BY incident_id
    UNION ALL SELECT id, 1, updated_at FROM incidents
  ) GROUP BY incident_id ORDER BY MAX(rank) DESC, MAX(at) DESC LIMIT ${SUMMARY_INCIDENTS}`;

/**
 * Pages of incidents in the order they were first seen, either way: the first page, and the page
 * past the incident first seen at @at with id @id. Each walks incidents_by_age from where the page
 * starts (a range on the index, neither a sort nor a walk from the end), so the thousandth page
 * costs what the first does.
 */
interface PageSql {
  first: string;
  past: string;
}
const INCIDENT_COLUMNS = 'id, folder, info, folder_handled, folder_handled_at';
export const PAGE_SQL: Readonly<Record<'oldest' | 'newest', PageSql>> = {
  oldest: {
    first: `SELECT ${INCIDENT_COLUMNS} FROM incidents ORDER BY created_at, id LIMIT @limit`,
    past: `SELECT ${INCIDENT_COLUMNS} FROM incidents WHERE (created_at, id) > (@at, @id) ORDER BY created_at, id LIMIT @limit`,
  },
  newest: {
    first: `SELECT ${INCIDENT_COLUMNS} FROM incidents ORDER BY created_at DESC, id DESC LIMIT @limit`,
    past: `SELECT ${INCIDENT_COLUMNS} FROM incidents WHERE (created_at, id) < (@at, @id) ORDER BY created_at DESC, id DESC LIMIT @limit`,
  },
};

function uploadStatus(u: Row, now: number): UploadStatus {
  const done = u.state === 'done';
  // The ledger has no 'uploading' state: a queued upload with a remote session or a finished part is under way.
  const state = u.state === 'queued' && (u.session !== null || num(u.parts_done) > 0) ? 'uploading' : (u.state as UploadStatus['state']);
  const bytesTotal = num(u.size);
  const bytesDone = done ? bytesTotal : num(u.bytes_done);
  const rate = state === 'uploading' ? transferRate(num(u.recent_bytes), numOrNull(u.first_done_at), now) : 0;
  return {
    id: num(u.id),
    target: str(u.target),
    role: str(u.role),
    state,
    bytesDone,
    bytesTotal,
    partsDone: done ? num(u.parts_total) : num(u.parts_done),
    partsTotal: num(u.parts_total),
    lastError: strOrNull(u.last_error),
    reusedFrom: numOrNull(u.reused_from),
    rateBytesPerSecond: rate,
    etaSeconds: rate > 0 ? Math.ceil(Math.max(0, bytesTotal - bytesDone) / rate) : null,
  };
}

function reportState(r: Row): ReportStatus['state'] {
  if (num(r.acked) >= num(r.wanted)) return 'acknowledged';
  return num(r.refused) >= num(r.wanted) ? 'refused' : 'pending';
}

const videoKey = (incidentId: unknown, videoId: unknown): string => `${String(incidentId)}\u0000${String(videoId)}`;

export class StatusView {
  constructor(private readonly db: LedgerDb) {}

  /** The totals, and the incidents that matter now, whatever the size of the ledger. */
  summary(options: StatusOptions = {}): StatusSummary {
    const ids = JSON.stringify(this.db.all(SUMMARY_SQL, (r) => str(r.incident_id)));
    const rows = this.db.all(
      `SELECT id, folder, info, folder_handled, folder_handled_at FROM incidents WHERE id IN (SELECT value FROM json_each(?)) ORDER BY created_at, id`,
      (r) => r,
      ids,
    );
    return {
      ...this.overview(null),
      incidentCount: this.incidentCount(),
      byTarget: this.db.all(
        `SELECT target, SUM(state = 'queued' AND NOT (${UNDER_WAY})) AS queued, SUM(${UNDER_WAY}) AS uploading,
                SUM(state = 'done') AS done, SUM(state = 'failed') AS failed
         FROM uploads u GROUP BY target ORDER BY target`,
        (r) => ({ target: str(r.target), queued: num(r.queued), uploading: num(r.uploading), done: num(r.done), failed: num(r.failed) }),
      ),
      incidents: rows.length === 0 ? [] : this.incidentsOf(rows, options.now ?? Date.now()),
      oldestWaiting: this.oldestWaiting(),
    };
  }

  /** The overview of the whole ledger, or of one incident. */
  overview(incidentId: string | null): StatusOverview {
    return {
      totals: this.totals(incidentId),
      pausedCameras: this.pausedCameras(incidentId),
      invalidManifests: this.invalidManifests(incidentId),
      pendingAborts: this.db.get('SELECT COUNT(*) AS n FROM pending_aborts', (r) => num(r.n)) ?? 0,
      // An incident the ledger holds was taken in (or never skipped): for one incident, always 0.
      skippedIncidents:
        incidentId === null
          ? (this.db.get('SELECT COUNT(*) AS n FROM skipped_incidents WHERE taken_in_at IS NULL', (r) => num(r.n)) ?? 0)
          : 0,
    };
  }

  /** Uploads and videos by state, of the whole ledger or of one incident. */
  totals(incidentId: string | null): Totals {
    return this.db.get(
      `SELECT (SELECT COUNT(*) FROM uploads u WHERE state = 'queued' AND NOT (${UNDER_WAY}) AND (@i IS NULL OR u.incident_id = @i)) AS queued,
              (SELECT COUNT(*) FROM uploads u WHERE ${UNDER_WAY} AND (@i IS NULL OR u.incident_id = @i)) AS uploading,
              (SELECT COUNT(*) FROM uploads WHERE state = 'done' AND (@i IS NULL OR incident_id = @i)) AS done,
              (SELECT COUNT(*) FROM uploads WHERE state = 'failed' AND (@i IS NULL OR incident_id = @i)) AS failed,
              (SELECT COUNT(*) FROM videos WHERE state = 'waiting' AND (@i IS NULL OR incident_id = @i)) AS waiting,
              (SELECT COUNT(*) FROM videos WHERE state = 'failed' AND (@i IS NULL OR incident_id = @i)) AS failed_videos,
              (SELECT COUNT(*) FROM reports WHERE refused >= wanted AND acked < wanted AND (@i IS NULL OR incident_id = @i)) AS refused_reports`,
      (r): Totals => ({
        queued: num(r.queued),
        uploading: num(r.uploading),
        done: num(r.done),
        failed: num(r.failed),
        waiting: num(r.waiting),
        failedVideos: num(r.failed_videos),
        refusedReports: num(r.refused_reports),
      }),
      { i: incidentId },
    )!;
  }

  /** Every incident with its videos and uploads, oldest first, `pageSize` at a time. */
  *incidentPages(pageSize: number, options: StatusOptions = {}): Generator<IncidentStatus[]> {
    for (let after: string | null = null; ;) {
      const page = this.incidentsAfter(after, pageSize, options);
      if (page.length > 0) yield page;
      if (page.length < pageSize) return;
      after = page.at(-1)!.id;
    }
  }

  /** The incidents after the one with id `after` (from the oldest when null), oldest first, at most `limit`. */
  incidentsAfter(after: string | null, limit: number, options: StatusOptions = {}): IncidentStatus[] {
    return this.incidentPage(after, limit, PAGE_SQL.oldest, options);
  }

  /**
   * The incidents first seen before the one with id `before` (from the newest when null), newest
   * first, at most `limit`: a page of the status page's list.
   */
  incidentsBefore(before: string | null, limit: number, options: StatusOptions = {}): IncidentStatus[] {
    return this.incidentPage(before, limit, PAGE_SQL.newest, options);
  }

  /** A page from the start of the order (`cursor` null) or past the incident `cursor` (none when there is no such incident). */
  private incidentPage(cursor: string | null, limit: number, sql: PageSql, options: StatusOptions): IncidentStatus[] {
    let rows: Row[];
    if (cursor === null) {
      rows = this.db.all(sql.first, (r) => r, { limit });
    } else {
      const at = this.db.get('SELECT created_at FROM incidents WHERE id = ?', (r) => num(r.created_at), cursor);
      rows = at === undefined ? [] : this.db.all(sql.past, (r) => r, { at, id: cursor, limit });
    }
    return rows.length === 0 ? [] : this.incidentsOf(rows, options.now ?? Date.now());
  }

  /** How many incidents the ledger holds. */
  incidentCount(): number {
    return this.db.get('SELECT COUNT(*) AS n FROM incidents', (r) => num(r.n)) ?? 0;
  }

  /** One incident with its videos and uploads. */
  incident(id: string, options: StatusOptions = {}): IncidentStatus | undefined {
    const row = this.db.get('SELECT id, folder, info, folder_handled, folder_handled_at FROM incidents WHERE id = ?', (r) => r, id);
    return row && this.incidentsOf([row], options.now ?? Date.now())[0];
  }

  /** The whole ledger (or one incident) at once: for small ledgers and tests; `status` pages. */
  snapshot(options: StatusOptions & { incidentId?: string } = {}): StatusSnapshot {
    const one = options.incidentId;
    const incidents =
      one !== undefined
        ? [this.incident(one, options)].filter((i): i is IncidentStatus => i !== undefined)
        : [...this.incidentPages(500, options)].flat();
    return { ...this.overview(one ?? null), incidents };
  }

  private incidentsOf(rows: Row[], now: number): IncidentStatus[] {
    const ids = JSON.stringify(rows.map((r) => r.id));
    const uploads = new Map<string, UploadStatus[]>();
    for (const u of this.db.all(`${UPLOADS_SQL('u.incident_id IN (SELECT value FROM json_each(@ids))')} ORDER BY u.id`, (r) => r, {
      ids,
      since: now - RATE_WINDOW_MS,
    })) {
      const key = videoKey(u.incident_id, u.video_id);
      uploads.set(key, [...(uploads.get(key) ?? []), uploadStatus(u, now)]);
    }
    const paused = this.pausedCameraIds();
    const videos = new Map<string, VideoStatus[]>();
    for (const v of this.db.all(
      `SELECT v.incident_id, v.id, v.info, v.state, v.errors, v.notes, v.restarts, v.changed_after_upload, v.change_note,
              v.files_handled, v.files_handled_at, f.rel_path
       FROM videos v LEFT JOIN video_files f ON f.incident_id = v.incident_id AND f.video_id = v.id AND f.role = 'video'
       WHERE v.incident_id IN (SELECT value FROM json_each(?)) ORDER BY v.incident_id, v.position`,
      (r) => r,
      ids,
    )) {
      const info = JSON.parse(String(v.info)) as { camera_id?: string; camera_name?: string };
      const cameraId = info.camera_id ?? null;
      const status: VideoStatus = {
        id: str(v.id),
        cameraId,
        cameraName: info.camera_name ?? null,
        cameraPaused: cameraId !== null && paused.has(cameraId),
        file: strOrNull(v.rel_path),
        state: v.state as VideoStatus['state'],
        errors: list(v.errors) ?? [],
        notes: list(v.notes) ?? [],
        restarts: num(v.restarts),
        changedAfterUpload: num(v.changed_after_upload),
        changeNote: strOrNull(v.change_note),
        filesHandled: handled(v.files_handled, v.files_handled_at),
        uploads: uploads.get(videoKey(v.incident_id, v.id)) ?? [],
      };
      videos.set(str(v.incident_id), [...(videos.get(str(v.incident_id)) ?? []), status]);
    }
    const reports = this.db.all(
      'SELECT * FROM reports WHERE incident_id IN (SELECT value FROM json_each(?)) ORDER BY target',
      (r) => r,
      ids,
    );
    return rows.map((i) => ({
      id: str(i.id),
      title: (JSON.parse(String(i.info)) as { title?: string }).title ?? null,
      folder: str(i.folder),
      folderHandled: handled(i.folder_handled, i.folder_handled_at),
      reports: reports
        .filter((r) => r.incident_id === i.id)
        .map((r) => ({
          target: str(r.target),
          state: reportState(r),
          upToDate: num(r.acked) >= num(r.wanted),
          attempts: num(r.attempts),
          lastError: strOrNull(r.last_error),
          ackedAt: iso(r.acked_at),
        })),
      videos: videos.get(str(i.id)) ?? [],
    }));
  }

  private oldestWaiting(): StatusSummary['oldestWaiting'] {
    return (
      this.db.get(
        `SELECT * FROM (
           SELECT incident_id, id AS video_id, first_seen_at AS since, 'waiting for its file' AS what FROM videos WHERE state = 'waiting'
           UNION ALL
           SELECT v.incident_id, v.id, v.first_seen_at, 'queued' FROM uploads u JOIN videos v ON v.incident_id = u.incident_id AND v.id = u.video_id
           WHERE u.state = 'queued' AND v.state = 'ready'
         ) ORDER BY since LIMIT 1`,
        (r) => ({
          incidentId: str(r.incident_id),
          videoId: str(r.video_id),
          since: iso(r.since) ?? '',
          what: r.what as 'waiting for its file' | 'queued',
        }),
      ) ?? null
    );
  }

  private pausedCameraIds(): Set<string> {
    return new Set(this.db.all(`SELECT id FROM cameras WHERE state = 'paused'`, (r) => str(r.id)));
  }

  /** Paused cameras with their latest name; for one incident, those of its videos. */
  private pausedCameras(incidentId: string | null): PausedCamera[] {
    return this.db.all(
      `SELECT c.id, c.updated_at,
              (SELECT json_extract(v.info, '$.camera_name') FROM videos v JOIN incidents i ON i.id = v.incident_id
               WHERE json_extract(v.info, '$.camera_id') = c.id AND json_extract(v.info, '$.camera_name') IS NOT NULL
               ORDER BY i.updated_at DESC, v.updated_at DESC LIMIT 1) AS name,
              (SELECT COUNT(*) FROM videos v WHERE json_extract(v.info, '$.camera_id') = c.id AND (@i IS NULL OR v.incident_id = @i)
                 AND EXISTS (SELECT 1 FROM uploads u WHERE u.incident_id = v.incident_id AND u.video_id = v.id AND u.state = 'queued')) AS waiting
       FROM cameras c
       WHERE c.state = 'paused' AND (@i IS NULL OR EXISTS (SELECT 1 FROM videos v WHERE v.incident_id = @i AND json_extract(v.info, '$.camera_id') = c.id))
       ORDER BY c.id`,
      (r) => ({ id: str(r.id), name: strOrNull(r.name), since: iso(r.updated_at) ?? '', waiting: num(r.waiting) }),
      { i: incidentId },
    );
  }

  /** Manifests that do not validate; for one incident, those in its folder. */
  private invalidManifests(incidentId: string | null): StatusOverview['invalidManifests'] {
    return this.db.all(
      `SELECT m.path, m.problems, m.seen_at FROM manifest_errors m
       WHERE @i IS NULL OR EXISTS (SELECT 1 FROM incidents i WHERE i.id = @i AND m.path LIKE rtrim(i.folder, '/') || '/%')
       ORDER BY m.path LIMIT 200`,
      (r) => ({ path: str(r.path), problems: list(r.problems) ?? [], seenAt: iso(r.seen_at) ?? '' }),
      { i: incidentId },
    );
  }
}
