/**
 * `status` for pipes, files and cron mail: a plain table, one row per upload, columns aligned
 * with spaces, full ids (they are what `retry` takes and what grep finds), no width limit.
 */
import type { StatusRow } from './status-rows.js';
import { rowState, videoLabel } from './status-rows.js';
import { formatBytes, formatDuration, formatRate, percentDone } from './units.js';

interface Column {
  title: string;
  /** Numbers are right-aligned so their digits line up. */
  right?: boolean;
  cell(row: StatusRow): string;
}

const NONE = '-';

const COLUMNS: Column[] = [
  { title: 'INCIDENT', cell: (r) => r.incident.id },
  { title: 'VIDEO', cell: (r) => videoLabel(r) },
  { title: 'CAMERA', cell: (r) => r.video.cameraName ?? r.video.cameraId ?? NONE },
  { title: 'TARGET', cell: (r) => r.upload?.target ?? NONE },
  { title: 'STATE', cell: (r) => rowState(r) },
  { title: 'DONE', right: true, cell: (r) => (r.upload ? formatBytes(r.upload.bytesDone) : NONE) },
  { title: 'TOTAL', right: true, cell: (r) => (r.upload ? formatBytes(r.upload.bytesTotal) : NONE) },
  { title: '%', right: true, cell: (r) => (r.upload ? `${percentDone(r.upload)}%` : NONE) },
  { title: 'RATE', right: true, cell: (r) => (r.upload?.state === 'uploading' ? formatRate(r.upload.rateBytesPerSecond) : NONE) },
  { title: 'ETA', right: true, cell: (r) => (r.upload?.state === 'uploading' ? formatDuration(r.upload.etaSeconds) : NONE) },
  // The number `retry` takes.
  { title: 'UPLOAD', cell: (r) => (r.upload ? `#${r.upload.id}` : NONE) },
];

export function statusTable(rows: StatusRow[]): string[] {
  if (rows.length === 0) return [];
  const cells = rows.map((r) => COLUMNS.map((c) => c.cell(r)));
  const widths = COLUMNS.map((c, i) => Math.max(c.title.length, ...cells.map((row) => row[i]!.length)));
  const line = (values: string[]): string =>
    values
      .map((v, i) => (COLUMNS[i]!.right ? v.padStart(widths[i]!) : v.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(COLUMNS.map((c) => c.title)), ...cells.map(line)];
}
