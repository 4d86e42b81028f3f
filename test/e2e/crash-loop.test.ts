/**
 * The crash loop, small enough for CI: 6 incidents over the four platforms (the 0 B, 1 B, 5 MiB and
 * 5 MiB + 1 edge cases among them), the daemon SIGKILLed 12 times (in its start-up, at random while it
 * works, and right when an upload is half done), at least one kill provably in the middle of an upload
 * (the ledger after it holds parts done and parts not: the next start resumes it). The full size
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
      concurrency: 2,
      partSize: 5 * MiB,
      partLatencyMs: 250,
      finishTimeoutMs: 120_000,
    });
    const context = `seed ${seed}: ${JSON.stringify(r)}`;
    console.info(
      `crash loop, seed ${seed}: ${r.kills} kills, ${r.killsMidUpload} with uploads under way, ${r.killsMidParts} leaving an upload with parts done and parts not (${r.resumedUploads.length} uploads resumed)`,
    );
    expect(r.kills, context).toBe(12);
    // It exercised resume: at least one kill left an upload with parts done and parts not done
    // (read from the ledger after the kill), and every such upload ended done.
    expect(r.killsMidParts, context).toBeGreaterThanOrEqual(1);
    expect(r.resumedUploads.length, context).toBeGreaterThanOrEqual(1);
    expect(r.integrityFailures, context).toEqual([]);
    expect(r.problems, context).toEqual([]);
    expect(r.resent.bytes, context).toBeLessThanOrEqual(r.resendAllowance);
  });
});
