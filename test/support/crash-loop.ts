/**
 * The crash loop: a workload spread over the four platforms while the real daemon is SIGKILLed at
 * random moments and started again, as a power cut or an OOM kill would: during its start-up, at
 * random while it works, and right when an upload has parts done and parts not. After each kill
 * the ledger is read: the uploads so cut in the middle must be resumed. Afterwards the daemon
 * runs to the end and the promise is checked: every export arrived once and byte-identical, every
 * ALO incident report lists every video, the ledger passed `PRAGMA integrity_check` after every
 * kill, and the bytes sent again stay within the parts that can be in flight at each kill that
 * finds uploads under way: `upload.concurrency` parts, across all uploads.
 * `npm run crash-loop` runs the full size; CI runs a small one (test/e2e/crash-loop.test.ts).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor, type DaemonProcess } from './daemon-process.js';
import { MiB } from './files.js';
import { seededRandom } from './random.js';
import { ledgerRowsSoFar } from './ledger.js';
import { PLATFORMS, Workload, type Resent } from './workload.js';

export interface CrashLoopOptions {
  incidents: number;
  videosPerIncident: number;
  kills: number;
  maxSize: number;
  /** A kill lands this long after a start, drawn uniformly: after the spawn for every third kill, after `daemon.started` for the others. */
  killAfterMs: [number, number];
  seed: number;
  /** Part concurrency of the daemon: at most this many parts are in flight at a kill. */
  concurrency: number;
  /** upload.part_size (bytes; whole MiB): more parts than `concurrency` per upload leave uploads half done at a kill. */
  partSize: number;
  /** Every part answer is delayed this long, so kills land mid-upload on a small workload too. */
  partLatencyMs: number;
  finishTimeoutMs: number;
}

export interface CrashLoopResult {
  kills: number;
  /** Kills that landed while uploads were under way (the others hit start-up or an idle daemon). */
  killsMidUpload: number;
  /**
   * Kills after which the ledger held an upload with parts done and parts not done, and more parts
   * done than before that daemon started: the kill cut an upload it was sending in the middle, and
   * the next start had to resume it. Read from the ledger before each start and after each kill.
   */
  killsMidParts: number;
  /** The uploads so cut (ledger ids), each of which had to be resumed: all must end done. */
  resumedUploads: number[];
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
  const workload = await Workload.start(dir, { concurrency: options.concurrency, part_size: `${Math.round(options.partSize / MiB)}MiB` });
  for (const site of workload.sites.values()) site.setLatency(options.partLatencyMs);
  try {
    const sizes = workloadSizes(options.incidents * options.videosPerIncident - 1, options.maxSize, rand);
    // Shuffled, so the edge cases and the big file land on different platforms from seed to seed.
    sizes.sort(() => rand() - 0.5);
    // And one more big file, on ALO (which keeps the configured part size: TruVideo takes 10 MiB
    // parts at least), in an incident that arrives while the kills go on: whatever the seed, a kill
    // then finds an upload with more parts than are in flight at once, half done.
    const lateAlo = lastIndex(options.incidents, (i) => i >= Math.ceil(options.incidents / 2) && i % PLATFORMS.length === 0);
    sizes.splice((lateAlo ?? options.incidents - 1) * options.videosPerIncident, 0, options.maxSize);
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
      killsMidParts: 0,
      resumedUploads: [],
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
      // Parts done per upload before this start: a kill cuts an upload in the middle only if this daemon moved it on.
      const doneBefore = partsDoneByUpload(workload);
      const daemon = workload.daemon();
      const next = result.kills % arrivalEvery === 0 ? pending.shift() : undefined;
      if (next) await workload.exportIncident(next.platform, next.sizes);
      const [min, max] = options.killAfterMs;
      const delay = min + rand() * (max - min);
      // Three kinds of kill, in turn. One counts its delay from the spawn, so it may land in the
      // start-up (the ledger being opened and migrated). One counts it from the moment the daemon
      // says it started, so that it lands while the daemon works (a start-up takes seconds on a
      // loaded machine: counted from the spawn, kills would almost all hit it and never an upload).
      // One waits, once the daemon started, until it has done parts of an upload that still has
      // parts to do (up to four times the longest delay), and kills right then: the case resume exists for.
      const kind = result.kills % 3;
      if (kind !== 0) await untilStarted(daemon);
      if (kind === 2) {
        await waitFor(() => uploadsCutMidParts(workload, doneBefore).length > 0, 4 * max, 'an upload half done').catch(() => undefined);
      } else {
        await new Promise((r) => setTimeout(r, delay));
      }
      const active = activeUploads(workload);
      daemon.kill('SIGKILL');
      await daemon.exited;
      result.kills++;
      if (active > 0) result.killsMidUpload++;
      // A part whose answer the kill cut off is sent again: at most the parts in flight.
      if (active > 0) allowedParts += options.concurrency;
      const integrity = workload.integrity();
      if (integrity !== 'ok') result.integrityFailures.push(`after kill ${result.kills}: ${integrity}`);
      const cut = uploadsCutMidParts(workload, doneBefore);
      if (cut.length > 0) result.killsMidParts++;
      for (const id of cut) if (!result.resumedUploads.includes(id)) result.resumedUploads.push(id);
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
    const unfinished = result.resumedUploads.filter((id) => uploadState(workload, id) !== 'done');
    if (unfinished.length > 0) result.problems.push(`uploads cut mid-parts by a kill and not done at the end: ${unfinished.join(', ')}`);
    result.seconds = (Date.now() - started) / 1000;
    return result;
  } finally {
    await workload.close();
    await rm(dir, { recursive: true, force: true });
  }
}

/** The last of 0…n-1 that `ok` holds for, or undefined. */
function lastIndex(n: number, ok: (i: number) => boolean): number | undefined {
  for (let i = n - 1; i >= 0; i--) if (ok(i)) return i;
  return undefined;
}

/** Until the daemon logged `daemon.started` (or exited: the kill finds it gone, and the final checks say why). */
async function untilStarted(daemon: DaemonProcess): Promise<void> {
  let exited = false;
  void daemon.exited.then(() => (exited = true));
  await waitFor(() => exited || daemon.events('daemon.started').length > 0, 60_000, 'the daemon started');
}

async function finished(workload: Workload): Promise<number> {
  let n = 0;
  for (const video of workload.videos) if (await workload.isFinal(video)) n++;
  return n;
}

/** Parts done so far, per upload (ledger id). */
function partsDoneByUpload(workload: Workload): Map<number, number> {
  const rows = ledgerRowsSoFar<{ id: number; done: number }>(
    workload.files.ledgerPath,
    `SELECT upload_id AS id, COUNT(*) AS done FROM parts WHERE state = 'done' GROUP BY upload_id`,
  );
  return new Map(rows.map((r) => [r.id, r.done]));
}

/**
 * Uploads cut in the middle, to be resumed: unfinished in the ledger with some parts done and some
 * not, and more parts done than before the last start (the daemon that was killed was at work on
 * them, not merely holding an upload an earlier kill had cut).
 */
function uploadsCutMidParts(workload: Workload, doneBefore: ReadonlyMap<number, number>): number[] {
  return ledgerRowsSoFar<{ id: number; done: number }>(
    workload.files.ledgerPath,
    `SELECT u.id, (SELECT COUNT(*) FROM parts p WHERE p.upload_id = u.id AND p.state = 'done') AS done
       FROM uploads u WHERE u.state = 'queued'
       AND EXISTS (SELECT 1 FROM parts p WHERE p.upload_id = u.id AND p.state = 'done')
       AND EXISTS (SELECT 1 FROM parts p WHERE p.upload_id = u.id AND p.state <> 'done')`,
  )
    .filter((r) => r.done > (doneBefore.get(r.id) ?? 0))
    .map((r) => r.id);
}

function uploadState(workload: Workload, id: number): string | undefined {
  return ledgerRowsSoFar<{ state: string }>(workload.files.ledgerPath, `SELECT state FROM uploads WHERE id = ?`, id)[0]?.state;
}

/** Uploads not yet done or failed: each may have a part in flight. */
function activeUploads(workload: Workload): number {
  const [row] = ledgerRowsSoFar<{ n: number }>(workload.files.ledgerPath, `SELECT COUNT(*) AS n FROM uploads WHERE state = 'queued'`);
  return row?.n ?? 0;
}
