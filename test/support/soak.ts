/**
 * The soak: a continuous workload over the four platforms with faults (503s, resets mid-body) and
 * periodic SIGKILLs, for minutes or hours; then a steady phase of the same workload without kills,
 * one daemon process throughout; then every export is checked (test/support/workload.ts).
 *
 * Memory and descriptors are judged within that one process: RSS and open descriptors of the same
 * pid, sampled across the steady phase, compared between the third and the last quarter of the
 * phase (its first half is the process warming up: V8 growing its heap to the working set, code
 * compiled, the connection pools filled; that took up to 15 s here). Across the kill phase the samples come from short-lived processes,
 * each caught at a different age: there growth is not judged across them, only each process's own
 * peaks (`processes`), which a caller may bound. `npm run soak -- --minutes N`; CI runs a short one.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DaemonProcess } from './daemon-process.js';
import { waitFor } from './daemon-process.js';
import { MiB } from './files.js';
import { seededRandom } from './random.js';
import { PLATFORMS, Workload, type Resent, type WorkloadVideo } from './workload.js';

export interface SoakOptions {
  seconds: number;
  /** A new incident this often. */
  exportEveryMs: number;
  /** A fault burst on one platform this often. */
  faultEveryMs: number;
  /** The daemon is SIGKILLed after a lifetime drawn uniformly from this range. */
  lifetimeMs: [number, number];
  /** Then this long with the same workload and no kill: one daemon process, whose RSS and descriptors must stay flat. */
  steadySeconds: number;
  maxSize: number;
  concurrency: number;
  seed: number;
}

export interface ResourceSample {
  /** Seconds since the soak started. */
  at: number;
  pid: number;
  rssBytes: number;
  fds: number;
  /**
   * Of those, descriptors open on files (a path: the ledger and its WAL, part bodies being read),
   * not sockets, pipes or event descriptors. Sockets come and go with the connection pools, by
   * tens within seconds; files only with the parts in flight, so a descriptor leaked per part shows here first.
   */
  files: number;
}

/** One daemon process through the steady phase (no kills): the same pid sampled from its start to its end. */
export interface SteadyPhase {
  pid: number;
  /** Seconds since the soak started. */
  from: number;
  to: number;
  samples: ResourceSample[];
  /**
   * The lowest RSS sampled in the third and in the last quarter of the phase (the first half is
   * warm-up): the floor the process falls back to after V8 collects, which a leak raises. RSS
   * itself swings by tens of MiB within seconds as the heap grows and is collected.
   */
  rssEarly: number;
  rssLate: number;
  /** Medians of the descriptor counts in the same quarters. */
  fdsEarly: number;
  fdsLate: number;
  filesEarly: number;
  filesLate: number;
}

export interface SoakResult {
  incidents: number;
  videos: number;
  bytes: number;
  kills: number;
  faults: number;
  integrityFailures: string[];
  problems: string[];
  resent: Resent;
  resendAllowance: number;
  /** Every sample, of whichever daemon process was running (the kill phase, then the steady phase). */
  samples: ResourceSample[];
  /** Each daemon process that was sampled, in order of start: its own peaks (a figure of one process, never of several). */
  processes: ProcessPeaks[];
  steady: SteadyPhase;
}

/** The highest RSS and descriptor count sampled of one daemon process. */
export interface ProcessPeaks {
  pid: number;
  samples: number;
  rssBytes: number;
  fds: number;
}

const SAMPLE_MS = 1000;
/** How often the workload loop looks for what is due (an export, a fault burst, finished exports to remove). */
const WORK_MS = 500;
/** The steady phase is sampled more densely: its figures are what is judged. */
const STEADY_SAMPLE_MS = 500;

/** RSS and open descriptors of a live process, from /proc. */
function sample(pid: number, at: number): ResourceSample | null {
  try {
    const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    if (rss === undefined) return null;
    const fds = readdirSync(`/proc/${pid}/fd`);
    let files = 0;
    for (const fd of fds) {
      try {
        if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('/')) files++;
      } catch {
        // closed between the listing and the look
      }
    }
    return { at, pid, rssBytes: Number(rss) * 1024, fds: fds.length, files };
  } catch {
    return null; // it just died
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length === 0 ? 0 : sorted[Math.floor(sorted.length / 2)]!;
}

export async function runSoak(options: SoakOptions, say: (line: string) => void = () => undefined): Promise<SoakResult> {
  const rand = seededRandom(options.seed);
  const dir = await mkdtemp(join(tmpdir(), 'vms-uplink-soak-'));
  const workload = await Workload.start(dir, { concurrency: options.concurrency, stall_timeout: 5 });
  const started = Date.now();
  const elapsed = (): number => (Date.now() - started) / 1000;
  const result: SoakResult = {
    incidents: 0,
    videos: 0,
    bytes: 0,
    kills: 0,
    faults: 0,
    integrityFailures: [],
    problems: [],
    resent: { bytes: 0, parts: 0 },
    resendAllowance: 0,
    samples: [],
    processes: [],
    steady: { pid: 0, from: 0, to: 0, samples: [], rssEarly: 0, rssLate: 0, fdsEarly: 0, fdsLate: 0, filesEarly: 0, filesLate: 0 },
  };
  const size = (): number => Math.round(Math.exp(Math.log(64 * 1024) + rand() * (Math.log(options.maxSize) - Math.log(64 * 1024))));
  const platform = (): string => PLATFORMS[Math.floor(rand() * PLATFORMS.length)]!.type;
  let nextExport = 0;
  let nextFault = options.faultEveryMs;
  /**
   * The workload (exports, fault bursts, finished exports removed) until `until`, and the daemon
   * sampled every `everyMs` meanwhile, on a timer of its own (writing an export takes a while).
   */
  const drive = async (daemon: DaemonProcess, until: number, everyMs: number): Promise<ResourceSample[]> => {
    const samples: ResourceSample[] = [];
    let exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
    void daemon.exited.then((e) => (exit = e));
    const take = (): void => {
      const s = sample(daemon.pid, elapsed());
      if (s) samples.push(s);
    };
    take();
    const sampler = setInterval(take, everyMs);
    try {
      await work(daemon, until, () => exit);
    } finally {
      clearInterval(sampler);
    }
    result.samples.push(...samples);
    if (samples.length > 0) {
      result.processes.push({
        pid: daemon.pid,
        samples: samples.length,
        rssBytes: Math.max(...samples.map((x) => x.rssBytes)),
        fds: Math.max(...samples.map((x) => x.fds)),
      });
    }
    return samples;
  };
  /** Exports, fault bursts and the removal of finished exports, as they come due, until `until` or the daemon exits. */
  const work = async (
    daemon: DaemonProcess,
    until: number,
    exited: () => { code: number | null; signal: NodeJS.Signals | null } | null,
  ): Promise<void> => {
    while (Date.now() < until) {
      const exit = exited();
      if (exit) {
        const { code, signal } = exit;
        result.problems.push(
          `the daemon (pid ${daemon.pid}) exited by itself at ${elapsed().toFixed(0)} s (${String(code ?? signal)}): ${daemon.stderr.join('').slice(-2000)} ${daemon.logs
            .filter((l) => Number(l.level) >= 50)
            .slice(-3)
            .map((l) => JSON.stringify(l))
            .join(' ')}`,
        );
        break;
      }
      if (Date.now() - started >= nextExport) {
        await workload.exportIncident(platform(), Array.from({ length: 1 + Math.floor(rand() * 2) }, size));
        result.incidents++;
        nextExport += options.exportEveryMs;
      }
      if (Date.now() - started >= nextFault) {
        const site = workload.sites.get(platform())!;
        if (rand() < 0.5) site.failNextParts(3);
        else site.resetNextParts(2);
        result.faults++;
        nextFault += options.faultEveryMs;
      }
      await removeFinished(workload);
      await new Promise((r) => setTimeout(r, Math.min(WORK_MS, Math.max(0, until - Date.now()))));
    }
  };
  try {
    // The kill phase: daemons SIGKILLed after short lifetimes.
    const killsUntil = started + options.seconds * 1000;
    while (Date.now() < killsUntil) {
      const daemon = workload.daemon();
      const [min, max] = options.lifetimeMs;
      const samples = await drive(daemon, Math.min(killsUntil, Date.now() + min + rand() * (max - min)), SAMPLE_MS);
      if (workload.videos.length > 0) result.resendAllowance += options.concurrency; // in parts; sized below
      await kill(workload, daemon, result);
      const peak = samples.length > 0 ? result.processes.at(-1)! : null;
      say(
        `${elapsed().toFixed(0)} s: ${result.kills} kills, ${result.incidents} incidents` +
          (peak ? `; pid ${peak.pid} peaked at RSS ${(peak.rssBytes / MiB).toFixed(0)} MiB, ${peak.fds} fds` : ''),
      );
    }

    // The steady phase: one daemon process, the same workload, no kill; its RSS and descriptors sampled throughout.
    const daemon = workload.daemon();
    const from = elapsed();
    const samples = await drive(daemon, Date.now() + options.steadySeconds * 1000, STEADY_SAMPLE_MS);
    const to = elapsed();
    const span = to - from;
    const middle = samples.filter((s) => s.at >= from + span / 2 && s.at < from + (3 * span) / 4);
    const last = samples.filter((s) => s.at >= from + (3 * span) / 4);
    result.steady = {
      pid: daemon.pid,
      from,
      to,
      samples,
      rssEarly: Math.min(...middle.map((s) => s.rssBytes)),
      rssLate: Math.min(...last.map((s) => s.rssBytes)),
      fdsEarly: median(middle.map((s) => s.fds)),
      fdsLate: median(last.map((s) => s.fds)),
      filesEarly: median(middle.map((s) => s.files)),
      filesLate: median(last.map((s) => s.files)),
    };
    say(
      `${to.toFixed(0)} s: steady phase of pid ${daemon.pid} (${samples.length} samples): RSS ${(result.steady.rssEarly / MiB).toFixed(1)} → ${(result.steady.rssLate / MiB).toFixed(1)} MiB, fds ${result.steady.fdsEarly} → ${result.steady.fdsLate}`,
    );
    await finish(workload, daemon, result);

    result.videos = workload.videos.length;
    result.bytes = workload.videos.reduce((sum, v) => sum + v.size, 0);
    result.resent = workload.resent();
    result.resendAllowance *= workload.largestPart();
    result.problems.push(...(await workload.problems()));
    return result;
  } finally {
    await workload.close();
    await rm(dir, { recursive: true, force: true });
  }
}

async function kill(workload: Workload, daemon: DaemonProcess, result: SoakResult): Promise<void> {
  daemon.kill('SIGKILL');
  await daemon.exited;
  result.kills++;
  const integrity = workload.integrity();
  if (integrity !== 'ok') result.integrityFailures.push(`after kill ${result.kills}: ${integrity}`);
}

/** The end of the run: no new work, everything must arrive, then a clean stop. */
async function finish(workload: Workload, daemon: DaemonProcess, result: SoakResult): Promise<void> {
  let exited = false;
  void daemon.exited.then(() => (exited = true));
  await waitFor(
    async () => {
      if (exited)
        throw new Error(`the daemon exited before every video was final: ${result.problems.join('; ') || daemon.stderr.join('')}`);
      for (const v of workload.videos) if (!(await workload.isFinal(v))) return false;
      return true;
    },
    10 * 60_000,
    'every video final at the end of the soak',
  );
  daemon.kill('SIGTERM');
  const exit = await daemon.exited;
  if (exit.code !== 0) result.problems.push(`the final SIGTERM exited ${String(exit.code ?? exit.signal)}`);
}

/** Exports whose every video is final are deleted, as `after_upload: delete` will, so the disk stays bounded. */
async function removeFinished(workload: Workload): Promise<void> {
  const byIncident = new Map<string, WorkloadVideo[]>();
  for (const v of workload.videos) byIncident.set(v.incidentId, [...(byIncident.get(v.incidentId) ?? []), v]);
  for (const videos of byIncident.values()) {
    if (videos.some((v) => v.removed)) continue;
    let final = true;
    for (const v of videos) final &&= await workload.isSettled(v);
    if (!final) continue;
    await workload.removeExport(videos[0]!);
    for (const v of videos) v.removed = true;
  }
}
