/**
 * The whole product on one incident, as an installer would see it: a real daemon process, a
 * real export folder, the ALO emulator and an S3 store that checks every signature.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { waitIncident, type AloSite } from '../support/alo-site.js';
import { runCli, waitFor } from '../support/daemon-process.js';
import { MiB, writeThumbnail, writeVideo } from '../support/files.js';
import { harness } from '../support/harness.js';
import { ledgerRowsSoFar } from '../support/ledger.js';
import { ApiClient, apiSection, parsePrometheus, sampleValue } from '../support/local-api.js';
import { incidentManifest, writeManifest, writeOneVideoIncident } from '../support/manifest.js';

describe('an incident end to end on ALO', () => {
  it('uploads a multipart video, a small video with its thumbnail, and reports the failed export', async (ctx) => {
    const h = harness(ctx);
    const site = await h.site();
    const folder = join(site.exportsRoot, '2024-02-02', 'incident-1');
    const bigSha = await writeVideo(join(folder, 'cam01_1149.mp4'), 12 * MiB + 123);
    const smallSha = await writeVideo(join(folder, 'cam02_1149.mov'), 300 * 1024);
    const thumbSha = await writeThumbnail(join(folder, 'cam02_1149.jpg'));
    const id = '8d1635ed-f747-427c-9b35-d83a08d08ab5';
    await writeManifest(
      folder,
      incidentManifest(id, [
        { id: 'good-file-1', file: 'cam01_1149.mp4' },
        { id: 'good-file-2', file: 'cam02_1149.mov', thumbnail: 'cam02_1149.jpg' },
        { id: 'bad-file-2', errors: ['G64 export failed with: No video available for the camera during the selected time period.'] },
      ]),
    );

    const daemon = h.daemon(site);
    const incident = await waitFor(
      () => {
        const i = site.alo.incident(id);
        return i && i.uploaded_videos.length === 2 ? i : undefined;
      },
      30_000,
      'both videos reported',
    );

    // The first report went out as soon as the manifest was read, before any video finished.
    const first = site.alo.reports[0]!.body as { vms_incident: { uploaded_videos: unknown[]; failed_videos: Array<{ id: string }> } };
    expect(first.vms_incident.uploaded_videos).toEqual([]);
    expect(first.vms_incident.failed_videos.map((v) => v.id)).toEqual(['bad-file-2']);

    expect(incident.title).toBe('Test incident');
    const byId = new Map(incident.uploaded_videos.map((v) => [v.id, v]));
    const big = byId.get('good-file-1')!;
    const small = byId.get('good-file-2')!;
    expect(await site.store.objectSha256(big.s3_key)).toBe(bigSha);
    expect(await site.store.objectSha256(small.s3_key)).toBe(smallSha);
    expect(await site.store.objectSha256(small.s3_thumbnail_key!)).toBe(thumbSha);
    expect(big.s3_thumbnail_key).toBeNull();
    expect(small.camera_name).toBe('192.168.0.241 - Camera - 02');
    expect(incident.failed_videos).toEqual([
      expect.objectContaining({
        id: 'bad-file-2',
        upload_errors: ['G64 export failed with: No video available for the camera during the selected time period.'],
      }),
    ]);

    // Multipart for the big file (3 parts of 5 MiB), one PUT each for the small video and the thumbnail.
    const puts = site.store.requests.filter((r) => r.method === 'PUT' && r.status === 200);
    expect(
      puts
        .filter((r) => r.key === big.s3_key)
        .map((r) => r.partNumber)
        .sort(),
    ).toEqual([1, 2, 3]);
    expect(puts.filter((r) => r.key === small.s3_key)).toHaveLength(1);
    expect(site.alo.calls.filter((c) => c.route === 'complete_multipart_upload').map((c) => c.status)).toEqual([200]);
    expect(site.store.openMultipartUploads()).toEqual([]);

    const status = await runCli(['status', '--json', '--config', site.configPath]);
    expect(status.code).toBe(0);
    const snapshot = JSON.parse(status.stdout) as {
      totals: Record<string, number>;
      incidents: Array<{ reports: Array<{ upToDate: boolean }> }>;
    };
    expect(snapshot.totals).toMatchObject({ done: 3, failed: 0, queued: 0, uploading: 0, failedVideos: 1 });
    await waitFor(
      async () => {
        const s = JSON.parse((await runCli(['status', '--json', '--config', site.configPath])).stdout) as typeof snapshot;
        return s.incidents[0]!.reports[0]!.upToDate;
      },
      10_000,
      'the last report acknowledged',
    );

    daemon.kill('SIGTERM');
    expect(await daemon.exited).toEqual({ code: 0, signal: null });
  });
});

describe('a report ALO refuses for good', () => {
  it('is recorded as refused, shown in status, /healthz and metrics, not resent until the incident changes, and sent again on retry', async (ctx) => {
    const h = harness(ctx);
    const s = await h.site({ sections: apiSection() });
    // Every report is refused with a 400 until the fault is cleared.
    s.alo.failNext('put_incident', 10_000, 400);
    const id = randomUUID();
    const sha = await writeOneVideoIncident(s.exportsRoot, id, 1 * MiB);
    const d = h.daemon(s);
    const api = await ApiClient.of(d);
    const reportState = async (): Promise<string | undefined> =>
      (JSON.parse((await runCli(['status', '--json', '--config', s.configPath])).stdout) as StatusJson).incidents.find((i) => i.id === id)
        ?.reports[0]?.state;
    await waitFor(
      async () => s.store.requests.some((r) => r.status === 200) && (await reportState()) === 'refused' && ledgerUploadsDone(s, id),
      30_000,
      'the video uploaded and the report refused',
    );
    const refusedSoFar = s.alo.reports.filter((r) => r.incidentId === id).length;
    // The manifest and the video's completion are the incident's two versions: each refused once.
    expect(refusedSoFar).toBeGreaterThanOrEqual(1);
    expect(refusedSoFar).toBeLessThanOrEqual(2);
    // Many backoffs of the test's 50–500 ms retry policy later, nothing more was sent.
    await new Promise((r) => setTimeout(r, 2_000));
    expect(s.alo.reports.filter((r) => r.incidentId === id)).toHaveLength(refusedSoFar);

    const health = await api.call('GET', '/healthz', null);
    expect(health.status).toBe(200);
    expect(health.json<{ status: string; reasons: string[] }>()).toEqual({
      status: 'degraded',
      reasons: [expect.stringContaining('alo refused the latest report of 1 incident(s)')],
    });
    const samples = parsePrometheus((await api.call('GET', '/metrics')).text);
    expect(sampleValue(samples, 'vms_uplink_reports_refused', { target: 'alo' })).toBe(1);
    expect(sampleValue(samples, 'vms_uplink_reports_refused_total', { target: 'alo' })).toBe(refusedSoFar);
    const text = await runCli(['status', '--config', s.configPath]);
    expect(text.stdout).toContain('reports: 1 refused');
    expect(text.stdout).toMatch(/report to alo: FAILED: refused by the platform: .*answered 400/);

    s.alo.clearFaults('put_incident');
    expect((await runCli(['retry', id, '--config', s.configPath])).code).toBe(0);
    const incident = await waitIncident(s, d, id, (i) => i.uploaded_videos.length === 1, 'the report sent again and acknowledged');
    expect(await s.store.objectSha256(incident.uploaded_videos[0]!.s3_key)).toBe(sha);
    await waitFor(async () => (await reportState()) === 'acknowledged', 10_000, 'the report acknowledged in status');
    expect((await api.call('GET', '/healthz', null)).json()).toEqual({ status: 'ok' });
  });
});

interface StatusJson {
  incidents: Array<{ id: string; reports: Array<{ state: string }> }>;
}

function ledgerUploadsDone(s: AloSite, incidentId: string): boolean {
  const rows = ledgerRowsSoFar<{ state: string }>(s.ledgerPath, 'SELECT state FROM uploads WHERE incident_id = ?', incidentId);
  return rows.length > 0 && rows.every((r) => r.state === 'done');
}
