export interface FileStamp {
  size: number;
  mtimeMs: number;
}

interface Seen {
  size: number;
  mtimeMs: number;
  /** When the current size/mtime were first observed. */
  since: number;
}

/** Files watched at once at most: one entry per file waiting to settle, the oldest forgotten first. */
const MAX_TRACKED = 10_000;

/**
 * Decides when a file counts as completely written: its size and mtime have not changed for
 * `settleMs`. Pure bookkeeping; the caller stats the files and supplies the clock, which should be
 * monotonic (performance.now()) so that wall-clock jumps cannot settle a file early.
 *
 * On a local disk the file's own mtime says as much at the first look: a file last written longer
 * ago than `settleMs` has been still that long (a backlog present at start-up settles at once). On
 * a network mount mtimes come from another machine's clock, so there (`trustMtime` false) a file
 * settles only by being seen unchanged for `settleMs`.
 */
export class SettleTracker {
  private readonly seen = new Map<string, Seen>();

  constructor(
    private readonly settleMs: number,
    private readonly trustMtime = false,
    private readonly wallClock: () => number = Date.now,
  ) {
    if (!Number.isFinite(settleMs) || settleMs < 0) {
      throw new RangeError(`settleMs must be a finite number >= 0, got ${String(settleMs)}`);
    }
  }

  observe(key: string, stamp: FileStamp, nowMs: number): 'settled' | 'changing' {
    if (this.trustMtime) {
      const age = this.wallClock() - stamp.mtimeMs;
      // A future mtime (a clock set back) proves nothing: the file is watched instead.
      if (age >= this.settleMs && age >= 0) {
        this.seen.delete(key);
        return 'settled';
      }
    }
    const previous = this.seen.get(key);
    // Object.is so that a NaN mtime (odd filesystems) compares equal to itself instead of never settling.
    const changed = previous === undefined || !Object.is(previous.size, stamp.size) || !Object.is(previous.mtimeMs, stamp.mtimeMs);
    // A clock that runs backwards restarts the wait rather than trusting a negative or huge interval.
    if (changed || nowMs < previous.since) {
      this.seen.delete(key);
      this.seen.set(key, { size: stamp.size, mtimeMs: stamp.mtimeMs, since: nowMs });
      if (this.seen.size > MAX_TRACKED) this.seen.delete(this.seen.keys().next().value!);
      return 'changing';
    }
    return nowMs - previous.since >= this.settleMs ? 'settled' : 'changing';
  }

  forget(key: string): void {
    this.seen.delete(key);
  }
}
