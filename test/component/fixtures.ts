/**
 * What the component tests (the stages in this process, against the real emulators, a real
 * ledger file and real files) share: a clock and a sleep the test steps, a log kept in memory
 * (printed when a test fails), a ledger in the test's temp folder, the ALO emulator with its
 * S3 store, and the watch and plan stages driven by hand so a test reaches the state it needs
 * the way the daemon does.
 */
import { createHash } from 'node:crypto';
import { readFile, utimes } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import chokidar, { type FSWatcher } from 'chokidar';
import type { TestContext } from 'vitest';
import type { Clock } from '../../src/clock.js';
import { Ledger } from '../../src/ledger/ledger.js';
import { createLogger, type Logger } from '../../src/log/logger.js';
import { FileIdentities } from '../../src/plan/identity.js';
import { VideoPlanner } from '../../src/plan/video-planner.js';
import type { Target } from '../../src/targets/target.js';
import type { Sleep } from '../../src/upload/pacer.js';
import type { WatchFactory } from '../../src/watch/folder-watcher.js';
import { parseManifest } from '../../src/watch/manifest.js';
import { startAloEmulator, type AloEmulator } from '../emulators/alo.js';
import { startS3Store, type S3Store } from '../emulators/s3-store.js';
import { ALO_TOKEN } from '../support/alo-site.js';
import { waitFor } from '../support/daemon-process.js';
import type { Harness } from '../support/harness.js';
import { ledgerRows } from '../support/ledger.js';
import { targetOf } from '../support/targets.js';

/**
 * A clock the test moves: wall time starts at the real time (the ledger stamps rows with it),
 * rounded down to a whole second so that an mtime set to it is exact; monotonic time at 0.
 */
export class FakeClock implements Clock {
  private wall = Math.floor(Date.now() / 1000) * 1000;
  private mono = 0;

  now(): number {
    return this.wall;
  }

  monotonic(): number {
    return this.mono;
  }

  advance(ms: number): void {
    this.wall += ms;
    this.mono += ms;
  }
}

/**
 * A pacer's sleep that waits for nothing and records what it was asked to wait: retries happen
 * at once and the test asserts the delays. An aborted signal still ends it, as the real one does.
 */
export function recordingSleep(): { sleep: Sleep; waits: number[] } {
  const waits: number[] = [];
  const sleep: Sleep = (ms, signal) => {
    waits.push(ms);
    return signal.aborted ? Promise.reject(signal.reason as Error) : Promise.resolve();
  };
  return { sleep, waits };
}

/** A logger at debug level into memory; its lines are printed when the test fails. */
export function testLog(ctx: TestContext): Logger {
  return recordingLog(ctx).log;
}

/** testLog, whose lines the test reads too: `events(name)` are those with that event name, parsed. */
export function recordingLog(ctx: TestContext): { log: Logger; events: (name: string) => Array<Record<string, unknown>> } {
  const lines: string[] = [];
  ctx.onTestFailed(() => console.log(`log of "${ctx.task.name}":\n${lines.join('')}`));
  return {
    log: createLogger('debug', undefined, { write: (line: string) => void lines.push(line) }),
    events: (name) => lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.event === name),
  };
}

/**
 * The error Node's fs.watch throws when inotify refuses one more watch
 * (`fs.inotify.max_user_watches` reached), as chokidar passes it on.
 */
export function watchLimitError(path: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`ENOSPC: System limit for number of file watchers reached, watch '${path}'`), {
    code: 'ENOSPC',
    errno: -28,
    syscall: 'watch',
    path,
    filename: path,
  });
}

/**
 * chokidar on the real folder, but the folders `refuses` names are not watched and chokidar
 * reports ENOSPC for them, as it does when the OS refuses the watch: what is inside them
 * produces no event. Asked for again later (watcher.add), a folder is refused while `refuses`
 * still says so.
 */
export function refusingWatch(refuses: (folder: string) => boolean): WatchFactory {
  return (root, options) => {
    const watcher: FSWatcher = chokidar.watch(root, {
      ...options,
      ignored: (path, stats) => {
        if (options.ignored(path, stats)) return true;
        if (stats?.isDirectory() !== true || !refuses(path)) return false;
        setImmediate(() => watcher.emit('error', watchLimitError(path)));
        return true;
      },
    });
    return watcher;
  };
}

export interface LedgerFile {
  ledger: Ledger;
  path: string;
  /** Rows of a query on a read-only connection of its own (what the test checks, never what the stage reads). */
  rows<T>(sql: string, ...params: unknown[]): T[];
}

/** A fresh ledger file in the test's temp folder, closed when the test finishes. */
export async function openLedger(h: Harness, reportingTargets: readonly string[] = ['alo']): Promise<LedgerFile> {
  const path = join(await h.dir(), 'ledger.db');
  const ledger = Ledger.open(path, { reportingTargets });
  h.closeAtEnd({ close: async () => ledger.close() });
  return { ledger, path, rows: (sql, ...params) => ledgerRows(path, sql, ...params) };
}

export interface Alo {
  store: S3Store;
  alo: AloEmulator;
}

/** The ALO emulator and its S3 store on 127.0.0.1, closed when the test finishes. */
export async function startAlo(h: Harness): Promise<Alo> {
  const store = h.closeAtEnd(await startS3Store());
  const alo = h.closeAtEnd(await startAloEmulator({ store }));
  return { store, alo };
}

/** An ALO target (named `alo`) in this process, multipart from 5 MiB so a few MiB make several parts. */
export function aloTarget(ctx: TestContext, baseUrl: string): Target {
  return targetOf(ctx, 'alo', { type: 'alo', base_url: baseUrl, auth: { bearer: ALO_TOKEN }, multipart_threshold: '5MiB' });
}

/** Reads the manifest into the ledger as the folder watcher does once it settled (the watcher has tests of its own). */
export async function applyManifest(ledger: Ledger, manifestPath: string, targets: string[] = ['alo']): Promise<void> {
  const text = await readFile(manifestPath, 'utf8');
  const parsed = parseManifest(text, basename(manifestPath));
  if (!parsed.ok) throw new Error(`test manifest refused: ${parsed.problems.join('; ')}`);
  const sha = createHash('sha256').update(text).digest('hex');
  await ledger.watch.applyManifest(manifestPath, dirname(manifestPath), sha, `test:${sha}`, parsed.manifest, targets);
}

export const PART_SIZE = 5 * 1024 * 1024;

/** A planner on the system's clocks that takes a file as settled at once (settle_seconds 0). */
export function quickPlanner(ledger: Ledger, targets: readonly Target[], log: Logger): VideoPlanner {
  return new VideoPlanner({
    ledger: ledger.plan,
    identities: new FileIdentities(ledger.plan),
    targets: [...targets],
    preferredPartSize: PART_SIZE,
    settleMs: 0,
    missingMs: 3600_000,
    trustMtime: true,
    log,
  });
}

/** Plans every waiting video (their files are all there): uploads queued in the ledger, as the daemon's planner makes them. */
export async function planAll(ledger: Ledger, targets: readonly Target[], log: Logger): Promise<void> {
  const planner = quickPlanner(ledger, targets, log);
  await waitFor(
    async () => {
      await planner.tick(new AbortController().signal);
      return ledger.plan.waiting(null, 1).length === 0;
    },
    5_000,
    'every video planned',
  );
}

/** Sets a file's mtime to `ms` (epoch), so that what a fake clock says and what the file says agree. */
export async function touchAt(path: string, ms: number): Promise<void> {
  await utimes(path, ms / 1000, ms / 1000);
}

export function md5(buf: Buffer): string {
  return createHash('md5').update(buf).digest('hex');
}

/** The MD5 of each `size` slice of the file, as S3 computes a part's ETag. */
export async function partMd5s(path: string, size = PART_SIZE): Promise<string[]> {
  const bytes = await readFile(path);
  const out: string[] = [];
  for (let at = 0; at < bytes.length; at += size) out.push(md5(bytes.subarray(at, at + size)));
  return out;
}
