/** Small helpers shared by the bench modes: units, medians, tables, log times. */
import type { LogLine } from '../test/support/daemon-process.js';
import { MiB } from '../test/support/files.js';

export { MiB };
export const GiB = 1024 * MiB;
/** Memory is printed in MB of 10^6 bytes, as the README's Performance section does. */
export const MB = 1_000_000;

/** A failure the bench explains itself: printed without a stack. */
export class BenchFailure extends Error {}

export function human(bytes: number): string {
  if (bytes >= GiB) return `${(bytes / GiB).toFixed(2)} GiB`;
  if (bytes >= MiB) return `${(bytes / MiB).toFixed(1)} MiB`;
  if (bytes >= 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${bytes} B`;
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Rows as aligned columns; `aligns` has an `l` or `r` per column (default: names left, figures right). */
export function table(rows: string[][], aligns = `l${'r'.repeat(rows[0]!.length - 1)}`): string {
  const widths = rows[0]!.map((_, col) => Math.max(...rows.map((r) => (r[col] ?? '').length)));
  return rows
    .map((r) =>
      r
        .map((cell, col) => (aligns[col] === 'r' ? cell.padStart(widths[col]!) : cell.padEnd(widths[col]!)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Epoch milliseconds of a daemon log line (pino writes ISO times). */
export function timeOf(line: LogLine | undefined): number | undefined {
  const time = line?.['time'];
  return typeof time === 'string' ? Date.parse(time) : typeof time === 'number' ? time : undefined;
}
