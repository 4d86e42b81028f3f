/**
 * The incident reporter in this process against the ALO emulator, with a real ledger file. Its
 * clock is the test's: waits after a failure (backoff, Retry-After) are proven by stepping the
 * clock to just before and just after them, not by waiting.
 */
import { join } from 'node:path';
import { describe, expect, it, type TestContext } from 'vitest';
import { FileIdentities } from '../../src/plan/identity.js';
import { IncidentReporter } from '../../src/report/incident-reporter.js';
import type { Target } from '../../src/targets/target.js';
import { UploadEngine } from '../../src/upload/engine.js';
import { Pacer } from '../../src/upload/pacer.js';
import { waitFor } from '../support/daemon-process.js';
import { FaultProxy } from '../support/fault-proxy.js';
import { writeVideo } from '../support/files.js';
import { harness, type Harness } from '../support/harness.js';
import { incidentManifest, writeManifest, type TestVideo } from '../support/manifest.js';
import { aloTarget, applyManifest, FakeClock, openLedger, planAll, startAlo, testLog, type Alo, type LedgerFile } from './fixtures.js';

interface ReportRow {
  wanted: number;
  acked: number;
  refused: number;
  attempts: number;
  last_error: string | null;
}

interface Bench extends Alo {
  h: Harness;
  l: LedgerFile;
  clock: FakeClock;
  exports: string;
  reporter(target?: Target): IncidentReporter;
  report(id: string): ReportRow | undefined;
  /** Writes the incident's manifest and reads it into the ledger. */
  incident(id: string, videos: TestVideo[], title?: string): Promise<string>;
}

const FAILED_EXPORT: TestVideo = { id: 'v-failed', errors: ['G64 export failed: no video for the selected time period'] };

async function bench(ctx: TestContext): Promise<Bench> {
  const h = harness(ctx);
  const log = testLog(ctx);
  const site = await startAlo(h);
  const l = await openLedger(h);
  const clock = new FakeClock();
  // Backoff from 1 s with no jitter upwards: a failure without Retry-After waits 500 ms.
  const pacer = new Pacer({ initialMs: 1000, maxMs: 60_000 }, { random: () => 0 });
  const exports = await h.dir();
  return {
    ...site,
    h,
    l,
    clock,
    exports,
    reporter: (target = aloTarget(ctx, site.alo.baseUrl)) => {
      const reporter = new IncidentReporter(l.ledger.reports, new Map([['alo', target]]), pacer, log, undefined, clock);
      ctx.onTestFinished(() => reporter.stop());
      return reporter;
    },
    report: (id) => l.rows<ReportRow>('SELECT wanted, acked, refused, attempts, last_error FROM reports WHERE incident_id = ?', id)[0],
    incident: async (id, videos, title) => {
      const path = await writeManifest(join(exports, id), incidentManifest(id, videos, title));
      await applyManifest(l.ledger, path);
      return path;
    },
  };
}

type ReportBody = {
  vms_incident: { title: string; uploaded_videos: Array<{ id: string; s3_key: string }>; failed_videos: Array<{ id: string }> };
};

describe('IncidentReporter on ALO', () => {
  it('reports the incident with each video once it is final, and nothing again once acknowledged', async (ctx) => {
    const b = await bench(ctx);
    const target = aloTarget(ctx, b.alo.baseUrl);
    const reporter = b.reporter(target);
    await writeVideo(join(b.exports, 'inc-1', 'cam01.mp4'), 300 * 1024);
    await b.incident('inc-1', [{ id: 'v-ok', file: 'cam01.mp4' }, FAILED_EXPORT]);

    // The manifest was read: the incident is reported at once, with the failed export, and
    // without the video still to upload.
    await reporter.tick();
    expect(b.alo.reports).toHaveLength(1);
    const first = b.alo.reports[0]!.body as ReportBody;
    expect(first.vms_incident.uploaded_videos).toEqual([]);
    expect(first.vms_incident.failed_videos.map((v) => v.id)).toEqual(['v-failed']);
    await reporter.tick();
    expect(b.alo.reports).toHaveLength(1);

    // The video is uploaded: its upload completing makes the report due again.
    const log = testLog(ctx);
    await planAll(b.l.ledger, [target], log);
    await reporter.tick();
    expect(b.alo.reports).toHaveLength(1);
    const engine = new UploadEngine({
      ledger: b.l.ledger.uploads,
      identities: new FileIdentities(b.l.ledger.plan),
      targets: new Map([['alo', target]]),
      concurrency: 1,
      stallTimeoutMs: 60_000,
      pacer: new Pacer({ initialMs: 100, maxMs: 1000 }),
      log,
    });
    ctx.onTestFinished(() => engine.stop(0));
    engine.poke();
    await waitFor(() => b.l.rows<{ state: string }>('SELECT state FROM uploads')[0]?.state === 'done', 10_000, 'the upload done');

    await reporter.tick();
    expect(b.alo.reports.map((r) => r.status)).toEqual([201, 200]);
    const second = b.alo.reports[1]!.body as ReportBody;
    expect(second.vms_incident.uploaded_videos.map((v) => v.id)).toEqual(['v-ok']);
    const held = b.alo.incident('inc-1')!;
    expect(held.uploaded_videos.map((v) => v.id)).toEqual(['v-ok']);
    expect(b.store.hasObject(held.uploaded_videos[0]!.s3_key)).toBe(true);
    expect(b.report('inc-1')).toMatchObject({ wanted: 2, acked: 2, attempts: 0, last_error: null });

    b.clock.advance(3600_000);
    await reporter.tick();
    expect(b.alo.reports).toHaveLength(2);
  });

  it('records a report ALO refuses with a 4xx as refused, and sends it again only when the incident changes', async (ctx) => {
    const b = await bench(ctx);
    const reporter = b.reporter();
    await b.incident('inc-2', [FAILED_EXPORT], 'First title');
    b.alo.failNext('put_incident', 1, 422);
    await reporter.tick();
    expect(b.alo.reports.map((r) => r.status)).toEqual([422]);
    expect(b.report('inc-2')).toMatchObject({ wanted: 1, acked: 0, refused: 1, attempts: 1 });
    expect(b.report('inc-2')!.last_error).toContain('answered 422');

    // However long it waits: the same state is not sent again.
    for (const step of [1000, 60_000, 24 * 3600_000]) {
      b.clock.advance(step);
      await reporter.tick();
    }
    expect(b.alo.reports).toHaveLength(1);

    // The VMS rewrites the manifest: the new state is reported.
    await b.incident('inc-2', [FAILED_EXPORT], 'Second title');
    await reporter.tick();
    expect(b.alo.reports.map((r) => r.status)).toEqual([422, 201]);
    expect(b.alo.incident('inc-2')!.title).toBe('Second title');
    expect(b.report('inc-2')).toMatchObject({ wanted: 2, acked: 2 });
  });

  it.for([503, 429])('waits as long as Retry-After says after a %i, and sends the report then', async (status, ctx) => {
    const b = await bench(ctx);
    const proxy = b.h.closeAtEnd(await FaultProxy.start(b.alo.baseUrl));
    const reporter = b.reporter(aloTarget(ctx, proxy.rewrite(b.alo.baseUrl)));
    await b.incident('inc-3', [FAILED_EXPORT]);
    proxy.respondNext(1, status, { match: { method: 'PUT' }, headers: { 'retry-after': '30' } });

    await reporter.tick();
    expect(proxy.counters.injectedResponses).toBe(1);
    expect(b.report('inc-3')).toMatchObject({ acked: 0, refused: 0, attempts: 1 });
    expect(b.report('inc-3')!.last_error).toContain(`answered ${status}`);

    // The pacer's own backoff would have been 500 ms: Retry-After holds it for 30 s.
    b.clock.advance(29_999);
    await reporter.tick();
    expect(proxy.requests.filter((r) => r.method === 'PUT')).toHaveLength(1);
    expect(b.alo.reports).toEqual([]);

    b.clock.advance(1);
    await reporter.tick();
    expect(proxy.requests.filter((r) => r.method === 'PUT')).toHaveLength(2);
    expect(b.alo.reports.map((r) => r.status)).toEqual([201]);
    expect(b.report('inc-3')).toMatchObject({ wanted: 1, acked: 1, attempts: 0 });
  });
});
