/**
 * SIGHUP through the real daemon: a valid configuration is applied without a restart and without
 * sending a finished part again (targets added, removed and returning, bandwidth, log level, the
 * watched folder); an invalid one keeps the running configuration and shows in status and
 * /healthz; a setting that needs a restart is left as it was. Asserted on what the platforms
 * and the store received, the ledger's rows and what status and the API answer.
 */
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it, type TestContext } from 'vitest';
import { startAloEmulator, type AloEmulator } from '../emulators/alo.js';
import { startS3Store, type S3Store } from '../emulators/s3-store.js';
import { aloTargetConfig } from '../support/alo-site.js';
import { runCli, waitFor, type DaemonProcess } from '../support/daemon-process.js';
import { MiB } from '../support/files.js';
import { harness } from '../support/harness.js';
import { ledgerRowsSoFar } from '../support/ledger.js';
import { apiSection, ApiClient, parsePrometheus, sampleValue } from '../support/local-api.js';
import { writeOneVideoIncident } from '../support/manifest.js';
import { writeSiteConfig, type SiteConfig, type SiteFiles } from '../support/site.js';

interface Site extends SiteFiles {
  store: S3Store;
  a: AloEmulator;
  b: AloEmulator;
  d: DaemonProcess;
  /** Writes the configuration file anew (the same folder and ledger) and sends SIGHUP. */
  reload(config: Partial<SiteConfig>): void;
}

/** Targets `a` and `b` (two ALO emulators on one store); the daemon starts with `config`. */
async function site(ctx: TestContext, config: (s: { a: string; b: string }) => Partial<SiteConfig>): Promise<Site> {
  const h = harness(ctx);
  const store = h.closeAtEnd(await startS3Store());
  const a = h.closeAtEnd(await startAloEmulator({ store }));
  const b = h.closeAtEnd(await startAloEmulator({ store }));
  const dir = await h.dir();
  const targets = { a: aloTargetConfig(a.baseUrl), b: aloTargetConfig(b.baseUrl) };
  const configOf = (c: Partial<SiteConfig>): SiteConfig => ({ targets: c.targets ?? targets, ...c });
  const files = await writeSiteConfig(dir, configOf(config({ a: a.baseUrl, b: b.baseUrl })));
  const d = h.daemon(files);
  return {
    ...files,
    store,
    a,
    b,
    d,
    reload(c) {
      void writeSiteConfig(dir, configOf(c)).then(() => d.kill('SIGHUP'));
    },
  };
}

const reloads = (s: Site, event = 'config.reloaded'): number => s.d.events(event).length;

/** Parts the platform acknowledged, per upload to `target`. */
const partsDone = (s: Site, target: string): number =>
  ledgerRowsSoFar<{ n: number }>(
    s.ledgerPath,
    `SELECT COUNT(*) AS n FROM parts p JOIN uploads u ON u.id = p.upload_id WHERE u.target = ? AND p.state = 'done'`,
    target,
  )[0]?.n ?? 0;

/** S3 PUTs of parts answered 200, per key and part: a part sent twice shows as 2. */
function acceptedPuts(store: S3Store): Map<string, number> {
  const counts = new Map<string, number>();
  for (const r of store.requests) {
    if (r.method !== 'PUT' || r.status !== 200) continue;
    const key = `${r.key}#${r.partNumber ?? 1}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}

/** The SHA-256 of what the emulator's report names for the video, once the incident is reported. */
async function reportedSha(s: Site, alo: AloEmulator, incidentId: string): Promise<string | undefined> {
  const key = alo.incident(incidentId)?.uploaded_videos.find((v) => v.id === `${incidentId}-v1`)?.s3_key;
  return key && s.store.hasObject(key) ? s.store.objectSha256(key) : undefined;
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('reload (SIGHUP)', () => {
  it('applies targets added, bandwidth, log level and a new watch folder without sending a finished part again', async (ctx) => {
    const s = await site(ctx, ({ a }) => ({
      targets: { a: aloTargetConfig(a) },
      upload: { bandwidth: '2MiB/s', concurrency: 1 },
      log: { level: 'info' },
      sections: apiSection(),
    }));
    const api = await ApiClient.of(s.d);
    const limit = async (): Promise<number> =>
      sampleValue(parsePrometheus((await api.call('GET', '/metrics')).text), 'vms_uplink_bandwidth_limit_bytes_per_second');
    expect(await limit()).toBe(2 * MiB);
    const sha = await writeOneVideoIncident(s.exportsRoot, 'reload-1', 20 * MiB);
    await waitFor(() => partsDone(s, 'a') >= 1 || undefined, 30_000, 'a first part acknowledged');
    expect(s.a.incident('reload-1')?.uploaded_videos ?? []).toEqual([]);
    expect(s.d.logs.filter((l) => l.level === 'debug')).toEqual([]);

    const newRoot = join(s.dir, 'exports-2');
    await mkdir(newRoot);
    const logsBefore = s.d.logs.length;
    s.reload({ watch: { root: newRoot }, log: { level: 'debug' }, sections: apiSection() });
    await waitFor(() => reloads(s) || undefined, 30_000, 'config.reloaded');

    expect(await limit()).toBe(Infinity);
    await waitFor(() => s.a.incident('reload-1')?.uploaded_videos.length || undefined, 60_000, 'reload-1 reported to a');
    expect(await reportedSha(s, s.a, 'reload-1')).toBe(sha);
    // The parts in flight at the reload finished and were recorded: none went out twice.
    expect([...acceptedPuts(s.store).values()].filter((n) => n > 1)).toEqual([]);
    expect(s.d.logs.slice(logsBefore).some((l) => l.level === 'debug')).toBe(true);

    // The new folder is watched: an export there goes to both targets (an added target, like
    // one added by a restart, receives the incidents that appear from then on).
    const sha2 = await writeOneVideoIncident(newRoot, 'reload-2', 1 * MiB);
    await waitFor(() => s.a.incident('reload-2')?.uploaded_videos.length || undefined, 30_000, 'reload-2 reported to a');
    expect(await reportedSha(s, s.a, 'reload-2')).toBe(sha2);
    await waitFor(() => s.b.incident('reload-2')?.uploaded_videos.length || undefined, 30_000, 'reload-2 reported to b');
    expect(await reportedSha(s, s.b, 'reload-2')).toBe(sha2);
    expect(s.b.incident('reload-1')).toBeUndefined();
    expect(alive(s.d.pid)).toBe(true);
    expect(s.d.events('daemon.started')).toHaveLength(1);
  });

  it("stops a removed target's uploads without failing them, and resumes them when it returns", async (ctx) => {
    // 12 parts of 5 MiB: with 4 parts in flight across both uploads, b's first parts tend to
    // finish together, and the reload lets the parts in flight finish; b still has parts left.
    const s = await site(ctx, () => ({ upload: { bandwidth: '8MiB/s' } }));
    const sha = await writeOneVideoIncident(s.exportsRoot, 'removed-1', 60 * MiB);
    await waitFor(() => partsDone(s, 'b') >= 1 || undefined, 30_000, "b's first part acknowledged");
    const { a } = s;
    s.reload({ targets: { a: aloTargetConfig(a.baseUrl) }, upload: { bandwidth: '8MiB/s' } });
    await waitFor(() => reloads(s) || undefined, 30_000, 'config.reloaded');
    await waitFor(() => s.a.incident('removed-1')?.uploaded_videos.length || undefined, 60_000, 'removed-1 reported to a');

    const doneAtRemoval = partsDone(s, 'b');
    const aKey = s.a.incident('removed-1')!.uploaded_videos[0]!.s3_key;
    const putsToB = (): number => s.store.requests.filter((r) => r.method === 'PUT' && r.key !== aKey).length;
    const putsAtRemoval = putsToB();
    const uploadsOfB = (): Array<{ state: string; last_error: string | null }> =>
      ledgerRowsSoFar(s.ledgerPath, `SELECT state, last_error FROM uploads WHERE target = 'b'`);
    expect(uploadsOfB()).toEqual([{ state: 'queued', last_error: null }]);
    expect(doneAtRemoval).toBeGreaterThanOrEqual(1);
    expect(doneAtRemoval).toBeLessThanOrEqual(8);

    const status = await runCli(['status', '--config', s.configPath]);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/^ {2}b: stopped \(target removed from the configuration; resumes if it returns\): /m);
    // Nothing more goes to b while it is away.
    await new Promise((r) => setTimeout(r, 1500));
    expect(putsToB()).toBe(putsAtRemoval);
    expect(partsDone(s, 'b')).toBe(doneAtRemoval);

    s.reload({ upload: { bandwidth: '8MiB/s' } });
    await waitFor(() => (reloads(s) >= 2 ? true : undefined), 30_000, 'second config.reloaded');
    await waitFor(() => s.b.incident('removed-1')?.uploaded_videos.length || undefined, 60_000, 'removed-1 reported to b');
    expect(await reportedSha(s, s.b, 'removed-1')).toBe(sha);
    expect(uploadsOfB()).toEqual([{ state: 'done', last_error: null }]);
    expect([...acceptedPuts(s.store).values()].filter((n) => n > 1)).toEqual([]);
  });

  it('keeps the running configuration when the new one is invalid, and shows why', async (ctx) => {
    const s = await site(ctx, ({ a }) => ({ targets: { a: aloTargetConfig(a) }, sections: apiSection() }));
    const api = await ApiClient.of(s.d);
    s.reload({
      targets: { a: { ...aloTargetConfig(s.a.baseUrl), base_url: 'not a url' } },
      upload: { concurrency: -1 },
      sections: apiSection(),
    });
    const failed = await waitFor(() => s.d.events('config.reload.failed')[0], 30_000, 'config.reload.failed');
    const problems = failed.problems as string[];
    expect(problems.some((p) => p.startsWith('targets.a.base_url'))).toBe(true);
    expect(problems.some((p) => p.startsWith('upload.concurrency'))).toBe(true);

    const status = await runCli(['status', '--config', s.configPath]);
    expect(status.stdout).toMatch(/PROBLEM \(config, since [^)]+\): the configuration file could not be reloaded.*targets\.a\.base_url/);
    const health = await api.call('GET', '/healthz', null);
    expect(health.status).toBe(200);
    const verdict = health.json<{ status: string; reasons: string[] }>();
    expect(verdict.status).toBe('degraded');
    expect(verdict.reasons.join('\n')).toMatch(/could not be reloaded.*upload\.concurrency/);

    // The old configuration goes on working.
    const sha = await writeOneVideoIncident(s.exportsRoot, 'invalid-1', 1 * MiB);
    await waitFor(() => s.a.incident('invalid-1')?.uploaded_videos.length || undefined, 30_000, 'invalid-1 reported');
    expect(await reportedSha(s, s.a, 'invalid-1')).toBe(sha);

    // Fixed: applied, and the problem is gone from status and /healthz.
    s.reload({ targets: { a: aloTargetConfig(s.a.baseUrl) }, sections: apiSection() });
    await waitFor(() => reloads(s) || undefined, 30_000, 'config.reloaded');
    expect((await runCli(['status', '--config', s.configPath])).stdout).not.toMatch(/PROBLEM/);
    expect((await api.call('GET', '/healthz', null)).json<{ status: string }>().status).toBe('ok');
  });

  it('names a setting that needs a restart and leaves it as it was', async (ctx) => {
    const s = await site(ctx, ({ a }) => ({ targets: { a: aloTargetConfig(a) } }));
    await waitFor(() => s.d.events('daemon.started')[0], 15_000, 'daemon.started');
    const moved = join(s.dir, 'elsewhere', 'ledger.db');
    s.reload({ targets: { a: aloTargetConfig(s.a.baseUrl) }, ledger: { path: moved } });
    const kept = await waitFor(() => s.d.events('config.reload.restart_needed')[0], 30_000, 'config.reload.restart_needed');
    expect(kept.settings).toEqual(['ledger.path']);
    await waitFor(() => reloads(s) || undefined, 30_000, 'config.reloaded');
    await writeOneVideoIncident(s.exportsRoot, 'restart-1', 1 * MiB);
    await waitFor(() => s.a.incident('restart-1')?.uploaded_videos.length || undefined, 30_000, 'restart-1 reported');
    expect(ledgerRowsSoFar(s.ledgerPath, `SELECT state FROM uploads WHERE incident_id = 'restart-1'`)).toEqual([{ state: 'done' }]);
    expect(existsSync(moved)).toBe(false);
  });
});
