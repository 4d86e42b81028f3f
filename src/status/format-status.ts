/**
 * `vms-uplink status` as text.
 *
 * By default a summary of bounded size, however many incidents the ledger holds: the daemon's
 * problems, the totals (per target too), the export waiting longest, then at most
 * SUMMARY_INCIDENTS incidents (uploads under way, the latest failures, the most recently active).
 * `--all` lists every incident, a page at a time. Incidents show on a terminal as progress
 * bars (progress-bars.ts), anywhere else a plain table (status-table.ts), then what each incident
 * has to say beyond its rows (reports, export errors, notes, last errors). Scripts use
 * `status --json` instead.
 */
import type {
  IncidentStatus,
  ReportStatus,
  StatusOverview,
  StatusSnapshot,
  StatusSummary,
  UploadStatus,
  VideoStatus,
} from '../ledger/views/status.js';
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

/** The problems, whether the daemon runs, the totals, and the paused cameras. */
export function overviewLines(s: StatusOverview, daemon: DaemonReport | undefined): string[] {
  const t = s.totals;
  const lines: string[] = [];
  for (const p of daemon?.problems ?? []) lines.push(`PROBLEM (${p.kind}, since ${p.since}): ${p.message}`);
  if (daemon?.daemon)
    lines.push(`daemon: ${daemon.daemon.running ? `running (pid ${daemon.daemon.pid}, since ${daemon.daemon.startedAt})` : 'not running'}`);
  lines.push(
    `uploads: ${t.uploading} uploading, ${t.queued} queued, ${t.done} done, ${t.failed} failed; videos: ${t.waiting} waiting for files, ${t.failedVideos} failed` +
      (t.refusedReports > 0 ? `; reports: ${t.refusedReports} refused` : ''),
  );
  if (s.skippedIncidents > 0)
    lines.push(
      `skipped: ${s.skippedIncidents} incident folder(s) whose manifest was older than watch.ignore_older when first seen, not uploaded; vms-uplink retry INCIDENT-ID takes one in`,
    );
  if (s.pausedCameras.length > 0) {
    lines.push('', 'paused cameras (their videos wait until the camera is resumed):');
    for (const c of s.pausedCameras)
      lines.push(`  ${c.id}${c.name ? ` "${c.name}"` : ''} paused since ${c.since}: ${c.waiting} video(s) waiting`);
  }
  return lines;
}

/** Manifests that do not validate, and aborts still to make. */
export function footerLines(s: StatusOverview): string[] {
  const lines: string[] = [];
  if (s.invalidManifests.length > 0) {
    lines.push('', 'manifests that do not validate (fix them and they are read again):');
    for (const m of s.invalidManifests) for (const p of m.problems) lines.push(`  ${m.path}: ${p}`);
  }
  if (s.pendingAborts > 0) lines.push('', `${s.pendingAborts} remote upload(s) still to abort`);
  return lines;
}

/** Incidents as rows (bars or a table), then what each has to say beyond its rows. */
export function incidentLines(incidents: readonly IncidentStatus[], options: FormatOptions = {}): string[] {
  const rows = statusRows(incidents);
  const body = options.tty ? progressLines(rows, options.columns) : statusTable(rows);
  return [...(body.length > 0 ? ['', ...body] : []), ...incidents.flatMap(incidentDetails)];
}

/** Everything of a snapshot: the overview, every incident, the footer. */
export function formatStatus(s: StatusSnapshot, daemon?: DaemonReport, options: FormatOptions = {}): string {
  return [...overviewLines(s, daemon), ...incidentLines(s.incidents, options), ...footerLines(s)].join('\n');
}

/** The summary `status` prints by default: the totals, then the incidents that matter now. */
export function formatSummary(s: StatusSummary, daemon?: DaemonReport, options: FormatOptions = {}): string {
  const lines = [...overviewLines(s, daemon)];
  const configured = daemon?.daemon?.running ? daemon.daemon.targets : null;
  const removed = (target: string): boolean => configured !== null && !configured.includes(target);
  if (s.byTarget.length > 1 || s.byTarget.some((t) => removed(t.target))) {
    lines.push('', 'per target:');
    for (const t of s.byTarget) {
      const counts = `${t.uploading} uploading, ${t.queued} queued, ${t.done} done, ${t.failed} failed`;
      lines.push(
        removed(t.target)
          ? `  ${t.target}: stopped (target removed from the configuration; resumes if it returns): ${counts}`
          : `  ${t.target}: ${counts}`,
      );
    }
  }
  if (s.oldestWaiting) {
    const w = s.oldestWaiting;
    lines.push('', `oldest waiting export: ${w.videoId} of incident ${w.incidentId}, ${w.what} since ${w.since}`);
  }
  lines.push(...incidentLines(s.incidents, options), ...footerLines(s));
  if (s.incidentCount > s.incidents.length) {
    lines.push(
      '',
      `${s.incidents.length} of ${s.incidentCount} incidents shown (under way, latest failures, most recent); vms-uplink status --all lists every one`,
    );
  }
  return lines.join('\n');
}

function uploadNote(u: UploadStatus): string | null {
  const notes = [
    u.reusedFrom !== null ? `same content as upload #${u.reusedFrom}` : '',
    u.lastError ? `last error: ${u.lastError}` : '',
  ].filter(Boolean);
  if (notes.length === 0) return null;
  return `      upload #${u.id} to ${u.target}${u.role === 'thumbnail' ? ' (thumbnail)' : ''}: ${notes.join('; ')}`;
}

/** A video with uploads still to go whose camera is paused. */
function waitsForCamera(v: VideoStatus): boolean {
  return v.cameraPaused && v.uploads.some((u) => u.state === 'queued' || u.state === 'uploading');
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
  if (v.changedAfterUpload > 0)
    lines.push(`      changed after upload ${v.changedAfterUpload} time(s); last: ${v.changeNote ?? '(no detail)'}`);
  for (const u of v.uploads) {
    const note = uploadNote(u);
    if (note) lines.push(note);
  }
  if (lines.length === 0) return [];
  const camera = v.cameraName ?? v.cameraId;
  return [
    `  video ${v.id}${camera ? ` (${camera})` : ''}${v.file ? ` ${v.file}` : ''}: ${v.state}${waitsForCamera(v) ? ', its camera paused' : ''}`,
    ...lines,
  ];
}

const refusedLine = (error: string | null): string =>
  `FAILED: refused by the platform: ${error ?? '(no message)'} (sent again when the incident changes, or with vms-uplink retry)`;

function reportLine(r: ReportStatus): string {
  if (r.state === 'acknowledged') return `up to date (${r.ackedAt})`;
  if (r.state === 'refused') return refusedLine(r.lastError);
  return `pending${r.lastError ? ` — last error: ${r.lastError}` : ''}`;
}

/** What the rows cannot say: the folder, reports to the platforms, errors, notes, last errors. */
function incidentDetails(i: IncidentStatus): string[] {
  const lines = ['', `incident ${i.id}${i.title ? ` "${i.title}"` : ''}  (${i.folder})`];
  if (i.folderHandled)
    lines.push(`  folder ${i.folderHandled.action === 'move' ? 'moved' : 'removed'} after upload (${i.folderHandled.at})`);
  for (const r of i.reports) lines.push(`  report to ${r.target}: ${reportLine(r)}`);
  for (const v of i.videos) lines.push(...videoNotes(v));
  return lines;
}
