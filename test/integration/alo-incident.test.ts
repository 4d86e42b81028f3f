/**
 * The whole product on one incident, as an installer would see it: a real daemon process, a
 * real export folder, the ALO emulator and an S3 store that checks every signature.
 */
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DaemonProcess, runCli, waitFor } from '../support/daemon-process.js';
import { MiB, writeThumbnail, writeVideo } from '../support/files.js';
import { incidentManifest, writeManifest } from '../support/manifest.js';
import { startAloSite, type AloSite } from '../support/alo-site.js';

let site: AloSite;
let daemon: DaemonProcess | null = null;

afterEach(async () => {
  daemon?.kill('SIGKILL');
  await daemon?.exited;
  daemon = null;
  await site?.close();
});

describe('an incident end to end on ALO', () => {
  it('uploads a multipart video, a small video with its thumbnail, and reports the failed export', async () => {
    site = await startAloSite();
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

    daemon = DaemonProcess.run(site.configPath);
    const incident = await waitFor(() => {
      const i = site.alo.incident(id);
      return i && i.uploaded_videos.length === 2 ? i : undefined;
    }, 30_000, 'both videos reported');

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
      expect.objectContaining({ id: 'bad-file-2', upload_errors: ['G64 export failed with: No video available for the camera during the selected time period.'] }),
    ]);

    // Multipart for the big file (3 parts of 5 MiB), one PUT each for the small video and the thumbnail.
    const puts = site.store.requests.filter((r) => r.method === 'PUT' && r.status === 200);
    expect(puts.filter((r) => r.key === big.s3_key).map((r) => r.partNumber).sort()).toEqual([1, 2, 3]);
    expect(puts.filter((r) => r.key === small.s3_key)).toHaveLength(1);
    expect(site.alo.calls.filter((c) => c.route === 'complete_multipart_upload').map((c) => c.status)).toEqual([200]);
    expect(site.store.openMultipartUploads()).toEqual([]);

    const status = await runCli(['status', '--json', '--config', site.configPath]);
    expect(status.code).toBe(0);
    const snapshot = JSON.parse(status.stdout) as { totals: Record<string, number>; incidents: Array<{ reports: Array<{ upToDate: boolean }> }> };
    expect(snapshot.totals).toMatchObject({ done: 3, failed: 0, queued: 0, uploading: 0, failedVideos: 1 });
    await waitFor(async () => {
      const s = JSON.parse((await runCli(['status', '--json', '--config', site.configPath])).stdout) as typeof snapshot;
      return s.incidents[0]!.reports[0]!.upToDate;
    }, 10_000, 'the last report acknowledged');

    daemon.kill('SIGTERM');
    expect(await daemon.exited).toEqual({ code: 0, signal: null });
  });
});
