/**
 * `vms-uplink status` as text. On a terminal: progress bars (progress-bars.ts); anywhere else
 * (a pipe, a file, a cron mail): a plain table (status-table.ts). Around either: the daemon's
 * problems and the totals first, paused cameras, then what each incident has to say beyond
 * its rows (reports, export errors, notes, last errors), then manifests that do not validate.
 * Scripts use `status --json` instead.
 */
import type { IncidentStatus, StatusSnapshot, UploadStatus, VideoStatus } from '../ledger/status-snapshot.js';
import type { DaemonReport } from './daemon-status.js';
import { progressLines } from './progress-bars.js';
import { statusRows } from './status-rows.js';
import { statusTable } from './status-table.js';

export interface FormatOptions {
  /** stdout is a terminal (`process.stdout.isTTY`): progress bars rather than the table. */
  tty?: boolean;
  /** The terminal's width (`process.stdout.columns`); the bars fit it. 80 when unknown. */
  columns?: number;
}

function headerLines(s: StatusSnapshot, daemon: DaemonReport | undefined): string[] {
  const t = s.totals;
  const lines: string[] = [];
  for (const p of daemon?.problems ?? []) lines.push(`PROBLEM (${p.kind}, since ${p.since}): ${p.message}`);
  if (daemon?.daemon) lines.push(`daemon: ${daemon.daemon.running ? `running (pid ${daemon.daemon.pid}, since ${daemon.daemon.startedAt})` : 'not running'}`);
  lines.push(
    `uploads: ${t.uploading} uploading, ${t.queued} queued, ${t.done} done, ${t.failed} failed; videos: ${t.waiting} waiting for files, ${t.failedVideos} failed` +
      (t.refusedReports > 0 ? `; reports: ${t.refusedReports} refused` : ''),
  );
  return lines;
}

/** A video with uploads still to go whose camera is paused. */
function waitsForCamera(v: VideoStatus): boolean {
  return v.cameraPaused && v.uploads.some((u) => u.state === 'queued' || u.state === 'uploading');
}

function pausedCameraLines(s: StatusSnapshot): string[] {
  if (s.pausedCameras.length === 0) return [];
  const videos = s.incidents.flatMap((i) => i.videos);
  const waiting = (id: string): number => videos.filter((v) => v.cameraId === id && waitsForCamera(v)).length;
  return [
    '',
    'paused cameras (their videos wait until the camera is resumed):',
    ...s.pausedCameras.map((c) => `  ${c.id}${c.name ? ` "${c.name}"` : ''} paused since ${c.since}: ${waiting(c.id)} video(s) waiting`),
  ];
}

function uploadNote(u: UploadStatus): string | null {
  const notes = [u.reusedFrom !== null ? `same content as upload #${u.reusedFrom}` : '', u.lastError ? `last error: ${u.lastError}` : ''].filter(Boolean);
  if (notes.length === 0) return null;
  return `      upload #${u.id} to ${u.target}${u.role === 'thumbnail' ? ' (thumbnail)' : ''}: ${notes.join('; ')}`;
}

function videoNotes(v: VideoStatus): string[] {
  const lines: string[] = [];
  for (const e of v.errors) lines.push(`      error: ${e}`);
  for (const n of v.notes) lines.push(`      note: ${n}`);
  if (v.filesHandled) {
    const what = { delete: 'deleted after upload', move: 'moved after upload', retention: 'deleted by retention' }[v.filesHandled.action];
    lines.push(`      files ${what} (${v.filesHandled.at})`);
  }
  if (v.restarts > 0) lines.push(`      restarted ${v.restarts} time(s): the file changed after it was hashed`);
  if (v.changedAfterUpload > 0) lines.push(`      changed after upload ${v.changedAfterUpload} time(s); last: ${v.changeNote ?? '(no detail)'}`);
  for (const u of v.uploads) {
    const note = uploadNote(u);
    if (note) lines.push(note);
  }
  if (lines.length === 0) return [];
  const camera = v.cameraName ?? v.cameraId;
  return [`  video ${v.id}${camera ? ` (${camera})` : ''}${v.file ? ` ${v.file}` : ''}: ${v.state}${waitsForCamera(v) ? ', its camera paused' : ''}`, ...lines];
}

function reportLine(r: IncidentStatus['reports'][number]): string {
  if (r.state === 'acknowledged') return `up to date (${r.ackedAt})`;
  if (r.state === 'refused') return `FAILED: refused by the platform: ${r.lastError ?? '(no message)'} (sent again when the incident changes, or with vms-uplink retry)`;
  return `pending${r.lastError ? ` — last error: ${r.lastError}` : ''}`;
}

/** What the rows cannot say: the folder, reports to the platforms, errors, notes, last errors. */
function incidentDetails(i: IncidentStatus): string[] {
  const lines = ['', `incident ${i.id}${i.title ? ` "${i.title}"` : ''}  (${i.folder})`];
  if (i.folderHandled) lines.push(`  folder ${i.folderHandled.action === 'move' ? 'moved' : 'removed'} after upload (${i.folderHandled.at})`);
  for (const r of i.reports) lines.push(`  report to ${r.target}: ${reportLine(r)}`);
  for (const v of i.videos) lines.push(...videoNotes(v));
  return lines;
}

function footerLines(s: StatusSnapshot): string[] {
  const lines: string[] = [];
  if (s.invalidManifests.length > 0) {
    lines.push('', 'manifests that do not validate (fix them and they are read again):');
    for (const m of s.invalidManifests) for (const p of m.problems) lines.push(`  ${m.path}: ${p}`);
  }
  if (s.pendingAborts > 0) lines.push('', `${s.pendingAborts} remote upload(s) still to abort`);
  return lines;
}

export function formatStatus(s: StatusSnapshot, daemon?: DaemonReport, options: FormatOptions = {}): string {
  const rows = statusRows(s);
  const body = options.tty ? progressLines(rows, options.columns) : statusTable(rows);
  return [
    ...headerLines(s, daemon),
    ...pausedCameraLines(s),
    ...(body.length > 0 ? ['', ...body] : []),
    ...s.incidents.flatMap(incidentDetails),
    ...footerLines(s),
  ].join('\n');
}
