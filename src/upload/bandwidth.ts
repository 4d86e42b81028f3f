/**
 * `upload.bandwidth`: one token bucket shared by every upload, part and target, and the schedule
 * that sets its rate. Part bodies take tokens before they pass each chunk on (see part-body.ts),
 * so the limit applies to the bytes read into requests across all parts in flight.
 */
import { createTask, type ScheduledTask } from 'node-cron';
import type { BandwidthConfig, BandwidthEntry } from '../config/schema.js';
import { formatSize } from '../config/units.js';
import type { Logger } from '../log/logger.js';

/** The largest chunk a part body passes on at once under a limit: small chunks pace smoothly. */
export const PACE_CHUNK = 64 * 1024;
/** A waiter is told it is still alive at least this often (it keeps the stall watchdog quiet: stall timeouts are seconds). */
const MAX_WAIT_TICK_MS = 250;

interface Waiter {
  n: number;
  resolve: () => void;
  reject: (err: unknown) => void;
  touch?: () => void;
  signal?: AbortSignal;
  onAbort?: () => void;
}

/**
 * A token bucket in bytes. `rate` null = unlimited: `take` never waits. The burst is a quarter
 * second of the rate or 64 KiB, whichever is larger. Waiters are served first come, first served,
 * so parts in flight share the rate evenly.
 */
export class TokenBucket {
  private bytesPerSecond: number | null = null;
  private burst = PACE_CHUNK;
  private tokens = 0;
  private last = 0;
  private readonly queue: Waiter[] = [];
  private timer: NodeJS.Timeout | null = null;

  constructor(
    rate: number | null,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.setRate(rate);
  }

  /** Bytes per second in force; null = unlimited. */
  get rate(): number | null {
    return this.bytesPerSecond;
  }

  /** True when a caller may pass its bytes on without asking (no limit, nobody waiting). */
  get unlimited(): boolean {
    return this.bytesPerSecond === null && this.queue.length === 0;
  }

  /** Switches the limit at once; waiters in the queue are served at the new rate. */
  setRate(rate: number | null): void {
    const bytesPerSecond = rate === null || !Number.isFinite(rate) || rate <= 0 ? null : rate;
    if (bytesPerSecond === this.bytesPerSecond && this.last !== 0) return;
    this.refill();
    this.bytesPerSecond = bytesPerSecond;
    if (bytesPerSecond === null) {
      this.tokens = 0;
    } else {
      this.burst = Math.max(PACE_CHUNK, Math.floor(bytesPerSecond / 4));
      this.tokens = Math.min(this.tokens, this.burst);
    }
    this.last = this.now();
    this.pump();
  }

  /**
   * Resolves once `n` bytes may go out. `touch` is called at least every 250 ms while waiting
   * (waiting for tokens is progress, not a stall); an aborted `signal` gives the tokens back
   * by leaving the queue and rejects with its reason.
   */
  take(n: number, opts: { signal?: AbortSignal; touch?: () => void } = {}): Promise<void> {
    const { signal, touch } = opts;
    if (signal?.aborted) return Promise.reject(signal.reason as Error);
    if (this.bytesPerSecond === null && this.queue.length === 0) return Promise.resolve();
    this.refill();
    if (this.queue.length === 0 && this.tokens >= Math.min(n, this.burst)) {
      this.tokens -= n;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = { n, resolve, reject, touch, signal };
      if (signal) {
        waiter.onAbort = () => {
          const i = this.queue.indexOf(waiter);
          if (i >= 0) this.queue.splice(i, 1);
          reject(signal.reason as Error);
          this.pump();
        };
        signal.addEventListener('abort', waiter.onAbort, { once: true });
      }
      this.queue.push(waiter);
      this.pump();
    });
  }

  private refill(): void {
    const now = this.now();
    if (this.bytesPerSecond !== null) this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.bytesPerSecond);
    this.last = now;
  }

  /** Serves the queue as far as the tokens go, and sets a timer for the rest. */
  private pump(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.refill();
    for (let head = this.queue[0]; head; head = this.queue[0]) {
      // A chunk larger than the burst goes once the bucket is full, and leaves it in debt.
      if (this.bytesPerSecond !== null && this.tokens < Math.min(head.n, this.burst)) break;
      this.queue.shift();
      if (this.bytesPerSecond !== null) this.tokens -= head.n;
      if (head.onAbort) head.signal?.removeEventListener('abort', head.onAbort);
      head.resolve();
    }
    const head = this.queue[0];
    if (!head || this.bytesPerSecond === null) return;
    for (const w of this.queue) w.touch?.();
    const ms = Math.ceil(((Math.min(head.n, this.burst) - this.tokens) / this.bytesPerSecond) * 1000);
    this.timer = setTimeout(() => this.pump(), Math.max(1, Math.min(ms, MAX_WAIT_TICK_MS)));
  }
}

/** Local-time minute and hour of an instant (node-cron reads cron expressions in local time). */
function minuteStart(ms: number): number {
  const d = new Date(ms);
  d.setSeconds(0, 0);
  return d.getTime();
}

/** How far back `lastFireTime` looks: a year covers monthly and yearly entries too. */
const LOOKBACK_DAYS = 366;

/** Parsed once per expression: node-cron's own matcher plus the cheap fields used as a pre-filter. */
class CronTimes {
  private readonly task: ScheduledTask;
  private readonly seconds: number[];
  private readonly minutes: Set<number>;
  private readonly hours: Set<number>;

  constructor(readonly expression: string) {
    // A task that is never started: only its matcher is used.
    this.task = createTask(expression, () => undefined);
    const fields = expression.trim().split(/\s+/);
    const withSeconds = fields.length === 6;
    this.seconds = withSeconds ? expand(fields[0]!, 0, 59) : [0];
    this.minutes = new Set(expand(fields[withSeconds ? 1 : 0]!, 0, 59));
    this.hours = new Set(expand(fields[withSeconds ? 2 : 1]!, 0, 23));
    this.seconds.sort((a, b) => b - a);
  }

  matches(at: Date): boolean {
    return this.task.match(at);
  }

  /**
   * The most recent time at or before `now` (ms) at which this expression fired, or null when
   * it did not within `LOOKBACK_DAYS`. Steps back a minute at a time (local time, so DST is
   * handled by Date); only minutes whose hour and minute fit are checked by node-cron's matcher.
   */
  lastFire(now: number): number | null {
    const stop = now - LOOKBACK_DAYS * 86_400_000;
    for (let minute = minuteStart(now); minute > stop; minute = minuteStart(minute - 1)) {
      const d = new Date(minute);
      if (!this.hours.has(d.getHours()) || !this.minutes.has(d.getMinutes())) continue;
      const second = this.seconds.find((s) => minute + s * 1000 <= now);
      if (second === undefined) continue;
      const at = minute + second * 1000;
      if (this.matches(new Date(at))) return at;
    }
    return null;
  }
}

/**
 * The values one cron field allows, for the pre-filter only (node-cron's matcher decides):
 * `*`, `a`, `a-b`, `* /n`, `a-b/n`, lists. Anything else (names, L, #) allows every value.
 */
function expand(field: string, min: number, max: number): number[] {
  const out = new Set<number>();
  for (const item of field.split(',')) {
    const m = /^(\*|(\d+)(?:-(\d+))?)(?:\/(\d+))?$/.exec(item);
    if (!m) {
      for (let v = min; v <= max; v++) out.add(v);
      continue;
    }
    const from = m[1] === '*' ? min : Number(m[2]);
    const to = m[1] === '*' ? max : m[3] !== undefined ? Number(m[3]) : m[4] !== undefined ? max : from;
    const step = m[4] !== undefined ? Math.max(1, Number(m[4])) : 1;
    for (let v = from; v <= to; v += step) out.add(v);
  }
  return [...out];
}

/** Bytes per second in force, or null for unlimited. */
export interface LimitInForce {
  bytesPerSecond: number | null;
  /** The schedule entry it comes from (its index), null for a fixed limit or when none fired. */
  entry: number | null;
  /** When that entry last fired (ms), null as above. */
  since: number | null;
}

/**
 * The limit in force at `now`: that of the schedule entry whose time passed most recently (on a
 * tie, the one listed last). When no entry fired within the last year, the lowest limit of the
 * schedule applies (the safe side for a shared uplink).
 */
export function limitInForce(config: BandwidthConfig, now: number = Date.now()): LimitInForce {
  if (!Array.isArray(config)) return { bytesPerSecond: config, entry: null, since: null };
  return latestEntry(
    config,
    config.map((e) => new CronTimes(e.cron)),
    now,
  );
}

function latestEntry(entries: readonly BandwidthEntry[], times: CronTimes[], now: number): LimitInForce {
  let best: LimitInForce | null = null;
  times.forEach((t, i) => {
    const since = t.lastFire(now);
    if (since !== null && (best === null || since >= best.since!)) best = { bytesPerSecond: entries[i]!.limit, entry: i, since };
  });
  return best ?? { bytesPerSecond: lowest(entries), entry: null, since: null };
}

function lowest(entries: readonly BandwidthEntry[]): number | null {
  const limited = entries.map((e) => e.limit).filter((r): r is number => r !== null);
  return limited.length > 0 ? Math.min(...limited) : null;
}

export function describeRate(bytesPerSecond: number | null): string {
  return bytesPerSecond === null ? 'unlimited' : `${formatSize(bytesPerSecond)}/s`;
}

/** upload.bandwidth as the local API shows it: the limit in force, where it comes from, the schedule. */
export interface BandwidthState {
  /** Bytes per second in force now; null = unlimited. */
  bytesPerSecond: number | null;
  /** The schedule's entry in force (its index); null for a fixed limit, or when no entry fired within a year. */
  entry: number | null;
  /** When that entry last fired (ISO 8601); null as above. */
  since: string | null;
  /** The schedule's entries; null for a fixed limit. */
  schedule: Array<{ cron: string; bytesPerSecond: number | null }> | null;
}

/**
 * Keeps the bucket at the limit in force: sets it at start (also in the middle of a window) and
 * at every cron time of the schedule. Nothing is restarted: parts in flight carry on at the new rate.
 */
export class BandwidthSchedule {
  private readonly tasks: ScheduledTask[] = [];
  private current: LimitInForce = { bytesPerSecond: null, entry: null, since: null };

  constructor(
    private readonly config: BandwidthConfig,
    private readonly bucket: TokenBucket,
    private readonly log: Logger,
  ) {}

  start(now: number = Date.now()): void {
    const entries = this.config;
    if (!Array.isArray(entries)) {
      this.apply({ bytesPerSecond: entries, entry: null, since: null }, true);
      return;
    }
    const times = entries.map((e) => new CronTimes(e.cron));
    this.apply(latestEntry(entries, times, now), true);
    const quiet = {
      info: () => undefined,
      debug: () => undefined,
      warn: (m: string) => this.log.debug({ event: 'bandwidth.cron' }, m),
      error: (m: string | Error) => this.log.warn({ event: 'bandwidth.cron', err: m }, String(m)),
    };
    entries.forEach((entry, i) => {
      const task = createTask(
        entry.cron,
        (ctx) => {
          // Entries due at the same moment: the one listed last wins, whatever order they fire in.
          const at = new Date(Math.floor(ctx.date.getTime() / 1000) * 1000);
          const last = times.map((t, j) => (t.matches(at) ? j : -1)).reduce((a, b) => Math.max(a, b), i);
          this.apply({ bytesPerSecond: entries[last]!.limit, entry: last, since: at.getTime() });
        },
        { name: `bandwidth-${i}`, logger: quiet, suppressMissedWarning: true, unref: true },
      );
      void task.start();
      this.tasks.push(task);
    });
  }

  stop(): void {
    for (const t of this.tasks.splice(0)) void t.destroy();
  }

  /** The limit in force since the last start or cron time, and the schedule it comes from. */
  state(): BandwidthState {
    const { bytesPerSecond, entry, since } = this.current;
    return {
      bytesPerSecond,
      entry,
      since: since === null ? null : new Date(since).toISOString(),
      schedule: Array.isArray(this.config) ? this.config.map((e) => ({ cron: e.cron, bytesPerSecond: e.limit })) : null,
    };
  }

  private apply(limit: LimitInForce, starting = false): void {
    this.current = limit;
    const changed = limit.bytesPerSecond !== this.bucket.rate;
    this.bucket.setRate(limit.bytesPerSecond);
    if (changed || starting) {
      this.log.info(
        {
          event: 'bandwidth.limit',
          bytesPerSecond: limit.bytesPerSecond,
          entry: limit.entry,
          since: limit.since && new Date(limit.since).toISOString(),
        },
        `bandwidth limit ${describeRate(limit.bytesPerSecond)}${limit.entry !== null ? ` (upload.bandwidth[${limit.entry}])` : ''}`,
      );
    }
  }
}
