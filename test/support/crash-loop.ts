/**
 * The crash loop: a workload spread over the four platforms while the real daemon is SIGKILLed at
 * random moments and started again, as a power cut or an OOM kill would. Afterwards the daemon
 * runs to the end and the promise is checked: every export arrived once and byte-identical, every
 * ALO incident report lists every video, the ledger passed `PRAGMA integrity_check` after every
 * kill, and the bytes sent again stay within the parts that can be in flight at each kill that
 * finds uploads under way: `upload.concurrency` parts, across all uploads.
 * `npm run crash-loop` runs the full size; CI runs a small one (test/e2e/crash-loop.test.ts).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from './daemon-process.js';
import { MiB } from './files.js';
import { seededRandom } from './random.js';
import { ledgerRowsSoFar } from './ledger.js';
import { PLATFORMS, Workload, type Resent } from './workload.js';

export interface CrashLoopOptions {
  incidents: number;
  videosPerIncident: number;
  kills: number;
  maxSize: number;
  /** A kill lands this long after a start, drawn uniformly. */
  killAfterMs: [number, number];
  seed: number;
  /** Part concurrency of the daemon: at most this many parts are in flight at a kill. */
  concurrency: number;
  /** Every part answer is delayed this long, so kills land mid-upload on a small workload too. */
  partLatencyMs: number;
  finishTimeoutMs: number;
}

export interface CrashLoopResult {
  kills: number;
  /** Kills that landed while uploads were under way (the others hit start-up or an idle daemon). */
  killsMidUpload: number;
  videos: number;
  bytes: number;
  resent: Resent;
  /** What the kills allow to be sent again: concurrency × the largest part, per kill with uploads under way. */
  resendAllowance: number;
  integrityFailures: string[];
  problems: string[];
  seconds: number;
}

/** The edge cases first (0 B, 1 B, exactly 5 MiB, 5 MiB + 1, the largest), the rest log-uniform from 64 KiB. */
export function workloadSizes(count: number, maxSize: number, rand: () => number): number[] {
  const edges = [0, 1, 5 * MiB, 5 * MiB + 1, maxSize];
  const low = Math.log(64 * 1024);
  const high = Math.log(maxSize);
  const rest = Array.from({ length: Math.max(0, count - edges.length) }, () => Math.round(Math.exp(low + rand() * (high - low))));
  return [...edges, ...rest].slice(0, count);
}

export async function runCrashLoop(options: CrashLoopOptions, say: (line: string) => void = () => undefined): Promise<CrashLoopResult> {
  const started = Date.now();
  const rand = seededRandom(options.seed);
  const dir = await mkdtemp(join(tmpdir(), 'vms-uplink-crash-loop-'));
  const workload = await Workload.start(dir, { concurrency: options.concurrency });
  for (const site of workload.sites.values()) site.setLatency(options.partLatencyMs);
  try {
    const sizes = workloadSizes(options.incidents * options.videosPerIncident, options.maxSize, rand);
    // Shuffled, so the edge cases and the big file land on different platforms from seed to seed.
    sizes.sort(() => rand() - 0.5);
    const pending = Array.from({ length: options.incidents }, (_, i) => ({
      platform: PLATFORMS[i % PLATFORMS.length]!.type,
      sizes: sizes.slice(i * options.videosPerIncident, (i + 1) * options.videosPerIncident),
    }));
    // Half the incidents are there before the first start; the rest arrive spread over the kills.
    for (const incident of pending.splice(0, Math.ceil(pending.length / 2)))
      await workload.exportIncident(incident.platform, incident.sizes);
    const arrivalEvery = Math.max(1, Math.floor(options.kills / Math.max(1, pending.length)));

    const result: CrashLoopResult = {
      kills: 0,
      killsMidUpload: 0,
      videos: 0,
      bytes: 0,
      resent: { bytes: 0, parts: 0 },
      resendAllowance: 0,
      integrityFailures: [],
      problems: [],
      seconds: 0,
    };
    let allowedParts = 0;
    while (result.kills < options.kills) {
      const daemon = workload.daemon();
      const next = result.kills % arrivalEvery === 0 ? pending.shift() : undefined;
      if (next) await workload.exportIncident(next.platform, next.sizes);
      const [min, max] = options.killAfterMs;
      await new Promise((r) => setTimeout(r, min + rand() * (max - min)));
      const active = activeUploads(workload);
      daemon.kill('SIGKILL');
      await daemon.exited;
      result.kills++;
      if (active > 0) result.killsMidUpload++;
      // A part whose answer the kill cut off is sent again: at most the parts in flight.
      if (active > 0) allowedParts += options.concurrency;
      const integrity = workload.integrity();
      if (integrity !== 'ok') result.integrityFailures.push(`after kill ${result.kills}: ${integrity}`);
      if (result.kills % 10 === 0) say(`${result.kills} kills, ${await finished(workload)}/${workload.videos.length} videos final`);
    }
    for (const incident of pending.splice(0)) await workload.exportIncident(incident.platform, incident.sizes);

    say('kills done; letting the daemon finish');
    const daemon = workload.daemon();
    await waitFor(async () => (await finished(workload)) === workload.videos.length, options.finishTimeoutMs, 'every video final');
    await waitFor(() => daemon.events('daemon.started').length > 0, 30_000, 'the daemon started');
    daemon.kill('SIGTERM');
    const exit = await daemon.exited;
    if (exit.code !== 0) result.problems.push(`the final SIGTERM exited ${String(exit.code ?? exit.signal)}`);

    result.videos = workload.videos.length;
    result.bytes = workload.videos.reduce((sum, v) => sum + v.size, 0);
    result.resent = workload.resent();
    result.resendAllowance = allowedParts * workload.largestPart();
    result.problems.push(...(await workload.problems()));
    result.seconds = (Date.now() - started) / 1000;
    return result;
  } finally {
    await workload.close();
    await rm(dir, { recursive: true, force: true });
  }
}

async function finished(workload: Workload): Promise<number> {
  let n = 0;
  for (const video of workload.videos) if (await workload.isFinal(video)) n++;
  return n;
}

/** Uploads not yet done or failed: each may have a part in flight. */
function activeUploads(workload: Workload): number {
  const [row] = ledgerRowsSoFar<{ n: number }>(workload.files.ledgerPath, `SELECT COUNT(*) AS n FROM uploads WHERE state = 'queued'`);
  return row?.n ?? 0;
}
