/**
 * What `vms-uplink status` shows, read straight from the ledger (also while the daemon runs:
 * WAL lets a reader see the last committed state without blocking the writer). Everything here,
 * transfer rates included, is computed from committed rows only: the status command is a
 * separate process and cannot ask the daemon.
 */
import type { Db } from './database.js';

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
  filesHandled: { action: 'delete' | 'move' | 'retention'; at: string } | null;
  uploads: UploadStatus[];
}

export interface IncidentStatus {
  id: string;
  title: string | null;
  folder: string;
  /** What after_upload or retention did with the incident folder, and when; null: nothing yet. */
  folderHandled: { action: 'delete' | 'move' | 'retention'; at: string } | null;
  reports: Array<{
    target: string;
    /** acknowledged: the platform has the latest state; refused: it refused the latest state for good. */
    state: 'acknowledged' | 'pending' | 'refused';
    upToDate: boolean;
    attempts: number;
    lastError: string | null;
    ackedAt: string | null;
  }>;
  videos: VideoStatus[];
}

export interface PausedCamera {
  id: string;
  /** The camera_name of the most recently applied manifest that names this camera; null if none does. */
  name: string | null;
  /** When it was paused (ISO 8601). */
  since: string;
}

export interface StatusSnapshot {
  incidents: IncidentStatus[];
  /** Cameras paused now; with `incidentId`, only those of that incident's videos. */
  pausedCameras: PausedCamera[];
  invalidManifests: Array<{ path: string; problems: string[]; seenAt: string }>;
  /** Remote uploads still to abort, daemon-wide (an abort outlives the upload it came from). */
  pendingAborts: number;
  totals: { queued: number; uploading: number; done: number; failed: number; waiting: number; failedVideos: number; refusedReports: number };
}

export interface StatusOptions {
  /** Only this incident (the local API's GET /incidents/{id}); totals then describe it alone. */
  incidentId?: string;
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

type Row = Record<string, unknown>;
type Handled = { action: 'delete' | 'move' | 'retention'; at: string } | null;
const iso = (ms: unknown): string | null => (typeof ms === 'number' ? new Date(ms).toISOString() : null);
const list = (v: unknown): string[] => (typeof v === 'string' ? (JSON.parse(v) as string[]) : []);
const videoKey = (incidentId: unknown, videoId: unknown): string => `${String(incidentId)}\u0000${String(videoId)}`;

export function hasSchema(db: Db): boolean {
  return (db.pragma('user_version', { simple: true }) as number) > 0;
}

export function emptyStatus(): StatusSnapshot {
  return {
    incidents: [],
    pausedCameras: [],
    invalidManifests: [],
    pendingAborts: 0,
    totals: { queued: 0, uploading: 0, done: 0, failed: 0, waiting: 0, failedVideos: 0, refusedReports: 0 },
  };
}

/** Ledgers from before schema 4 (a status run before the daemon upgraded it) have no handled columns. */
function hasColumn(db: Db, table: string, column: string): boolean {
  return (db.prepare(`SELECT 1 FROM pragma_table_info(?) WHERE name = ?`).all(table, column) as unknown[]).length > 0;
}

/** Ledgers from before the camera-pause migration have no `cameras` table: every camera runs. */
function hasTable(db: Db, table: string): boolean {
  return db.prepare(`SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?`).get(table) !== undefined;
}

function handled(action: unknown, at: unknown): Handled {
  return typeof action === 'string' ? { action: action as 'delete' | 'move' | 'retention', at: iso(at) ?? '' } : null;
}

/** Bytes per second from the parts finished within RATE_WINDOW_MS (see MIN_RATE_SPAN_MS). */
export function transferRate(recentBytes: number, firstDoneAt: number | null, now: number): number {
  if (recentBytes <= 0 || firstDoneAt === null) return 0;
  const span = Math.max(MIN_RATE_SPAN_MS, Math.min(RATE_WINDOW_MS, now - firstDoneAt));
  return recentBytes / (span / 1000);
}

function uploadStatus(u: Row, now: number): UploadStatus {
  const done = u.state === 'done';
  // The ledger has no 'uploading' state: a queued upload with a remote session or a finished part is under way.
  const state = u.state === 'queued' && (u.session !== null || Number(u.parts_done) > 0) ? 'uploading' : (u.state as UploadStatus['state']);
  const bytesTotal = Number(u.size);
  const bytesDone = done ? bytesTotal : Number(u.bytes_done);
  const rate = state === 'uploading' ? transferRate(Number(u.recent_bytes), (u.first_done_at as number | null) ?? null, now) : 0;
  return {
    id: Number(u.id),
    target: String(u.target),
    role: String(u.role),
    state,
    bytesDone,
    bytesTotal,
    partsDone: done ? Number(u.parts_total) : Number(u.parts_done),
    partsTotal: Number(u.parts_total),
    lastError: (u.last_error as string | null) ?? null,
    reusedFrom: (u.reused_from as number | null) ?? null,
    rateBytesPerSecond: rate,
    etaSeconds: rate > 0 ? Math.ceil(Math.max(0, bytesTotal - bytesDone) / rate) : null,
  };
}

/** Every upload (of the incident, when given), by video. */
function readUploads(db: Db, incidentId: string | null, now: number): Map<string, UploadStatus[]> {
  const rows = db
    .prepare(
      `SELECT u.id, u.incident_id, u.video_id, u.target, u.role, u.state, u.size, u.last_error, u.reused_from, u.session,
              COALESCE(SUM(CASE WHEN p.state = 'done' THEN p.size END), 0) AS bytes_done,
              COUNT(p.number) AS parts_total,
              COALESCE(SUM(p.state = 'done'), 0) AS parts_done,
              COALESCE(SUM(CASE WHEN p.state = 'done' AND p.done_at > @since THEN p.size END), 0) AS recent_bytes,
              MIN(CASE WHEN p.state = 'done' THEN p.done_at END) AS first_done_at
       FROM uploads u LEFT JOIN parts p ON p.upload_id = u.id
       WHERE @incident IS NULL OR u.incident_id = @incident
       GROUP BY u.id ORDER BY u.id`,
    )
    .all({ incident: incidentId, since: now - RATE_WINDOW_MS }) as Row[];
  const byVideo = new Map<string, UploadStatus[]>();
  for (const u of rows) {
    const key = videoKey(u.incident_id, u.video_id);
    byVideo.set(key, [...(byVideo.get(key) ?? []), uploadStatus(u, now)]);
  }
  return byVideo;
}

/** Camera id → when it was paused (ms epoch), for the cameras paused now. */
function readPausedCameras(db: Db): Map<string, number> {
  if (!hasTable(db, 'cameras')) return new Map();
  const rows = db.prepare(`SELECT id, updated_at FROM cameras WHERE state = 'paused'`).all() as Array<{ id: string; updated_at: number }>;
  return new Map(rows.map((r) => [r.id, r.updated_at]));
}

/** Every video (of the incident, when given) with its uploads, by incident, in manifest order. */
function readVideos(db: Db, incidentId: string | null, uploads: Map<string, UploadStatus[]>, paused: Map<string, number>): Map<string, VideoStatus[]> {
  const handledColumns = hasColumn(db, 'videos', 'files_handled');
  const changeColumns = hasColumn(db, 'videos', 'changed_after_upload');
  const rows = db
    .prepare(
      `SELECT v.incident_id, v.id, v.info, v.state, v.errors, v.notes, v.restarts, f.rel_path,
              ${handledColumns ? 'v.files_handled, v.files_handled_at' : 'NULL AS files_handled, NULL AS files_handled_at'},
              ${changeColumns ? 'v.changed_after_upload, v.change_note' : '0 AS changed_after_upload, NULL AS change_note'}
       FROM videos v LEFT JOIN video_files f ON f.incident_id = v.incident_id AND f.video_id = v.id AND f.role = 'video'
       WHERE @incident IS NULL OR v.incident_id = @incident
       ORDER BY v.incident_id, v.position`,
    )
    .all({ incident: incidentId }) as Row[];
  const byIncident = new Map<string, VideoStatus[]>();
  for (const v of rows) {
    const info = JSON.parse(String(v.info)) as { camera_id?: string; camera_name?: string };
    const cameraId = info.camera_id ?? null;
    const status: VideoStatus = {
      id: String(v.id),
      cameraId,
      cameraName: info.camera_name ?? null,
      cameraPaused: cameraId !== null && paused.has(cameraId),
      file: (v.rel_path as string | null) ?? null,
      state: v.state as VideoStatus['state'],
      errors: list(v.errors),
      notes: list(v.notes),
      restarts: Number(v.restarts),
      changedAfterUpload: Number(v.changed_after_upload),
      changeNote: (v.change_note as string | null) ?? null,
      filesHandled: handled(v.files_handled, v.files_handled_at),
      uploads: uploads.get(videoKey(v.incident_id, v.id)) ?? [],
    };
    byIncident.set(String(v.incident_id), [...(byIncident.get(String(v.incident_id)) ?? []), status]);
  }
  return byIncident;
}

function reportState(r: Row): IncidentStatus['reports'][number]['state'] {
  if (Number(r.acked) >= Number(r.wanted)) return 'acknowledged';
  // Ledgers from before schema 6 have no `refused` column: nothing was refused for good then.
  return Number(r.refused ?? 0) >= Number(r.wanted) ? 'refused' : 'pending';
}

function readIncidents(db: Db, incidentId: string | null, videos: Map<string, VideoStatus[]>): IncidentStatus[] {
  const handledColumns = hasColumn(db, 'incidents', 'folder_handled');
  const reports = db.prepare('SELECT * FROM reports WHERE @incident IS NULL OR incident_id = @incident ORDER BY target').all({ incident: incidentId }) as Row[];
  const rows = db
    .prepare(
      `SELECT id, folder, info, ${handledColumns ? 'folder_handled, folder_handled_at' : 'NULL AS folder_handled, NULL AS folder_handled_at'}
       FROM incidents WHERE @incident IS NULL OR id = @incident ORDER BY created_at, id`,
    )
    .all({ incident: incidentId }) as Row[];
  return rows.map((i) => ({
    id: String(i.id),
    title: (JSON.parse(String(i.info)) as { title?: string }).title ?? null,
    folder: String(i.folder),
    folderHandled: handled(i.folder_handled, i.folder_handled_at),
    reports: reports
      .filter((r) => r.incident_id === i.id)
      .map((r) => ({
        target: String(r.target),
        state: reportState(r),
        upToDate: Number(r.acked) >= Number(r.wanted),
        attempts: Number(r.attempts),
        lastError: (r.last_error as string | null) ?? null,
        ackedAt: iso(r.acked_at),
      })),
    videos: videos.get(String(i.id)) ?? [],
  }));
}

/** The name the newest manifest gives each camera: manifests are rewritten, names get fixed. */
function latestCameraNames(db: Db): Map<string, string> {
  const rows = db
    .prepare(
      `SELECT json_extract(v.info, '$.camera_id') AS camera_id, json_extract(v.info, '$.camera_name') AS camera_name
       FROM videos v JOIN incidents i ON i.id = v.incident_id
       WHERE json_extract(v.info, '$.camera_id') IS NOT NULL AND json_extract(v.info, '$.camera_name') IS NOT NULL
       ORDER BY i.updated_at, v.updated_at`,
    )
    .all() as Array<{ camera_id: string; camera_name: string }>;
  return new Map(rows.map((r) => [String(r.camera_id), String(r.camera_name)]));
}

function pausedCameraList(db: Db, paused: Map<string, number>, videos: VideoStatus[], incidentId: string | null): PausedCamera[] {
  if (paused.size === 0) return [];
  const names = latestCameraNames(db);
  const shown = incidentId === null ? [...paused.keys()] : [...new Set(videos.flatMap((v) => (v.cameraPaused && v.cameraId ? [v.cameraId] : [])))];
  return shown.sort().map((id) => ({ id, name: names.get(id) ?? null, since: iso(paused.get(id)) ?? '' }));
}

/** Manifests that do not validate; for one incident, those in its folder. */
function readInvalidManifests(db: Db, incidents: IncidentStatus[], incidentId: string | null): StatusSnapshot['invalidManifests'] {
  const rows = db.prepare('SELECT * FROM manifest_errors ORDER BY path').all() as Row[];
  const folders = incidents.map((i) => `${i.folder.replace(/\/+$/, '')}/`);
  return rows
    .filter((m) => incidentId === null || folders.some((f) => String(m.path).startsWith(f)))
    .map((m) => ({ path: String(m.path), problems: list(m.problems), seenAt: iso(m.seen_at) ?? '' }));
}

export function readStatus(db: Db, options: StatusOptions = {}): StatusSnapshot {
  const incidentId = options.incidentId ?? null;
  const now = options.now ?? Date.now();
  const paused = readPausedCameras(db);
  const uploads = readUploads(db, incidentId, now);
  const videosByIncident = readVideos(db, incidentId, uploads, paused);
  const incidents = readIncidents(db, incidentId, videosByIncident);
  const videos = [...videosByIncident.values()].flat();
  const all = [...uploads.values()].flat();
  const count = (s: UploadStatus['state']): number => all.filter((u) => u.state === s).length;
  return {
    incidents,
    pausedCameras: pausedCameraList(db, paused, videos, incidentId),
    invalidManifests: readInvalidManifests(db, incidents, incidentId),
    pendingAborts: (db.prepare('SELECT COUNT(*) AS n FROM pending_aborts').get() as { n: number }).n,
    totals: {
      queued: count('queued'),
      uploading: count('uploading'),
      done: count('done'),
      failed: count('failed'),
      waiting: videos.filter((v) => v.state === 'waiting').length,
      failedVideos: videos.filter((v) => v.state === 'failed').length,
      refusedReports: incidents.reduce((n, i) => n + i.reports.filter((r) => r.state === 'refused').length, 0),
    },
  };
}
