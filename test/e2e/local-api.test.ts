/**
 * The local API (CONTRACT §6) of the real daemon, over real HTTP: the bearer token on every
 * route but /healthz, the seed's error shape, cameras and their pause/resume (persisted in the
 * ledger, across a restart), incidents and retries, Prometheus metrics that move with the bytes,
 * and /healthz turning 503 for each reason it knows. What is asserted is what the operator gets:
 * HTTP answers, the bytes in the store, the rows in the ledger.
 */
import { mkdir, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { CameraView as Camera } from '../../src/ledger/views/cameras.js';
import { runCli, waitFor } from '../support/daemon-process.js';
import { MiB } from '../support/files.js';
import { harness } from '../support/harness.js';
import { ledgerRowsSoFar, partsDone, uploadOf, uploadReaches } from '../support/ledger.js';
import { API_TOKEN, ApiClient, apiSection, parsePrometheus, sampleValue } from '../support/local-api.js';
import { writeIncident } from '../support/manifest.js';
import { mountTmpfs } from '../support/tmpfs.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('local API', () => {
  it('answers /healthz without a token, refuses everything else without the right one, and errs in the seed shape', async (ctx) => {
    const h = harness(ctx);
    // A bare port: the API listens on 127.0.0.1 only.
    const s = await h.site({ sections: apiSection({ listen: 0 }) });
    const api = await ApiClient.of(h.daemon(s));
    expect(new URL(api.origin).hostname).toBe('127.0.0.1');

    const health = await api.call('GET', '/healthz', null);
    expect([health.status, health.json()]).toEqual([200, { status: 'ok' }]);
    for (const token of [null, 'wrong-token', `${API_TOKEN}x`, API_TOKEN.slice(0, -1)]) {
      for (const path of ['/cameras', '/metrics', '/incidents', '/no-such-route']) {
        const r = await api.call('GET', path, token);
        expect(r.status, `${path} with ${String(token)}`).toBe(401);
        expect(r.json()).toEqual({ code: 401, message: expect.stringMatching(/^Authentication failed/) });
        expect(r.headers['www-authenticate']).toBe('Bearer');
      }
    }
    expect(await api.get('/cameras')).toEqual([]);
    expect(await api.get('/incidents')).toEqual([]);
    expect(await api.get('/incidents?order=newest')).toEqual([]);
    // The daemon at a glance, for the status page's header.
    expect((await api.call('GET', '/status', null)).status).toBe(401);
    expect(await api.get('/status')).toEqual({
      version: expect.stringMatching(/^\d+\.\d+\.\d+/),
      startedAt: expect.any(String),
      uptimeSeconds: expect.any(Number),
      health: { status: 'ok' },
      disk: { freeBytes: expect.any(Number), minFreeBytes: 256 * MiB },
      bandwidth: { bytesPerSecond: null, entry: null, since: null, schedule: null },
      totals: { queued: 0, uploading: 0, done: 0, failed: 0, waiting: 0, failedVideos: 0, refusedReports: 0 },
      incidentCount: 0,
    });

    const errors: Array<[string, string, number]> = [
      ['GET', '/no-such-route', 404],
      ['GET', '/cameras/nope', 404],
      ['GET', '/cameras/nope/video-upload-metrics', 404],
      ['PUT', '/cameras/nope/state/paused', 404],
      ['PUT', '/cameras/nope/state/stopped', 422],
      ['GET', '/incidents/nope', 404],
      ['POST', '/uploads/abc/retry', 404],
      ['POST', '/uploads/424242/retry', 404],
      ['GET', '/cameras/%E0%A4%A/video-upload-metrics', 404],
      ['DELETE', '/cameras', 405],
      ['POST', '/healthz', 405],
      ['GET', '/uploads/1/retry', 405],
      ['GET', '/incidents?order=sideways', 422],
      ['GET', '/incidents?order=oldest&before=x', 422],
      ['GET', '/incidents?order=newest&after=x', 422],
    ];
    for (const [method, path, status] of errors) {
      const r = await api.call(method, path);
      expect(r.status, `${method} ${path}`).toBe(status);
      expect(r.json(), `${method} ${path}`).toEqual({ code: status, message: expect.any(String) });
    }
    expect((await api.call('DELETE', '/cameras')).headers.allow).toBe('GET');

    // A second daemon asked for the same port stops at once, saying which setting and why.
    const other = await h.site({ sections: apiSection({ listen: new URL(api.origin).host }) });
    const second = h.daemon(other);
    expect(await second.exited).toEqual({ code: 1, signal: null });
    expect(second.stderr.join('')).toMatch(new RegExp(`api\\.listen ${new URL(api.origin).host}: listen EADDRINUSE`));
  });

  it('pauses a camera mid-upload, keeps its videos waiting across a restart, and uploads them byte-identical once it runs again', async (ctx) => {
    const h = harness(ctx);
    const s = await h.site({ sections: apiSection(), upload: { concurrency: 2 } });
    // 300 ms per PUT: the 30 MiB video takes seconds, so the pause lands mid-upload.
    s.store.setLatency(300);
    const shas = await writeIncident(s.exportsRoot, 'inc-a', [
      { id: 'a1', file: 'a1.mp4', size: 30 * MiB, camera_id: 'cam-door', camera_name: 'Door' },
    ]);
    let d = h.daemon(s);
    let api = await ApiClient.of(d);

    const a1 = await waitFor(
      () => {
        const u = uploadOf(s.ledgerPath, 'a1');
        return u && partsDone(s.ledgerPath, u.id).length >= 1 ? u : undefined;
      },
      30_000,
      'a part of a1 done',
    );
    const paused = await api.call('PUT', '/cameras/cam-door/state/paused');
    expect([paused.status, paused.json()]).toEqual([201, { code: 0, message: 'camera cam-door is paused' }]);

    // Parts in flight are cut off: the daemon stopped the upload, and the store has no request left on its way.
    await waitFor(
      () => d.events('upload.camera.paused').some((l) => l.videoId === 'a1') && s.store.inProgress === 0,
      15_000,
      'the upload of a1 stopped and no part of it on the wire',
    );
    const doneAtPause = partsDone(s.ledgerPath, a1.id);
    const putsOfA = (): number => s.store.requests.filter((r) => r.method === 'PUT' && r.key.includes('/inc-a/')).length;
    const putsAtPause = putsOfA();
    expect(putsAtPause).toBeGreaterThan(0);
    expect(doneAtPause.length).toBeLessThan(6);
    expect(uploadOf(s.ledgerPath, 'a1')!.state).toBe('queued');

    // Another camera's export flows meanwhile; nothing more goes out for the paused camera, whose new export waits unstarted.
    const more = await writeIncident(s.exportsRoot, 'inc-b', [
      { id: 'b1', file: 'b1.mp4', size: 2 * MiB, camera_id: 'cam-yard', camera_name: 'Yard' },
      { id: 'a2', file: 'a2.mp4', size: 1 * MiB, camera_id: 'cam-door', camera_name: 'Door' },
    ]);
    await waitFor(() => uploadOf(s.ledgerPath, 'b1')?.state === 'done', 30_000, 'b1 uploaded');
    expect(putsOfA()).toBe(putsAtPause);
    expect(partsDone(s.ledgerPath, a1.id)).toEqual(doneAtPause);
    expect(uploadOf(s.ledgerPath, 'a1')!.state).toBe('queued');
    expect(uploadOf(s.ledgerPath, 'a2')).toMatchObject({ state: 'queued', session: null });

    const cameras = await api.get<Camera[]>('/cameras');
    expect(cameras.map((c) => [c.id, c.name, c.state, c.videoBacklog])).toEqual([
      ['cam-door', 'Door', 'paused', 2],
      ['cam-yard', 'Yard', 'running', 0],
    ]);
    const yard = cameras[1]!;
    expect(yard.isOnline).toBe(true);
    expect(yard.videoUploadLatency).toBeGreaterThanOrEqual(0);
    expect(yard.networkTransmitRate).toBeGreaterThan(0);
    expect(Date.parse(yard.lastSeenAt)).toBeGreaterThan(Date.now() - 60_000);
    expect(yard.lastVideoAt).toBe(new Date('2024-02-02T11:51:32Z').toISOString());
    expect(await api.get('/cameras/cam-yard/video-upload-metrics')).toEqual({ uploadSize: 2 * MiB, uploadTime: expect.any(Number) });

    // The pause is in the ledger: a restarted daemon keeps the camera paused.
    d.kill('SIGTERM');
    expect((await d.exited).code).toBe(0);
    d = h.daemon(s);
    api = await ApiClient.of(d);
    expect(await api.get<Camera>('/cameras/cam-door')).toMatchObject({ state: 'paused', videoBacklog: 2 });
    const status = JSON.parse((await runCli(['status', '--json', '--config', s.configPath])).stdout) as {
      pausedCameras: Array<{ id: string; name: string }>;
    };
    expect(status.pausedCameras).toEqual([expect.objectContaining({ id: 'cam-door', name: 'Door' })]);
    // The restarted daemon uploads another camera's export, and still nothing of the paused camera's.
    await writeIncident(s.exportsRoot, 'inc-c', [{ id: 'c1', file: 'c1.mp4', size: 1 * MiB, camera_id: 'cam-yard', camera_name: 'Yard' }]);
    await waitFor(() => uploadOf(s.ledgerPath, 'c1')?.state === 'done', 30_000, 'c1 uploaded after the restart');
    expect(putsOfA()).toBe(putsAtPause);
    expect(uploadOf(s.ledgerPath, 'a1')!.state).toBe('queued');
    expect(uploadOf(s.ledgerPath, 'a2')).toMatchObject({ state: 'queued', session: null });

    const resumed = await api.call('PUT', '/cameras/cam-door/state/running');
    expect(resumed.status).toBe(201);
    const incident = await waitFor(
      () => {
        const i = s.alo.incident('inc-a');
        return i?.uploaded_videos.length === 1 ? i : undefined;
      },
      60_000,
      'a1 uploaded after the camera runs again',
    );
    const key = incident.uploaded_videos[0]!.s3_key;
    expect(await s.store.objectSha256(key)).toBe(shas.get('a1'));
    // Parts acknowledged before the pause were not sent again.
    for (const n of doneAtPause) {
      expect(
        s.store.requests.filter((r) => r.method === 'PUT' && r.key === key && r.partNumber === n && r.status === 200),
        `part ${n}`,
      ).toHaveLength(1);
    }
    await waitFor(() => uploadOf(s.ledgerPath, 'a2')?.state === 'done', 30_000, 'a2 uploaded');
    const b = s.alo.incident('inc-b')!;
    expect(await s.store.objectSha256(b.uploaded_videos.find((v) => v.id === 'a2')!.s3_key)).toBe(more.get('a2'));

    const door = await api.get<Camera>('/cameras/cam-door');
    expect(door).toMatchObject({ state: 'running', videoBacklog: 0, isOnline: true });
    expect(door.videoUploadLatency).toBeGreaterThan(0);
    const metrics = await api.get<{ uploadSize: number; uploadTime: number }>('/cameras/cam-door/video-upload-metrics');
    expect(metrics.uploadSize).toBe(31 * MiB);
    expect(metrics.uploadTime).toBeGreaterThan(0);

    const incidents =
      await api.get<Array<{ id: string; videos: Array<{ id: string; uploads: Array<{ state: string; bytesDone: number }> }> }>>(
        '/incidents',
      );
    expect(incidents.map((i) => i.id).sort()).toEqual(['inc-a', 'inc-b', 'inc-c']);
    // A page at a time, newest first (as the status page lists them), or oldest first.
    const ids = async (path: string): Promise<string[]> => (await api.get<Array<{ id: string }>>(path)).map((i) => i.id);
    expect(await ids('/incidents?order=newest&limit=1')).toEqual(['inc-c']);
    expect(await ids('/incidents?before=inc-c&limit=1')).toEqual(['inc-b']);
    expect(await ids('/incidents?before=inc-b&limit=1')).toEqual(['inc-a']);
    expect(await ids('/incidents?order=newest&before=inc-a')).toEqual([]);
    expect(await ids('/incidents?limit=1')).toEqual(['inc-a']);
    expect(await ids('/incidents?after=inc-a')).toEqual(['inc-b', 'inc-c']);
    const one = await api.get<{ id: string; videos: Array<{ id: string; uploads: Array<{ state: string; bytesDone: number }> }> }>(
      '/incidents/inc-a',
    );
    expect(one.videos[0]!.uploads[0]).toMatchObject({ state: 'done', bytesDone: 30 * MiB });
  });

  it('retries a failed upload through POST /uploads/{id}/retry, and says 409 for one that is not failed', async (ctx) => {
    const h = harness(ctx);
    const s = await h.site({ sections: apiSection() });
    // ALO refuses the first URL request with a 400: a permanent failure, until an operator retries.
    s.alo.failNext('upload_urls', 1, 400);
    const shas = await writeIncident(s.exportsRoot, 'inc-r', [{ id: 'r1', file: 'r1.mp4', size: 3 * MiB }]);
    const api = await ApiClient.of(h.daemon(s));
    const failed = await uploadReaches(s.ledgerPath, 'r1', 'failed');
    const before = await api.get<{ videos: Array<{ uploads: Array<{ state: string; lastError: string }> }> }>('/incidents/inc-r');
    expect(before.videos[0]!.uploads[0]).toMatchObject({ state: 'failed', lastError: expect.stringContaining('400') });

    const retried = await api.call('POST', `/uploads/${failed.id}/retry`);
    expect([retried.status, retried.json()]).toEqual([200, { code: 0, message: `upload ${failed.id} requeued`, uploads: 1 }]);
    const incident = await waitFor(
      () => {
        const i = s.alo.incident('inc-r');
        return i?.uploaded_videos.length === 1 ? i : undefined;
      },
      30_000,
      'r1 uploaded after the retry',
    );
    expect(await s.store.objectSha256(incident.uploaded_videos[0]!.s3_key)).toBe(shas.get('r1'));
    const again = await api.call('POST', `/uploads/${failed.id}/retry`);
    expect([again.status, again.json()]).toEqual([
      409,
      { code: 409, message: `upload ${failed.id} is done, not failed: nothing to retry` },
    ]);
  });

  it('serves Prometheus metrics that move when bytes move', async (ctx) => {
    const h = harness(ctx);
    const s = await h.site({ sections: apiSection(), upload: { bandwidth: '64MiB/s' } });
    const api = await ApiClient.of(h.daemon(s));
    const scrape = async (): Promise<ReturnType<typeof parsePrometheus>> => {
      const r = await api.call('GET', '/metrics');
      expect(r.status).toBe(200);
      expect(r.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
      return parsePrometheus(r.text);
    };
    const before = await scrape();
    const alo = { target: 'alo' };
    expect(sampleValue(before, 'vms_uplink_uploaded_bytes_total', alo)).toBe(0);
    expect(sampleValue(before, 'vms_uplink_queue_depth', alo)).toBe(0);
    expect(sampleValue(before, 'vms_uplink_bandwidth_limit_bytes_per_second')).toBe(64 * MiB);
    expect(before.some((x) => x.name === 'vms_uplink_process_resident_memory_bytes')).toBe(true);

    // Two 503s on the first part: retried, and counted by reason.
    s.store.injectFaults(
      { kind: 'status', status: 503, code: 'SlowDown', partNumber: 1 },
      { kind: 'status', status: 503, code: 'SlowDown', partNumber: 1 },
    );
    s.store.setLatency(200);
    await writeIncident(s.exportsRoot, 'inc-m', [{ id: 'm1', file: 'm1.mp4', size: 12 * MiB }]);
    const during = await waitFor(
      async () => {
        const m = await scrape();
        return sampleValue(m, 'vms_uplink_queue_depth', alo) === 1 ? m : undefined;
      },
      20_000,
      'the upload queued in the metrics',
    );
    expect(sampleValue(during, 'vms_uplink_oldest_queued_export_age_seconds')).toBeGreaterThan(0);

    await waitFor(() => uploadOf(s.ledgerPath, 'm1')?.state === 'done', 30_000, 'm1 uploaded');
    const after = await scrape();
    expect(sampleValue(after, 'vms_uplink_uploaded_bytes_total', alo)).toBe(12 * MiB);
    expect(sampleValue(after, 'vms_uplink_uploaded_parts_total', alo)).toBe(3);
    expect(sampleValue(after, 'vms_uplink_uploads_completed_total', alo)).toBe(1);
    expect(sampleValue(after, 'vms_uplink_uploads_failed_total', alo)).toBe(0);
    expect(sampleValue(after, 'vms_uplink_retries_total', { target: 'alo', reason: 'http_503' })).toBe(2);
    expect(sampleValue(after, 'vms_uplink_part_duration_seconds_count', alo)).toBe(3);
    expect(sampleValue(after, 'vms_uplink_part_duration_seconds_bucket', { target: 'alo', le: '+Inf' })).toBe(3);
    expect(sampleValue(after, 'vms_uplink_part_duration_seconds_sum', alo)).toBeGreaterThan(3 * 0.2);
    expect(sampleValue(after, 'vms_uplink_queue_depth', alo)).toBe(0);
    expect(sampleValue(after, 'vms_uplink_oldest_queued_export_age_seconds')).toBe(0);
    expect(sampleValue(after, 'vms_uplink_target_failing_seconds', alo)).toBe(0);
  });

  it('shows a target failing for as long as it fails, and an upload given up, in the metrics', async (ctx) => {
    const h = harness(ctx);
    const s = await h.site({ sections: apiSection() });
    const api = await ApiClient.of(h.daemon(s));
    const alo = { target: 'alo' };
    const scrape = async (): Promise<ReturnType<typeof parsePrometheus>> => {
      const r = await api.call('GET', '/metrics');
      expect(r.status).toBe(200);
      return parsePrometheus(r.text);
    };
    const before = await scrape();
    expect(sampleValue(before, 'vms_uplink_target_failing_seconds', alo)).toBe(0);
    expect(sampleValue(before, 'vms_uplink_uploads_failed_total', alo)).toBe(0);

    // Every request for upload URLs answered 503 until the faults are cleared: ALO keeps failing.
    s.alo.failNext('upload_urls', 1_000_000, 503);
    const failingFrom = Date.now();
    await writeIncident(s.exportsRoot, 'inc-down', [{ id: 'd1', file: 'd1.mp4', size: 1 * MiB }]);
    const failing = await waitFor(
      async () => {
        const m = await scrape();
        return sampleValue(m, 'vms_uplink_target_failing_seconds', alo) >= 1 ? m : undefined;
      },
      20_000,
      'vms_uplink_target_failing_seconds of alo at 1 s or more',
    );
    const failingFor = sampleValue(failing, 'vms_uplink_target_failing_seconds', alo);
    // No longer than the faults have been armed, and it is the 503s that were retried.
    expect(failingFor).toBeLessThanOrEqual((Date.now() - failingFrom) / 1000);
    expect(sampleValue(failing, 'vms_uplink_retries_total', { target: 'alo', reason: 'http_503' })).toBeGreaterThanOrEqual(1);
    expect(sampleValue(failing, 'vms_uplink_uploads_failed_total', alo)).toBe(0);
    // Still failing a second later: the figure grew with the time.
    await waitFor(
      async () => sampleValue(await scrape(), 'vms_uplink_target_failing_seconds', alo) >= failingFor + 1,
      10_000,
      'vms_uplink_target_failing_seconds growing while ALO fails',
    );
    expect(uploadOf(s.ledgerPath, 'd1')?.state).toBe('queued');

    // ALO answers again: the upload completes and the target is no longer failing.
    s.alo.clearFaults('upload_urls');
    await waitFor(() => uploadOf(s.ledgerPath, 'd1')?.state === 'done', 30_000, 'd1 uploaded once ALO answers');
    const answered = await scrape();
    expect(sampleValue(answered, 'vms_uplink_target_failing_seconds', alo)).toBe(0);
    expect(sampleValue(answered, 'vms_uplink_uploads_completed_total', alo)).toBe(1);
    expect(sampleValue(answered, 'vms_uplink_uploads_failed_total', alo)).toBe(0);

    // A refusal for good (400): the upload is given up, and counted.
    s.alo.failNext('upload_urls', 1, 400);
    await writeIncident(s.exportsRoot, 'inc-refused', [{ id: 'r1', file: 'r1.mp4', size: 1 * MiB }]);
    await waitFor(() => uploadOf(s.ledgerPath, 'r1')?.state === 'failed', 30_000, 'r1 refused by ALO');
    const refused = await waitFor(
      async () => {
        const m = await scrape();
        return sampleValue(m, 'vms_uplink_uploads_failed_total', alo) > 0 ? m : undefined;
      },
      10_000,
      'vms_uplink_uploads_failed_total of alo above 0',
    );
    expect(sampleValue(refused, 'vms_uplink_uploads_failed_total', alo)).toBe(1);
    expect(sampleValue(refused, 'vms_uplink_uploads_completed_total', alo)).toBe(1);
    const uploads = ledgerRowsSoFar<{ video_id: string; state: string }>(s.ledgerPath, `SELECT video_id, state FROM uploads ORDER BY id`);
    expect(uploads.map((u) => [u.video_id, u.state])).toEqual([
      ['d1', 'done'],
      ['r1', 'failed'],
    ]);
  });

  it('turns /healthz to 503 with the reason while the watch root is gone, the ledger cannot be written, or every target keeps failing', async (ctx) => {
    const h = harness(ctx);
    const dir = await h.dir();
    // The ledger on a small filesystem of its own, filled up for real below.
    const disk = mountTmpfs(ctx, join(dir, 'state'), '16m');
    const s = await h.site({ dir, sections: apiSection({ targets_down_after: '1s' }), ledger: { min_free: 0 } });
    const d = h.daemon(s);
    const api = await ApiClient.of(d);
    const healthz = async (): Promise<{ status: number; reasons: string[] }> => {
      const r = await api.call('GET', '/healthz', null);
      return { status: r.status, reasons: r.json<{ reasons?: string[] }>().reasons ?? [] };
    };
    expect(await healthz()).toEqual({ status: 200, reasons: [] });

    const aside = `${s.exportsRoot}.aside`;
    await rename(s.exportsRoot, aside);
    const gone = await waitFor(async () => ((await healthz()).status === 503 ? healthz() : undefined), 15_000, '503 for the watch root');
    expect(gone.reasons).toEqual([expect.stringContaining(`watch root ${s.exportsRoot}`)]);
    await rename(aside, s.exportsRoot);
    await waitFor(async () => (await healthz()).status === 200, 15_000, 'healthy again');

    await disk.fill();
    await writeIncident(s.exportsRoot, 'inc-full', [{ id: 'full1', file: 'full1.mp4', size: 1 * MiB }]);
    const full = await waitFor(async () => ((await healthz()).status === 503 ? healthz() : undefined), 15_000, '503 for the ledger');
    expect(full.reasons).toEqual([
      expect.stringMatching(new RegExp(`^the ledger ${s.ledgerPath} cannot be written since .*SQLITE_(FULL|IOERR)`)),
    ]);
    await disk.free();
    await waitFor(() => uploadOf(s.ledgerPath, 'full1')?.state === 'done', 30_000, 'full1 uploaded once the ledger can be written');
    expect(await healthz()).toEqual({ status: 200, reasons: [] });

    // Every call to the one target fails for a while (12 × 503), then it answers again.
    s.alo.failNext('upload_urls', 12, 503);
    await writeIncident(s.exportsRoot, 'inc-h', [{ id: 'h1', file: 'h1.mp4', size: 1 * MiB }]);
    const down = await waitFor(
      async () => {
        const x = await healthz();
        return x.status === 503 ? x : undefined;
      },
      20_000,
      '503 for the failing target',
    );
    expect(down.reasons).toEqual([expect.stringMatching(/^every target has been failing for \d+ s/)]);
    await waitFor(() => uploadOf(s.ledgerPath, 'h1')?.state === 'done', 30_000, 'h1 uploaded once ALO answers');
    expect(await healthz()).toEqual({ status: 200, reasons: [] });
  });

  it('below ledger.min_free takes no new work, says so in the log, status and /healthz, and resumes when space returns', async (ctx) => {
    const h = harness(ctx);
    const dir = await h.dir();
    const stateDir = join(dir, 'state');
    await mkdir(stateDir, { recursive: true });
    const floor = mountTmpfs(ctx, stateDir, '64m');
    const s = await h.site({ dir, sections: apiSection(), ledger: { min_free: '32MiB' } });
    const d = h.daemon(s);
    const api = await ApiClient.of(d);
    await writeIncident(s.exportsRoot, 'inc-1', [{ id: 'f1', file: 'f1.mp4', size: 1 * MiB }]);
    await waitFor(() => uploadOf(s.ledgerPath, 'f1')?.state === 'done', 30_000, 'f1 uploaded with room to spare');

    await floor.fill();
    await waitFor(() => d.events('disk.low').length > 0, 10_000, 'disk.low logged');
    const health = await api.call('GET', '/healthz', null);
    expect(health.status).toBe(503);
    expect(health.json<{ reasons: string[] }>().reasons).toEqual([
      expect.stringMatching(/bytes free on the ledger's filesystem, below ledger\.min_free/),
    ]);
    // What the VmsUplinkLedgerBelowMinFree alert compares.
    const metrics = parsePrometheus((await api.call('GET', '/metrics')).text);
    expect(sampleValue(metrics, 'vms_uplink_ledger_min_free_bytes')).toBe(32 * MiB);
    expect(sampleValue(metrics, 'vms_uplink_filesystem_size_bytes', { filesystem: 'ledger' })).toBe(64 * MiB);
    expect(sampleValue(metrics, 'vms_uplink_filesystem_free_bytes', { filesystem: 'ledger' })).toBeLessThan(32 * MiB);
    const status = JSON.parse((await runCli(['status', '--json', '--config', s.configPath])).stdout) as {
      problems: Array<{ kind: string; message: string }>;
    };
    expect(status.problems).toEqual([expect.objectContaining({ kind: 'disk', message: expect.stringMatching(/below ledger\.min_free/) })]);
    const text = await runCli(['status', '--config', s.configPath]);
    expect(text.stdout).toMatch(/^PROBLEM \(disk, since .*\): \d+ bytes free/m);

    // A new export is not even read while below the floor.
    await writeIncident(s.exportsRoot, 'inc-2', [{ id: 'f2', file: 'f2.mp4', size: 1 * MiB }]);
    await sleep(2_000);
    expect(ledgerRowsSoFar(s.ledgerPath, `SELECT id FROM incidents WHERE id = 'inc-2'`)).toEqual([]);

    await floor.free();
    await waitFor(() => uploadOf(s.ledgerPath, 'f2')?.state === 'done', 30_000, 'f2 uploaded once space returned');
    expect(d.events('disk.ok')).toHaveLength(1);
    expect((await api.call('GET', '/healthz', null)).status).toBe(200);
    const after = parsePrometheus((await api.call('GET', '/metrics')).text);
    expect(sampleValue(after, 'vms_uplink_filesystem_free_bytes', { filesystem: 'ledger' })).toBeGreaterThan(32 * MiB);
    expect(JSON.parse((await runCli(['status', '--json', '--config', s.configPath])).stdout)).toMatchObject({ problems: [] });
  });
});
