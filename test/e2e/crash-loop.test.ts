/**
 * The crash loop, small enough for CI: 6 incidents over the four platforms (the 0 B, 1 B, 5 MiB and
 * 5 MiB + 1 edge cases among them), the daemon SIGKILLed 12 times at random moments. The full size
 * (20 incidents, 40 videos up to 300 MiB, 50 kills) is `npm run crash-loop`.
 */
import { describe, expect, it } from 'vitest';
import { runCrashLoop } from '../support/crash-loop.js';
import { MiB } from '../support/files.js';

describe('crash loop', () => {
  it('loses nothing and sends nothing twice across 12 SIGKILLs', { timeout: 240_000 }, async () => {
    const seed = Date.now() % 1_000_000;
    const r = await runCrashLoop({
      incidents: 6,
      videosPerIncident: 2,
      kills: 12,
      maxSize: 24 * MiB,
      killAfterMs: [400, 2500],
      seed,
      concurrency: 4,
      partLatencyMs: 250,
      finishTimeoutMs: 120_000,
    });
    const context = `seed ${seed}: ${JSON.stringify(r)}`;
    expect(r.kills, context).toBe(12);
    expect(r.integrityFailures, context).toEqual([]);
    expect(r.problems, context).toEqual([]);
    expect(r.resent.bytes, context).toBeLessThanOrEqual(r.resendAllowance);
  });
});
