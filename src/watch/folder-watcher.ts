/**
 * Finds incident folders under `watch.root` and feeds their manifests to the ledger.
 *
 * chokidar reports changes as they happen (polling with `watch.poll` on SMB/NFS mounts, where
 * change events do not arrive); a full walk of the root at start-up and every
 * `watch.rescan_interval` makes sure a missed event never loses an export. A manifest is read
 * once it has settled, and only again when its stamp (size and mtime) changes: the ledger keeps
 * the stamp of the version last read, so a walk over years of exports reads nothing but stats.
 *
 * Memory stays bounded however many incident folders the root holds: the walk is taken a page at
 * a time, and folders of incidents every target finished with are not watched (they are looked at
 * again only by the walk at start-up, for a manifest rewritten while the daemon was down).
 */
import { createHash } from 'node:crypto';
import { lstat, opendir, readFile, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import chokidar, { type FSWatcher } from 'chokidar';
import { systemClock, type Clock } from '../clock.js';
import type { WatchLedger } from '../ledger/watch-ledger.js';
import type { Logger } from '../log/logger.js';
import { describeError } from '../log/logger.js';
import { MANIFEST_NAMES, parseManifest } from './manifest.js';
import { isIgnoredName } from './paths.js';
import { SettleTracker } from './settle.js';

export interface WatcherOptions {
  root: string;
  poll: boolean;
  pollIntervalMs: number;
  settleMs: number;
  ledger: WatchLedger;
  /** The targets an incident in this folder goes to. */
  route: (folder: string) => string[];
  /** A file that is not a manifest was added or changed (an export going on after its upload?). */
  onFileEvent?: (path: string) => void;
  /** Anything appeared or changed below the root: a daemon waiting long while idle comes round now. */
  onActivity?: () => void;
  log: Logger;
  /** What settling is measured on. Default the system's clocks. */
  clock?: Clock;
}

const MANIFESTS = new Set<string>(MANIFEST_NAMES);
/** Deeper than any VMS export layout; a guard against symlink loops and runaway trees. */
const MAX_DEPTH = 12;
const FRESH_DIR_MS = 10_000;
/** Manifests taken from a walk of the root per tick. */
const WALK_PAGE = 500;
/** Manifests read at once in a tick. */
const CONCURRENT_READS = 32;

export class FolderWatcher {
  private watcher: FSWatcher | null = null;
  private readonly settle: SettleTracker;
  /** Manifests found (by an event, or a walk) that changed and have not settled or been read yet. */
  private readonly candidates = new Set<string>();
  private rootMissingLogged = false;
  /** Folders that appeared lately, and until when they are scanned on every tick. */
  private readonly freshDirs = new Map<string, number>();
  /** The walk of the root under way, if any. */
  private walk: AsyncGenerator<string> | null = null;
  private readonly clock: Clock;

  constructor(private readonly options: WatcherOptions) {
    this.clock = options.clock ?? systemClock;
    this.settle = new SettleTracker(options.settleMs, !options.poll, () => this.clock.now());
  }

  /**
   * Watches first and walks the root once the watcher is ready, so a manifest written during
   * start-up is seen by one or the other. The walk at start-up also looks into finished folders.
   */
  async start(): Promise<void> {
    this.watcher = chokidar.watch(this.options.root, {
      ignoreInitial: true,
      followSymlinks: false,
      depth: MAX_DEPTH,
      usePolling: this.options.poll,
      interval: this.options.pollIntervalMs,
      binaryInterval: this.options.pollIntervalMs,
      ignored: (path: string, stats) =>
        path !== this.options.root &&
        (isIgnoredName(basename(path)) || (stats?.isDirectory() === true && this.options.ledger.isFinishedFolder(path))),
    });
    // The planner stats the files it waits for on every tick; events on other files only tell
    // that an export may have gone on after its upload.
    const onFile = (path: string): void => {
      if (MANIFESTS.has(basename(path))) this.candidates.add(path);
      else this.options.onFileEvent?.(path);
      this.options.onActivity?.();
    };
    this.watcher.on('add', onFile).on('change', onFile);
    // An exporter that creates a folder and renames a manifest into it at once can beat the
    // watch on the new folder: such folders are scanned on every tick for a while.
    this.watcher.on('addDir', (dir: string) => {
      this.freshDirs.set(dir, this.clock.monotonic() + FRESH_DIR_MS);
      this.options.onActivity?.();
    });
    this.watcher.on('error', (err) => this.options.log.warn({ event: 'watch.error', err }, `watcher: ${describeError(err)}`));
    await new Promise<void>((resolve) => this.watcher!.once('ready', () => resolve()));
    this.rescan(true);
  }

  async stop(): Promise<void> {
    await this.walk?.return(undefined);
    this.walk = null;
    await this.watcher?.close();
    this.watcher = null;
  }

  /** Starts a walk of the whole tree (taken a page per tick); `finished` looks into finished folders too. */
  rescan(finished = false): void {
    if (this.walk) return;
    this.walk = findManifests(this.options.root, 0, finished ? () => false : (dir) => this.options.ledger.isFinishedFolder(dir));
  }

  /** Something is under way: a walk, a manifest waiting to settle, a new folder to look into. */
  get busy(): boolean {
    return this.walk !== null || this.candidates.size > 0 || this.freshDirs.size > 0;
  }

  /** Folders of incidents every target finished with are no longer watched. */
  unwatch(folders: readonly string[]): void {
    if (!this.watcher || folders.length === 0) return;
    // chokidar keeps a watch on each file it saw as well as on its folder: those go too.
    const gone = new Set(folders);
    const within = (dir: string): boolean => {
      for (let d = dir; d !== dirname(d); d = dirname(d)) if (gone.has(d)) return true;
      return false;
    };
    const paths: string[] = [];
    for (const [dir, names] of Object.entries(this.watcher.getWatched())) {
      if (within(dir)) paths.push(dir, ...names.map((name) => join(dir, name)));
    }
    this.watcher.unwatch(paths);
  }

  /** Why watch.root cannot be watched (logged once per episode), or null when it is a folder. */
  async checkRoot(): Promise<string | null> {
    let problem: string | null = null;
    try {
      if (!(await stat(this.options.root)).isDirectory()) problem = `watch root ${this.options.root} is not a folder`;
    } catch (err) {
      problem = `watch root ${this.options.root} is not readable: ${describeError(err)}`;
    }
    if (problem && !this.rootMissingLogged) this.options.log.error({ event: 'watch.root.missing', root: this.options.root }, problem);
    this.rootMissingLogged = problem !== null;
    return problem;
  }

  /**
   * Reads every candidate manifest that has settled, and a page of the walk under way; true while
   * the walk has more to give. Manifests are read CONCURRENT_READS at a time, so that those
   * applied together share one ledger commit.
   */
  async tick(): Promise<boolean> {
    for (const [dir, until] of this.freshDirs) {
      if (until < this.clock.monotonic()) this.freshDirs.delete(dir);
      for await (const path of findManifests(dir, 0, () => false)) this.candidates.add(path);
    }
    await this.takeFromWalk();
    const paths = [...this.candidates];
    for (let i = 0; i < paths.length; i += CONCURRENT_READS) {
      await Promise.all(paths.slice(i, i + CONCURRENT_READS).map((path) => this.readCandidate(path)));
    }
    return this.walk !== null;
  }

  private async readCandidate(path: string): Promise<void> {
    try {
      await this.checkManifest(path);
    } catch (err) {
      this.candidates.delete(path);
      this.options.log.warn({ event: 'manifest.unreadable', path, err }, `cannot read manifest ${path}: ${describeError(err)}`);
    }
  }

  private async takeFromWalk(): Promise<void> {
    if (!this.walk) return;
    for (let n = 0; n < WALK_PAGE; n++) {
      const next = await this.walk.next();
      if (next.done) {
        this.walk = null;
        return;
      }
      this.candidates.add(next.value);
    }
  }

  /** Reads the manifest once it settled, unless this version was read already. */
  private async checkManifest(path: string): Promise<void> {
    const st = await lstat(path);
    const stamp = `${st.size}:${st.mtimeMs}`;
    if (this.options.ledger.manifestStamp(path) === stamp) {
      this.candidates.delete(path);
      return;
    }
    if (this.settle.observe(path, { size: st.size, mtimeMs: st.mtimeMs }, this.clock.monotonic()) !== 'settled') return;
    this.candidates.delete(path);
    this.settle.forget(path);
    const text = await readFile(path, 'utf8');
    const sha = createHash('sha256').update(text).digest('hex');
    const folder = dirname(path);
    const parsed = parseManifest(text, basename(path));
    if (!parsed.ok) {
      if (await this.options.ledger.recordManifestError(path, sha, stamp, parsed.problems)) {
        for (const problem of parsed.problems) this.options.log.error({ event: 'manifest.invalid', path, problem }, `${path}: ${problem}`);
      }
      return;
    }
    const applied = await this.options.ledger.applyManifest(path, folder, sha, stamp, parsed.manifest, this.options.route(folder));
    if (applied) {
      this.options.log.info(
        { event: 'manifest.applied', path, incidentId: parsed.manifest.incident.id, videos: parsed.manifest.videos.length },
        'manifest read',
      );
    }
  }
}

/**
 * The manifests below `dir`, found one directory at a time (never the whole tree in memory);
 * folders `skip` says are finished are not entered.
 */
async function* findManifests(dir: string, depth: number, skip: (dir: string) => boolean): AsyncGenerator<string> {
  if (depth > MAX_DEPTH || (depth > 0 && skip(dir))) return;
  let entries;
  try {
    entries = await opendir(dir);
  } catch {
    return;
  }
  for await (const e of entries) {
    if (e.isFile() && MANIFESTS.has(e.name)) yield join(dir, e.name);
    // Symlinked folders are not followed: a link could lead out of the export root or in a loop.
    else if (e.isDirectory() && !isIgnoredName(e.name)) yield* findManifests(join(dir, e.name), depth + 1, skip);
  }
}
