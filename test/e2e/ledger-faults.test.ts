/**
 * Disk full and ledger faults, and shutdown, through the real daemon: the ledger's filesystem
 * fills up (a 2 MiB tmpfs of the test's own), a ledger file damaged before start-up, SIGTERM with
 * parts in flight, and a stop while an incident report is under way. Each test asserts exit
 * codes, ledger rows, the bytes in the S3 store, what ALO holds, and `status --json`. (A ledger
 * on a network filesystem is refused before anything starts: test/unit/ledger-filesystem.test.ts.)
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it, type TestContext } from 'vitest';
import { recoveryCommand } from '../../src/ledger/database.js';
import { startAloSite, type AloSite, type AloSiteOptions } from '../support/alo-site.js';
import { DaemonProcess, runCli, waitFor } from '../support/daemon-process.js';
import { MiB } from '../support/files.js';
import { mountTmpfs } from '../support/tmpfs.js';
import { ledgerRows, ledgerRowsSoFar } from '../support/ledger.js';
import { writeIncident, writeOneVideoIncident } from '../support/manifest.js';

interface StatusJson {
  ledger: string;
  daemon: { pid: number; running: boolean; updatedAt: string } | null;
  problems: Array<{ kind: string; message: string; since: string }>;
  totals: { queued: number; uploading: number; done: number; failed: number };
}

async function statusJson(configPath: string): Promise<StatusJson> {
  const r = await runCli(['status', '--json', '--config', configPath]);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as StatusJson;
}

/** A site torn down at the end of the test: daemons SIGKILLed first, then tmpfs unmounted, then the site. */
function setup(ctx: TestContext) {
  const cleanups: Array<() => Promise<void> | void> = [];
  ctx.onTestFinished(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });
  return {
    async site(options: AloSiteOptions = {}): Promise<AloSite> {
      const s = await startAloSite(options);
      cleanups.push(() => s.close());
      return s;
    },
    daemon(configPath: string, env: NodeJS.ProcessEnv = {}): DaemonProcess {
      const d = DaemonProcess.run(configPath, env);
      cleanups.push(async () => {
        d.kill('SIGKILL');
        await d.exited;
      });
      return d;
    },
    atEnd(fn: () => Promise<void> | void): void {
      cleanups.push(fn);
    },
  };
}

const alive = async (d: DaemonProcess): Promise<boolean> =>
  await Promise.race([d.exited.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), 10))]);

interface PartRow {
  upload_id: number;
  number: number;
  state: string;
  etag: string | null;
  session: string | null;
  upload_state: string;
  result: string | null;
}

/**
 * The ledger never says more than the platform holds: every part it has as done was acknowledged
 * by S3 (a 200 to a PUT of that part of that multipart upload), every upload it has as done is
 * an object in the store.
 */
function expectLedgerWithinPlatform(site: AloSite): { partsDone: number; uploadsDone: number } {
  const rows = ledgerRows<PartRow>(
    site.ledgerPath,
    `SELECT p.upload_id, p.number, p.state, p.etag, u.session, u.state AS upload_state, u.result FROM parts p JOIN uploads u ON u.id = p.upload_id`,
  );
  let partsDone = 0;
  for (const r of rows.filter((r) => r.state === 'done')) {
    const session = JSON.parse(r.session!) as { s3_key: string; upload_id: string };
    const acked = site.store.requests.some(
      (q) =>
        q.method === 'PUT' && q.key === session.s3_key && q.uploadId === session.upload_id && q.partNumber === r.number && q.status === 200,
    );
    expect(acked, `part ${r.number} of upload ${r.upload_id} is done in the ledger but S3 never acknowledged it`).toBe(true);
    partsDone++;
  }
  const uploads = ledgerRows<{ id: number; state: string; result: string | null }>(
    site.ledgerPath,
    'SELECT id, state, result FROM uploads',
  );
  let uploadsDone = 0;
  for (const u of uploads.filter((u) => u.state === 'done')) {
    const key = (JSON.parse(u.result!) as { s3_key: string }).s3_key;
    expect(site.store.hasObject(key), `upload ${u.id} is done in the ledger but ${key} is not in the store`).toBe(true);
    uploadsDone++;
  }
  return { partsDone, uploadsDone };
}

/**
 * The whole disk-full story: the daemon stays up and says so (log, status, status --json), takes
 * no new work, records nothing the platform did not acknowledge, and once space returns finishes
 * everything byte-identical.
 */
async function diskFullScenario(ctx: TestContext): Promise<void> {
  const t = setup(ctx);
  // No free-space floor: this is about the disk filling up all the same (a 2 MiB tmpfs is far below any floor).
  const site = await t.site({ upload: { concurrency: 2 }, ledger: { min_free: 0 } });
  const tmpfs = mountTmpfs(ctx, join(site.dir, 'state'), '2m');

  site.store.setLatency(250);
  const shasA = await writeIncident(site.exportsRoot, 'full-a', [
    { id: 'a1', file: 'a1.mp4', size: 20 * MiB + 3 },
    { id: 'a2', file: 'a2.mp4', size: 15 * MiB },
  ]);
  const d = t.daemon(site.configPath);
  await waitFor(() => ledgerRowsSoFar(site.ledgerPath, `SELECT 1 FROM parts WHERE state = 'done'`).length >= 2, 30_000, 'two parts done');

  await tmpfs.fill();
  const shaB = await writeOneVideoIncident(site.exportsRoot, 'full-b', 6 * MiB);
  const fault = await waitFor(() => d.events('ledger.fault')[0], 20_000, 'ledger.fault logged');
  expect(fault.code).toMatch(/^SQLITE_(FULL|IOERR)/);
  expect(String(fault.msg)).toContain(site.ledgerPath);
  const during = await waitFor(
    async () => {
      const s = await statusJson(site.configPath);
      return s.problems.length > 0 ? s : undefined;
    },
    10_000,
    'status shows the ledger problem',
  );
  expect(during.daemon).toMatchObject({ pid: d.pid, running: true });
  expect(during.problems).toEqual([expect.objectContaining({ kind: 'ledger', message: expect.stringMatching(/SQLITE_(FULL|IOERR)/) })]);
  const text = await runCli(['status', '--config', site.configPath]);
  expect(text.code, text.stderr).toBe(0);
  expect(text.stdout).toMatch(/^PROBLEM \(ledger, since .*\): ledger write failed/m);

  // Paused: once the parts in flight have met the fault (the daemon paused an upload, and the store has
  // no request left on its way), nothing more is sent or started.
  await waitFor(
    () => d.events('upload.paused').length > 0 && site.store.inProgress === 0,
    20_000,
    'an upload paused by the fault and no part on the wire',
  );
  const puts = site.store.requests.filter((q) => q.method === 'PUT').length;
  const creates = site.alo.calls.filter((c) => c.route === 'create_multipart_upload').length;
  // For as long as the daemon keeps probing the ledger (each probe stamps its health file, which
  // status --json shows) over a second and more: still nothing sent, nothing started.
  const heldFrom = Date.now();
  await waitFor(
    async () => Date.parse((await statusJson(site.configPath)).daemon?.updatedAt ?? '') >= heldFrom + 1000,
    20_000,
    'the daemon probing the ledger a second later',
  );
  expect(site.store.requests.filter((q) => q.method === 'PUT').length).toBe(puts);
  expect(site.alo.calls.filter((c) => c.route === 'create_multipart_upload').length).toBe(creates);
  expect(await alive(d)).toBe(true);
  const whileFull = expectLedgerWithinPlatform(site);
  expect(whileFull.uploadsDone).toBeLessThan(3);
  expect(site.alo.incident('full-b')?.uploaded_videos ?? []).toEqual([]);

  await tmpfs.free();
  await waitFor(() => d.events('ledger.recovered')[0], 20_000, 'ledger.recovered logged');
  const incidentA = await waitFor(
    () => {
      const i = site.alo.incident('full-a');
      return i && i.uploaded_videos.length === 2 ? i : undefined;
    },
    60_000,
    'incident full-a complete at ALO',
  );
  const incidentB = await waitFor(
    () => {
      const i = site.alo.incident('full-b');
      return i && i.uploaded_videos.length === 1 ? i : undefined;
    },
    30_000,
    'incident full-b complete at ALO',
  );
  for (const v of incidentA.uploaded_videos) expect(await site.store.objectSha256(v.s3_key), v.id).toBe(shasA.get(v.id));
  expect(await site.store.objectSha256(incidentB.uploaded_videos[0]!.s3_key)).toBe(shaB);
  await waitFor(
    () => ledgerRows(site.ledgerPath, 'SELECT 1 FROM reports WHERE acked < wanted').length === 0,
    15_000,
    'every report acknowledged',
  );

  expect(await alive(d)).toBe(true); // the same process rode it out
  const after = expectLedgerWithinPlatform(site);
  expect(after.uploadsDone).toBe(3);
  expect(ledgerRows(site.ledgerPath, `SELECT 1 FROM parts WHERE state != 'done'`)).toEqual([]);
  expect(ledgerRows(site.ledgerPath, `SELECT 1 FROM uploads WHERE state != 'done'`)).toEqual([]);
  const healthy = await statusJson(site.configPath);
  expect(healthy.problems).toEqual([]);
  expect(healthy.totals).toMatchObject({ done: 3, failed: 0, queued: 0, uploading: 0 });

  d.kill('SIGTERM');
  expect(await d.exited).toEqual({ code: 0, signal: null });
  const check = new Database(site.ledgerPath, { readonly: true });
  expect(check.pragma('integrity_check', { simple: true })).toBe('ok');
  check.close();
  expect((await statusJson(site.configPath)).daemon).toMatchObject({ running: false });
}

describe('disk full under the ledger', () => {
  it('rides out a full ledger filesystem (a 2 MiB tmpfs)', async (ctx) => {
    await diskFullScenario(ctx);
  });
});

/** A ledger with real content: one incident uploaded; stopped by `stop` so that the log stays (SIGKILL) or is checkpointed (SIGTERM). */
async function populatedLedger(ctx: TestContext, stop: 'SIGKILL' | 'SIGTERM'): Promise<AloSite> {
  const t = setup(ctx);
  const site = await t.site();
  await writeIncident(site.exportsRoot, 'made', [
    { id: 'm1', file: 'm1.mp4', size: 11 * MiB },
    { id: 'm2', file: 'm2.mp4', size: 6 * MiB },
  ]);
  const d = t.daemon(site.configPath);
  await waitFor(() => site.alo.incident('made')?.uploaded_videos.length === 2, 30_000, 'incident uploaded');
  await waitFor(() => ledgerRows(site.ledgerPath, 'SELECT 1 FROM reports WHERE acked < wanted').length === 0, 10_000, 'reports acked');
  d.kill(stop);
  await d.exited;
  return site;
}

/** Runs the daemon on a damaged copy; it must refuse with exit 1, name the file and the recovery, and change no byte. */
async function expectRefused(site: AloSite, files: string[], what: RegExp): Promise<void> {
  const before = files.map((f) => readFileSync(f));
  const r = await runCli(['run', '--config', site.configPath]);
  expect(r.code, r.stderr).toBe(1);
  expect(r.stderr).toMatch(/corrupt/i);
  expect(r.stderr).toMatch(what);
  expect(r.stderr).toContain(`ledger ${site.ledgerPath} is corrupt`);
  expect(r.stderr).toContain(`mv ${site.ledgerPath} ${site.ledgerPath}.broken`);
  files.forEach((f, i) => expect(readFileSync(f).equals(before[i]!), `${f} unchanged`).toBe(true));
}

describe('a damaged ledger at start-up', () => {
  it('refuses a ledger truncated to half, and one with a page in the middle overwritten', async (ctx) => {
    const site = await populatedLedger(ctx, 'SIGTERM');
    expect(existsSync(`${site.ledgerPath}-wal`)).toBe(false); // checkpointed into the file by the clean stop
    const pristine = readFileSync(site.ledgerPath);
    const callsBefore = site.alo.calls.length;

    truncateSync(site.ledgerPath, Math.floor(pristine.length / 2));
    await expectRefused(site, [site.ledgerPath], /truncated/);

    // A b-tree page in the middle of the file, overwritten with garbage.
    writeFileSync(site.ledgerPath, pristine);
    const db = new Database(site.ledgerPath, { readonly: true });
    const pages = (db.prepare(`SELECT pageno FROM dbstat WHERE pageno > 1 ORDER BY pageno`).all() as Array<{ pageno: number }>).map(
      (p) => p.pageno,
    );
    db.close();
    const page = pages[Math.floor(pages.length / 2)]!;
    const fd = openSync(site.ledgerPath, 'r+');
    writeSync(fd, randomBytes(4096), 0, 4096, (page - 1) * 4096);
    closeSync(fd);
    await expectRefused(site, [site.ledgerPath], /quick_check|malformed|corrupt/);
    expect(site.alo.calls.length).toBe(callsBefore);

    // The documented recovery (the command the refusal printed, and the README's) keeps the broken file and starts over.
    expect(readFileSync(join(import.meta.dirname, '../../README.md'), 'utf8')).toContain(recoveryCommand('ledger.db'));
    execFileSync('sh', ['-c', recoveryCommand(site.ledgerPath)]);
    expect(existsSync(`${site.ledgerPath}.broken`)).toBe(true);
    const d = DaemonProcess.run(site.configPath);
    await waitFor(
      () => ledgerRowsSoFar(site.ledgerPath, `SELECT 1 FROM uploads WHERE state = 'done'`).length === 2,
      30_000,
      're-uploaded from an empty ledger',
    );
    d.kill('SIGTERM');
    expect(await d.exited).toEqual({ code: 0, signal: null });
  });

  it('refuses a write-ahead log with garbage (header, or a frame before committed transactions) and accepts a torn last frame', async (ctx) => {
    const site = await populatedLedger(ctx, 'SIGKILL');
    const wal = `${site.ledgerPath}-wal`;
    expect(statSync(wal).size).toBeGreaterThan(20 * 4120); // many commits still in the log
    const db0 = readFileSync(site.ledgerPath);
    const wal0 = readFileSync(wal);
    const damage = (offset: number, length: number): void => {
      writeFileSync(site.ledgerPath, db0);
      const buf = Buffer.from(wal0);
      randomBytes(length).copy(buf, offset);
      writeFileSync(wal, buf);
    };

    damage(0, 32);
    await expectRefused(site, [site.ledgerPath, wal], /write-ahead log .* (no valid|damaged) header/);
    damage(32 + 5 * 4120 + 24 + 200, 1024);
    await expectRefused(site, [site.ledgerPath, wal], /write-ahead log .* damaged at frame 6, and \d+ committed transactions follow it/);

    // A log cut inside its last frame is what a power cut leaves: accepted, and the daemon carries on.
    writeFileSync(site.ledgerPath, db0);
    writeFileSync(wal, wal0.subarray(0, wal0.length - 2000));
    rmSync(`${site.ledgerPath}-shm`, { force: true });
    const d = DaemonProcess.run(site.configPath);
    await waitFor(() => d.events('daemon.started').length === 1 || d.stderr.length > 0, 15_000, 'daemon started');
    expect(d.stderr.join('')).toBe('');
    d.kill('SIGTERM');
    expect(await d.exited).toEqual({ code: 0, signal: null });
    expect(ledgerRows(site.ledgerPath, `SELECT 1 FROM uploads WHERE state = 'done'`).length).toBeGreaterThanOrEqual(1);
  });
});

/** An HTTP proxy in front of ALO that can hold incident reports (PUT /vms/incidents/{id}) without forwarding them. */
async function reportHoldingProxy(ctx: TestContext) {
  let upstream = '';
  let holding = true;
  const held: http.ServerResponse[] = [];
  const server = http.createServer((req, res) => {
    const isReport = req.method === 'PUT' && /^\/v1\/vms\/incidents\/[^/]+$/.test(new URL(req.url ?? '/', 'http://x').pathname);
    if (isReport && holding) {
      held.push(res);
      req.resume();
      return;
    }
    const out = http.request(`${upstream}${req.url}`, { method: req.method, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    out.on('error', () => res.destroy());
    req.pipe(out);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  ctx.onTestFinished(async () => {
    for (const res of held) res.destroy();
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
    setUpstream: (baseUrl: string) => (upstream = new URL(baseUrl).origin),
    held: () => held.filter((r) => !r.destroyed && !r.socket?.destroyed).length,
    release: () => (holding = false),
  };
}

describe('shutdown', () => {
  it('SIGTERM with parts that cannot finish: exits 0 at the drain deadline, leaves them pending, and the next start resumes', async (ctx) => {
    const t = setup(ctx);
    const site = await t.site({ upload: { concurrency: 2, drain_timeout: 1 } });
    site.store.setLatency(8000);
    const sha = await writeOneVideoIncident(site.exportsRoot, 'drain-1', 15 * MiB);
    const first = t.daemon(site.configPath);
    await waitFor(() => first.events('upload.started').length === 1, 30_000, 'upload started');
    await waitFor(() => site.store.inProgress === 2, 10_000, 'two parts on the wire'); // each 8 s from an answer
    const t0 = Date.now();
    first.kill('SIGTERM');
    expect(await first.exited).toEqual({ code: 0, signal: null });
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(900); // it did wait for the parts in flight…
    // …but only up to drain_timeout (1 s, plus the shutdown on a loaded machine), well before the
    // answers that were 8 s away from when the parts arrived: none of them was answered.
    expect(took).toBeLessThan(6000);
    expect(site.store.requests.filter((q) => q.method === 'PUT' && q.status === 200)).toEqual([]);
    expect(first.events('daemon.stopped')).toHaveLength(1);
    expect(ledgerRows(site.ledgerPath, `SELECT number, state FROM parts ORDER BY number`)).toEqual([
      { number: 1, state: 'pending' },
      { number: 2, state: 'pending' },
      { number: 3, state: 'pending' },
    ]);
    expect(ledgerRows<{ session: string | null }>(site.ledgerPath, `SELECT session FROM uploads`)[0]!.session).not.toBeNull();

    site.store.setLatency(0);
    t.daemon(site.configPath);
    const key = await waitFor(() => site.alo.incident('drain-1')?.uploaded_videos[0]?.s3_key, 30_000, 'uploaded after restart');
    expect(await site.store.objectSha256(key)).toBe(sha);
    expect(site.alo.calls.filter((c) => c.route === 'create_multipart_upload')).toHaveLength(1); // the same upload continued
    expectLedgerWithinPlatform(site);
  });

  it('a stop (SIGTERM, then SIGKILL) while an incident report is under way leaves it to be sent again; ALO ends with the complete report', async (ctx) => {
    const t = setup(ctx);
    const proxy = await reportHoldingProxy(ctx);
    const site = await t.site({ alo: { base_url: proxy.url }, upload: { drain_timeout: 2 } });
    proxy.setUpstream(site.alo.baseUrl);
    const shas = await writeIncident(site.exportsRoot, 'rep-1', [
      { id: 'r1', file: 'r1.mp4', size: 3 * MiB },
      { id: 'r2', errors: ['G64 export failed with: No video available'] },
    ]);
    const pendingReport = (): Array<{ wanted: number; acked: number }> =>
      ledgerRows<{ wanted: number; acked: number }>(site.ledgerPath, `SELECT wanted, acked FROM reports WHERE incident_id = 'rep-1'`);

    // 1. SIGTERM while a report hangs: exit 0, the report stays due.
    const first = t.daemon(site.configPath);
    await waitFor(
      () => proxy.held() >= 1 && ledgerRowsSoFar(site.ledgerPath, `SELECT 1 FROM uploads WHERE state = 'done'`).length === 1,
      30_000,
      'video uploaded, report held',
    );
    first.kill('SIGTERM');
    expect(await first.exited).toEqual({ code: 0, signal: null });
    expect(site.alo.incident('rep-1')).toBeUndefined();
    const [afterTerm] = pendingReport();
    expect(afterTerm!.acked).toBeLessThan(afterTerm!.wanted);

    // 2. SIGKILL while the report hangs again after the restart: still due.
    const heldBefore = proxy.held();
    const second = t.daemon(site.configPath);
    await waitFor(() => proxy.held() > heldBefore || second.events('incident.reported').length > 0, 20_000, 'report sent again and held');
    second.kill('SIGKILL');
    await second.exited;
    expect(site.alo.incident('rep-1')).toBeUndefined();
    const [afterKill] = pendingReport();
    expect(afterKill!.acked).toBeLessThan(afterKill!.wanted);

    // 3. ALO answers again: the next start sends the whole incident.
    proxy.release();
    const third = t.daemon(site.configPath);
    const incident = await waitFor(
      () => {
        const i = site.alo.incident('rep-1');
        return i && i.uploaded_videos.length === 1 && i.failed_videos.length === 1 ? i : undefined;
      },
      30_000,
      'complete report at ALO',
    );
    expect(incident.title).toBe('Test incident');
    expect(incident.uploaded_videos[0]!.id).toBe('r1');
    expect(await site.store.objectSha256(incident.uploaded_videos[0]!.s3_key)).toBe(shas.get('r1'));
    expect(incident.failed_videos[0]).toMatchObject({ id: 'r2', upload_errors: ['G64 export failed with: No video available'] });
    await waitFor(() => pendingReport()[0]!.acked >= pendingReport()[0]!.wanted, 10_000, 'report acknowledged in the ledger');
    // The video itself was uploaded once, before the stops.
    expect(site.alo.calls.filter((c) => c.route === 'upload_urls' && c.status === 200)).toHaveLength(1);
    third.kill('SIGTERM');
    expect(await third.exited).toEqual({ code: 0, signal: null });
  });
});
