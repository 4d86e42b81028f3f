/**
 * Fan-out: every incident goes to every target, or to the ones `routes` picks by folder; each
 * (video, target) pair progresses on its own, and a target that is down holds back no other.
 */
import { join } from 'node:path';
import { describe, expect, it, type TestContext } from 'vitest';
import { startAloEmulator, type AloEmulator } from '../emulators/alo.js';
import { startS3Store, type S3Store } from '../emulators/s3-store.js';
import { DaemonProcess, runCli, waitFor, writeConfig } from '../support/daemon-process.js';
import { MiB, tempDir, writeVideo } from '../support/files.js';
import { incidentManifest, writeManifest } from '../support/manifest.js';

const TOKEN = 'alo-test-token';

interface Fleet {
  store: S3Store;
  a: AloEmulator;
  b: AloEmulator;
  exportsRoot: string;
  configPath: string;
}

async function fleet(ctx: TestContext, extra: Record<string, unknown> = {}, bDown = false): Promise<Fleet> {
  const tmp = await tempDir();
  const store = await startS3Store();
  const a = await startAloEmulator({ store });
  const b = await startAloEmulator({ store });
  const exportsRoot = join(tmp.path, 'exports');
  const target = (url: string): Record<string, unknown> => ({ type: 'alo', base_url: url, auth: { bearer: TOKEN }, multipart_threshold: '5MiB' });
  const configPath = await writeConfig(tmp.path, {
    watch: { root: exportsRoot, settle_seconds: 0.3 },
    ledger: { path: join(tmp.path, 'ledger.db') },
    upload: { part_size: '5MiB', retry_initial: 0.05, retry_max: 0.5 },
    // Port 1 on loopback: nothing listens, every connection is refused.
    targets: { a: target(a.baseUrl), b: target(bDown ? 'http://127.0.0.1:1/v1' : b.baseUrl) },
    ...extra,
  });
  const daemons: DaemonProcess[] = [];
  ctx.onTestFinished(async () => {
    for (const d of daemons) {
      d.kill('SIGKILL');
      await d.exited;
    }
    await a.close();
    await b.close();
    await store.close();
    await tmp.cleanup();
  });
  daemons.push(DaemonProcess.run(configPath));
  return { store, a, b, exportsRoot, configPath };
}

async function exportIncident(root: string, folder: string, id: string): Promise<string> {
  const sha = await writeVideo(join(root, folder, 'cam01.mp4'), 6 * MiB);
  await writeManifest(join(root, folder), incidentManifest(id, [{ id: `${id}-v1`, file: 'cam01.mp4' }]));
  return sha;
}

const uploadedKey = (alo: AloEmulator, id: string): string | undefined => alo.incident(id)?.uploaded_videos[0]?.s3_key;

describe('fan-out to several targets', () => {
  it('sends every incident to every target, each with its own upload', async (ctx) => {
    const f = await fleet(ctx);
    const sha = await exportIncident(f.exportsRoot, 'inc-1', 'inc-1');
    const keyA = await waitFor(() => uploadedKey(f.a, 'inc-1'), 30_000, 'target a');
    const keyB = await waitFor(() => uploadedKey(f.b, 'inc-1'), 30_000, 'target b');
    expect(keyA).not.toBe(keyB);
    expect(await f.store.objectSha256(keyA)).toBe(sha);
    expect(await f.store.objectSha256(keyB)).toBe(sha);
  });

  it('completes on the target that is up while the other is down, and shows why the other waits', async (ctx) => {
    const f = await fleet(ctx, {}, true);
    const sha = await exportIncident(f.exportsRoot, 'inc-2', 'inc-2');
    const keyA = await waitFor(() => uploadedKey(f.a, 'inc-2'), 30_000, 'target a despite b being down');
    expect(await f.store.objectSha256(keyA)).toBe(sha);
    const status = JSON.parse((await runCli(['status', '--json', '--config', f.configPath])).stdout) as {
      incidents: Array<{ videos: Array<{ uploads: Array<{ target: string; state: string; lastError: string | null }> }> }>;
    };
    const uploads = status.incidents[0]!.videos[0]!.uploads;
    expect(uploads.find((u) => u.target === 'a')?.state).toBe('done');
    const b = uploads.find((u) => u.target === 'b')!;
    expect(b.state).toBe('queued');
    expect(b.lastError ?? '').toMatch(/ECONNREFUSED|connect/i);
  });

  it('sends an incident only to the targets of the first route that matches its folder', async (ctx) => {
    const f = await fleet(ctx, {
      routes: [
        { match: 'north/**', targets: ['b'] },
        { match: 'south/*', targets: ['a'] },
      ],
    });
    await exportIncident(f.exportsRoot, 'north/2024/inc-n', 'inc-n');
    await exportIncident(f.exportsRoot, 'south/inc-s', 'inc-s');
    await exportIncident(f.exportsRoot, 'west/inc-w', 'inc-w');
    await waitFor(() => uploadedKey(f.b, 'inc-n'), 30_000, 'north on b');
    await waitFor(() => uploadedKey(f.a, 'inc-s'), 30_000, 'south on a');
    const status = await waitFor(async () => {
      const s = JSON.parse((await runCli(['status', '--json', '--config', f.configPath])).stdout) as {
        incidents: Array<{ id: string; videos: Array<{ state: string; errors: string[] }> }>;
      };
      const west = s.incidents.find((i) => i.id === 'inc-w');
      return west?.videos[0]?.state === 'failed' ? west : undefined;
    }, 15_000, 'the unrouted incident shown as failed');
    expect(status.videos[0]!.errors[0]).toMatch(/no route in `routes` matches the incident folder .*west/);
    expect(f.a.incident('inc-n')).toBeUndefined();
    expect(f.b.incident('inc-s')).toBeUndefined();
    expect(f.a.incident('inc-w')).toBeUndefined();
    expect(f.b.incident('inc-w')).toBeUndefined();
  });
});
