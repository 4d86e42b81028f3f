/**
 * `npm run bench -- --backlog N`: the daemon starting on N incident folders already exported, each
 * with two 64 KiB videos (every tenth incident also lists one failed export), reporting to the ALO
 * emulator whose URLs point at the null sink. It measures how soon the first upload starts, how
 * fast the backlog drains (until ALO holds every incident with all its videos), what the daemon
 * cost, and how long `vms-uplink status` then takes over that ledger. Then what the daemon costs
 * idle: after the backlog (once the finished incidents are let go), and on an empty ledger.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli } from '../test/support/daemon-process.js';
import { writeIncident, type ExportedVideo } from '../test/support/manifest.js';
import { DaemonRun } from './bench-daemon.js';
import { cpuSeconds, liveCost } from './bench-proc.js';
import { BenchFailure, MB, sleep, table, timeOf } from './bench-util.js';
import type { NullSink } from './null-sink.js';

const VIDEO_BYTES = 64 * 1024;
const VIDEOS_PER_INCIDENT = 2;
const FAILED_EXPORT = 'G64 export failed with: No video available for the camera during the selected time period.';
const WRITERS = 32;
const PROGRESS_MS = 10_000;
/** Idle CPU is measured over this long, this long after the work ended (the daemon lets go of finished incidents every 10 s). */
const IDLE_MEASURE_MS = 30_000;
// The first half minute after start-up or a backlog still collects its garbage (16 of 30 s ticks measured, then 2).
const IDLE_SETTLE_MS = 45_000;

/** Disk the backlog takes: the videos, manifests and directories, and room for the ledger. */
export const backlogBytes = (incidents: number): number => incidents * 256 * 1024 + 256 * 1024 * 1024;

const incidentId = (i: number): string => `bench-backlog-${String(i).padStart(6, '0')}`;
const failedExports = (i: number): number => (i % 10 === 0 ? 1 : 0);

export async function backlogBench(incidents: number, workDir: string, sink: NullSink): Promise<boolean> {
  const exportsRoot = join(workDir, 'exports');
  process.stdout.write(`writing ${incidents} incident folders (${incidents * VIDEOS_PER_INCIDENT} videos of 64 KiB)… `);
  const writeStart = performance.now();
  await writeBacklog(exportsRoot, incidents);
  console.log(`${((performance.now() - writeStart) / 1000).toFixed(1)} s`);

  const run = await DaemonRun.start(sink, exportsRoot, join(workDir, 'daemon'));
  try {
    const doneAt = await waitForBacklog(run, incidents);
    const cost = await liveCost(run.pid);
    const statusStart = performance.now();
    const status = await runCli(['status', '--config', run.configPath]);
    const statusSeconds = (performance.now() - statusStart) / 1000;
    const idleAfter = await idleCpuPercent(run);
    await run.stop();
    const idleEmpty = await emptyLedgerIdle(sink, workDir);

    const firstUpload = timeOf(run.daemon.events('upload.started')[0]);
    if (firstUpload === undefined) throw new BenchFailure('the daemon logged no upload.started line');
    const seconds = (doneAt - run.spawnedAt) / 1000;
    const videos = incidents * VIDEOS_PER_INCIDENT;
    const failed = Array.from({ length: incidents }, (_, i) => failedExports(i)).reduce((a, b) => a + b, 0);
    const lines = status.stdout.trimEnd().split('\n');
    console.log(`
backlog of ${incidents} incidents waiting at start-up, ALO only
${table(
  [
    ['measure', 'value', ''],
    ['incidents', String(incidents), `${videos} videos of 64 KiB, ${failed} failed exports`],
    ['first upload started', `${((firstUpload - run.spawnedAt) / 1000).toFixed(2)} s`, 'upload.started, from process start'],
    ['whole backlog reported', `${seconds.toFixed(1)} s`, 'until ALO holds every incident with all its videos'],
    ['videos uploaded / s', (videos / seconds).toFixed(1), ''],
    ['incidents reported / s', (incidents / seconds).toFixed(1), ''],
    ['daemon CPU', `${cost.cpuSeconds.toFixed(1)} s`, 'user + sys, /proc/PID/stat'],
    ['daemon peak RSS', `${(cost.peakRssBytes / MB).toFixed(0)} MB`, 'VmHWM'],
    ['vms-uplink status', `${statusSeconds.toFixed(2)} s`, `exit ${status.code}, ${lines.length} lines`],
    ['idle CPU, after the backlog', `${idleAfter.toFixed(2)} %`, `of one core, over ${IDLE_MEASURE_MS / 1000} s`],
    ['idle CPU, empty ledger', `${idleEmpty.toFixed(2)} %`, `of one core, over ${IDLE_MEASURE_MS / 1000} s`],
  ],
  'lrl',
)}
status says: ${lines.find((l) => l.startsWith('uploads:')) ?? '(no totals line)'}`);
    if (status.code !== 0) console.log(`status stderr:\n${status.stderr.trim()}`);
    return status.code === 0;
  } finally {
    await run.close();
  }
}

/** The daemon's CPU over IDLE_MEASURE_MS, IDLE_SETTLE_MS from now, as a percentage of one core. */
async function idleCpuPercent(run: DaemonRun): Promise<number> {
  await sleep(IDLE_SETTLE_MS);
  run.check();
  const before = await cpuSeconds(run.pid);
  await sleep(IDLE_MEASURE_MS);
  run.check();
  return (((await cpuSeconds(run.pid)) - before) / (IDLE_MEASURE_MS / 1000)) * 100;
}

/** The idle cost of a daemon watching an empty folder with an empty ledger. */
async function emptyLedgerIdle(sink: NullSink, workDir: string): Promise<number> {
  const root = join(workDir, 'empty-exports');
  await mkdir(root, { recursive: true });
  const run = await DaemonRun.start(sink, root, join(workDir, 'idle-daemon'));
  try {
    const idle = await idleCpuPercent(run);
    await run.stop();
    return idle;
  } finally {
    await run.close();
  }
}

async function writeBacklog(exportsRoot: string, incidents: number): Promise<void> {
  let next = 0;
  const writer = async (): Promise<void> => {
    for (let i = next++; i < incidents; i = next++) {
      const id = incidentId(i);
      const videos: ExportedVideo[] = Array.from({ length: VIDEOS_PER_INCIDENT }, (_, v) => ({
        id: `${id}-v${v + 1}`,
        file: `cam0${v + 1}.mp4`,
        size: VIDEO_BYTES,
      }));
      if (failedExports(i)) videos.push({ id: `${id}-failed`, errors: [FAILED_EXPORT] });
      await writeIncident(exportsRoot, id, videos);
    }
  };
  await Promise.all(Array.from({ length: WRITERS }, writer));
}

/** Waits until ALO holds every incident with all its videos; returns when (epoch ms). */
async function waitForBacklog(run: DaemonRun, incidents: number): Promise<number> {
  const pending = new Map(Array.from({ length: incidents }, (_, i) => [incidentId(i), failedExports(i)]));
  const timeoutMs = 120_000 + incidents * 250;
  let seenReports = 0;
  let lastProgress = Date.now();
  while (pending.size > 0) {
    run.check();
    if (Date.now() - run.spawnedAt > timeoutMs)
      throw run.failure(`timed out after ${timeoutMs / 1000} s with ${pending.size} incidents not complete at ALO`);
    // Only an incident just reported can have become complete.
    const reports = run.alo.reports;
    for (; seenReports < reports.length; seenReports++) {
      const id = reports[seenReports]!.incidentId;
      const failed = pending.get(id);
      const incident = failed === undefined ? undefined : run.alo.incident(id);
      if (incident?.uploaded_videos.length === VIDEOS_PER_INCIDENT && incident.failed_videos.length === failed) pending.delete(id);
    }
    if (Date.now() - lastProgress >= PROGRESS_MS) {
      lastProgress = Date.now();
      const elapsed = ((Date.now() - run.spawnedAt) / 1000).toFixed(0).padStart(5);
      console.log(
        `  ${elapsed} s  ${incidents - pending.size} of ${incidents} incidents complete at ALO, ${run.daemon.events('upload.completed').length} uploads completed`,
      );
    }
    await sleep(100);
  }
  return Date.now();
}
