/**
 * The local API's JSON as the status page reads it. The server's handlers are declared to return
 * these types (src/api/local-api.ts), so a change to what the API sends that the page would
 * misread fails to compile. Only what the page uses is listed; the API sends more.
 */

/** GET /healthz, and `health` in GET /status. */
export interface HealthVerdict {
  status: 'ok' | 'degraded' | 'unhealthy';
  reasons?: string[];
}

/** GET /status: the daemon at a glance. */
export interface DaemonStatus {
  version: string;
  startedAt: string;
  uptimeSeconds: number;
  health: HealthVerdict;
  /** Free bytes on the ledger's filesystem (null: unknown) against ledger.min_free (0: no floor). */
  disk: { freeBytes: number | null; minFreeBytes: number };
  bandwidth: {
    /** In force now; null: unlimited. */
    bytesPerSecond: number | null;
    /** The schedule's entry in force, and since when; null for a fixed limit. */
    entry: number | null;
    since: string | null;
    schedule: Array<{ cron: string; bytesPerSecond: number | null }> | null;
  };
  totals: {
    queued: number;
    uploading: number;
    done: number;
    failed: number;
    waiting: number;
    failedVideos: number;
    refusedReports: number;
  };
  incidentCount: number;
}

/** GET /cameras: one per camera_id seen in manifests. */
export interface Camera {
  id: string;
  name: string | null;
  state: 'running' | 'paused';
  lastVideoAt: string | null;
  videoBacklog: number;
  /** Bytes per second over the last minute. */
  networkTransmitRate: number;
}

/** One video file to one target. */
export interface Upload {
  id: number;
  target: string;
  role: string;
  state: 'queued' | 'uploading' | 'done' | 'failed';
  bytesDone: number;
  bytesTotal: number;
  /** The platform's last refusal: why it failed, or what is being retried. */
  lastError: string | null;
  rateBytesPerSecond: number;
  etaSeconds: number | null;
}

export interface Video {
  id: string;
  cameraId: string | null;
  cameraName: string | null;
  cameraPaused: boolean;
  file: string | null;
  /** failed: a failed export (or a file that could not be used); `errors` says why. */
  state: 'waiting' | 'ready' | 'failed';
  errors: string[];
  notes: string[];
  uploads: Upload[];
}

export interface Report {
  target: string;
  state: 'acknowledged' | 'pending' | 'refused';
  lastError: string | null;
}

/** GET /incidents (a page of them), GET /incidents/{id}. */
export interface Incident {
  id: string;
  title: string | null;
  folder: string;
  reports: Report[];
  videos: Video[];
}

/** Every error answer. */
export interface ApiError {
  code: number;
  message: string;
}
