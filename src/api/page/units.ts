/**
 * How sizes, rates, percentages and durations are written, by the status page and by
 * `vms-uplink status` alike (src/status/units.ts re-exports these): both say the same thing the
 * same way. No DOM and no Node here: this module runs in the browser and in the daemon.
 */

/** Binary units with one decimal (`12.0 MiB`), whole bytes below 1 KiB. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${Math.round(n)} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

export function formatRate(bytesPerSecond: number): string {
  return `${formatBytes(bytesPerSecond)}/s`;
}

/** `1:05` under an hour, `1:02:03` above; `--` when unknown. */
export function formatDuration(seconds: number | null): string {
  if (seconds === null || !Number.isFinite(seconds)) return '--';
  const s = Math.max(0, Math.ceil(seconds));
  const two = (n: number): string => String(n).padStart(2, '0');
  const [h, m, sec] = [Math.floor(s / 3600), Math.floor((s % 3600) / 60), s % 60];
  return h > 0 ? `${h}:${two(m)}:${two(sec)}` : `${m}:${two(sec)}`;
}

/** Whole percent done, rounded down so 100 means finished; an empty file is 100 once done, else 0. */
export function percentDone(u: { state: string; bytesDone: number; bytesTotal: number }): number {
  if (u.bytesTotal <= 0) return u.state === 'done' ? 100 : 0;
  return Math.min(100, Math.floor((100 * u.bytesDone) / u.bytesTotal));
}
