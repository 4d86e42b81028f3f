/**
 * The ledger seen camera by camera, for the local API (shaped like the camera fleet API:
 * state, backlog, upload latency, last video). Everything is read from the ledger, so it is right
 * after a restart, and along indexes, so a camera with years of videos costs a few index steps.
 * A camera is a `camera_id` that some manifest gave a video; videos without one belong to none.
 */
import type { LedgerDb } from '../database.js';
import { num, numOrNull, str, strOrNull, type Row } from '../rows.js';

export interface CameraView {
  id: string;
  /** The camera_name of its most recently seen video that had one. */
  name: string | null;
  state: 'running' | 'paused';
  /** The recorded end (else start) of its most recently recorded video, as the manifest gave it. */
  lastVideoAt: string | null;
  /** When the latest export from it was seen. */
  lastSeenAt: string;
  /** Its videos not uploaded yet: waiting for their files, or with uploads still queued. */
  videoBacklog: number;
  /** Seconds from export settled to upload complete, for its latest video (by when it was seen) that every upload completed; null before one. */
  videoUploadLatency: number | null;
  /** Bytes per second sent for its videos over the last minute. */
  networkTransmitRate: number;
  /** Uploads for it are flowing, or idle with none retrying an error and none failed. */
  isOnline: boolean;
}

export interface UploadMetricsView {
  /** Bytes of its completed uploads (content another upload had already sent is not counted). */
  uploadSize: number;
  /** Seconds from each of those uploads' start on the platform to its completion, summed. */
  uploadTime: number;
}

export const TRANSMIT_WINDOW_MS = 60_000;

const CAMERA_ID = `json_extract(v.info, '$.camera_id')`;
/** The recorded end (else start) of a video as a Julian day; indexed with its camera (videos_by_camera_recorded). */
const RECORDED_AT = `julianday(COALESCE(json_extract(v.info, '$.ended_at'), json_extract(v.info, '$.started_at')))`;
const UPLOADS_OF_V = 'u.incident_id = v.incident_id AND u.video_id = v.id';

/*
 * Read a page refresh at a time (the status page asks every 2 s), so no query here reads every
 * video: each walks an index of one camera's videos (videos_by_camera_seen, _recorded) from its
 * newest end, or the few rows of a state (what is queued, failed, sent in the last minute).
 */

/**
 * One row per camera: when its latest export was seen, the name of its latest named video, its
 * latest recorded time, the latency of its latest video that every upload completed, its pause.
 */
const CAMERAS_SQL = `
  WITH RECURSIVE seen(camera_id) AS (
    -- The cameras, one index step each (not a scan of every video): the next camera id after the last.
    SELECT MIN(${CAMERA_ID}) FROM videos v WHERE ${CAMERA_ID} IS NOT NULL
    UNION ALL
    SELECT (SELECT MIN(${CAMERA_ID}) FROM videos v WHERE ${CAMERA_ID} > seen.camera_id) FROM seen WHERE seen.camera_id IS NOT NULL
  )
  SELECT c.camera_id, c.last_seen_at,
         (SELECT json_extract(v.info, '$.camera_name') FROM videos v
          WHERE ${CAMERA_ID} = c.camera_id AND json_extract(v.info, '$.camera_name') IS NOT NULL
          ORDER BY v.first_seen_at DESC, v.incident_id DESC, v.position DESC LIMIT 1) AS name,
         (SELECT strftime('%Y-%m-%dT%H:%M:%fZ', MAX(${RECORDED_AT})) FROM videos v WHERE ${CAMERA_ID} = c.camera_id) AS last_video_at,
         (SELECT (SELECT MAX(u.completed_at) - COALESCE(v.settled_at, MAX(u.completed_at)) FROM uploads u WHERE ${UPLOADS_OF_V})
          FROM videos v
          WHERE ${CAMERA_ID} = c.camera_id AND v.state = 'ready'
            AND EXISTS (SELECT 1 FROM uploads u WHERE ${UPLOADS_OF_V})
            AND NOT EXISTS (SELECT 1 FROM uploads u WHERE ${UPLOADS_OF_V} AND u.state != 'done')
          ORDER BY v.first_seen_at DESC, v.incident_id DESC, v.position DESC LIMIT 1) AS latency_ms,
         EXISTS (SELECT 1 FROM cameras k WHERE k.id = c.camera_id AND k.state = 'paused') AS paused
  FROM (SELECT camera_id, (SELECT MAX(v.first_seen_at) FROM videos v WHERE ${CAMERA_ID} = seen.camera_id) AS last_seen_at
        FROM seen WHERE camera_id IS NOT NULL AND (@camera IS NULL OR camera_id = @camera)) AS c
  ORDER BY c.camera_id`;

/** Videos not uploaded yet, per camera: waiting for their files, or with an upload still queued. */
const BACKLOG_SQL = `
  SELECT camera_id, COUNT(*) AS n FROM (
    SELECT v.incident_id, v.id, ${CAMERA_ID} AS camera_id FROM videos v WHERE v.state = 'waiting'
    UNION
    SELECT v.incident_id, v.id, ${CAMERA_ID} FROM uploads u JOIN videos v ON ${UPLOADS_OF_V} WHERE u.state = 'queued' AND v.state = 'ready'
  ) WHERE camera_id IS NOT NULL GROUP BY camera_id`;

/** Cameras with an upload that failed, or that is being retried after an error. */
const TROUBLED_SQL = `
  SELECT DISTINCT ${CAMERA_ID} AS camera_id FROM uploads u JOIN videos v ON ${UPLOADS_OF_V}
  WHERE u.state = 'failed' OR (u.state = 'queued' AND u.last_error IS NOT NULL)`;

/** Bytes sent per camera since \`since\` (n): parts acknowledged, and single-request uploads completed. */
const SENT_SQL = `
  SELECT camera_id, SUM(bytes) AS n FROM (
    SELECT ${CAMERA_ID} AS camera_id, p.size AS bytes
    FROM parts p JOIN uploads u ON u.id = p.upload_id JOIN videos v ON ${UPLOADS_OF_V}
    WHERE p.state = 'done' AND p.done_at >= @since
    UNION ALL
    SELECT ${CAMERA_ID}, u.size
    FROM uploads u INDEXED BY uploads_done_by_completion JOIN videos v ON ${UPLOADS_OF_V}
    WHERE u.state = 'done' AND u.completed_at >= @since AND u.reused_from IS NULL
      AND NOT EXISTS (SELECT 1 FROM parts p WHERE p.upload_id = u.id)
  ) WHERE camera_id IS NOT NULL GROUP BY camera_id`;

const iso = (ms: number): string => new Date(ms).toISOString();

export class CameraViews {
  constructor(private readonly db: LedgerDb) {}

  /** Every camera seen in manifests, or the one asked for (an empty list when it was never seen). */
  cameras(cameraId?: string, nowMs = Date.now()): CameraView[] {
    const perCamera = (sql: string, params: Record<string, unknown> = {}): Map<string, number> =>
      new Map(this.db.all(sql, (r) => [str(r.camera_id), num(r.n)] as const, params));
    const sent = perCamera(SENT_SQL, { since: nowMs - TRANSMIT_WINDOW_MS });
    const backlog = perCamera(BACKLOG_SQL);
    const troubled = new Set(this.db.all(TROUBLED_SQL, (r) => str(r.camera_id)));
    return this.db.all(
      CAMERAS_SQL,
      (r: Row) => {
        const id = str(r.camera_id);
        const sentLastMinute = sent.get(id) ?? 0;
        const latency = numOrNull(r.latency_ms);
        return {
          id,
          name: strOrNull(r.name),
          state: num(r.paused) ? 'paused' : 'running',
          lastVideoAt: strOrNull(r.last_video_at),
          lastSeenAt: iso(num(r.last_seen_at)),
          videoBacklog: backlog.get(id) ?? 0,
          videoUploadLatency: latency === null ? null : Math.max(0, latency) / 1000,
          networkTransmitRate: Math.round(sentLastMinute / (TRANSMIT_WINDOW_MS / 1000)),
          isOnline: sentLastMinute > 0 || !troubled.has(id),
        };
      },
      { camera: cameraId ?? null },
    );
  }

  uploadMetrics(cameraId: string): UploadMetricsView {
    return this.db.get(
      `SELECT COALESCE(SUM(u.size), 0) AS size, COALESCE(SUM(u.completed_at - COALESCE(u.started_at, u.created_at)), 0) AS ms
       FROM uploads u JOIN videos v ON v.incident_id = u.incident_id AND v.id = u.video_id
       WHERE ${CAMERA_ID} = ? AND u.state = 'done' AND u.reused_from IS NULL`,
      (r) => ({ uploadSize: num(r.size), uploadTime: num(r.ms) / 1000 }),
      cameraId,
    )!;
  }
}
