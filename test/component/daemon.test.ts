/**
 * The daemon in this process (Daemon.open and run, as the CLI calls them) on a configuration
 * pointing at the ALO emulator on 127.0.0.1, with a real export folder and ledger file. Settle
 * time 0 and quick retries: an incident takes well under a second.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it, type TestContext } from 'vitest';
import { resolveConfig } from '../../src/config/load.js';
import { Daemon, type DaemonOptions } from '../../src/daemon.js';
import { readHealth } from '../../src/ledger/health.js';
import { Ledger } from '../../src/ledger/ledger.js';
import type { Logger } from '../../src/log/logger.js';
import { Secrets } from '../../src/log/redact.js';
import { daemonReport } from '../../src/status/daemon-status.js';
import { formatSummary } from '../../src/status/format-status.js';
import { aloTargetConfig } from '../support/alo-site.js';
import { waitFor } from '../support/daemon-process.js';
import { MiB, writeThumbnail, writeVideo } from '../support/files.js';
import { harness } from '../support/harness.js';
import { ledgerRows } from '../support/ledger.js';
import { incidentManifest, writeManifest } from '../support/manifest.js';
import { ApiClient, apiSection } from '../support/local-api.js';
import { recordingLog, refusingWatch, startAlo, testLog, type Alo } from './fixtures.js';

interface Site extends Alo {
  root: string;
  ledgerPath: string;
  /** Opens a daemon on the site's configuration and runs it; stopped when the test finishes if the test did not. */
  start(): { daemon: Daemon; running: Promise<void> };
}

interface SiteOptions {
  /** Further top-level config sections (`api`…). */
  sections?: Record<string, unknown>;
  daemon?: DaemonOptions;
  log?: Logger;
}

async function site(ctx: TestContext, options: SiteOptions = {}): Promise<Site> {
  const h = harness(ctx);
  const alo = await startAlo(h);
  const dir = await h.dir();
  const root = join(dir, 'exports');
  const ledgerPath = join(dir, 'state', 'ledger.db');
  const config = resolveConfig(
    {
      watch: { root, settle_seconds: 0, missing_file_seconds: 30 },
      ledger: { path: ledgerPath, min_free: 0 },
      upload: { concurrency: 1, part_size: '5MiB', retry_initial: 0.05, retry_max: 0.5, stall_timeout: 30, drain_timeout: 0.2 },
      targets: { alo: aloTargetConfig(alo.alo.baseUrl) },
      ...options.sections,
    },
    { env: {}, baseDir: dir },
  );
  await mkdir(root, { recursive: true });
  const log = options.log ?? testLog(ctx);
  return {
    ...alo,
    root,
    ledgerPath,
    start: () => {
      const daemon = Daemon.open(config, log, new Secrets(), options.daemon);
      const running = daemon.run();
      ctx.onTestFinished(async () => {
        daemon.stop();
        await running;
      });
      return { daemon, running };
    },
  };
}

/** Resolves with 'stopped' once `running` does, or 'still running' after `ms`. */
async function within(running: Promise<void>, ms: number): Promise<'stopped' | 'still running'> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'still running'>((resolve) => (timer = setTimeout(() => resolve('still running'), ms)));
  try {
    return await Promise.race([running.then(() => 'stopped' as const), late]);
  } finally {
    clearTimeout(timer);
  }
}

describe('Daemon in process', () => {
  it('uploads and reports an incident end to end, then stops cleanly: run() resolves after stop()', async (ctx) => {
    const s = await site(ctx);
    const { daemon, running } = s.start();
    const folder = join(s.root, '2024-02-02', 'inc-1');
    const bigSha = await writeVideo(join(folder, 'cam01.mp4'), 11 * MiB + 5);
    const smallSha = await writeVideo(join(folder, 'cam02.mp4'), 256 * 1024);
    const thumbSha = await writeThumbnail(join(folder, 'cam02.jpg'));
    await writeManifest(
      folder,
      incidentManifest('inc-1', [
        { id: 'v1', file: 'cam01.mp4' },
        { id: 'v2', file: 'cam02.mp4', thumbnail: 'cam02.jpg' },
        { id: 'v3', errors: ['export failed'] },
      ]),
    );

    const incident = await waitFor(
      () => {
        const i = s.alo.incident('inc-1');
        return i && i.uploaded_videos.length === 2 ? i : undefined;
      },
      15_000,
      'both videos reported to ALO',
    );
    const byId = new Map(incident.uploaded_videos.map((v) => [v.id, v]));
    expect(await s.store.objectSha256(byId.get('v1')!.s3_key)).toBe(bigSha);
    expect(await s.store.objectSha256(byId.get('v2')!.s3_key)).toBe(smallSha);
    expect(await s.store.objectSha256(byId.get('v2')!.s3_thumbnail_key!)).toBe(thumbSha);
    expect(incident.failed_videos.map((v) => v.id)).toEqual(['v3']);

    daemon.stop();
    expect(await within(running, 5_000)).toBe('stopped');
    // Everything closed and recorded: the ledger holds the outcome, the health file says stopped.
    expect(readHealth(s.ledgerPath)?.state).toBe('stopped');
    expect(ledgerRows(s.ledgerPath, 'SELECT video_id, role, state FROM uploads ORDER BY video_id, role')).toEqual([
      { video_id: 'v1', role: 'video', state: 'done' },
      { video_id: 'v2', role: 'thumbnail', state: 'done' },
      { video_id: 'v2', role: 'video', state: 'done' },
    ]);
    expect(ledgerRows(s.ledgerPath, 'SELECT wanted = acked AS acked FROM reports')).toEqual([{ acked: 1 }]);
    expect(s.store.openMultipartUploads()).toEqual([]);
  });

  it('stops within drain_timeout with a part unanswered, and the next run sends only what was not acknowledged', async (ctx) => {
    const s = await site(ctx);
    s.store.injectFaults({ kind: 'stall', partNumber: 2 });
    const first = s.start();
    const folder = join(s.root, 'inc-2');
    const sha = await writeVideo(join(folder, 'cam01.mp4'), 12 * MiB);
    await writeManifest(folder, incidentManifest('inc-2', [{ id: 'v1', file: 'cam01.mp4' }]));
    await waitFor(() => s.store.requests.some((r) => r.code === 'Stalled'), 15_000, 'part 2 to reach S3 and hang');

    first.daemon.stop();
    // drain_timeout is 0.2 s: the unanswered part is abandoned, not waited for.
    expect(await within(first.running, 3_000)).toBe('stopped');
    expect(ledgerRows(s.ledgerPath, 'SELECT number, state FROM parts ORDER BY number')).toEqual([
      { number: 1, state: 'done' },
      { number: 2, state: 'pending' },
      { number: 3, state: 'pending' },
    ]);
    const sentBefore = s.store.requests.length;

    const second = s.start();
    const incident = await waitFor(() => s.alo.incident('inc-2')?.uploaded_videos[0], 15_000, 'the video reported');
    expect(await s.store.objectSha256(incident.s3_key)).toBe(sha);
    expect(
      s.store.requests
        .slice(sentBefore)
        .map((r) => r.partNumber)
        .sort(),
    ).toEqual([2, 3]);
    expect(s.alo.calls.filter((c) => c.route === 'create_multipart_upload')).toHaveLength(1);
    second.daemon.stop();
    expect(await within(second.running, 5_000)).toBe('stopped');
  });

  it('when the OS refuses to watch a folder, still uploads what is exported there, and says so in status and /healthz', async (ctx) => {
    const { log, events } = recordingLog(ctx);
    let refused = '';
    const s = await site(ctx, {
      sections: apiSection(),
      log,
      daemon: { watch: { watchFactory: refusingWatch((folder) => folder === refused), fallbackRescanMs: 500 } },
    });
    refused = join(s.root, 'site-a');
    await mkdir(refused);
    s.start();
    const listening = await waitFor(() => events('api.listening')[0], 10_000, 'the local API listening');
    const api = new ApiClient(`http://${String(listening.host)}:${String(listening.port)}`);

    // Degraded, not down: the daemon works on.
    const health = await waitFor(
      async () => {
        const r = await api.call('GET', '/healthz', null);
        return r.json<{ status: string }>().status === 'degraded' ? r : undefined;
      },
      10_000,
      '/healthz degraded',
    );
    expect(health.status).toBe(200);
    expect(health.json()).toEqual({
      status: 'degraded',
      reasons: [expect.stringMatching(/^the OS refused to watch 1 folder\(s\) below watch\.root \(ENOSPC.*rescanned every 0\.5 s/)],
    });
    const report = daemonReport(s.ledgerPath);
    expect(report.problems).toEqual([
      { kind: 'watch', since: expect.any(String) as string, message: health.json<{ reasons: string[] }>().reasons[0] },
    ]);
    const ledger = Ledger.open(s.ledgerPath, { readonly: true });
    try {
      expect(formatSummary(ledger.status.summary(), report)).toMatch(/^PROBLEM \(watch, since [^)]+\): the OS refused to watch 1 folder/);
    } finally {
      ledger.close();
    }

    // An incident exported into the folder nobody watches arrives, byte for byte.
    const folder = join(refused, 'inc-3');
    const sha = await writeVideo(join(folder, 'cam01.mp4'), 6 * MiB);
    await writeManifest(folder, incidentManifest('inc-3', [{ id: 'v1', file: 'cam01.mp4' }]));
    const uploaded = await waitFor(() => s.alo.incident('inc-3')?.uploaded_videos[0], 15_000, 'the video reported to ALO');
    expect(await s.store.objectSha256(uploaded.s3_key)).toBe(sha);
    expect(events('watch.fallback').map((l) => l.folders)).toEqual([1]);
  });
});
