/**
 * `npm run build && node dist/scripts/watch-count.js [--folders N] [--dir DIR]`: the inotify
 * watches the daemon holds with N (default 20,000) incident folders, counted as the kernel shows
 * them (each `inotify wd:` line of /proc/<pid>/fdinfo/<fd> is one watch).
 *
 * The export folder is laid out as a VMS does: `exports/<day>/<incident>/` with incident.json
 * and one 8 KiB video, 100 incidents per day folder. Three runs of the real daemon, reporting to
 * the ALO emulator whose presigned URLs point at the null sink (scripts/null-sink.ts):
 *  1. first start with every folder new: the peak while they are uploaded, then the count once
 *     every incident is uploaded, reported and finished (its folder let go of), and how long a
 *     new export then takes to reach ALO;
 *  2. a restart on that ledger: what a daemon on a box with N handled folders holds;
 *  3. a first start with `watch.ignore_older: 30d` and every manifest 40 days old: every folder
 *     skipped, and the count once they are let go of.
 * `watch.missing_file_seconds` is 5 (not 3600) so that an uploaded incident is finished within
 * seconds rather than an hour later. Everything written is deleted at the end.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAloEmulator, type AloEmulator } from '../test/emulators/alo.js';
import type { S3Store } from '../test/emulators/s3-store.js';
import { aloTargetConfig } from '../test/support/alo-site.js';
import { DaemonProcess, writeConfig } from '../test/support/daemon-process.js';
import { inotifyWatches } from '../test/support/inotify.js';
import { ledgerRows } from '../test/support/ledger.js';
import { writeIncident } from '../test/support/manifest.js';
import { cpuSeconds } from './bench-proc.js';
import { BenchFailure, sleep, table } from './bench-util.js';
import { NullSink, type AloStore } from './null-sink.js';

const PER_DAY = 100;
const VIDEO_BYTES = 8 * 1024;
const WRITERS = 32;
const SAMPLE_MS = 1000;
const PROGRESS_MS = 15_000;
const DAY_MS = 86_400_000;

const USAGE = `usage: npm run build && node dist/scripts/watch-count.js [--folders N] [--dir DIR]
  --folders N   incident folders (default 20000)
  --dir DIR     where to put them (default ${tmpdir()})`;

const incidentId = (i: number): string => `watch-count-${String(i).padStart(6, '0')}`;
const dayOf = (i: number): string => `day-${String(Math.floor(i / PER_DAY)).padStart(4, '0')}`;

interface Run {
  daemon: DaemonProcess;
  alo: AloEmulator;
  ledgerPath: string;
  exportsRoot: string;
  spawnedAt: number;
  /** Highest count sampled so far. */
  peak: number;
}

async function writeFolders(exportsRoot: string, folders: number): Promise<void> {
  let next = 0;
  const writer = async (): Promise<void> => {
    for (let i = next++; i < folders; i = next++) {
      const id = incidentId(i);
      await writeIncident(exportsRoot, id, [{ id: `${id}-v1`, file: 'cam01.mp4', size: VIDEO_BYTES }], { folder: join(dayOf(i), id) });
    }
  };
  await Promise.all(Array.from({ length: WRITERS }, writer));
}

async function ageManifests(exportsRoot: string, folders: number, ageMs: number): Promise<void> {
  const at = (Date.now() - ageMs) / 1000;
  let next = 0;
  const writer = async (): Promise<void> => {
    for (let i = next++; i < folders; i = next++) {
      const folder = join(exportsRoot, dayOf(i), incidentId(i));
      await utimes(join(folder, 'incident.json'), at, at);
      await utimes(join(folder, 'cam01.mp4'), at, at);
    }
  };
  await Promise.all(Array.from({ length: WRITERS }, writer));
}

async function startRun(sink: NullSink, exportsRoot: string, dir: string, watch: Record<string, unknown> = {}): Promise<Run> {
  const alo = await startAloEmulator({ store: sink as AloStore as S3Store });
  await mkdir(dir, { recursive: true });
  const ledgerPath = join(dir, 'ledger.db');
  const configPath = await writeConfig(dir, {
    watch: { root: exportsRoot, settle_seconds: 1, missing_file_seconds: 5, ...watch },
    ledger: { path: ledgerPath },
    targets: { alo: aloTargetConfig(alo.baseUrl, { testTuning: false }) },
    log: { level: 'info' },
  });
  const spawnedAt = Date.now();
  return { daemon: DaemonProcess.run(configPath), alo, ledgerPath, exportsRoot, spawnedAt, peak: 0 };
}

async function sample(run: Run): Promise<number> {
  const exit = await Promise.race([run.daemon.exited, sleep(0).then(() => null)]);
  if (exit) throw new BenchFailure(`the daemon exited: ${JSON.stringify(exit)}\n${run.daemon.stderr.join('')}`);
  const failure = run.daemon.logs.find((l) => l.event === 'upload.failed' || l.event === 'watch.fallback' || l.level === 'fatal');
  if (failure) throw new BenchFailure(`the daemon reported: ${JSON.stringify(failure)}`);
  const watches = await inotifyWatches(run.daemon.pid);
  run.peak = Math.max(run.peak, watches);
  return watches;
}

/** Samples until `done` says so; prints progress now and then. */
async function until(run: Run, what: string, done: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  let lastProgress = Date.now();
  while (!(await done())) {
    const watches = await sample(run);
    if (Date.now() - run.spawnedAt > timeoutMs) throw new BenchFailure(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    if (Date.now() - lastProgress >= PROGRESS_MS) {
      lastProgress = Date.now();
      console.log(
        `  ${((Date.now() - run.spawnedAt) / 1000).toFixed(0).padStart(5)} s  ${watches} watches (peak ${run.peak}); waiting for ${what}`,
      );
    }
    await sleep(SAMPLE_MS);
  }
}

/** The count once it has not changed for `stillMs`. */
async function settled(run: Run, stillMs = 5000): Promise<number> {
  let last = await sample(run);
  let since = Date.now();
  while (Date.now() - since < stillMs) {
    await sleep(SAMPLE_MS);
    const now = await sample(run);
    if (now !== last) [last, since] = [now, Date.now()];
  }
  return last;
}

/** A figure from the ledger; 0 before the daemon created it. */
const count = (ledgerPath: string, sql: string): number => (existsSync(ledgerPath) ? ledgerRows<{ n: number }>(ledgerPath, sql)[0]!.n : 0);

async function stop(run: Run): Promise<void> {
  run.daemon.kill('SIGTERM');
  const exit = await run.daemon.exited;
  await run.alo.close();
  if (exit.code !== 0) throw new BenchFailure(`the daemon did not stop cleanly: ${JSON.stringify(exit)}`);
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  let folders = 20_000;
  let base = tmpdir();
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--folders') folders = Number(args[++i]);
    else if (args[i] === '--dir') base = args[++i] ?? base;
    else throw new BenchFailure(USAGE);
  }
  if (!Number.isInteger(folders) || folders < 1) throw new BenchFailure(USAGE);
  const workDir = await mkdtemp(join(base, 'vms-uplink-watch-count-'));
  const sink = await NullSink.start();
  try {
    const exportsRoot = join(workDir, 'exports');
    const days = Math.ceil(folders / PER_DAY);
    process.stdout.write(`writing ${folders} incident folders in ${days} day folders… `);
    let t = Date.now();
    await writeFolders(exportsRoot, folders);
    console.log(`${((Date.now() - t) / 1000).toFixed(1)} s`);
    const timeoutMs = 300_000 + folders * 100;

    console.log('1. first start, every folder new');
    const first = await startRun(sink, exportsRoot, join(workDir, 'run-1'));
    await until(
      first,
      'every incident finished',
      () => count(first.ledgerPath, 'SELECT COUNT(*) AS n FROM incidents WHERE finished_at IS NOT NULL') === folders,
      timeoutMs,
    );
    const firstPeak = first.peak;
    const firstAfter = await settled(first);
    const uploaded = first.daemon.events('upload.completed').length;
    // A new export among N let-go-of folders: how soon it reaches ALO, settle_seconds (1 s) included.
    t = Date.now();
    await writeIncident(exportsRoot, 'watch-count-new', [{ id: 'new-v1', file: 'cam01.mp4', size: VIDEO_BYTES }], {
      folder: join('day-new', 'watch-count-new'),
    });
    await until(first, 'the new export at ALO', () => first.alo.incident('watch-count-new')?.uploaded_videos.length === 1, timeoutMs);
    const newExportSeconds = (Date.now() - t) / 1000;
    const cpuBefore = await cpuSeconds(first.daemon.pid);
    await sleep(30_000);
    const idleCpu = ((await cpuSeconds(first.daemon.pid)) - cpuBefore) / 30;
    await stop(first);

    console.log('2. restart on that ledger');
    const second = await startRun(sink, exportsRoot, join(workDir, 'run-1'));
    const restarted = await settled(second, 10_000);
    const restartPeak = second.peak;
    await stop(second);

    console.log('3. first start with watch.ignore_older: 30d, every manifest 40 days old');
    await ageManifests(exportsRoot, folders, 40 * DAY_MS);
    const newAt = (Date.now() - 40 * DAY_MS) / 1000;
    for (const name of ['incident.json', 'cam01.mp4']) await utimes(join(exportsRoot, 'day-new', 'watch-count-new', name), newAt, newAt);
    const third = await startRun(sink, exportsRoot, join(workDir, 'run-3'), { ignore_older: '30d' });
    await until(third, 'the count of skipped folders', () => third.daemon.events('watch.ignored_older').length > 0, timeoutMs);
    const skipSeconds = (Date.now() - third.spawnedAt) / 1000;
    const line = third.daemon.events('watch.ignored_older')[0]!;
    const skippedAfter = await settled(third);
    const skipPeak = third.peak;
    await stop(third);
    if (third.alo.calls.length > 0) throw new BenchFailure(`a skipped incident reached ALO: ${JSON.stringify(third.alo.calls[0])}`);
    if (line.skipped !== folders + 1) throw new BenchFailure(`expected ${folders + 1} skipped: ${JSON.stringify(line)}`);

    console.log(`
${folders} incident folders (exports/<day>/<incident>/: incident.json and one video), ${days} day folders;
inotify watches held by the daemon (lines "inotify wd:" in /proc/<pid>/fdinfo/*):
${table([
  ['run', 'watches', ''],
  ['1. first start, every folder new: peak', String(firstPeak), `${uploaded} uploads completed`],
  ['   every incident finished and let go of', String(firstAfter), ''],
  ['2. restart on that ledger: peak', String(restartPeak), ''],
  ['   settled', String(restarted), ''],
  [
    '3. first start, ignore_older 30d, all 40 days old: peak',
    String(skipPeak),
    `skipped ${String(line.skipped)} in ${skipSeconds.toFixed(0)} s`,
  ],
  ['   settled', String(skippedAfter), ''],
])}
a new export after run 1's folders were let go of: at ALO ${newExportSeconds.toFixed(1)} s after it was written (settle_seconds 1)
the daemon idle after that, over 30 s: ${(idleCpu * 100).toFixed(2)} % of a core
run 3's log line: ${JSON.stringify(line)}`);
  } finally {
    await sink.close();
    await rm(workDir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof BenchFailure ? err.message : err);
  process.exitCode = 1;
});
