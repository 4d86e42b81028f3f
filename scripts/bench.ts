/**
 * `npm run bench [-- --size SIZE] [--runs N] [--dir DIR]`: the daemon side by side with rclone and the aws CLI.
 * `npm run bench -- --backlog N`: the daemon catching up with N incidents at start-up (scripts/bench-backlog.ts).
 *
 * One video-like file (default 1 GiB) is uploaded N times (default 3) by each client, runs interleaved:
 *  - the daemon: the built CLI with its default settings (16 MiB parts, 4 at once) but settle_seconds 1,
 *    reporting to the ALO emulator, whose presigned URLs point at the null sink;
 *  - `rclone copyto` and `aws s3 cp`, when on the PATH, straight to the same sink, 16 MiB parts, 4 at once.
 * The null sink (scripts/null-sink.ts) MD5s and discards every body, so receiving costs every client the same.
 *
 * Figures, each the median of the runs:
 *  - work: for the daemon, from the moment it starts reading the file (the file has settled, hashing
 *    begins) to its `upload.completed` log line; for a peer, the wall time of the command;
 *  - CPU: user + sys of the process; peak RSS: its resident-set peak (scripts/bench-proc.ts says how);
 *  - file reads: all the bytes the process read, divided by the file size.
 * Every upload is checked: the sink must hold an object of the file's size whose ETag is the file's
 * MD5 (one PUT) or its multipart ETag for 16 MiB parts. Exits 1 when a client fails, an object
 * differs, or the daemon's peak RSS exceeds 150 MB. Everything written is deleted at the end.
 */
import { createHash } from 'node:crypto';
import { createReadStream, rmSync } from 'node:fs';
import { mkdtemp, rm, statfs } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { writeVideo } from '../test/support/files.js';
import { incidentManifest, writeManifest } from '../test/support/manifest.js';
import { backlogBench, backlogBytes } from './bench-backlog.js';
import { DaemonRun } from './bench-daemon.js';
import { availablePeers, type Peer } from './bench-peers.js';
import { bytesRead } from '../test/support/proc-io.js';
import { killPeers, liveCost, runMeasured, type Cost } from './bench-proc.js';
import { BenchFailure, GiB, human, MB, median, MiB, sleep, table, timeOf } from './bench-util.js';
import { NullSink } from './null-sink.js';

const RSS_LIMIT_BYTES = 150 * MB;
const PART_BYTES = 16 * MiB;
const INCIDENT_ID = 'b3f1c0de-0000-4000-8000-00000000bench';
const VIDEO_ID = 'bench-video';
const DAEMON = 'vms-uplink';
const PROGRESS_MS = 5000;

const USAGE = `usage: npm run bench -- [--size SIZE] [--runs N] [--dir DIR]
       npm run bench -- --backlog N [--dir DIR]
  --size SIZE   file size, e.g. 1GiB (default), 512MiB, 10GiB, 2GB, or bytes (--10g: 10GiB)
  --runs N      uploads of the file by each client; the median is reported (default 3)
  --backlog N   instead: N incidents of two 64 KiB videos waiting when the daemon starts
  --dir DIR     where to put the files (default ${tmpdir()})`;

interface Options {
  size: number;
  runs: number;
  backlog: number | undefined;
  dir: string;
}

/** One upload of the file by one client. */
interface Sample extends Cost {
  workSeconds: number;
  /** Where the sink holds the object. */
  key: string;
  /** What the figures do not show, for the run's line. */
  detail: string;
}

interface Client {
  name: string;
  upload(run: number): Promise<Sample>;
}

interface Bench {
  file: string;
  size: number;
  workDir: string;
  sink: NullSink;
}

const UNITS: Record<string, number> = { B: 1, KIB: 1024, MIB: MiB, GIB: GiB, TIB: 1024 * GiB, KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12, G: GiB };

function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([A-Za-z]*)$/.exec(text.trim());
  const factor = m ? UNITS[(m[2] || 'B').toUpperCase()] : undefined;
  if (!m || factor === undefined) throw new BenchFailure(`bad size "${text}"\n${USAGE}`);
  const bytes = Math.round(Number(m[1]) * factor);
  if (bytes < 1) throw new BenchFailure(`size must be at least 1 byte\n${USAGE}`);
  return bytes;
}

function parseCount(flag: string, text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new BenchFailure(`${flag} needs a whole number of at least 1, not "${text}"\n${USAGE}`);
  return n;
}

function parseArgs(argv: string[]): Options {
  const options: Options = { size: GiB, runs: 3, backlog: undefined, dir: tmpdir() };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const [flag, inline] =
      arg.startsWith('--') && arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined];
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new BenchFailure(`${flag} needs a value\n${USAGE}`);
      return v;
    };
    if (flag === '--size') options.size = parseSize(value());
    else if (/^--\d+g$/i.test(flag)) options.size = Number(flag.slice(2, -1)) * GiB;
    else if (flag === '--runs') options.runs = parseCount(flag, value());
    else if (flag === '--backlog') options.backlog = parseCount(flag, value());
    else if (flag === '--dir') options.dir = value();
    else if (flag === '--help' || flag === '-h') {
      console.log(USAGE);
      process.exit(0);
    } else throw new BenchFailure(`unknown argument ${arg}\n${USAGE}`);
  }
  return options;
}

async function requireFree(dir: string, needed: number): Promise<void> {
  const s = await statfs(dir).catch((err: Error) => {
    throw new BenchFailure(`cannot use ${dir}: ${err.message}`);
  });
  const free = s.bavail * s.bsize;
  if (free < needed) throw new BenchFailure(`${dir} has ${human(free)} free; the bench needs ${human(needed)} (use --dir)`);
}

/**
 * The ETags S3 gives this file: its MD5 after one PUT, and the multipart ETag (MD5 of the part
 * MD5s, then the part count) after an upload in 16 MiB parts, which all three clients use.
 */
async function expectedEtags(file: string): Promise<string[]> {
  const whole = createHash('md5');
  const partMd5s: Buffer[] = [];
  let part = createHash('md5');
  let filled = 0;
  // Chunks of 1 MiB never straddle a 16 MiB part boundary.
  for await (const chunk of createReadStream(file, { highWaterMark: MiB }) as AsyncIterable<Buffer>) {
    whole.update(chunk);
    part.update(chunk);
    filled += chunk.length;
    if (filled === PART_BYTES) {
      partMd5s.push(part.digest());
      part = createHash('md5');
      filled = 0;
    }
  }
  if (filled > 0) partMd5s.push(part.digest());
  const multipart = createHash('md5').update(Buffer.concat(partMd5s)).digest('hex');
  return [`"${whole.digest('hex')}"`, `"${multipart}-${partMd5s.length}"`];
}

/**
 * When the daemon began reading the file: the last moment its rchar (/proc/PID/io) was within
 * `threshold` bytes of what it had read when it logged daemon.started. The file cannot be read
 * before it settled (a second later at least), and what the daemon reads meanwhile (the manifest,
 * the ledger) stays far below the threshold. Sampled every 10 ms.
 */
class ReadStart {
  at: number | undefined;
  private baseline: number | undefined;
  private quietAt = 0;

  constructor(
    private readonly run: DaemonRun,
    private readonly threshold: number,
  ) {}

  async sample(): Promise<void> {
    const now = Date.now();
    const rchar = await bytesRead(this.run.pid);
    if (rchar === undefined || this.run.daemon.events('daemon.started').length === 0) return;
    this.baseline ??= rchar;
    if (rchar - this.baseline < this.threshold) this.quietAt = now;
    else this.at = this.quietAt;
  }
}

function daemonClient(bench: Bench): Client {
  return {
    name: DAEMON,
    async upload(run) {
      const d = await DaemonRun.start(bench.sink, dirname(dirname(bench.file)), join(bench.workDir, `daemon-${run}`));
      try {
        const readStart = new ReadStart(d, Math.min(MiB, bench.size / 2));
        const key = await waitForUpload(d, readStart, bench);
        const cost = await liveCost(d.pid);
        await d.stop();
        const settledAt = timeOf(d.daemon.events('export.settled')[0]);
        const completedAt = timeOf(d.daemon.events('upload.completed')[0]);
        if (readStart.at === undefined || settledAt === undefined || completedAt === undefined) {
          throw new BenchFailure('the daemon logged no export.settled or upload.completed line, or was never seen reading the file');
        }
        const seconds = (ms: number) => (ms / 1000).toFixed(1);
        const detail = `hash ${seconds(settledAt - readStart.at)} s + upload ${seconds(completedAt - settledAt)} s`;
        return { ...cost, workSeconds: (completedAt - readStart.at) / 1000, key, detail };
      } finally {
        await d.close();
      }
    },
  };
}

/** Waits until the daemon logged upload.completed and reported the video to ALO; returns its key. */
async function waitForUpload(d: DaemonRun, readStart: ReadStart, bench: Bench): Promise<string> {
  const timeoutMs = 120_000 + (bench.size / (5 * MiB)) * 1000; // even at 5 MiB/s
  const receivedBefore = bench.sink.bytesReceived;
  let lastProgress = Date.now();
  for (;;) {
    d.check();
    const key = d.alo.incident(INCIDENT_ID)?.uploaded_videos[0]?.s3_key;
    if (key !== undefined && d.daemon.events('upload.completed').length > 0) return key;
    if (Date.now() - d.spawnedAt > timeoutMs) throw d.failure(`timed out after ${Math.round(timeoutMs / 1000)} s`);
    if (Date.now() - lastProgress >= PROGRESS_MS) {
      lastProgress = Date.now();
      const phase = readStart.at === undefined ? 'settling' : d.daemon.events('export.settled').length === 0 ? 'hashing' : 'uploading';
      console.log(
        `    ${((Date.now() - d.spawnedAt) / 1000).toFixed(0).padStart(4)} s  ${phase}: ${human(bench.sink.bytesReceived - receivedBefore)} received by the sink`,
      );
    }
    if (readStart.at === undefined) await readStart.sample();
    await sleep(readStart.at === undefined ? 10 : 100);
  }
}

function peerClient(peer: Peer, bench: Bench): Client {
  return {
    name: peer.name,
    async upload(run) {
      const key = `peers/${peer.command}/run-${run}/bench.mp4`;
      const result = await runMeasured(peer.command, peer.args(bench.file, key), peer.env, join(bench.workDir, `${peer.command}-${run}`));
      if (result.code !== 0)
        throw new BenchFailure(`${peer.name} exited with ${result.code}:\n${result.stderr.trim().split('\n').slice(-10).join('\n')}`);
      return { ...result, workSeconds: result.wallSeconds, key, detail: '' };
    },
  };
}

/** Why the sink does not hold the file under the sample's key (a failed upload, whatever the client said), or undefined. */
function verify(bench: Bench, expected: string[], sample: Sample): string | undefined {
  const object = bench.sink.object(sample.key);
  if (!object) return `the sink holds no object ${sample.key}`;
  if (object.size !== bench.size || !expected.includes(object.etag))
    return `the sink holds ${object.size} bytes, ETag ${object.etag}; expected ${bench.size} bytes, ETag ${expected.join(' or ')}`;
  return undefined;
}

async function fileBench(bench: Bench, runs: number): Promise<boolean> {
  process.stdout.write(`writing ${human(bench.size)} to ${bench.file}… `);
  const writeStart = performance.now();
  await writeVideo(bench.file, bench.size);
  await writeManifest(dirname(bench.file), incidentManifest(INCIDENT_ID, [{ id: VIDEO_ID, file: 'bench.mp4' }], 'Bench incident'));
  const expected = await expectedEtags(bench.file);
  console.log(`${((performance.now() - writeStart) / 1000).toFixed(1)} s`);

  const { peers, notes } = await availablePeers(bench.sink, bench.workDir);
  for (const note of notes) console.log(`note: ${note}`);
  const clients = [daemonClient(bench), ...peers.map((p) => peerClient(p, bench))];
  const samples = new Map<string, Sample[]>(clients.map((c) => [c.name, []]));
  const failures = new Map<string, string>();
  const requests = new Map<string, string>();
  for (let run = 1; run <= runs; run++) {
    for (const client of clients.filter((c) => !failures.has(c.name))) {
      const before = new Map(bench.sink.operations);
      let problem: string | undefined;
      try {
        const sample = await client.upload(run);
        problem = verify(bench, expected, sample);
        if (problem === undefined) {
          samples.get(client.name)!.push(sample);
          printRun(run, client.name, sample, bench.size);
        }
      } catch (err) {
        // A failing peer is left out of the later runs; a failing daemon ends the bench.
        if (client.name === DAEMON || !(err instanceof BenchFailure)) throw err;
        problem = err.message;
      }
      if (problem !== undefined) {
        console.log(`  run ${run}  ${client.name}: FAILED: ${problem}`);
        failures.set(client.name, problem);
      }
      if (run === 1) requests.set(client.name, operationsSince(before, bench.sink.operations));
    }
  }
  printSummary(bench.size, runs, clients, samples, failures, requests);
  const daemonPeak = Math.max(...samples.get(DAEMON)!.map((s) => s.peakRssBytes));
  if (daemonPeak > RSS_LIMIT_BYTES)
    console.log(`the daemon's peak RSS ${(daemonPeak / MB).toFixed(0)} MB EXCEEDS the ${RSS_LIMIT_BYTES / MB} MB limit`);
  return failures.size === 0 && daemonPeak <= RSS_LIMIT_BYTES;
}

function printRun(run: number, name: string, s: Sample, size: number): void {
  const figures = `work ${s.workSeconds.toFixed(1)} s${s.detail ? ` (${s.detail})` : ''}, CPU ${s.cpuSeconds.toFixed(1)} s, peak RSS ${(s.peakRssBytes / MB).toFixed(0)} MB, reads ${(s.bytesRead / size).toFixed(2)}`;
  console.log(`  run ${run}  ${name.padEnd(13)}  ${figures}, object ok`);
}

/** The S3 operations the sink answered between two snapshots of its counters, e.g. "UploadPart 64, HeadObject 2". */
function operationsSince(before: Map<string, number>, after: Map<string, number>): string {
  const delta = [...after].map(([op, n]): [string, number] => [op, n - (before.get(op) ?? 0)]).filter(([, n]) => n > 0);
  return delta.map(([op, n]) => `${op} ${n}`).join(', ');
}

function printSummary(
  size: number,
  runs: number,
  clients: Client[],
  samples: Map<string, Sample[]>,
  failures: Map<string, string>,
  requests: Map<string, string>,
): void {
  const medians = new Map(
    [...samples]
      .filter(([, list]) => list.length > 0)
      .map(([name, list]) => {
        const m = (pick: (s: Sample) => number) => median(list.map(pick));
        return [
          name,
          {
            work: m((s) => s.workSeconds),
            cpu: m((s) => s.cpuSeconds),
            rss: m((s) => s.peakRssBytes),
            reads: m((s) => s.bytesRead) / size,
          },
        ];
      }),
  );
  const rows = clients.map((c) => {
    const m = medians.get(c.name);
    if (!m) return [c.name, 'failed', '', '', '', ''];
    return [c.name, m.work.toFixed(2), (size / MiB / m.work).toFixed(1), m.cpu.toFixed(2), (m.rss / MB).toFixed(0), m.reads.toFixed(2)];
  });
  console.log(`
${human(size)} file, median of ${runs} run(s), ${availableParallelism()} CPUs shared by the client and the sink (MD5 of every body, nothing kept)
${table([['client', 'work s', 'MiB/s', 'CPU s', 'peak RSS MB', 'file reads'], ...rows])}`);
  const daemon = medians.get(DAEMON);
  for (const [name, peer] of medians) {
    if (name === DAEMON || !daemon) continue;
    const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}x`;
    console.log(
      `${DAEMON} / ${name}: work ${ratio(daemon.work, peer.work)}, CPU ${ratio(daemon.cpu, peer.cpu)}, peak RSS ${ratio(daemon.rss, peer.rss)}`,
    );
  }
  console.log(
    `\nrequests the sink answered (run 1; ${DAEMON}'s multipart create and complete reach it through the ALO emulator, not over HTTP):`,
  );
  for (const [name, ops] of requests) console.log(`  ${name.padEnd(13)}  ${ops}`);
  for (const [name, problem] of failures) console.log(`\n${name} FAILED: ${problem}`);
}

let workDir: string | undefined;
let sink: NullSink | undefined;

process.once('SIGINT', () => {
  console.error('\ninterrupted: cleaning up');
  // All synchronous, so that the bench cannot go on to its next step meanwhile.
  killPeers();
  DaemonRun.killAll();
  if (workDir) rmSync(workDir, { recursive: true, force: true });
  process.exit(130);
});

let ok = false;
try {
  const options = parseArgs(process.argv.slice(2));
  await requireFree(options.dir, options.backlog === undefined ? options.size + 256 * MiB : backlogBytes(options.backlog));
  workDir = await mkdtemp(join(options.dir, 'vms-uplink-bench-'));
  sink = await NullSink.start();
  if (options.backlog !== undefined) ok = await backlogBench(options.backlog, workDir, sink);
  else
    ok = await fileBench(
      { file: join(workDir, 'exports', 'bench-incident', 'bench.mp4'), size: options.size, workDir, sink },
      options.runs,
    );
} catch (err) {
  console.error(
    `\nBENCH FAILED: ${err instanceof BenchFailure ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err)}`,
  );
} finally {
  await sink?.close();
  if (workDir) await rm(workDir, { recursive: true, force: true });
}
process.exit(ok ? 0 : 1);
