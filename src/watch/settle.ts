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

/**
 * Decides when a file counts as completely written: its size and mtime have not changed for
 * `settleMs`. Pure bookkeeping; the caller stats the files and supplies the clock, which should be
 * monotonic (performance.now()) so that wall-clock jumps cannot settle a file early.
 */
export class SettleTracker {
  private readonly seen = new Map<string, Seen>();

  constructor(private readonly settleMs: number) {
    if (!Number.isFinite(settleMs) || settleMs < 0) {
      throw new RangeError(`settleMs must be a finite number >= 0, got ${String(settleMs)}`);
    }
  }

  observe(key: string, stamp: FileStamp, nowMs: number): 'settled' | 'changing' {
    const previous = this.seen.get(key);
    // Object.is so that a NaN mtime (odd filesystems) compares equal to itself instead of never settling.
    const changed =
      previous === undefined || !Object.is(previous.size, stamp.size) || !Object.is(previous.mtimeMs, stamp.mtimeMs);
    // A clock that runs backwards restarts the wait rather than trusting a negative or huge interval.
    if (changed || nowMs < previous.since) {
      this.seen.set(key, { size: stamp.size, mtimeMs: stamp.mtimeMs, since: nowMs });
      return 'changing';
    }
    return nowMs - previous.since >= this.settleMs ? 'settled' : 'changing';
  }

  forget(key: string): void {
    this.seen.delete(key);
  }
}
