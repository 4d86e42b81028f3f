/**
 * upload.bandwidth: the limit in force for a schedule (the most recent entry whose time passed,
 * also right after a start mid-window), the shared token bucket's rate and rate switches, and
 * a throttled part body that the stall watchdog leaves alone; rates on a fake clock, exact.
 */
import { lstat, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { BandwidthConfig } from '../../src/config/schema.js';
import { createLogger } from '../../src/log/logger.js';
import { stampOf } from '../../src/plan/file-stamp.js';
import { BandwidthSchedule, limitInForce, TokenBucket } from '../../src/upload/bandwidth.js';
import { openPart, StallWatchdog } from '../../src/upload/part-body.js';

const KiB = 1024;
const MiB = 1024 * KiB;

const schedule = (...entries: Array<[cron: string, bytesPerSecond: number | null]>): BandwidthConfig =>
  entries.map(([cron, limit]) => ({ cron, limit }));
/** Local time, as node-cron reads cron expressions. 2026-03-02 is a Monday. */
const at = (day: number, hour: number, minute = 0, second = 0): number => new Date(2026, 2, day, hour, minute, second).getTime();
const MON = 2,
  WED = 4,
  FRI = 6,
  SAT = 7,
  SUN = 8,
  NEXT_MON = 9;

describe('the limit in force for a schedule', () => {
  const businessHours = schedule(['0 8 * * 1-5', 1 * MiB], ['0 18 * * 1-5', null]);

  it('is the fixed limit, or unlimited', () => {
    expect(limitInForce(4 * MiB).bytesPerSecond).toBe(4 * MiB);
    expect(limitInForce(null).bytesPerSecond).toBeNull();
  });

  it('is the entry whose time passed most recently, for a start in the middle of a window', () => {
    const noon = limitInForce(businessHours, at(WED, 12, 34, 56));
    expect(noon).toEqual({ bytesPerSecond: 1 * MiB, entry: 0, since: at(WED, 8) });
    expect(limitInForce(businessHours, at(WED, 20, 5))).toEqual({ bytesPerSecond: null, entry: 1, since: at(WED, 18) });
    // Before 08:00 on a Wednesday the evening before still holds.
    expect(limitInForce(businessHours, at(WED, 7, 59, 59))).toEqual({ bytesPerSecond: null, entry: 1, since: at(WED - 1, 18) });
  });

  it('counts an entry whose time is exactly now as passed', () => {
    expect(limitInForce(businessHours, at(MON, 8)).bytesPerSecond).toBe(1 * MiB);
    expect(limitInForce(businessHours, at(MON, 8) - 1).bytesPerSecond).toBeNull();
  });

  it('follows week-day fields across the weekend', () => {
    // Friday 18:00 is the most recent entry all weekend and on Monday morning.
    expect(limitInForce(businessHours, at(SAT, 10))).toEqual({ bytesPerSecond: null, entry: 1, since: at(FRI, 18) });
    expect(limitInForce(businessHours, at(NEXT_MON, 7, 30))).toEqual({ bytesPerSecond: null, entry: 1, since: at(FRI, 18) });
    expect(limitInForce(businessHours, at(NEXT_MON, 9)).since).toBe(at(NEXT_MON, 8));
    // A weekend entry (Saturday 00:00, names for days) takes over until Monday 08:00.
    const withWeekend = schedule(['0 8 * * mon-fri', 1 * MiB], ['0 18 * * mon-fri', null], ['0 0 * * sat', 10 * MiB]);
    expect(limitInForce(withWeekend, at(SAT, 10))).toEqual({ bytesPerSecond: 10 * MiB, entry: 2, since: at(SAT, 0) });
    expect(limitInForce(withWeekend, at(SUN, 23, 59))).toEqual({ bytesPerSecond: 10 * MiB, entry: 2, since: at(SAT, 0) });
    expect(limitInForce(withWeekend, at(NEXT_MON, 8, 1)).bytesPerSecond).toBe(1 * MiB);
    expect(limitInForce(withWeekend, at(FRI, 17, 59)).bytesPerSecond).toBe(1 * MiB);
  });

  it('reads six-field expressions to the second', () => {
    const everyTenSeconds = schedule(['*/10 * * * * *', 2 * MiB], ['5,35 * * * * *', 8 * MiB]);
    expect(limitInForce(everyTenSeconds, at(WED, 12, 0, 4))).toMatchObject({ bytesPerSecond: 2 * MiB, since: at(WED, 12, 0, 0) });
    expect(limitInForce(everyTenSeconds, at(WED, 12, 0, 7))).toMatchObject({ bytesPerSecond: 8 * MiB, since: at(WED, 12, 0, 5) });
    expect(limitInForce(everyTenSeconds, at(WED, 12, 0, 10))).toMatchObject({ bytesPerSecond: 2 * MiB, since: at(WED, 12, 0, 10) });
    expect(limitInForce(everyTenSeconds, at(WED, 12, 0, 36))).toMatchObject({ bytesPerSecond: 8 * MiB, since: at(WED, 12, 0, 35) });
  });

  it('lets the entry listed last win when two are due at the same time', () => {
    expect(limitInForce(schedule(['0 * * * *', 1 * MiB], ['0 12 * * *', 3 * MiB]), at(WED, 12, 30)).bytesPerSecond).toBe(3 * MiB);
    expect(limitInForce(schedule(['0 12 * * *', 3 * MiB], ['0 * * * *', 1 * MiB]), at(WED, 12, 30)).bytesPerSecond).toBe(1 * MiB);
  });

  it('looks back further than a week (monthly entries), and falls back to the lowest limit when nothing fired within a year', () => {
    const monthly = schedule(['0 0 1 * *', 2 * MiB], ['0 0 15 * *', 6 * MiB]);
    expect(limitInForce(monthly, at(12, 9))).toEqual({ bytesPerSecond: 2 * MiB, entry: 0, since: at(1, 0) });
    expect(limitInForce(monthly, at(30, 9))).toEqual({ bytesPerSecond: 6 * MiB, entry: 1, since: at(15, 0) });
    const leapDay = schedule(['0 0 29 2 *', 5 * MiB], ['0 0 28 2 *', 3 * MiB]);
    // 2026-02-28 passed; 29 February last came in 2024, more than a year before.
    expect(limitInForce(leapDay, at(WED, 12)).bytesPerSecond).toBe(3 * MiB);
    expect(limitInForce(schedule(['0 0 29 2 *', 5 * MiB], ['0 0 29 2 *', null]), at(WED, 12))).toEqual({
      bytesPerSecond: 5 * MiB,
      entry: null,
      since: null,
    });
  });
});

/**
 * The token bucket's clock and timers are fake here (vi.useFakeTimers: setTimeout and Date; the
 * bucket reads Date.now() as its clock), so rates come out exact and the tests take no time.
 * test/e2e/bandwidth.test.ts measures the limit on the wire, in real time.
 */
function fakeClock(): { bucket: (rate: number | null) => TokenBucket; now: () => number } {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'], now: 0 });
  return { bucket: (rate) => new TokenBucket(rate, () => Date.now()), now: () => Date.now() };
}

/** Advances the fake clock a millisecond at a time until `done()`; a real event-loop turn after each, for file reads. */
async function advanceUntil(done: () => boolean, limitMs = 60_000): Promise<void> {
  for (let ms = 0; !done(); ms++) {
    if (ms > limitMs) throw new Error(`not done after ${limitMs} ms of fake time`);
    await vi.advanceTimersByTimeAsync(1);
    await new Promise((r) => setImmediate(r));
  }
}

/** Whether `promise` settled: it is given every pending microtask, and no time. */
async function settled(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  void promise.then(
    () => (done = true),
    () => (done = true),
  );
  await vi.advanceTimersByTimeAsync(0);
  return done;
}

/** `consumers` parts taking 64 KiB chunks from one bucket until `total` bytes went; resolves with the bytes taken by each. */
async function drain(bucket: TokenBucket, total: number, consumers: number): Promise<number[]> {
  let left = total;
  const taken = Array.from({ length: consumers }, () => 0);
  await Promise.all(
    taken.map(async (_, i) => {
      while (left > 0) {
        const n = Math.min(64 * KiB, left);
        left -= n;
        await bucket.take(n);
        taken[i]! += n;
      }
    }),
  );
  return taken;
}

describe('the shared token bucket', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('holds parts in flight together to the rate, and shares it evenly between them', async () => {
    const clock = fakeClock();
    const bucket = clock.bucket(2 * MiB);
    let taken: number[] | null = null;
    void drain(bucket, 3 * MiB, 4).then((t) => (taken = t));
    await advanceUntil(() => taken !== null);
    // 3 MiB at 2 MiB/s from an empty bucket: 1.5 s (the bucket's timers round up to the millisecond).
    expect(clock.now()).toBeGreaterThanOrEqual(1500);
    expect(clock.now()).toBeLessThanOrEqual(1501);
    // First come, first served: each of the four parts got exactly a quarter.
    expect(taken).toEqual([0.75 * MiB, 0.75 * MiB, 0.75 * MiB, 0.75 * MiB]);
  });

  it('switches the rate in flight: the waiting parts carry on at the new rate', async () => {
    const clock = fakeClock();
    const bucket = clock.bucket(1 * MiB);
    let bytes = 0;
    let stop = false;
    const parts = Array.from({ length: 3 }, async () => {
      while (!stop) {
        await bucket.take(64 * KiB);
        bytes += 64 * KiB;
      }
    });
    const during = async (ms: number): Promise<number> => {
      const before = bytes;
      await vi.advanceTimersByTimeAsync(ms);
      return bytes - before;
    };
    // 1 s at 1 MiB/s, then 1 s at 4 MiB/s: to the 64 KiB chunk (a chunk due on the second's edge may fall either side).
    const slow = await during(1000);
    bucket.setRate(4 * MiB);
    const fast = await during(1000);
    expect(Math.abs(slow - 1 * MiB)).toBeLessThanOrEqual(64 * KiB);
    expect(Math.abs(fast - 4 * MiB)).toBeLessThanOrEqual(64 * KiB);
    expect(slow + fast).toBeGreaterThanOrEqual(5 * MiB - 64 * KiB);
    // Lifting the limit releases the waiting parts at once: no time passes.
    stop = true;
    bucket.setRate(null);
    expect(await settled(Promise.all(parts))).toBe(true);
  });

  it('never waits when unlimited, and releases waiters at once when the limit is lifted', async () => {
    const clock = fakeClock();
    const bucket = clock.bucket(null);
    expect(bucket.unlimited).toBe(true);
    const all = Promise.all(Array.from({ length: 1000 }, () => bucket.take(64 * KiB)));
    expect(await settled(all)).toBe(true);
    expect(clock.now()).toBe(0);
    bucket.setRate(64 * KiB); // one chunk a second
    const waiting = Promise.all([bucket.take(64 * KiB), bucket.take(64 * KiB), bucket.take(64 * KiB)]);
    await vi.advanceTimersByTimeAsync(50);
    expect(await settled(waiting)).toBe(false);
    bucket.setRate(null);
    expect(await settled(waiting)).toBe(true);
    expect(clock.now()).toBe(50);
  });

  it('drops a waiter whose part was aborted, without charging its tokens', async () => {
    const clock = fakeClock();
    const bucket = clock.bucket(256 * KiB);
    let first = false;
    void bucket.take(64 * KiB).then(() => (first = true)); // the empty bucket at start: this one waits 1/4 s
    await advanceUntil(() => first);
    expect(clock.now()).toBe(250);
    const ctl = new AbortController();
    const dropped = bucket.take(64 * KiB, { signal: ctl.signal });
    ctl.abort(new Error('part aborted'));
    await expect(dropped).rejects.toThrow('part aborted');
    let next = false;
    void bucket.take(64 * KiB).then(() => (next = true));
    await advanceUntil(() => next);
    // Another 1/4 s for its own tokens, not 1/2 s: the dropped waiter was charged nothing.
    expect(clock.now()).toBe(500);
  });
});

describe('a throttled part body', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('is paced by the bucket in chunks of at most 64 KiB, and the stall watchdog counts waiting for tokens as progress', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'vms-uplink-bw-'));
    try {
      const file = join(dir, 'v.bin');
      const data = Buffer.alloc(320 * KiB, 7);
      await writeFile(file, data);
      const stamp = stampOf(await lstat(file, { bigint: true }));
      const clock = fakeClock();
      // 128 KiB/s: every 64 KiB chunk waits 1/2 s for its tokens, longer than the 400 ms stall timeout.
      const bucket = clock.bucket(128 * KiB);
      const ctl = new AbortController();
      const watchdog = new StallWatchdog(400, ctl);
      const chunks: Array<{ at: number; bytes: number }> = [];
      const body = openPart({ path: file, stamp }, { number: 1, offset: 0, size: data.length }, () => watchdog.touch(), bucket);
      body.on('data', (c: Buffer) => chunks.push({ at: clock.now(), bytes: c.length }));
      let ended = false;
      let failed: unknown = null;
      body.once('end', () => (ended = true));
      body.once('error', (err) => (failed = err));
      await advanceUntil(() => ended || failed !== null || ctl.signal.aborted);
      watchdog.stop();
      expect(failed).toBeNull();
      expect(ctl.signal.aborted).toBe(false);
      expect(chunks.reduce((a, c) => a + c.bytes, 0)).toBe(data.length);
      // Five chunks of 64 KiB, one every 1/2 s from an empty bucket: 320 KiB at 128 KiB/s in 2.5 s.
      expect(chunks.map((c) => c.bytes)).toEqual([64 * KiB, 64 * KiB, 64 * KiB, 64 * KiB, 64 * KiB]);
      // Each chunk leaves when its tokens are there; the file read after it takes real time, which the fake
      // clock (advanced a millisecond per event-loop turn) may count as a few milliseconds more on a busy box.
      chunks.forEach((c, i) => {
        expect(c.at).toBeGreaterThanOrEqual(500 * (i + 1));
        expect(c.at).toBeLessThan(500 * (i + 1) + 20);
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('the bandwidth schedule', () => {
  it('sets the limit in force at start and switches it at each cron time, without a restart', async () => {
    const bucket = new TokenBucket(null);
    const now = new Date();
    const sec = (offset: number): number => (now.getSeconds() + 60 + offset) % 60;
    // Entry 0 fired 5 s ago (a start in its window); entry 1 fires 2 s from now.
    const config = schedule([`${sec(-5)} * * * * *`, 1 * MiB], [`${sec(2)} * * * * *`, 3 * MiB]);
    const s = new BandwidthSchedule(config, bucket, createLogger('silent'));
    s.start(now.getTime());
    const entries = [
      { cron: `${sec(-5)} * * * * *`, bytesPerSecond: 1 * MiB },
      { cron: `${sec(2)} * * * * *`, bytesPerSecond: 3 * MiB },
    ];
    try {
      expect(bucket.rate).toBe(1 * MiB);
      // What the local API shows: the limit, the entry in force and since when, the schedule.
      const firedAt = new Date(now.getTime() - now.getMilliseconds() - 5000).toISOString();
      expect(s.state()).toEqual({ bytesPerSecond: 1 * MiB, entry: 0, since: firedAt, schedule: entries });
      const deadline = Date.now() + 5000;
      while (bucket.rate === 1 * MiB && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(bucket.rate).toBe(3 * MiB);
      expect(Date.now()).toBeGreaterThanOrEqual(now.getTime() - now.getMilliseconds() + 2000);
      expect(s.state()).toEqual({
        bytesPerSecond: 3 * MiB,
        entry: 1,
        since: new Date(now.getTime() - now.getMilliseconds() + 2000).toISOString(),
        schedule: entries,
      });
    } finally {
      s.stop();
    }
  });

  it('shows a fixed limit, or none, with no schedule', () => {
    for (const limit of [4 * MiB, null]) {
      const s = new BandwidthSchedule(limit, new TokenBucket(null), createLogger('silent'));
      s.start();
      expect(s.state()).toEqual({ bytesPerSecond: limit, entry: null, since: null, schedule: null });
      s.stop();
    }
  });
});
