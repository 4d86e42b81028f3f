/**
 * The soak, short enough for CI: 75 s of incidents on all four platforms with fault bursts and
 * SIGKILLs, then every export checked and the daemon's RSS and descriptors compared between the
 * first and the last third. `npm run soak -- --minutes 30` is the long run.
 */
import { describe, expect, it } from 'vitest';
import { MiB } from '../support/files.js';
import { runSoak } from '../support/soak.js';

describe('soak (short)', () => {
  it('delivers everything through faults and kills, with flat RSS and descriptors', { timeout: 240_000 }, async () => {
    const seed = Date.now() % 1_000_000;
    const r = await runSoak({
      seconds: 75,
      exportEveryMs: 3000,
      faultEveryMs: 5000,
      lifetimeMs: [12_000, 25_000],
      maxSize: 16 * MiB,
      concurrency: 4,
      seed,
    });
    const context = `seed ${seed}: ${JSON.stringify({ ...r, samples: r.samples.length })}`;
    expect(r.kills, context).toBeGreaterThanOrEqual(2);
    expect(r.faults, context).toBeGreaterThanOrEqual(10);
    expect(r.integrityFailures, context).toEqual([]);
    expect(r.problems, context).toEqual([]);
    expect(r.resent.bytes, context).toBeLessThanOrEqual(r.resendAllowance);
    expect(r.trend.rssLate, context).toBeLessThanOrEqual(r.trend.rssEarly * 1.25);
    expect(r.trend.fdsLate, context).toBeLessThanOrEqual(r.trend.fdsEarly + 8);
  });
});
