/**
 * The ledger seen camera by camera, for the local API (shaped like the camera fleet API:
 * state, backlog, upload latency, last video). Everything is read from the ledger, so it is right
 * after a restart, and summed by SQLite, so a camera with years of videos costs one row.
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
  /** Seconds from export settled to upload complete, for its last completed video; null before one. */
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

/**
 * One row per camera. Per video first (`per_video`): whether it is backlog, troubled, complete
 * (ready, uploaded everywhere it went, none failed) and when. Then per camera: the sums, the name
 * of its latest named video, and the latency of its latest completed one.
 */
const CAMERAS_SQL = `
  WITH per_video AS (
    SELECT ${CAMERA_ID} AS camera_id, json_extract(v.info, '$.camera_name') AS camera_name,
           COALESCE(json_extract(v.info, '$.ended_at'), json_extract(v.info, '$.started_at')) AS recorded_at,
           v.first_seen_at, v.settled_at, v.incident_id, v.position,
           (v.state = 'waiting' OR (v.state = 'ready' AND EXISTS (SELECT 1 FROM uploads u WHERE u.incident_id = v.incident_id AND u.video_id = v.id AND u.state = 'queued'))) AS backlog,
           EXISTS (SELECT 1 FROM uploads u WHERE u.incident_id = v.incident_id AND u.video_id = v.id
                   AND (u.state = 'failed' OR (u.state = 'queued' AND u.last_error IS NOT NULL))) AS troubled,
           CASE WHEN v.state = 'ready'
                 AND EXISTS (SELECT 1 FROM uploads u WHERE u.incident_id = v.incident_id AND u.video_id = v.id)
                 AND NOT EXISTS (SELECT 1 FROM uploads u WHERE u.incident_id = v.incident_id AND u.video_id = v.id AND u.state != 'done')
                THEN (SELECT MAX(u.completed_at) FROM uploads u WHERE u.incident_id = v.incident_id AND u.video_id = v.id) END AS completed_at
    FROM videos v WHERE ${CAMERA_ID} IS NOT NULL AND (@camera IS NULL OR ${CAMERA_ID} = @camera)
  )
  SELECT camera_id,
         (SELECT p.camera_name FROM per_video p WHERE p.camera_id = c.camera_id AND p.camera_name IS NOT NULL ORDER BY p.first_seen_at DESC, p.incident_id DESC, p.position DESC LIMIT 1) AS name,
         MAX(first_seen_at) AS last_seen_at, SUM(backlog) AS backlog, MAX(troubled) AS troubled,
         (SELECT (p.completed_at - COALESCE(p.settled_at, p.completed_at)) FROM per_video p
          WHERE p.camera_id = c.camera_id AND p.completed_at IS NOT NULL ORDER BY p.completed_at DESC LIMIT 1) AS latency_ms,
         strftime('%Y-%m-%dT%H:%M:%fZ', MAX(julianday(recorded_at))) AS last_video_at,
         EXISTS (SELECT 1 FROM cameras k WHERE k.id = c.camera_id AND k.state = 'paused') AS paused
  FROM per_video c GROUP BY camera_id ORDER BY camera_id`;

/** Bytes sent per camera since `since`: parts acknowledged, and single-request uploads completed. */
const SENT_SQL = `
  SELECT camera_id, SUM(bytes) AS bytes FROM (
    SELECT ${CAMERA_ID} AS camera_id, p.size AS bytes
    FROM parts p JOIN uploads u ON u.id = p.upload_id JOIN videos v ON v.incident_id = u.incident_id AND v.id = u.video_id
    WHERE p.state = 'done' AND p.done_at >= @since
    UNION ALL
    SELECT ${CAMERA_ID}, u.size
    FROM uploads u JOIN videos v ON v.incident_id = u.incident_id AND v.id = u.video_id
    WHERE u.state = 'done' AND u.completed_at >= @since AND u.reused_from IS NULL
      AND NOT EXISTS (SELECT 1 FROM parts p WHERE p.upload_id = u.id)
  ) WHERE camera_id IS NOT NULL GROUP BY camera_id`;

const iso = (ms: number): string => new Date(ms).toISOString();

export class CameraViews {
  constructor(private readonly db: LedgerDb) {}

  /** Every camera seen in manifests, or the one asked for (an empty list when it was never seen). */
  cameras(cameraId?: string, nowMs = Date.now()): CameraView[] {
    const sent = new Map(this.db.all(SENT_SQL, (r) => [str(r.camera_id), num(r.bytes)] as const, { since: nowMs - TRANSMIT_WINDOW_MS }));
    return this.db.all(
      CAMERAS_SQL,
      (r: Row) => {
        const sentLastMinute = sent.get(str(r.camera_id)) ?? 0;
        const latency = numOrNull(r.latency_ms);
        return {
          id: str(r.camera_id),
          name: strOrNull(r.name),
          state: num(r.paused) ? 'paused' : 'running',
          lastVideoAt: strOrNull(r.last_video_at),
          lastSeenAt: iso(num(r.last_seen_at)),
          videoBacklog: num(r.backlog),
          videoUploadLatency: latency === null ? null : Math.max(0, latency) / 1000,
          networkTransmitRate: Math.round(sentLastMinute / (TRANSMIT_WINDOW_MS / 1000)),
          isOnline: sentLastMinute > 0 || !num(r.troubled),
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
