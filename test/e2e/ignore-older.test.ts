/**
 * watch.ignore_older through the real daemon and CLI, the ALO emulator and its store: a recorder
 * that already holds old exports when vms-uplink is installed. Old incident folders (manifests
 * given old mtimes with utimes) are skipped and nothing of them reaches ALO; young ones upload;
 * `status` counts the skipped; `retry INCIDENT-ID` takes one in and it arrives byte-identical;
 * an incident first seen young is never skipped later.
 */
import { readFile, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { troubles, waitIncident, type AloSite } from '../support/alo-site.js';
import { runCli, waitFor, type DaemonProcess } from '../support/daemon-process.js';
import { writeVideo } from '../support/files.js';
import { harness } from '../support/harness.js';
import { incidentManifest, writeIncident } from '../support/manifest.js';

const DAY_S = 86_400;
const KiB = 1024;

/** Sets the mtime (and atime) of every path to `daysAgo` days before now, as a box's history has. */
async function age(daysAgo: number, ...paths: string[]): Promise<void> {
  const at = Date.now() / 1000 - daysAgo * DAY_S;
  for (const path of paths) await utimes(path, at, at);
}

/** Exports an incident of one video, aged `daysAgo` days (the video and the manifest); returns the video's SHA-256. */
async function exportAged(s: AloSite, id: string, daysAgo: number): Promise<string> {
  const shas = await writeIncident(s.exportsRoot, id, [{ id: `${id}-v1`, file: 'cam01.mp4', size: 256 * KiB }]);
  await age(daysAgo, join(s.exportsRoot, id, 'cam01.mp4'), join(s.exportsRoot, id, 'incident.json'));
  return shas.get(`${id}-v1`)!;
}

async function statusJson(s: AloSite): Promise<{ skippedIncidents: number; incidents: Array<{ id: string }> }> {
  const r = await runCli(['status', '--json', '--config', s.configPath]);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as { skippedIncidents: number; incidents: Array<{ id: string }> };
}

/** Every ALO call that names the incident or one of its files. */
const aloCallsFor = (s: AloSite, id: string): unknown[] => s.alo.calls.filter((c) => JSON.stringify(c).includes(id));

async function arrived(s: AloSite, d: DaemonProcess, id: string, sha: string): Promise<void> {
  const incident = await waitIncident(s, d, id, (i) => i.uploaded_videos.length === 1, `incident ${id} uploaded`);
  expect(await s.store.objectSha256(incident.uploaded_videos[0]!.s3_key)).toBe(sha);
}

describe('watch.ignore_older: first install on a box with history', () => {
  it('skips old incident folders, uploads young ones, counts the skipped in the log and status, and takes one in on retry', async (ctx) => {
    const h = harness(ctx);
    const s = await h.site({ watch: { ignore_older: '30d' } });
    const oldA = await exportAged(s, 'old-a', 400);
    await exportAged(s, 'old-b', 31);
    const young = await exportAged(s, 'young', 29);
    const fresh = await exportAged(s, 'fresh', 0);

    const d = h.daemon(s);
    await arrived(s, d, 'young', young);
    await arrived(s, d, 'fresh', fresh);
    const counted = await waitFor(() => d.events('watch.ignored_older')[0], 15_000, `the count of skipped folders\n${troubles(d)}`);
    expect(counted).toMatchObject({ level: 'info', skipped: 2, skippedNow: 2, ignoreOlder: '30d' });
    expect(counted.msg).toBe(
      'watch.ignore_older is 30d: 2 incident folder(s) skipped, not uploaded, their manifest older than that when first seen ' +
        '(2 of them found at this start); vms-uplink retry INCIDENT-ID takes one in',
    );
    // Nothing of the old ones reached the platform: no upload asked for, no report.
    expect(aloCallsFor(s, 'old-a')).toEqual([]);
    expect(aloCallsFor(s, 'old-b')).toEqual([]);
    expect(s.alo.incident('old-a')).toBeUndefined();

    const text = await runCli(['status', '--config', s.configPath]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toContain(
      'skipped: 2 incident folder(s) whose manifest was older than watch.ignore_older when first seen, not uploaded; vms-uplink retry INCIDENT-ID takes one in',
    );
    const before = await statusJson(s);
    expect(before.skippedIncidents).toBe(2);
    expect(before.incidents.map((i) => i.id).sort()).toEqual(['fresh', 'young']);

    // An operator takes one in anyway: it is uploaded, byte for byte.
    const retried = await runCli(['retry', 'old-a', '--config', s.configPath]);
    expect(retried.code, retried.stderr).toBe(0);
    expect(retried.stdout).toBe(
      'took in incident old-a, skipped as older than watch.ignore_older: the daemon reads its manifest and uploads it\n',
    );
    await arrived(s, d, 'old-a', oldA);
    expect((await statusJson(s)).skippedIncidents).toBe(1);
    expect(aloCallsFor(s, 'old-b')).toEqual([]);
    const unknown = await runCli(['retry', 'no-such-incident', '--config', s.configPath]);
    expect(unknown.code).toBe(1);
  });

  it('never skips an incident first seen while young, even once its manifest is older than the setting', async (ctx) => {
    const h = harness(ctx);
    const s = await h.site({ watch: { ignore_older: '30d' } });
    const first = await exportAged(s, 'inc-1', 1);
    const d1 = h.daemon(s);
    await arrived(s, d1, 'inc-1', first);
    d1.kill('SIGTERM');
    expect((await d1.exited).code).toBe(0);

    // The VMS adds a video to it; the rewritten manifest carries an mtime from long ago (copied with its times kept).
    const folder = join(s.exportsRoot, 'inc-1');
    const second = await writeVideo(join(folder, 'cam02.mp4'), 128 * KiB);
    await writeFile(
      join(folder, 'incident.json'),
      JSON.stringify(
        incidentManifest('inc-1', [
          { id: 'inc-1-v1', file: 'cam01.mp4' },
          { id: 'inc-1-v2', file: 'cam02.mp4' },
        ]),
      ),
    );
    await age(90, join(folder, 'cam02.mp4'), join(folder, 'incident.json'));
    const d2 = h.daemon(s);
    const incident = await waitIncident(s, d2, 'inc-1', (i) => i.uploaded_videos.length === 2, 'the added video uploaded');
    expect(await s.store.objectSha256(incident.uploaded_videos.find((v) => v.id === 'inc-1-v2')!.s3_key)).toBe(second);
    const counted = await waitFor(() => d2.events('watch.ignored_older')[0], 15_000, 'the count of skipped folders');
    expect(counted).toMatchObject({ skipped: 0, skippedNow: 0 });
    expect((await statusJson(s)).skippedIncidents).toBe(0);
  });

  it('refuses a setting that is not a duration, naming watch.ignore_older, and starts nothing', async (ctx) => {
    const h = harness(ctx);
    const s = await h.site();
    const config = (await readFile(s.configPath, 'utf8')).replace(/^watch:\n/m, 'watch:\n  ignore_older: a month\n');
    const path = join(s.dir, 'bad.yaml');
    await writeFile(path, config);
    const checked = await runCli(['check-config', '--config', path]);
    expect(checked.code).toBe(2);
    expect(checked.stderr).toMatch(/^\s*watch\.ignore_older: invalid duration "a month"/m);
    const run = await runCli(['run', '--config', path]);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('watch.ignore_older: invalid duration "a month"');
  });
});
