/**
 * What `vms-uplink status` shows, read straight from the ledger (also while the daemon runs:
 * WAL lets a reader see the last committed state without blocking the writer).
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
}

export interface VideoStatus {
  id: string;
  cameraName: string | null;
  file: string | null;
  state: 'waiting' | 'ready' | 'failed';
  errors: string[];
  notes: string[];
  /** How often its upload started over because the file changed after it was hashed. */
  restarts: number;
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
  reports: Array<{ target: string; upToDate: boolean; attempts: number; lastError: string | null; ackedAt: string | null }>;
  videos: VideoStatus[];
}

export interface StatusSnapshot {
  incidents: IncidentStatus[];
  invalidManifests: Array<{ path: string; problems: string[]; seenAt: string }>;
  pendingAborts: number;
  totals: { queued: number; uploading: number; done: number; failed: number; waiting: number; failedVideos: number };
}

type Row = Record<string, unknown>;
const iso = (ms: unknown): string | null => (typeof ms === 'number' ? new Date(ms).toISOString() : null);
const list = (v: unknown): string[] => (typeof v === 'string' ? (JSON.parse(v) as string[]) : []);

export function hasSchema(db: Db): boolean {
  return (db.pragma('user_version', { simple: true }) as number) > 0;
}

export function emptyStatus(): StatusSnapshot {
  return { incidents: [], invalidManifests: [], pendingAborts: 0, totals: { queued: 0, uploading: 0, done: 0, failed: 0, waiting: 0, failedVideos: 0 } };
}

/** Ledgers from before schema 4 (a status run before the daemon upgraded it) have no handled columns. */
function hasColumn(db: Db, table: string, column: string): boolean {
  return (db.prepare(`SELECT 1 FROM pragma_table_info(?) WHERE name = ?`).all(table, column) as unknown[]).length > 0;
}

function handled(action: unknown, at: unknown): { action: 'delete' | 'move' | 'retention'; at: string } | null {
  return typeof action === 'string' ? { action: action as 'delete' | 'move' | 'retention', at: iso(at) ?? '' } : null;
}

export function readStatus(db: Db): StatusSnapshot {
  const handledColumns = hasColumn(db, 'videos', 'files_handled');
  const uploads = db
    .prepare(
      `SELECT u.id, u.incident_id, u.video_id, u.target, u.role, u.state, u.size, u.last_error, u.reused_from, u.session,
              COALESCE(SUM(CASE WHEN p.state = 'done' THEN p.size END), 0) AS bytes_done,
              COUNT(p.number) AS parts_total,
              COALESCE(SUM(p.state = 'done'), 0) AS parts_done
       FROM uploads u LEFT JOIN parts p ON p.upload_id = u.id
       GROUP BY u.id ORDER BY u.id`,
    )
    .all() as Row[];
  const byVideo = new Map<string, UploadStatus[]>();
  for (const u of uploads) {
    const key = `${String(u.incident_id)}\u0000${String(u.video_id)}`;
    const done = u.state === 'done';
    const state = u.state === 'queued' && (u.session !== null || Number(u.parts_done) > 0) ? 'uploading' : (u.state as UploadStatus['state']);
    const entry: UploadStatus = {
      id: Number(u.id),
      target: String(u.target),
      role: String(u.role),
      state,
      bytesDone: done ? Number(u.size) : Number(u.bytes_done),
      bytesTotal: Number(u.size),
      partsDone: done ? Number(u.parts_total) : Number(u.parts_done),
      partsTotal: Number(u.parts_total),
      lastError: (u.last_error as string | null) ?? null,
      reusedFrom: (u.reused_from as number | null) ?? null,
    };
    byVideo.set(key, [...(byVideo.get(key) ?? []), entry]);
  }
  const videos = db
    .prepare(
      `SELECT v.incident_id, v.id, v.info, v.state, v.errors, v.notes, v.restarts, f.rel_path,
              ${handledColumns ? 'v.files_handled, v.files_handled_at' : 'NULL AS files_handled, NULL AS files_handled_at'}
       FROM videos v LEFT JOIN video_files f ON f.incident_id = v.incident_id AND f.video_id = v.id AND f.role = 'video'
       ORDER BY v.incident_id, v.position`,
    )
    .all() as Row[];
  const byIncident = new Map<string, VideoStatus[]>();
  for (const v of videos) {
    const info = JSON.parse(String(v.info)) as { camera_name?: string };
    const status: VideoStatus = {
      id: String(v.id),
      cameraName: info.camera_name ?? null,
      file: (v.rel_path as string | null) ?? null,
      state: v.state as VideoStatus['state'],
      errors: list(v.errors),
      notes: list(v.notes),
      restarts: Number(v.restarts),
      filesHandled: handled(v.files_handled, v.files_handled_at),
      uploads: byVideo.get(`${String(v.incident_id)}\u0000${String(v.id)}`) ?? [],
    };
    byIncident.set(String(v.incident_id), [...(byIncident.get(String(v.incident_id)) ?? []), status]);
  }
  const reports = db.prepare('SELECT * FROM reports ORDER BY target').all() as Row[];
  const incidents = (
    db
      .prepare(`SELECT id, folder, info, ${handledColumns ? 'folder_handled, folder_handled_at' : 'NULL AS folder_handled, NULL AS folder_handled_at'} FROM incidents ORDER BY created_at, id`)
      .all() as Row[]
  ).map((i) => ({
    id: String(i.id),
    title: (JSON.parse(String(i.info)) as { title?: string }).title ?? null,
    folder: String(i.folder),
    folderHandled: handled(i.folder_handled, i.folder_handled_at),
    reports: reports
      .filter((r) => r.incident_id === i.id)
      .map((r) => ({
        target: String(r.target),
        upToDate: Number(r.acked) >= Number(r.wanted),
        attempts: Number(r.attempts),
        lastError: (r.last_error as string | null) ?? null,
        ackedAt: iso(r.acked_at),
      })),
    videos: byIncident.get(String(i.id)) ?? [],
  }));
  const all = [...byVideo.values()].flat();
  const count = (s: UploadStatus['state']): number => all.filter((u) => u.state === s).length;
  return {
    incidents,
    invalidManifests: (db.prepare('SELECT * FROM manifest_errors ORDER BY path').all() as Row[]).map((m) => ({
      path: String(m.path),
      problems: list(m.problems),
      seenAt: iso(m.seen_at) ?? '',
    })),
    pendingAborts: (db.prepare('SELECT COUNT(*) AS n FROM pending_aborts').get() as { n: number }).n,
    totals: {
      queued: count('queued'),
      uploading: count('uploading'),
      done: count('done'),
      failed: count('failed'),
      waiting: videos.filter((v) => v.state === 'waiting').length,
      failedVideos: videos.filter((v) => v.state === 'failed').length,
    },
  };
}
