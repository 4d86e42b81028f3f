/**
 * Where the stages that measure time read it: wall-clock time for what is compared with the
 * ledger's timestamps and files' mtimes, monotonic time for how long something stayed the same.
 * The daemon uses the system's clocks; a test passes its own to step time without waiting.
 */
export interface Clock {
  /** Wall-clock time, ms since the epoch (Date.now()). */
  now(): number;
  /** Monotonic time, ms from an arbitrary origin (performance.now()): wall-clock jumps do not move it. */
  monotonic(): number;
}

export const systemClock: Clock = Object.freeze({
  now: () => Date.now(),
  monotonic: () => performance.now(),
});
