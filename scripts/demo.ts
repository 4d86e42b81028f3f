/**
 * `npm run demo`: the whole product on one incident, on this machine, in about half a minute.
 *
 * Starts the emulated ALO platform and its S3 store on 127.0.0.1, writes a sample VMS export under
 * ./demo (an incident with a ~40 MiB video that goes multipart, a ~3 MiB video with a thumbnail and
 * a failed export), runs the real daemon (`dist/src/cli.js run`) on it, shows the upload progress
 * as `vms-uplink status --json` reports it, then checks and prints what the platform received.
 * Exits 0 when everything arrived intact, 1 (with the daemon's stderr and last log lines) otherwise.
 */
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import net from 'node:net';
import { Transform } from 'node:stream';
import { dirname, join, relative } from 'node:path';
import { ALO_TOKEN, startAloSite, type AloSite } from '../test/support/alo-site.js';
import { DaemonProcess, runCli, type LogLine } from '../test/support/daemon-process.js';
import { MiB, writeThumbnail, writeVideo } from '../test/support/files.js';
import { incidentManifest, writeManifest } from '../test/support/manifest.js';

const TIMEOUT_MS = 120_000;
/** Loopback moves 40 MiB in a blink: the S3 store sits behind a link this fast so the progress shows. */
const LINK_BYTES_PER_SECOND = 12 * 1024 * 1024;
const POLL_MS = 500;
const INCIDENT_ID = '8d1635ed-f747-427c-9b35-d83a08d08ab5';
const FAILED_ERROR = 'G64 export failed with: No video available for the camera during the selected time period.';

/** The part of `vms-uplink status --json` the demo reads. */
interface Snapshot {
  incidents: Array<{
    id: string;
    reports: Array<{ target: string; upToDate: boolean; lastError: string | null }>;
    videos: Array<{
      id: string;
      state: string;
      errors: string[];
      uploads: Array<{
        id: number;
        target: string;
        role: string;
        state: string;
        bytesDone: number;
        bytesTotal: number;
        partsDone: number;
        partsTotal: number;
        lastError: string | null;
      }>;
    }>;
  }>;
  /** Absent before the daemon created the ledger. */
  totals?: { queued: number; uploading: number; done: number; failed: number; waiting: number; failedVideos: number };
}

interface SourceFile {
  videoId: string;
  role: 'video' | 'thumbnail';
  file: string;
  size: number;
  sha256: string;
}

class DemoFailure extends Error {}

function repoRoot(): string {
  let dir = import.meta.dirname;
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the repository root (package.json)');
    dir = up;
  }
  return dir;
}

const started = Date.now();
const stamp = (): string => `[${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s]`;
const say = (line: string): void => console.log(`${stamp()} ${line}`);

function mib(n: number): string {
  return n < MiB ? `${(n / 1024).toFixed(1)} KiB` : `${(n / MiB).toFixed(1)} MiB`;
}

/** One readable line for the daemon log events a user cares about; undefined for the rest. */
function describeLog(l: LogLine): string | undefined {
  const video = typeof l['videoId'] === 'string' ? `${l['videoId']}${l['role'] === 'thumbnail' ? ' (thumbnail)' : ''}` : '';
  switch (l.event) {
    case 'daemon.started':
      return 'daemon started, watching the export folder';
    case 'manifest.applied':
      return `manifest read: incident ${String(l['incidentId'])}, ${String(l['videos'])} videos`;
    case 'export.settled': {
      const files = Array.isArray(l['files']) ? (l['files'] as Array<{ role: string; bytes: number }>) : [];
      return `${video}: export settled and hashed (${files.map((f) => `${f.role} ${mib(f.bytes)}`).join(', ')})`;
    }
    case 'export.failed':
      return `${video}: export refused: ${String(l['reason'])}`;
    case 'upload.started':
      return `${video}: upload started, ${String(l['parts'])} part(s)`;
    case 'upload.completed':
      return `${video}: upload completed`;
    case 'incident.reported':
      return `incident reported to ALO: ${String(l['uploaded'])} uploaded, ${String(l['failed'])} failed`;
    default:
      return l.level === 'warn' || l.level === 'error' || l.level === 'fatal' ? `${l.level}: ${l.event ?? ''} ${l.msg ?? ''}` : undefined;
  }
}

async function status(configPath: string): Promise<Snapshot> {
  const res = await runCli(['status', '--json', '--config', configPath]);
  if (res.code !== 0) throw new DemoFailure(`vms-uplink status exited ${res.code}: ${res.stderr.trim()}`);
  return JSON.parse(res.stdout) as Snapshot;
}

function timeout<T>(ms: number, what: string): { promise: Promise<T>; cancel: () => void } {
  let timer: NodeJS.Timeout | undefined;
  const promise = new Promise<T>((_, reject) => {
    timer = setTimeout(() => reject(new DemoFailure(`timed out after ${ms / 1000} s ${what}`)), ms);
  });
  return { promise, cancel: () => clearTimeout(timer) };
}

/**
 * A TCP proxy in front of the S3 store that lets at most `bytesPerSecond` through towards it, shared by
 * every connection, like the uplink of a recorder box. Bytes pass unchanged (the signed Host header too).
 */
async function startThrottledLink(target: string, bytesPerSecond: number): Promise<{ origin: string; close: () => Promise<void> }> {
  const { hostname, port } = new URL(target);
  let nextFree = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(port), hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.once('close', () => sockets.delete(s));
      s.once('error', () => undefined);
    }
    const throttle = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        const now = Date.now();
        nextFree = Math.max(now, nextFree) + (1000 * chunk.length) / bytesPerSecond;
        setTimeout(() => callback(null, chunk), Math.max(0, nextFree - now - 50));
      },
    });
    client.pipe(throttle).pipe(upstream);
    upstream.pipe(client);
    client.once('close', () => upstream.destroy());
    upstream.once('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address() as net.AddressInfo;
  return {
    origin: `http://127.0.0.1:${address.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

let site: AloSite | null = null;
let daemon: DaemonProcess | null = null;
let link: { origin: string; close: () => Promise<void> } | null = null;

async function demo(): Promise<void> {
  const root = repoRoot();
  const demoDir = join(root, 'demo');
  const shown = (p: string): string => relative(process.cwd(), p) || '.';
  await rm(demoDir, { recursive: true, force: true });

  site = await startAloSite({
    dir: demoDir,
    watch: { settle_seconds: 1 },
    upload: { part_size: '8MiB' },
    alo: { multipart_threshold: '16MiB' },
    log: { level: 'info' },
  });
  link = await startThrottledLink(site.store.origin, LINK_BYTES_PER_SECOND);
  site.store.setPublicOrigin(link.origin);
  say(`ALO emulator at ${site.alo.baseUrl}, its S3 store at ${site.store.origin}`);
  say(
    `the store's presigned URLs point at ${link.origin}: a link of ${LINK_BYTES_PER_SECOND / MiB} MiB/s to it, so the progress is visible`,
  );

  // The export, as a VMS writes it: the video files, then the manifest naming them.
  const folder = join(site.exportsRoot, '2024-02-02', 'incident-1104');
  const sources: SourceFile[] = [];
  const add = async (videoId: string, role: SourceFile['role'], file: string, size: number): Promise<void> => {
    const path = join(folder, file);
    const sha256 = role === 'video' ? await writeVideo(path, size) : await writeThumbnail(path, size);
    sources.push({ videoId, role, file, size, sha256 });
  };
  await add('good-file-1', 'video', 'cam01a_1104.mp4', 40 * MiB + 12_345);
  await add('good-file-2', 'video', 'cam02_1104.mov', 3 * MiB + 4_321);
  await add('good-file-2', 'thumbnail', 'cam02_1104.jpg', 24 * 1024);
  await writeManifest(
    folder,
    incidentManifest(
      INCIDENT_ID,
      [
        { id: 'good-file-1', file: 'cam01a_1104.mp4' },
        { id: 'good-file-2', file: 'cam02_1104.mov', thumbnail: 'cam02_1104.jpg' },
        { id: 'bad-file-2', errors: [FAILED_ERROR] },
      ],
      'Demo incident: loading bay',
    ),
  );
  say(`sample export written to ${shown(folder)}:`);
  for (const s of sources) say(`    ${s.file.padEnd(16)} ${mib(s.size).padStart(9)}  (${s.role} of ${s.videoId})`);
  say(`    incident.json      and a failed export, bad-file-2 ("${FAILED_ERROR.slice(0, 40)}…")`);
  say(`config ${shown(site.configPath)}: multipart_threshold 16MiB, part_size 8MiB, concurrency 4`);

  const d = DaemonProcess.run(site.configPath);
  daemon = d;
  say(`daemon started (pid ${d.pid}): node ${shown(join(root, 'dist', 'src', 'cli.js'))} run --config ${shown(site.configPath)}`);
  let exited: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  void d.exited.then((e) => (exited = e));

  // Progress: the daemon's key log events, and one line per upload whenever `status` shows it moved.
  let logsShown = 0;
  const lastLine = new Map<number, string>();
  const showLogs = (): void => {
    for (; logsShown < d.logs.length; logsShown++) {
      const text = describeLog(d.logs[logsShown]!);
      if (text) say(`daemon: ${text}`);
    }
  };
  const deadline = started + TIMEOUT_MS;
  const logTimer = setInterval(showLogs, 100); // log lines as they come, between the slower status polls
  try {
    for (;;) {
      showLogs();
      if (exited) throw new DemoFailure(`the daemon exited early: ${JSON.stringify(exited)}`);
      if (Date.now() > deadline) throw new DemoFailure(`timed out after ${TIMEOUT_MS / 1000} s waiting for the upload`);
      const snap = await status(site.configPath);
      const incident = snap.incidents.find((i) => i.id === INCIDENT_ID);
      for (const v of incident?.videos ?? []) {
        for (const u of v.uploads) {
          const pct = u.bytesTotal > 0 ? Math.floor((100 * u.bytesDone) / u.bytesTotal) : 100;
          const line = `${`${v.id}${u.role === 'thumbnail' ? ' (thumbnail)' : ''}`.padEnd(24)} → ${u.target}: ${u.state.padEnd(9)} ${mib(u.bytesDone).padStart(9)} / ${mib(u.bytesTotal).padStart(9)} ${String(pct).padStart(3)}%  (${u.partsDone}/${u.partsTotal} parts)${u.lastError ? `  last error: ${u.lastError}` : ''}`;
          if (lastLine.get(u.id) !== line) {
            lastLine.set(u.id, line);
            say(`progress: ${line}`);
          }
        }
      }
      const alo = site.alo.incident(INCIDENT_ID);
      const platformHasAll =
        alo !== undefined &&
        ['good-file-1', 'good-file-2'].every((id) => alo.uploaded_videos.some((v) => v.id === id)) &&
        alo.failed_videos.some((v) => v.id === 'bad-file-2');
      const totals = snap.totals ?? { queued: 0, uploading: 0, done: 0, failed: 0, waiting: 0, failedVideos: 0 };
      const ledgerUpToDate =
        incident !== undefined &&
        incident.reports.length > 0 &&
        incident.reports.every((r) => r.upToDate) &&
        totals.done === sources.length &&
        totals.queued + totals.uploading + totals.failed === 0;
      if (platformHasAll && ledgerUpToDate) break;
      if (totals.failed > 0)
        throw new DemoFailure(
          `an upload failed: ${JSON.stringify(incident?.videos.flatMap((v) => v.uploads).filter((u) => u.state === 'failed'))}`,
        );
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  } finally {
    clearInterval(logTimer);
  }
  showLogs();
  say('the platform has every video and the ledger reports the incident up to date');

  // What the platform received, as ALO's own GET answers it.
  const res = await fetch(`${site.alo.baseUrl}/vms/incidents/${encodeURIComponent(INCIDENT_ID)}`, {
    headers: { authorization: `Bearer ${ALO_TOKEN}` },
  });
  if (res.status !== 200) throw new DemoFailure(`GET /vms/incidents/${INCIDENT_ID} answered ${res.status}: ${await res.text()}`);
  const body = (await res.json()) as {
    vms_incident: {
      uploaded_videos: Array<{ id: string; s3_key: string; s3_thumbnail_key: string | null }>;
      failed_videos: Array<{ id: string; upload_errors: string[] }>;
    };
  };
  console.log(`\nGET ${site.alo.baseUrl}/vms/incidents/${INCIDENT_ID}:`);
  console.log(JSON.stringify(body, null, 2));

  // Every object in the store, byte for byte the source file.
  console.log('\nobjects in the S3 store:');
  const problems: string[] = [];
  for (const s of sources) {
    const video = body.vms_incident.uploaded_videos.find((v) => v.id === s.videoId);
    const key = s.role === 'video' ? video?.s3_key : video?.s3_thumbnail_key;
    if (!key || !site.store.hasObject(key)) {
      problems.push(`${s.file}: no object for ${s.videoId} ${s.role}`);
      continue;
    }
    const size = site.store.objectSize(key);
    const sha = await site.store.objectSha256(key);
    const parts = new Set(
      site.store.requests.filter((r) => r.method === 'PUT' && r.status === 200 && r.key === key).map((r) => r.partNumber ?? 1),
    ).size;
    const ok = sha === s.sha256 && size === s.size;
    if (!ok) problems.push(`${s.file}: object ${key} has ${size} bytes, sha256 ${sha}; the file has ${s.size} bytes, sha256 ${s.sha256}`);
    console.log(`  ${s.file.padEnd(16)} → ${key}`);
    console.log(
      `  ${''.padEnd(16)}   ${size} bytes, ${parts === 1 ? 'one PUT' : `multipart, ${parts} parts`}, sha256 ${sha.slice(0, 16)}… ${ok ? 'matches the source file' : 'DIFFERS from the source file'}`,
    );
  }
  const failed = body.vms_incident.failed_videos.find((v) => v.id === 'bad-file-2');
  if (!failed || failed.upload_errors[0] !== FAILED_ERROR)
    problems.push(`bad-file-2 is not reported with its export error: ${JSON.stringify(failed)}`);
  else console.log(`  bad-file-2 reported as a failed video: "${failed.upload_errors[0]}"`);
  const open = site.store.openMultipartUploads();
  if (open.length > 0) problems.push(`multipart uploads left open: ${JSON.stringify(open)}`);
  const reports = site.alo.reports.filter((r) => r.incidentId === INCIDENT_ID);
  console.log(`  ${reports.length} incident report(s) sent (PUT /vms/incidents/{id}), answered ${reports.map((r) => r.status).join(', ')}`);
  if (problems.length > 0) throw new DemoFailure(`what the platform received is wrong:\n  ${problems.join('\n  ')}`);

  console.log('');
  say('sending SIGTERM to the daemon');
  d.kill('SIGTERM');
  const stop = timeout<never>(20_000, 'waiting for the daemon to stop after SIGTERM');
  const exit = await Promise.race([d.exited, stop.promise]).finally(stop.cancel);
  showLogs();
  if (exit.code !== 0) throw new DemoFailure(`the daemon exited with ${JSON.stringify(exit)} after SIGTERM, expected code 0`);
  daemon = null;
  say('daemon stopped cleanly (exit code 0)');
  const stderr = d.stderr.join('').trim();
  if (stderr) say(`note: the daemon wrote to stderr:\n  ${stderr.split('\n').join('\n  ')}`);
  await link.close();
  link = null;
  await site.close();
  site = null;

  const config = shown(join(demoDir, 'config.yaml'));
  console.log(`
Demo OK: 2 videos and 1 thumbnail uploaded intact, 1 failed export reported, in ${((Date.now() - started) / 1000).toFixed(1)} s.

The export, the ledger and the config stay in ${shown(demoDir)}/ (the emulators are gone). Try:
  vms-uplink status --config ${config}                 (after npm link; or: node dist/src/cli.js status --config ${config})
  node dist/src/cli.js status --json --config ${config}
  node dist/src/cli.js check-config --config ${config}
  npm run demo                                        (runs it all again from scratch)`);
}

async function cleanUp(): Promise<void> {
  if (daemon) {
    daemon.kill('SIGKILL');
    await daemon.exited;
  }
  await link?.close().catch(() => undefined);
  await site?.close().catch(() => undefined);
}

function printDiagnostics(): void {
  if (!daemon) return;
  const stderr = daemon.stderr.join('').trim();
  console.error(`\n--- daemon stderr ---\n${stderr || '(empty)'}`);
  console.error(`--- last daemon log lines ---`);
  for (const l of daemon.logs.slice(-25)) console.error(JSON.stringify(l));
}

process.once('SIGINT', () => {
  console.error('\ninterrupted');
  void cleanUp().finally(() => process.exit(130));
});

const overall = timeout<never>(TIMEOUT_MS + 5_000, 'for the whole demo');
try {
  await Promise.race([demo(), overall.promise]);
  overall.cancel();
} catch (err) {
  overall.cancel();
  console.error(
    `\nDEMO FAILED: ${err instanceof DemoFailure ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err)}`,
  );
  printDiagnostics();
  await cleanUp();
  process.exit(1);
}
