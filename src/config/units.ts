// Human-friendly sizes, rates and durations as written in the YAML configuration.
// Every parser throws an Error whose message quotes the input and lists what is accepted,
// so the configuration loader can put it next to the offending key unchanged.

const SIZE_UNITS: Readonly<Record<string, number>> = {
  B: 1,
  KiB: 1024,
  MiB: 1024 ** 2,
  GiB: 1024 ** 3,
  TiB: 1024 ** 4,
  KB: 1000,
  kB: 1000,
  MB: 1000 ** 2,
  GB: 1000 ** 3,
  TB: 1000 ** 4,
};

// Network people think in bits per second; accepted in rates only, powers of ten.
const BIT_RATE_UNITS: Readonly<Record<string, number>> = {
  kbit: 1000 / 8,
  Kbit: 1000 / 8,
  Mbit: 1000 ** 2 / 8,
  Gbit: 1000 ** 3 / 8,
};

const DURATION_UNITS: Readonly<Record<string, number>> = {
  ms: 0.001,
  s: 1,
  m: 60,
  h: 3600,
  d: 86400,
  w: 7 * 86400,
};

const NUMBER = String.raw`(?:\d+(?:\.\d*)?|\.\d+)`;
const SIZE_RE = new RegExp(String.raw`^(${NUMBER})\s*([A-Za-z]*)$`);
const DURATION_TERM_RE = new RegExp(String.raw`(${NUMBER})\s*(ms|s|m|h|d|w)\s*`, 'y');
const SIZE_HELP = 'a number of bytes or a number with a unit (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB), e.g. 16MiB';
const RATE_HELP = 'a size per second such as 4MiB/s or 100Mbit/s, a number of bytes per second, or unlimited';
const DURATION_HELP = 'a number of seconds or a duration such as 500ms, 30s, 15m, 2h, 7d or 1h30m';

function quote(v: unknown): string {
  return typeof v === 'string' ? JSON.stringify(v) : String(v);
}

function checkedInteger(n: number, input: unknown, what: string): number {
  const rounded = Math.round(n);
  if (!Number.isSafeInteger(rounded)) throw new Error(`${what} ${quote(input)} is too large`);
  return rounded;
}

/** A size in bytes. Integers are bytes; strings may carry a binary (KiB) or decimal (KB) unit. */
export function parseSize(v: string | number): number {
  if (typeof v === 'number') {
    if (!Number.isFinite(v) || v < 0) throw new Error(`invalid size ${quote(v)}: must not be negative`);
    if (!Number.isInteger(v)) throw new Error(`invalid size ${quote(v)}: a number of bytes must be a whole number`);
    return checkedInteger(v, v, 'size');
  }
  if (typeof v !== 'string') throw new Error(`invalid size ${quote(v)}: expected ${SIZE_HELP}`);
  const m = SIZE_RE.exec(v.trim());
  const unit = m?.[2] ?? '';
  const multiplier = unit === '' ? 1 : SIZE_UNITS[unit];
  if (!m || multiplier === undefined) {
    if (/^\s*-/.test(v)) throw new Error(`invalid size ${quote(v)}: must not be negative`);
    throw new Error(`invalid size ${quote(v)}: expected ${SIZE_HELP}`);
  }
  const n = Number(m[1]);
  if (multiplier === 1 && !Number.isInteger(n)) {
    throw new Error(`invalid size ${quote(v)}: a number of bytes must be a whole number`);
  }
  return checkedInteger(n * multiplier, v, 'size');
}

/**
 * A bandwidth limit in bytes per second; `null` means unlimited.
 * The `/s` suffix is optional (`4MiB` reads as `4MiB/s`); a limit of zero is refused
 * because it would stop every upload forever (pause a camera through the API instead).
 */
export function parseRate(v: string | number): number | null {
  let bytesPerSecond: number;
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new Error(`invalid rate ${quote(v)}: expected ${RATE_HELP}`);
    bytesPerSecond = v;
  } else if (typeof v === 'string') {
    const text = v.trim();
    if (text.toLowerCase() === 'unlimited') return null;
    const body = text.replace(/\s*\/\s*s$/, '');
    const bits = new RegExp(String.raw`^(${NUMBER})\s*([A-Za-z]+)$`).exec(body);
    const bitUnit = bits?.[2] !== undefined ? BIT_RATE_UNITS[bits[2]] : undefined;
    if (bits && bitUnit !== undefined) {
      bytesPerSecond = Number(bits[1]) * bitUnit;
    } else {
      try {
        bytesPerSecond = parseSize(body);
      } catch {
        throw new Error(`invalid rate ${quote(v)}: expected ${RATE_HELP}`);
      }
    }
  } else {
    throw new Error(`invalid rate ${quote(v)}: expected ${RATE_HELP}`);
  }
  if (bytesPerSecond <= 0) {
    throw new Error(`invalid rate ${quote(v)}: must be greater than 0 (write unlimited for no limit)`);
  }
  // A positive limit below one byte per second still means "throttle", never "unlimited".
  return Math.max(1, checkedInteger(bytesPerSecond, v, 'rate'));
}

/** A duration in SECONDS (fractions allowed). Bare numbers are seconds; units may be combined (`1h30m`). */
export function parseDuration(v: string | number): number {
  if (typeof v === 'number') {
    if (!Number.isFinite(v) || v < 0) throw new Error(`invalid duration ${quote(v)}: must be a number of seconds, not negative`);
    return v;
  }
  if (typeof v !== 'string') throw new Error(`invalid duration ${quote(v)}: expected ${DURATION_HELP}`);
  const text = v.trim();
  if (new RegExp(`^${NUMBER}$`).test(text)) return Number(text);
  if (text.startsWith('-')) throw new Error(`invalid duration ${quote(v)}: must not be negative`);
  let seconds = 0;
  let pos = 0;
  while (pos < text.length) {
    DURATION_TERM_RE.lastIndex = pos;
    const m = DURATION_TERM_RE.exec(text);
    if (!m || m[0] === '') throw new Error(`invalid duration ${quote(v)}: expected ${DURATION_HELP}`);
    seconds += Number(m[1]) * (DURATION_UNITS[m[2] ?? ''] ?? Number.NaN);
    pos = DURATION_TERM_RE.lastIndex;
  }
  if (text === '' || !Number.isFinite(seconds)) throw new Error(`invalid duration ${quote(v)}: expected ${DURATION_HELP}`);
  // 0.1 + 0.2 style noise would show up in check-config output; milliseconds are the finest unit.
  return Math.round(seconds * 1000) / 1000;
}

/** Inverse of parseSize for messages and check-config: the largest binary unit that divides exactly. */
export function formatSize(bytes: number): string {
  for (const unit of ['TiB', 'GiB', 'MiB', 'KiB'] as const) {
    const m = SIZE_UNITS[unit] ?? 1;
    if (bytes >= m && bytes % m === 0) return `${bytes / m}${unit}`;
  }
  return `${bytes}B`;
}

/**
 * Inverse of parseDuration for messages: the largest of d, h, m, s, ms that divides exactly
 * (`30d`, `12h`, `90m`), as an operator would have written it.
 */
export function formatDuration(seconds: number): string {
  const ms = Math.round(seconds * 1000);
  for (const [unit, size] of [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
