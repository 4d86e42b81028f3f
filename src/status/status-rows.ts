/**
 * The rows `status` prints, flattened from the snapshot: one per upload (a video file to a
 * target), plus one for each video that has no upload yet or never will (waiting for its file,
 * a failed export), so every video of every incident is on screen.
 */
import type { IncidentStatus, UploadStatus, VideoStatus } from '../ledger/views/status.js';

export interface StatusRow {
  incident: IncidentStatus;
  video: VideoStatus;
  upload: UploadStatus | null;
}

export function statusRows(incidents: readonly IncidentStatus[]): StatusRow[] {
  return incidents.flatMap((incident) =>
    incident.videos.flatMap((video): StatusRow[] =>
      video.uploads.length > 0 ? video.uploads.map((upload) => ({ incident, video, upload })) : [{ incident, video, upload: null }],
    ),
  );
}

/** The video, marked when the row is its thumbnail. */
export function videoLabel(row: StatusRow): string {
  return row.upload?.role === 'thumbnail' ? `${row.video.id} (thumbnail)` : row.video.id;
}

/** An upload that would move if its camera were not paused. */
export function heldByPausedCamera(row: StatusRow): boolean {
  return row.video.cameraPaused && (row.upload?.state === 'queued' || row.upload?.state === 'uploading');
}

/** The state in words: the upload's, `paused` while its camera is, or the video's when it has no upload. */
export function rowState(row: StatusRow): string {
  if (heldByPausedCamera(row)) return 'paused';
  if (row.upload) return row.upload.state;
  return row.video.state === 'failed' ? 'export failed' : row.video.state === 'waiting' ? 'waiting for file' : row.video.state;
}
