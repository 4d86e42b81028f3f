/**
 * The ledger seen camera by camera, for the local API (CONTRACT §6, shaped like the camera fleet
 * API of seeds/003). Everything here is read from the ledger, so it is right after a restart.
 * A camera is a `camera_id` that some manifest gave a video; videos without one belong to none.
 */
import type { Db } from './database.js';

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

type Row = Record<string, unknown>;
const CAMERA_ID = `json_extract(v.info, '$.camera_id')`;
const iso = (ms: number): string => new Date(ms).toISOString();

/** One row per video of the camera(s), with what its uploads add up to. */
function videoRows(db: Db, cameraId?: string): Row[] {
  return db
    .prepare(
      `SELECT ${CAMERA_ID} AS camera_id, json_extract(v.info, '$.camera_name') AS camera_name,
              COALESCE(json_extract(v.info, '$.ended_at'), json_extract(v.info, '$.started_at')) AS recorded_at,
              v.state, v.first_seen_at, v.settled_at,
              COUNT(u.id) AS uploads, COALESCE(SUM(u.state = 'queued'), 0) AS queued, COALESCE(SUM(u.state = 'failed'), 0) AS failed,
              COALESCE(SUM(u.state = 'queued' AND u.last_error IS NOT NULL), 0) AS troubled, MAX(u.completed_at) AS completed_at
       FROM videos v LEFT JOIN uploads u ON u.incident_id = v.incident_id AND u.video_id = v.id
       WHERE ${cameraId === undefined ? `${CAMERA_ID} IS NOT NULL` : `${CAMERA_ID} = ?`}
       GROUP BY v.incident_id, v.id
       ORDER BY v.first_seen_at, v.incident_id, v.position`,
    )
    .all(...(cameraId === undefined ? [] : [cameraId])) as Row[];
}

/** Bytes sent per camera since `since`: parts acknowledged, and single-request uploads completed. */
function bytesSentSince(db: Db, since: number): Map<string, number> {
  const rows = db
    .prepare(
      `SELECT camera_id, SUM(bytes) AS bytes FROM (
         SELECT ${CAMERA_ID} AS camera_id, p.size AS bytes
         FROM parts p JOIN uploads u ON u.id = p.upload_id JOIN videos v ON v.incident_id = u.incident_id AND v.id = u.video_id
         WHERE p.state = 'done' AND p.done_at >= ?
         UNION ALL
         SELECT ${CAMERA_ID}, u.size
         FROM uploads u JOIN videos v ON v.incident_id = u.incident_id AND v.id = u.video_id
         WHERE u.state = 'done' AND u.completed_at >= ? AND u.reused_from IS NULL
           AND NOT EXISTS (SELECT 1 FROM parts p WHERE p.upload_id = u.id)
       ) WHERE camera_id IS NOT NULL GROUP BY camera_id`,
    )
    .all(since, since) as Row[];
  return new Map(rows.map((r) => [String(r.camera_id), Number(r.bytes)]));
}

function pausedCameras(db: Db): Set<string> {
  return new Set((db.prepare(`SELECT id FROM cameras WHERE state = 'paused'`).all() as Row[]).map((r) => String(r.id)));
}

function latestRecorded(a: string | null, b: unknown): string | null {
  if (typeof b !== 'string' || Number.isNaN(Date.parse(b))) return a;
  return a === null || Date.parse(b) > Date.parse(a) ? iso(Date.parse(b)) : a;
}

/** Folds a camera's video rows (oldest seen first) into its view. */
function cameraOf(id: string, videos: Row[], paused: boolean, sentLastMinute: number): CameraView {
  let name: string | null = null;
  let lastVideoAt: string | null = null;
  let lastCompleted = { at: 0, latency: null as number | null };
  let backlog = 0;
  let troubled = false;
  let lastSeen = 0;
  for (const v of videos) {
    lastSeen = Math.max(lastSeen, Number(v.first_seen_at));
    if (typeof v.camera_name === 'string') name = v.camera_name;
    lastVideoAt = latestRecorded(lastVideoAt, v.recorded_at);
    const uploads = Number(v.uploads);
    if (v.state === 'waiting' || (v.state === 'ready' && Number(v.queued) > 0)) backlog++;
    if (Number(v.troubled) > 0 || Number(v.failed) > 0) troubled = true;
    const complete = v.state === 'ready' && uploads > 0 && Number(v.queued) === 0 && Number(v.failed) === 0;
    const completedAt = Number(v.completed_at ?? 0);
    if (complete && completedAt >= lastCompleted.at) {
      lastCompleted = { at: completedAt, latency: Math.max(0, completedAt - Number(v.settled_at ?? completedAt)) / 1000 };
    }
  }
  return {
    id,
    name,
    state: paused ? 'paused' : 'running',
    lastVideoAt,
    lastSeenAt: iso(lastSeen),
    videoBacklog: backlog,
    videoUploadLatency: lastCompleted.latency,
    networkTransmitRate: Math.round(sentLastMinute / (TRANSMIT_WINDOW_MS / 1000)),
    isOnline: sentLastMinute > 0 || !troubled,
  };
}

/** Every camera seen in manifests, or the one asked for (an empty list when it was never seen). */
export function readCameras(db: Db, cameraId?: string, nowMs = Date.now()): CameraView[] {
  const byCamera = new Map<string, Row[]>();
  for (const row of videoRows(db, cameraId)) {
    const id = String(row.camera_id);
    const rows = byCamera.get(id);
    if (rows) rows.push(row);
    else byCamera.set(id, [row]);
  }
  const paused = pausedCameras(db);
  const sent = bytesSentSince(db, nowMs - TRANSMIT_WINDOW_MS);
  return [...byCamera].map(([id, videos]) => cameraOf(id, videos, paused.has(id), sent.get(id) ?? 0)).sort((a, b) => a.id.localeCompare(b.id));
}

export function readUploadMetrics(db: Db, cameraId: string): UploadMetricsView {
  const r = db
    .prepare(
      `SELECT COALESCE(SUM(u.size), 0) AS size, COALESCE(SUM(u.completed_at - COALESCE(u.started_at, u.created_at)), 0) AS ms
       FROM uploads u JOIN videos v ON v.incident_id = u.incident_id AND v.id = u.video_id
       WHERE ${CAMERA_ID} = ? AND u.state = 'done' AND u.reused_from IS NULL`,
    )
    .get(cameraId) as Row;
  return { uploadSize: Number(r.size), uploadTime: Number(r.ms) / 1000 };
}

/** Uploads not done and not failed, per target (those of paused cameras included). */
export function queuedByTarget(db: Db): Map<string, number> {
  const rows = db.prepare(`SELECT target, COUNT(*) AS n FROM uploads WHERE state = 'queued' GROUP BY target`).all() as Row[];
  return new Map(rows.map((r) => [String(r.target), Number(r.n)]));
}

/** Age in seconds of the oldest export still waiting for a file or with a queued upload; 0 when none. */
export function oldestQueuedSeconds(db: Db, nowMs = Date.now()): number {
  const oldest = db
    .prepare(
      `SELECT MIN(at) AS at FROM (
         SELECT MIN(first_seen_at) AS at FROM videos WHERE state = 'waiting'
         UNION ALL
         SELECT MIN(v.first_seen_at) FROM uploads u JOIN videos v ON v.incident_id = u.incident_id AND v.id = u.video_id
         WHERE u.state = 'queued' AND v.state = 'ready')`,
    )
    .get() as Row;
  return oldest.at === null ? 0 : Math.max(0, (nowMs - Number(oldest.at)) / 1000);
}

/** Incident reports a platform refused for good in their latest version, per target, with the latest refusal. */
export function refusedReportsByTarget(db: Db): Map<string, { count: number; lastError: string | null }> {
  const rows = db
    .prepare(
      `SELECT target, COUNT(*) AS n, (SELECT last_error FROM reports l WHERE l.target = r.target AND l.refused >= l.wanted AND l.acked < l.wanted
                                      ORDER BY l.rowid DESC LIMIT 1) AS last_error
       FROM reports r WHERE refused >= wanted AND acked < wanted GROUP BY target`,
    )
    .all() as Row[];
  return new Map(rows.map((r) => [String(r.target), { count: Number(r.n), lastError: (r.last_error as string | null) ?? null }]));
}
