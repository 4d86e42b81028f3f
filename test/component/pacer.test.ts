/**
 * The pacer, the one place that waits and retries: what it waits between tries (capped
 * exponential backoff with full jitter, never sooner than a Retry-After), what it never retries,
 * and that the shutdown signal (or a drain's) ends a wait at once. Its real sleep runs on vitest's fake timers
 * here (nothing networked is involved), so waits of minutes take no time.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { TargetError, type ErrorKind } from '../../src/targets/target.js';
import { Pacer } from '../../src/upload/pacer.js';
import { recordingSleep } from './fixtures.js';

const POLICY = { initialMs: 1000, maxMs: 30_000 };

/** An operation that fails with these errors in turn, then answers 'ok'. */
function failing(...errors: Error[]): { op: () => Promise<string>; calls: () => number } {
  let calls = 0;
  return {
    op: async () => {
      const err = errors[calls++];
      if (err) throw err;
      return 'ok';
    },
    calls: () => calls,
  };
}

const err = (kind: ErrorKind, retryAfterMs?: number): TargetError =>
  new TargetError(kind, `${kind} failure`, retryAfterMs === undefined ? {} : { retryAfterMs });

describe('Pacer backoff', () => {
  it('doubles the ceiling with each failure in a row up to the cap, jittered across all of it', async () => {
    const { sleep, waits } = recordingSleep();
    // The jitter at its top: each wait is the ceiling itself.
    const top = new Pacer(POLICY, { random: () => 0.999999, sleep });
    const retryable = Array.from({ length: 8 }, () => err('retryable'));
    const { op, calls } = failing(...retryable);
    await expect(top.run(op, { signal: new AbortController().signal })).resolves.toBe('ok');
    expect(calls()).toBe(9);
    expect(waits).toEqual([1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]);

    // Full jitter: the wait is the random share of the ceiling…
    expect(new Pacer(POLICY, { random: () => 0.25 }).backoff(3)).toBe(2000);
    expect(new Pacer(POLICY, { random: () => 0.5 }).backoff(20)).toBe(15_000);
    // …but never less than half the first delay (no retry storm at 0 ms).
    expect(new Pacer(POLICY, { random: () => 0 }).backoff(5)).toBe(500);
    // Over many draws the waits of one step spread over the whole range, not a fixed value.
    const spread = new Set(Array.from({ length: 50 }, () => new Pacer(POLICY).backoff(4)));
    expect(spread.size).toBeGreaterThan(10);
    expect(Math.max(...spread)).toBeLessThanOrEqual(16_000);
    expect(Math.min(...spread)).toBeGreaterThanOrEqual(500);
  });

  it('waits at least what Retry-After says, and the backoff when that is longer', async () => {
    const { sleep, waits } = recordingSleep();
    const pacer = new Pacer(POLICY, { random: () => 0.999999, sleep });
    const { op } = failing(err('retryable', 7000), err('retryable', 7000), err('retryable', 7000), err('retryable', 7000));
    await pacer.run(op, { signal: new AbortController().signal });
    // Backoff 1 s, 2 s, 4 s are shorter than the 7 s asked for; 8 s is longer.
    expect(waits).toEqual([7000, 7000, 7000, 8000]);
    // Scheduling callers (reports, aborts) get the same answer.
    expect(pacer.delayAfter(err('retryable', 45_000), 0)).toBe(45_000);
  });

  it('never retries a permanent error, nor one that is not about the platform', async () => {
    const { sleep, waits } = recordingSleep();
    const pacer = new Pacer(POLICY, { sleep });
    const permanent = err('permanent');
    const errors: unknown[] = [];
    const first = failing(permanent);
    await expect(pacer.run(first.op, { signal: new AbortController().signal, onError: (e) => errors.push(e) })).rejects.toBe(permanent);
    expect(first.calls()).toBe(1);
    expect(errors).toEqual([permanent]);

    const bug = new TypeError('a bug');
    const second = failing(bug);
    await expect(pacer.run(second.op, { signal: new AbortController().signal })).rejects.toBe(bug);
    expect(second.calls()).toBe(1);
    expect(waits).toEqual([]);
    expect(pacer.delayAfter(permanent, 0)).toBeNull();
    expect(pacer.delayAfter(bug, 0)).toBeNull();
  });

  it('renews a refused URL at once twice, then backs off, and gives up after five fresh URLs', async () => {
    const { sleep, waits } = recordingSleep();
    const pacer = new Pacer(POLICY, { random: () => 0.999999, sleep });
    const { op, calls } = failing(...Array.from({ length: 6 }, () => err('new-url')));
    await expect(pacer.run(op, { signal: new AbortController().signal })).rejects.toMatchObject({
      kind: 'permanent',
      message: expect.stringContaining('still refused after 5 fresh URLs'),
    });
    expect(calls()).toBe(6);
    expect(waits).toEqual([0, 0, 1000, 2000, 4000]);
  });

  it('tries a configuration problem (an untrusted certificate) again only at the longest delay, and never gives it up', async () => {
    const { sleep, waits } = recordingSleep();
    const pacer = new Pacer(POLICY, { random: () => 0, sleep });
    const errors: unknown[] = [];
    const { op, calls } = failing(...Array.from({ length: 12 }, () => err('configuration', 500)));
    await expect(pacer.run(op, { signal: new AbortController().signal, onError: (e) => errors.push(e) })).resolves.toBe('ok');
    expect(calls()).toBe(13);
    // Each failure is told (status shows it), and each wait is the cap, whatever the jitter or a Retry-After.
    expect(errors).toHaveLength(12);
    expect(waits).toEqual(Array.from({ length: 12 }, () => POLICY.maxMs));
    expect(pacer.delayAfter(err('configuration'), 0)).toBe(POLICY.maxMs);
  });
});

describe('Pacer waits on the real timer', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('tries again exactly when Retry-After has passed', async () => {
    const pacer = new Pacer(POLICY, { random: () => 0 });
    const { op, calls } = failing(err('retryable', 60_000));
    const run = pacer.run(op, { signal: new AbortController().signal });
    await vi.advanceTimersByTimeAsync(59_999);
    expect(calls()).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    await expect(run).resolves.toBe('ok');
    expect(calls()).toBe(2);
  });

  it('ends a wait at once when the shutdown signal comes, with its reason, leaving no timer behind', async () => {
    const pacer = new Pacer(POLICY);
    const { op, calls } = failing(err('retryable', 3600_000));
    const stop = new AbortController();
    const retries: number[] = [];
    const run = pacer.run(op, { signal: stop.signal, onRetry: (_e, _k, delay) => retries.push(delay) });
    const outcome = run.then(
      () => 'resolved',
      (e: unknown) => e,
    );
    await vi.advanceTimersByTimeAsync(1000);
    expect(retries).toEqual([3600_000]);
    expect(vi.getTimerCount()).toBe(1);
    const reason = new Error('shutting down');
    stop.abort(reason);
    // No time passes: the wait ends on the abort itself.
    expect(await outcome).toBe(reason);
    expect(calls()).toBe(1);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('a drain (retryUntil) ends a wait and tries nothing again, but never cuts the attempt in progress', async () => {
    const pacer = new Pacer(POLICY);
    const drain = new AbortController();
    const reason = new Error('draining');
    // Backing off when the drain begins: the wait ends at once, the operation is not called again.
    const backingOff = failing(err('retryable', 3600_000));
    const first = pacer.run(backingOff.op, { signal: new AbortController().signal, retryUntil: drain.signal }).catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(1000);
    // In the middle of an attempt when the drain begins: the attempt finishes and its answer counts.
    let answer: (v: string) => void = () => undefined;
    const inFlight = pacer.run(() => new Promise<string>((r) => (answer = r)), {
      signal: new AbortController().signal,
      retryUntil: drain.signal,
    });
    drain.abort(reason);
    expect(await first).toBe(reason);
    expect(backingOff.calls()).toBe(1);
    answer('acknowledged');
    await expect(inFlight).resolves.toBe('acknowledged');
    // An attempt that fails once the drain has begun is not tried again.
    const late = failing(err('retryable'));
    await expect(pacer.run(late.op, { signal: new AbortController().signal, retryUntil: drain.signal })).rejects.toBe(reason);
    expect(late.calls()).toBe(1);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('polls a platform that is still working after the delay it asks for, without counting a failure', async () => {
    const pacer = new Pacer(POLICY, { random: () => 0.999999 });
    const errors: unknown[] = [];
    const { op, calls } = failing(err('not-ready', 250), err('not-ready', 250), err('retryable'));
    const run = pacer.run(op, { signal: new AbortController().signal, onError: (e) => errors.push(e) });
    await vi.advanceTimersByTimeAsync(500);
    expect(calls()).toBe(3);
    // The retryable failure after two polls backs off from the first step (1 s), not the third.
    await vi.advanceTimersByTimeAsync(999);
    expect(calls()).toBe(3);
    await vi.advanceTimersByTimeAsync(1);
    await expect(run).resolves.toBe('ok');
    expect(errors).toHaveLength(1);
  });
});
