/**
 * `npm run bench [-- --size 10GiB | --10g] [--dir DIR]`: one big video through the real daemon.
 *
 * Writes a video-like file of the given size (default 1 GiB) into an incident folder in a fresh
 * directory under os.tmpdir() (or DIR), uploads it with the daemon's DEFAULT upload settings
 * (concurrency 4, part_size 16MiB, multipart_threshold 100MiB; only settle_seconds is 1) to the ALO
 * emulator and its S3 store on loopback, and measures the daemon process: hashing and upload wall
 * time, throughput, CPU seconds and peak RSS. Exits 1 when the peak RSS exceeds 150 MB or the
 * stored object differs from the file. Everything it wrote (file, ledger, the store's parts) is
 * deleted at the end.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAloSite, type AloSite } from '../test/support/alo-site.js';
import { DaemonProcess, type LogLine } from '../test/support/daemon-process.js';
import { MiB, writeVideo } from '../test/support/files.js';
import { incidentManifest, writeManifest } from '../test/support/manifest.js';

const GiB = 1024 * MiB;
const MB = 1_000_000;
const RSS_LIMIT_BYTES = 150 * MB;
const SAMPLE_MS = 200;
const INCIDENT_ID = 'b3f1c0de-0000-4000-8000-00000000bench';
const VIDEO_ID = 'bench-video';

const USAGE = `usage: node dist/scripts/bench.js [--size SIZE | --10g] [--dir DIR]
  --size SIZE   file size, e.g. 1GiB (default), 512MiB, 10GiB, 2GB, or bytes
  --10g         same as --size 10GiB
  --dir DIR     where to put the file and the store's copy (default ${tmpdir()}); needs ~2x SIZE free`;

class BenchFailure extends Error {}

const UNITS: Record<string, number> = { B: 1, KiB: 1024, MiB, GiB, TiB: 1024 * GiB, KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12 };

function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([A-Za-z]*)$/.exec(text.trim());
  const unit = m?.[2] === '' ? 'B' : m?.[2];
  const factor = unit === undefined ? undefined : (UNITS[unit] ?? UNITS[unit.toUpperCase()] ?? (unit.toLowerCase() === 'g' ? GiB : undefined));
  if (!m || factor === undefined) throw new BenchFailure(`bad size "${text}"\n${USAGE}`);
  const bytes = Math.round(Number(m[1]) * factor);
  if (bytes < 1) throw new BenchFailure(`size must be at least 1 byte\n${USAGE}`);
  return bytes;
}

function parseArgs(argv: string[]): { size: number; dir: string } {
  let size = GiB;
  let dir = tmpdir();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new BenchFailure(`${a} needs a value\n${USAGE}`);
      return v;
    };
    if (a === '--size') size = parseSize(value());
    else if (a.startsWith('--size=')) size = parseSize(a.slice('--size='.length));
    else if (/^--\d+g$/i.test(a)) size = Number(a.slice(2, -1)) * GiB;
    else if (a === '--dir') dir = value();
    else if (a.startsWith('--dir=')) dir = a.slice('--dir='.length);
    else if (a === '--help' || a === '-h') {
      console.log(USAGE);
      process.exit(0);
    } else throw new BenchFailure(`unknown argument ${a}\n${USAGE}`);
  }
  return { size, dir };
}

function human(bytes: number): string {
  if (bytes >= GiB) return `${(bytes / GiB).toFixed(2)} GiB`;
  if (bytes >= MiB) return `${(bytes / MiB).toFixed(1)} MiB`;
  return `${bytes} B`;
}

function clockTicks(): number {
  try {
    const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    return n > 0 ? n : 100;
  } catch {
    return 100;
  }
}

/** utime and stime of a live process, in seconds (fields 14 and 15 of /proc/PID/stat). */
async function cpuSeconds(pid: number, ticks: number): Promise<{ user: number; sys: number; total: number }> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields[0] is field 3 (state)
  const user = Number(fields[11]) / ticks;
  const sys = Number(fields[12]) / ticks;
  return { user, sys, total: user + sys };
}

/** A `VmXxx:   1234 kB` line of /proc/PID/status, in bytes. */
async function procStatus(pid: number, key: 'VmRSS' | 'VmHWM'): Promise<number | undefined> {
  const text = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const m = new RegExp(`^${key}:\\s+(\\d+)\\s+kB`, 'm').exec(text);
  return m ? Number(m[1]) * 1024 : undefined;
}

const timeOf = (l: LogLine | undefined): number | undefined => (typeof l?.['time'] === 'string' ? Date.parse(l['time']) : typeof l?.['time'] === 'number' ? l['time'] : undefined);

let site: AloSite | null = null;
let daemon: DaemonProcess | null = null;
let workDir: string | null = null;

async function bench(size: number, baseDir: string): Promise<boolean> {
  const free = await statfs(baseDir).then(
    (s) => s.bavail * s.bsize,
    (err: Error) => {
      throw new BenchFailure(`cannot use ${baseDir}: ${err.message}`);
    },
  );
  const needed = 2 * size + 256 * MiB;
  if (free < needed) throw new BenchFailure(`${baseDir} has ${human(free)} free; the file and the store's copy need ${human(needed)} (use --dir)`);

  workDir = await mkdtemp(join(baseDir, 'vms-uplink-bench-'));
  site = await startAloSite({
    dir: join(workDir, 'site'),
    testTuning: false, // the daemon's default upload settings
    watch: { settle_seconds: 1 },
    log: { level: 'info' },
    store: { dataDir: join(workDir, 's3-store') },
  });
  const folder = join(site.exportsRoot, 'bench-incident');
  const file = join(folder, 'bench.mp4');
  console.log(`bench: ${human(size)} (${size} bytes) in ${workDir}, ${human(free)} free`);
  console.log(`config: ${site.configPath} — upload settings left at their defaults, settle_seconds 1`);
  process.stdout.write('writing the test file… ');
  const writeStart = Date.now();
  const sha256 = await writeVideo(file, size);
  console.log(`${((Date.now() - writeStart) / 1000).toFixed(1)} s`);
  await writeManifest(folder, incidentManifest(INCIDENT_ID, [{ id: VIDEO_ID, file: 'bench.mp4' }], 'Bench incident'));

  const ticks = clockTicks();
  const cpuBefore = process.cpuUsage();
  const spawnedAt = Date.now();
  const d = DaemonProcess.run(site.configPath);
  daemon = d;
  const pid = d.pid;
  let exited: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  void d.exited.then((e) => (exited = e));

  let maxRss = 0;
  const sampler = setInterval(() => {
    void procStatus(pid, 'VmRSS').then((rss) => (maxRss = Math.max(maxRss, rss ?? 0)));
  }, SAMPLE_MS);

  const s = site;
  const reported = (): LogLine | undefined => d.events('incident.reported').find((l) => l['uploaded'] === 1);
  const timeoutMs = 120_000 + (size / (5 * MiB)) * 1000; // even at 5 MiB/s
  const deadline = Date.now() + timeoutMs;
  let lastProgress = Date.now();
  try {
    for (;;) {
      if (exited) throw new BenchFailure(`the daemon exited early: ${JSON.stringify(exited)}`);
      const failed = d.logs.find((l) => l.event === 'upload.failed' || l.event === 'export.failed' || l.level === 'fatal');
      if (failed) throw new BenchFailure(`the daemon reported a failure: ${JSON.stringify(failed)}`);
      if (reported() && s.alo.incident(INCIDENT_ID)?.uploaded_videos.length === 1) break;
      if (Date.now() > deadline) throw new BenchFailure(`timed out after ${Math.round(timeoutMs / 1000)} s`);
      if (Date.now() - lastProgress >= 5000) {
        lastProgress = Date.now();
        const sent = s.store.requests.filter((r) => r.method === 'PUT' && r.status === 200).reduce((n, r) => n + r.bytesReceived, 0);
        const phase = d.events('export.settled').length === 0 ? 'hashing' : 'uploading';
        console.log(`  ${((Date.now() - spawnedAt) / 1000).toFixed(0).padStart(4)} s  ${phase}: ${human(sent)} of ${human(size)} stored, RSS ${(maxRss / MB).toFixed(0)} MB so far`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }

    // Measured while the daemon still runs, just before it is asked to stop.
    const cpuTimes = await cpuSeconds(pid, ticks);
    const cpu = cpuTimes.total;
    const hwm = (await procStatus(pid, 'VmHWM')) ?? 0;
    const rssNow = (await procStatus(pid, 'VmRSS')) ?? 0;
    clearInterval(sampler);
    maxRss = Math.max(maxRss, rssNow);
    const benchCpu = process.cpuUsage(cpuBefore);

    d.kill('SIGTERM');
    const exit = await Promise.race([d.exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 30_000))]);
    if (exit === 'timeout' || exit.code !== 0) throw new BenchFailure(`the daemon did not stop cleanly after SIGTERM: ${JSON.stringify(exit)}`);
    daemon = null;

    const startedAt = timeOf(d.events('daemon.started')[0]) ?? spawnedAt;
    const manifestAt = timeOf(d.events('manifest.applied')[0]);
    const settledAt = timeOf(d.events('export.settled')[0]);
    const uploadStartedAt = timeOf(d.events('upload.started')[0]);
    const completedAt = timeOf(d.events('upload.completed')[0]);
    const reportedAt = timeOf(reported());
    if (settledAt === undefined || reportedAt === undefined) throw new BenchFailure('the daemon logged no export.settled or incident.reported line');
    const uploadSeconds = (reportedAt - settledAt) / 1000;
    const hashSeconds = (settledAt - startedAt) / 1000;
    const throughput = size / MiB / uploadSeconds;

    const video = s.alo.incident(INCIDENT_ID)!.uploaded_videos[0]!;
    const storedSize = s.store.objectSize(video.s3_key);
    process.stdout.write('checking the stored object… ');
    const storedSha = await s.store.objectSha256(video.s3_key);
    const hashOk = storedSha === sha256 && storedSize === size;
    console.log(hashOk ? 'sha256 matches the file' : `DIFFERS: ${storedSize} bytes, sha256 ${storedSha}; the file has ${size} bytes, sha256 ${sha256}`);
    const parts = s.store.requests.filter((r) => r.method === 'PUT' && r.status === 200 && r.key === video.s3_key);
    const retried = s.store.requests.filter((r) => r.method === 'PUT' && r.status !== 200).length;
    const peak = Math.max(hwm, maxRss);
    const rssOk = peak <= RSS_LIMIT_BYTES;

    console.log(`
file size           ${human(size)} (${size} bytes), ${parts.length} PUT(s)${retried ? `, ${retried} refused and retried` : ''}
hash phase          ${hashSeconds.toFixed(1)} s   daemon start → export.settled, ${(size / MiB / hashSeconds).toFixed(1)} MiB/s${manifestAt ? `  (start → manifest read ${((manifestAt - startedAt) / 1000).toFixed(1)} s, then video settle 1 s + hashing ${((settledAt - manifestAt) / 1000).toFixed(1)} s)` : ''}
upload phase        ${uploadSeconds.toFixed(1)} s   export.settled → incident reported, ${throughput.toFixed(1)} MiB/s${uploadStartedAt && completedAt ? `  (first part → complete ${((completedAt - uploadStartedAt) / 1000).toFixed(1)} s)` : ''}
daemon CPU          ${cpu.toFixed(1)} s   user ${cpuTimes.user.toFixed(1)} s + sys ${cpuTimes.sys.toFixed(1)} s of pid ${pid} (/proc/${pid}/stat, CLK_TCK ${ticks})
daemon peak RSS     ${(peak / MB).toFixed(0)} MB   VmHWM ${(hwm / MB).toFixed(1)} MB, max sampled VmRSS ${(maxRss / MB).toFixed(1)} MB (1 MB = 10^6 bytes)
bench process CPU   ${((benchCpu.user + benchCpu.system) / 1e6).toFixed(1)} s   (the S3 store and ALO emulator, on the same machine)
`);
    const stderr = d.stderr.join('').trim();
    if (stderr) console.log(`daemon stderr (not empty):\n  ${stderr.split('\n').join('\n  ')}\n`);
    const retries = d.events('upload.retry').length;
    if (retries) console.log(`daemon logged ${retries} upload.retry line(s)\n`);
    console.log(
      `${human(size)}: upload ${throughput.toFixed(1)} MiB/s, hash ${hashSeconds.toFixed(1)} s, CPU ${cpu.toFixed(1)} s, peak RSS ${(peak / MB).toFixed(0)} MB (limit ${RSS_LIMIT_BYTES / MB} MB: ${rssOk ? 'ok' : 'EXCEEDED'})${hashOk ? '' : ', STORED OBJECT DIFFERS'}`,
    );
    return rssOk && hashOk;
  } finally {
    clearInterval(sampler);
  }
}

async function cleanUp(): Promise<void> {
  if (daemon) {
    daemon.kill('SIGKILL');
    await daemon.exited;
    daemon = null;
  }
  await site?.close().catch(() => undefined); // the store's parts live in workDir, removed next
  site = null;
  if (workDir) await rm(workDir, { recursive: true, force: true });
  workDir = null;
}

function printDiagnostics(): void {
  if (!daemon) return;
  const stderr = daemon.stderr.join('').trim();
  console.error(`\n--- daemon stderr ---\n${stderr || '(empty)'}`);
  console.error('--- last daemon log lines ---');
  for (const l of daemon.logs.slice(-25)) console.error(JSON.stringify(l));
}

process.once('SIGINT', () => {
  console.error('\ninterrupted: cleaning up');
  void cleanUp().finally(() => process.exit(130));
});

let ok = false;
try {
  const { size, dir } = parseArgs(process.argv.slice(2));
  ok = await bench(size, dir);
} catch (err) {
  console.error(`\nBENCH FAILED: ${err instanceof BenchFailure ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  printDiagnostics();
} finally {
  await cleanUp();
}
process.exit(ok ? 0 : 1);
