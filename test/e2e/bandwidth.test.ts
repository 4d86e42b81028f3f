/**
 * upload.bandwidth through the real daemon: the rate the S3 store receives a 40 MiB upload at
 * under a 4 MiB/s limit (4 parts in flight sharing it), and a schedule that switches the limit
 * in the middle of an upload, which carries on at the new rate in the same process and the
 * same multipart upload.
 *
 * Rates are measured, not read from logs: bytes / time from the store's arrival time of a part
 * PUT to the ledger's `done_at` of the part (both Date.now() on this machine).
 */
import { describe, expect, it } from 'vitest';
import type { S3RequestRecord } from '../emulators/s3-store.js';
import { waitIncident } from '../support/alo-site.js';
import { MiB } from '../support/files.js';
import { harness } from '../support/harness.js';
import { ledgerRows } from '../support/ledger.js';
import { writeOneVideoIncident } from '../support/manifest.js';

interface PartRow {
  number: number;
  size: number;
  done_at: number;
}

/** The part PUTs the store answered, by part number; fails if one was sent twice (a retry would skew the rate). */
function partPuts(requests: readonly S3RequestRecord[]): Map<number, S3RequestRecord> {
  const puts = requests.filter((r) => r.method === 'PUT' && r.partNumber !== undefined);
  const byNumber = new Map(puts.map((r) => [r.partNumber!, r]));
  expect(puts.map((r) => r.status)).toEqual(puts.map(() => 200));
  expect(byNumber.size).toBe(puts.length);
  return byNumber;
}

const parts = (ledgerPath: string): PartRow[] => ledgerRows<PartRow>(ledgerPath, 'SELECT number, size, done_at FROM parts ORDER BY number');
const rate = (bytes: number, ms: number): number => bytes / MiB / (ms / 1000);

describe('upload.bandwidth through the daemon', () => {
  it('holds a 40 MiB upload (4 parts in flight) to 4 MiB/s, within ±15 %', { timeout: 60_000 }, async (ctx) => {
    const h = harness(ctx);
    const s = await h.site({ upload: { bandwidth: '4MiB/s', concurrency: 4 } });
    const d = h.daemon(s);
    const sha = await writeOneVideoIncident(s.exportsRoot, 'bw-fixed', 40 * MiB);
    const incident = await waitIncident(s, d, 'bw-fixed', (i) => i.uploaded_videos.length === 1, '40 MiB under 4 MiB/s', 40_000);
    expect(await s.store.objectSha256(incident.uploaded_videos[0]!.s3_key)).toBe(sha);

    const rows = parts(s.ledgerPath);
    const puts = partPuts(s.store.requests);
    expect(rows.length).toBe(8);
    expect(puts.size).toBe(8);
    const bytes = rows.reduce((a, r) => a + r.size, 0);
    expect(bytes).toBe(40 * MiB);
    const first = Math.min(...[...puts.values()].map((r) => r.at));
    const last = Math.max(...rows.map((r) => r.done_at));
    const measured = rate(bytes, last - first);
    console.log(`bandwidth 4MiB/s: 40 MiB in ${((last - first) / 1000).toFixed(2)} s = ${measured.toFixed(3)} MiB/s`);
    expect(measured).toBeGreaterThan(4 * 0.85);
    expect(measured).toBeLessThan(4 * 1.15);
  });

  it(
    'switches the limit at the schedule time in the middle of an upload, without restarting anything',
    { timeout: 60_000 },
    async (ctx) => {
      const h = harness(ctx);
      // Six-field cron (seconds first): 2 MiB/s since 5 s ago (the daemon starts in that window),
      // 8 MiB/s from SWITCH_S seconds from now. Each entry comes back only a minute later.
      const SWITCH_S = 9;
      const now = new Date();
      const second = (offset: number): number => (now.getSeconds() + 60 + offset) % 60;
      const switchAt = now.getTime() - now.getMilliseconds() + SWITCH_S * 1000;
      const s = await h.site({
        upload: {
          // One part at a time, so every part's own rate shows the limit it was sent under.
          concurrency: 1,
          bandwidth: [
            { cron: `${second(-5)} * * * * *`, limit: '2MiB/s' },
            { cron: `${second(SWITCH_S)} * * * * *`, limit: '8MiB/s' },
          ],
        },
      });
      const d = h.daemon(s);
      const sha = await writeOneVideoIncident(s.exportsRoot, 'bw-switch', 35 * MiB);
      const incident = await waitIncident(s, d, 'bw-switch', (i) => i.uploaded_videos.length === 1, 'the scheduled upload', 45_000);
      expect(await s.store.objectSha256(incident.uploaded_videos[0]!.s3_key)).toBe(sha);

      // The same daemon process did it all, in one multipart upload, each part sent once.
      expect(d.events('daemon.started')).toHaveLength(1);
      expect(d.events('upload.started')).toHaveLength(1);
      const puts = partPuts(s.store.requests);
      expect(new Set([...puts.values()].map((r) => r.uploadId)).size).toBe(1);

      const rows = parts(s.ledgerPath);
      const perPart = rows.map((r) => ({
        number: r.number,
        start: puts.get(r.number)!.at,
        end: r.done_at,
        mibps: rate(r.size, r.done_at - puts.get(r.number)!.at),
      }));
      const before = perPart.filter((p) => p.end <= switchAt);
      const after = perPart.filter((p) => p.start >= switchAt);
      console.log(
        `schedule 2MiB/s → 8MiB/s at +${SWITCH_S} s: ` +
          perPart
            .map(
              (p) =>
                `part ${p.number} ${p.mibps.toFixed(2)} MiB/s (${p.end <= switchAt ? 'before' : p.start >= switchAt ? 'after' : 'across'})`,
            )
            .join(', '),
      );
      expect(before.length).toBeGreaterThanOrEqual(2);
      expect(after.length).toBeGreaterThanOrEqual(2);
      const mean = (ps: typeof perPart): number => ps.reduce((a, p) => a + p.mibps, 0) / ps.length;
      // The first part after a start or a switch may use the bucket's small burst (1/4 s of the rate).
      for (const p of before) expect(p.mibps).toSatisfy((r: number) => r > 2 * 0.85 && r < 2 * 1.25);
      for (const p of after) expect(p.mibps).toSatisfy((r: number) => r > 8 * 0.85 && r < 8 * 1.25);
      expect(mean(before)).toBeLessThan(2 * 1.15);
      expect(mean(after)).toBeGreaterThan(8 * 0.85);
    },
  );
});
