/**
 * The soak: a continuous workload over the four platforms with faults (503s, resets mid-body) and
 * periodic SIGKILLs, for minutes or hours; then every export is checked (test/support/workload.ts)
 * and the daemon's RSS and open file descriptors are compared between the start and the end of
 * the run: neither may grow. `npm run soak -- --minutes N`; CI runs a short one.
 */
import { readdirSync, readFileSync } from 'node:fs';
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
  maxSize: number;
  concurrency: number;
  seed: number;
}

export interface ResourceSample {
  /** Seconds since the soak started. */
  at: number;
  rssBytes: number;
  fds: number;
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
  samples: ResourceSample[];
  /** Medians of the samples taken in the first and in the last third of the run. */
  trend: { rssEarly: number; rssLate: number; fdsEarly: number; fdsLate: number };
}

const SAMPLE_MS = 2000;

/** RSS and open descriptors of a live process, from /proc. */
function sample(pid: number, at: number): ResourceSample | null {
  try {
    const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return { at, rssBytes: Number(rss ?? 0) * 1024, fds: readdirSync(`/proc/${pid}/fd`).length };
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
    trend: { rssEarly: 0, rssLate: 0, fdsEarly: 0, fdsLate: 0 },
  };
  const size = (): number => Math.round(Math.exp(Math.log(64 * 1024) + rand() * (Math.log(options.maxSize) - Math.log(64 * 1024))));
  const platform = (): string => PLATFORMS[Math.floor(rand() * PLATFORMS.length)]!.type;
  try {
    let nextExport = 0;
    let nextFault = options.faultEveryMs;
    const deadline = started + options.seconds * 1000;
    while (Date.now() < deadline) {
      const daemon = workload.daemon();
      const [min, max] = options.lifetimeMs;
      const killAt = Math.min(deadline, Date.now() + min + rand() * (max - min));
      const peak = { rss: 0, fds: 0 };
      while (Date.now() < killAt) {
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
        const s = sample(daemon.pid, elapsed());
        if (s) {
          result.samples.push(s);
          peak.rss = Math.max(peak.rss, s.rssBytes);
          peak.fds = Math.max(peak.fds, s.fds);
        }
        await removeFinished(workload);
        await new Promise((r) => setTimeout(r, Math.min(SAMPLE_MS, Math.max(0, killAt - Date.now()))));
      }
      if (Date.now() >= deadline) {
        await finish(workload, daemon, result);
        break;
      }
      if (workload.videos.length > 0) result.resendAllowance += options.concurrency; // in parts; sized below
      await kill(workload, daemon, result);
      say(
        `${elapsed().toFixed(0)} s: ${result.kills} kills, ${result.incidents} incidents, RSS ${(peak.rss / MiB).toFixed(0)} MiB, ${peak.fds} fds`,
      );
    }
    result.videos = workload.videos.length;
    result.bytes = workload.videos.reduce((sum, v) => sum + v.size, 0);
    result.resent = workload.resent();
    result.resendAllowance *= workload.largestPart();
    result.problems.push(...(await workload.problems()));
    const third = options.seconds / 3;
    const early = result.samples.filter((s) => s.at <= third);
    const late = result.samples.filter((s) => s.at >= 2 * third);
    result.trend = {
      rssEarly: median(early.map((s) => s.rssBytes)),
      rssLate: median(late.map((s) => s.rssBytes)),
      fdsEarly: median(early.map((s) => s.fds)),
      fdsLate: median(late.map((s) => s.fds)),
    };
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
  await waitFor(
    async () => {
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
