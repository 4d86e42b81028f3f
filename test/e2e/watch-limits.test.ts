/**
 * The real daemon with too few inotify watches: it runs in a user namespace of its own whose
 * watch limit is lower than the folders to watch (util-linux `unshare`; Linux counts the limit per
 * user namespace since 5.11), so the OS really refuses watches with ENOSPC. The folders it could
 * not watch are rescanned instead: every export still arrives, byte for byte, and the log,
 * `status` and `/healthz` say so.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { troubles, waitIncident } from '../support/alo-site.js';
import { DaemonProcess, runCli, waitFor } from '../support/daemon-process.js';
import { harness } from '../support/harness.js';
import { inotifyWatches, watchLimitLauncher, watchLimitUnavailable } from '../support/inotify.js';
import { ApiClient, apiSection } from '../support/local-api.js';
import { writeOneVideoIncident } from '../support/manifest.js';

const KiB = 1024;
/** The root and seven of the ten camera folders get a watch; three are refused. */
const MAX_WATCHES = 8;
const CAMERAS = Array.from({ length: 10 }, (_, i) => `cam-${String(i + 1).padStart(2, '0')}`);

describe('when the OS refuses more inotify watches (ENOSPC)', () => {
  it('rescans the folders it could not watch: every export arrives, and the log, status and /healthz say so', async (ctx) => {
    const unavailable = watchLimitUnavailable();
    if (unavailable) throw new Error(`this test gives the daemon a low inotify limit in a user namespace of its own: ${unavailable}`);
    const h = harness(ctx);
    const s = await h.site({ sections: apiSection() });
    for (const camera of CAMERAS) await mkdir(join(s.exportsRoot, camera));
    const d = new DaemonProcess(['run', '--config', s.configPath], {}, watchLimitLauncher(MAX_WATCHES));
    ctx.onTestFinished(async () => {
      d.kill('SIGKILL');
      await d.exited;
    });

    const fallback = await waitFor(() => d.events('watch.fallback')[0], 20_000, `the fallback logged\n${troubles(d)}`);
    expect(fallback).toMatchObject({ level: 'warn', folders: CAMERAS.length + 1 - MAX_WATCHES, rescanSeconds: 10 });
    expect(await inotifyWatches(d.pid)).toBe(MAX_WATCHES);
    const api = await ApiClient.of(d);
    const health = await api.call('GET', '/healthz', null);
    expect(health.status).toBe(200);
    expect(health.json()).toEqual({
      status: 'degraded',
      reasons: [
        expect.stringMatching(/^the OS refused to watch 3 folder\(s\) below watch\.root \(ENOSPC: fs\.inotify\.max_user_watches reached\)/),
      ],
    });
    const status = await runCli(['status', '--config', s.configPath]);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toMatch(/^PROBLEM \(watch, since [^)]+\): the OS refused to watch 3 folder\(s\)/m);

    // The VMS exports an incident into every camera folder, watched or not.
    const shas = new Map<string, string>();
    for (const camera of CAMERAS) {
      shas.set(camera, await writeOneVideoIncident(s.exportsRoot, `inc-${camera}`, 200 * KiB, { folder: join(camera, `inc-${camera}`) }));
    }
    for (const camera of CAMERAS) {
      const incident = await waitIncident(
        s,
        d,
        `inc-${camera}`,
        (i) => i.uploaded_videos.length === 1,
        `the incident of ${camera} uploaded`,
      );
      expect(await s.store.objectSha256(incident.uploaded_videos[0]!.s3_key)).toBe(shas.get(camera));
    }
    // Said once in the log, however many more folders were refused since.
    expect(d.events('watch.fallback')).toHaveLength(1);
    expect(await inotifyWatches(d.pid)).toBeLessThanOrEqual(MAX_WATCHES);
  });
});
