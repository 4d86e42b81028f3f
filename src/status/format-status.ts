/**
 * `vms-uplink status` as text: one block per incident, one line per video and target.
 */
import type { StatusSnapshot, UploadStatus } from '../ledger/status-snapshot.js';
import type { DaemonReport } from './daemon-status.js';

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

function uploadLine(u: UploadStatus): string {
  const pct = u.bytesTotal > 0 ? Math.floor((100 * u.bytesDone) / u.bytesTotal) : u.state === 'done' ? 100 : 0;
  const progress = `${bytes(u.bytesDone)} / ${bytes(u.bytesTotal)} (${pct}%)`;
  const extra = [u.reusedFrom !== null ? `same content as upload #${u.reusedFrom}` : '', u.lastError ? `last error: ${u.lastError}` : '']
    .filter(Boolean)
    .join('; ');
  return `      ${u.target}${u.role === 'thumbnail' ? ' (thumbnail)' : ''}: ${u.state} ${progress} [upload #${u.id}]${extra ? ` — ${extra}` : ''}`;
}

export function formatStatus(s: StatusSnapshot, daemon?: DaemonReport): string {
  const t = s.totals;
  const lines: string[] = [];
  for (const p of daemon?.problems ?? []) lines.push(`PROBLEM (${p.kind}, since ${p.since}): ${p.message}`);
  if (daemon?.daemon) lines.push(`daemon: ${daemon.daemon.running ? `running (pid ${daemon.daemon.pid}, since ${daemon.daemon.startedAt})` : 'not running'}`);
  lines.push(
    `uploads: ${t.uploading} uploading, ${t.queued} queued, ${t.done} done, ${t.failed} failed; videos: ${t.waiting} waiting for files, ${t.failedVideos} failed`,
  );
  for (const i of s.incidents) {
    lines.push('', `incident ${i.id}${i.title ? ` "${i.title}"` : ''}  (${i.folder})`);
    if (i.folderHandled) lines.push(`  folder ${i.folderHandled.action === 'move' ? 'moved' : 'removed'} after upload (${i.folderHandled.at})`);
    for (const r of i.reports) {
      lines.push(`  report to ${r.target}: ${r.upToDate ? `up to date (${r.ackedAt})` : `pending${r.lastError ? ` — last error: ${r.lastError}` : ''}`}`);
    }
    for (const v of i.videos) {
      lines.push(`  video ${v.id}${v.cameraName ? ` (${v.cameraName})` : ''}${v.file ? ` ${v.file}` : ''}: ${v.state}`);
      for (const e of v.errors) lines.push(`      error: ${e}`);
      for (const n of v.notes) lines.push(`      note: ${n}`);
      if (v.filesHandled) {
        const what = { delete: 'deleted after upload', move: 'moved after upload', retention: 'deleted by retention' }[v.filesHandled.action];
        lines.push(`      files ${what} (${v.filesHandled.at})`);
      }
      if (v.restarts > 0) lines.push(`      restarted ${v.restarts} time(s): the file changed after it was hashed`);
      for (const u of v.uploads) lines.push(uploadLine(u));
    }
  }
  if (s.invalidManifests.length > 0) {
    lines.push('', 'manifests that do not validate (fix them and they are read again):');
    for (const m of s.invalidManifests) for (const p of m.problems) lines.push(`  ${m.path}: ${p}`);
  }
  if (s.pendingAborts > 0) lines.push('', `${s.pendingAborts} remote upload(s) still to abort`);
  return lines.join('\n');
}
