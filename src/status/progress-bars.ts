/**
 * `status` on a terminal: per incident, one line per upload, each uploading one a progress bar
 * (bar, percent, bytes done / total, rate, ETA), every line cut to the terminal's width so
 * nothing wraps.
 */
import type { StatusRow } from './status-rows.js';
import { heldByPausedCamera, rowState, videoLabel } from './status-rows.js';
import { formatBytes, formatDuration, formatRate, percentDone } from './units.js';

const INDENT = '  ';
const GAP = '  ';
/** Narrower than this and the bar says nothing: it is left out and the figures stay. */
const MIN_BAR = 5;
/** Labels are cut (with …) to no fewer characters than this. */
const MIN_LABEL = 8;
/** What a terminal too narrow to say (or one that does not say) is taken to be. */
const MIN_COLUMNS = 20;
const FILLED = '#';
const EMPTY = '.';

/** Cuts a line to `width` characters, marking the cut. */
export function fitWidth(line: string, width: number): string {
  return line.length <= width ? line : `${line.slice(0, Math.max(0, width - 1))}…`;
}

export function bar(fraction: number, width: number): string {
  const filled = Math.round(Math.min(1, Math.max(0, fraction)) * width);
  return `[${FILLED.repeat(filled)}${EMPTY.repeat(width - filled)}]`;
}

function rowLabel(row: StatusRow): string {
  return row.upload ? `${videoLabel(row)} → ${row.upload.target}` : videoLabel(row);
}

/** The figures after a bar, as columns: percent, bytes done / total, rate (or why it waits), ETA. */
function barFigures(row: StatusRow): string[] {
  const u = row.upload!;
  const figures = [`${percentDone(u)}%`, `${formatBytes(u.bytesDone)} / ${formatBytes(u.bytesTotal)}`];
  if (heldByPausedCamera(row)) return [...figures, 'camera paused', ''];
  return [...figures, formatRate(u.rateBytesPerSecond), `ETA ${formatDuration(u.etaSeconds)}`];
}

/** Each bar row's figures padded to the widest of their column, so the bars end in one place. */
function alignedFigures(rows: StatusRow[]): Map<StatusRow, string> {
  const figures = rows.map(barFigures);
  const widths = [0, 1, 2, 3].map((i) => Math.max(0, ...figures.map((f) => f[i]!.length)));
  return new Map(
    rows.map((r, n) => [
      r,
      figures[n]!.map((f, i) => (i === 3 ? f.padEnd(widths[i]!) : f.padStart(widths[i]!)))
        .join(GAP)
        .trimEnd(),
    ]),
  );
}

function barLine(label: string, row: StatusRow, figures: string, width: number): string {
  const u = row.upload!;
  const room = width - INDENT.length - label.length - GAP.length * 2 - 2 - figures.length;
  const fraction = u.bytesTotal > 0 ? u.bytesDone / u.bytesTotal : 0;
  const drawn = room >= MIN_BAR ? `${bar(fraction, room)}${GAP}` : '';
  return `${INDENT}${label}${GAP}${drawn}${figures}`;
}

/** A row that is not moving: its state, its size, and for a failure the platform's message. */
function stateLine(label: string, row: StatusRow): string {
  const u = row.upload;
  const size = u ? `${GAP}${formatBytes(u.bytesTotal)}` : '';
  const error = u?.state === 'failed' && u.lastError ? `: ${u.lastError}` : '';
  const state = heldByPausedCamera(row) ? 'waiting: camera paused' : rowState(row);
  return `${INDENT}${label}${GAP}${state}${error}${u?.state === 'failed' ? '' : size}`;
}

/**
 * How wide the labels (`video → target`) may be: as wide as the longest, but at most a third of
 * the terminal, and narrower still (down to MIN_LABEL) when the figures and a short bar need the room;
 * the figures matter most, then the bar, then the whole label.
 */
function labelWidth(labels: string[], figuresWidth: number, width: number): number {
  const longest = Math.max(0, ...labels.map((l) => l.length));
  const besideBar = width - INDENT.length - GAP.length * 2 - 2 - 2 * MIN_BAR - figuresWidth;
  return Math.min(longest, Math.max(MIN_LABEL, Math.min(Math.floor(width / 3), besideBar)));
}

export function progressLines(rows: StatusRow[], columns: number | undefined): string[] {
  const width = Math.max(MIN_COLUMNS, columns || 80);
  const labels = new Map(rows.map((r) => [r, rowLabel(r)]));
  const bars = alignedFigures(rows.filter((r) => r.upload?.state === 'uploading'));
  const labelCells = labelWidth([...labels.values()], Math.max(0, ...[...bars.values()].map((f) => f.length)), width);
  const lines: string[] = [];
  let incident: string | null = null;
  for (const row of rows) {
    if (row.incident.id !== incident) {
      incident = row.incident.id;
      lines.push(fitWidth(`incident ${row.incident.id}${row.incident.title ? ` "${row.incident.title}"` : ''}`, width));
    }
    const label = fitWidth(labels.get(row)!, labelCells).padEnd(labelCells);
    const figures = bars.get(row);
    lines.push(fitWidth(figures !== undefined ? barLine(label, row, figures, width) : stateLine(label, row), width));
  }
  return lines;
}
