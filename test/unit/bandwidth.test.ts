/**
 * upload.bandwidth: the limit in force for a schedule (the most recent entry whose time passed,
 * also right after a start mid-window), the shared token bucket's rate and rate switches, and
 * a throttled part body that the stall watchdog leaves alone.
 */
import { lstat, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
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
  it('holds parts in flight together to the rate, and shares it evenly between them', async () => {
    const bucket = new TokenBucket(2 * MiB);
    const started = performance.now();
    const taken = await drain(bucket, 3 * MiB, 4);
    const seconds = (performance.now() - started) / 1000;
    expect(3 / seconds).toBeGreaterThan(2 * 0.9);
    expect(3 / seconds).toBeLessThan(2 * 1.1);
    for (const t of taken) expect(Math.abs(t - 0.75 * MiB)).toBeLessThanOrEqual(128 * KiB);
  });

  it('switches the rate in flight: the waiting parts carry on at the new rate', async () => {
    const bucket = new TokenBucket(1 * MiB);
    let bytes = 0;
    let stop = false;
    const parts = Array.from({ length: 3 }, async () => {
      while (!stop) {
        await bucket.take(64 * KiB);
        bytes += 64 * KiB;
      }
    });
    const sample = async (ms: number): Promise<number> => {
      const [b0, t0] = [bytes, performance.now()];
      await new Promise((r) => setTimeout(r, ms));
      return (bytes - b0) / MiB / ((performance.now() - t0) / 1000);
    };
    const slow = await sample(1000);
    bucket.setRate(4 * MiB);
    const fast = await sample(1000);
    // Lifting the limit releases the waiting parts at once.
    stop = true;
    const lifted = performance.now();
    bucket.setRate(null);
    await Promise.all(parts);
    const releaseMs = performance.now() - lifted;
    expect(slow).toBeGreaterThan(0.85);
    expect(slow).toBeLessThan(1.15);
    expect(fast).toBeGreaterThan(4 * 0.85);
    expect(fast).toBeLessThan(4 * 1.15);
    expect(releaseMs).toBeLessThan(50);
  });

  it('never waits when unlimited, and releases waiters at once when the limit is lifted', async () => {
    const bucket = new TokenBucket(null);
    expect(bucket.unlimited).toBe(true);
    const started = performance.now();
    for (let i = 0; i < 1000; i++) await bucket.take(64 * KiB);
    expect(performance.now() - started).toBeLessThan(200);
    bucket.setRate(64 * KiB); // one chunk a second
    const waiting = Promise.all([bucket.take(64 * KiB), bucket.take(64 * KiB), bucket.take(64 * KiB)]);
    await new Promise((r) => setTimeout(r, 50));
    const lifted = performance.now();
    bucket.setRate(null);
    await waiting;
    expect(performance.now() - lifted).toBeLessThan(50);
  });

  it('drops a waiter whose part was aborted, without charging its tokens', async () => {
    const bucket = new TokenBucket(256 * KiB);
    await bucket.take(64 * KiB); // the empty bucket at start: this one waits 1/4 s
    const ctl = new AbortController();
    const dropped = bucket.take(64 * KiB, { signal: ctl.signal });
    ctl.abort(new Error('part aborted'));
    await expect(dropped).rejects.toThrow('part aborted');
    const started = performance.now();
    await bucket.take(64 * KiB);
    expect(performance.now() - started).toBeLessThan(350);
  });
});

describe('a throttled part body', () => {
  it('is paced by the bucket in chunks of at most 64 KiB, and the stall watchdog counts waiting for tokens as progress', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'vms-uplink-bw-'));
    try {
      const file = join(dir, 'v.bin');
      const data = Buffer.alloc(320 * KiB, 7);
      await writeFile(file, data);
      // 128 KiB/s: every 64 KiB chunk waits 1/2 s for its tokens, longer than the 400 ms stall timeout.
      const bucket = new TokenBucket(128 * KiB);
      const ctl = new AbortController();
      const watchdog = new StallWatchdog(400, ctl);
      const chunks: number[] = [];
      const started = performance.now();
      const body = openPart(
        { path: file, stamp: stampOf(await lstat(file, { bigint: true })) },
        { number: 1, offset: 0, size: data.length },
        () => watchdog.touch(),
        bucket,
      );
      body.on('data', (c: Buffer) => chunks.push(c.length));
      await new Promise<void>((resolve, reject) => {
        body.once('end', resolve);
        body.once('error', reject);
        ctl.signal.addEventListener('abort', () => reject(ctl.signal.reason as Error));
      });
      watchdog.stop();
      const seconds = (performance.now() - started) / 1000;
      expect(ctl.signal.aborted).toBe(false);
      expect(Math.max(...chunks)).toBeLessThanOrEqual(64 * KiB);
      expect(chunks.reduce((a, b) => a + b, 0)).toBe(data.length);
      // 320 KiB at 128 KiB/s from an empty bucket.
      expect(seconds).toBeGreaterThan(2.5 * 0.9);
      expect(seconds).toBeLessThan(2.5 * 1.2);
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
