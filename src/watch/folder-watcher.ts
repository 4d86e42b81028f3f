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
 *
 * chokidar takes one inotify watch per folder and per file. When the OS refuses more
 * (ENOSPC: `fs.inotify.max_user_watches` reached), chokidar reports an error naming the path and
 * goes on without it: the folders it could not watch are then rescanned every
 * FALLBACK_RESCAN_MS, and watched again once finished folders let go of watches. The daemon
 * shows the fallback in the log, `status` and `/healthz`.
 *
 * watch.ignore_older: an incident whose manifest is older than that when the ledger first meets
 * it is recorded as skipped and its folder is not watched; `retry` takes one in, and the watcher
 * then reads its manifest like any other.
 */
import { createHash } from 'node:crypto';
import type { Stats } from 'node:fs';
import { lstat, opendir, readdir, readFile, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative } from 'node:path';
import chokidar, { type ChokidarOptions, type FSWatcher } from 'chokidar';
import { systemClock, type Clock } from '../clock.js';
import { formatDuration } from '../config/units.js';
import type { WatchLedger } from '../ledger/watch-ledger.js';
import type { Logger } from '../log/logger.js';
import { describeError } from '../log/logger.js';
import { MANIFEST_NAMES, parseManifest } from './manifest.js';
import { isIgnoredName } from './paths.js';
import { SettleTracker } from './settle.js';
import { watchFallbackMessage, type WatchFallback } from './watch-fallback.js';

/** What the watcher asks chokidar for; `ignored` is its own test (temp names, finished folders). */
export type WatchOptions = Omit<ChokidarOptions, 'ignored'> & { ignored: (path: string, stats?: Stats) => boolean };
/** Starts watching the root: chokidar.watch, unless a test injects one that refuses watches as a full inotify table does. */
export type WatchFactory = (root: string, options: WatchOptions) => FSWatcher;

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
  /** watch.ignore_older in seconds: an incident whose manifest is older than that when first seen is skipped. Undefined: off. */
  ignoreOlderSeconds?: number;
  /** How the root is watched. Default chokidar.watch. */
  watchFactory?: WatchFactory;
  /** How often folders the OS refused to watch are rescanned. Default FALLBACK_RESCAN_MS. */
  fallbackRescanMs?: number;
  /** Folders watched at once at most. Default WATCH_BUDGET. */
  watchBudget?: number;
  /** Folders the OS refused to watch, each time their count changes; null once every folder is watched again. */
  onFallback?: (fallback: WatchFallback | null) => void;
}

const MANIFESTS = new Set<string>(MANIFEST_NAMES);
/** Deeper than any VMS export layout; a guard against symlink loops and runaway trees. */
const MAX_DEPTH = 12;
const FRESH_DIR_MS = 10_000;
/** Folder mtimes may be this coarse (FAT, SMB shares): a folder changed this long before the watch began counts as changed during it. */
const MTIME_SLACK_MS = 2_000;
/** Manifests taken from a walk of the root per tick. */
const WALK_PAGE = 500;
/** Manifests read at once in a tick. */
const CONCURRENT_READS = 32;
/**
 * How often folders the OS refused to watch are rescanned: a new export there waits at most this
 * long (beside settle_seconds) to be noticed, while a rescan costs one directory read per folder
 * (manifests are only stat'ed; one is read again only when its size or mtime changed).
 */
export const FALLBACK_RESCAN_MS = 10_000;
/**
 * Folders below the root watched at once at most. A watched folder costs the daemon some 30 KB
 * (chokidar watches each file in it too), so a backlog of thousands of incidents, or years of
 * exports present at the first start, would make memory grow with it. A folder beyond the budget
 * whose manifest was not read yet is rescanned every FALLBACK_RESCAN_MS instead, like those the OS
 * refuses to watch, and watched once finished incidents free the budget; one whose manifest was
 * read is left to the regular rescan (watch.rescan_interval), as the files of its videos are to
 * the planner's and ExportChanges' own checks.
 */
export const WATCH_BUDGET = 500;
/** Folders let go of at once at most (see unwatch). */
export const UNWATCH_PAGE = 500;
/**
 * Refused paths are asked for again as many as finished folders let go of watches, and
 * REWATCH_SAMPLE of them at every REWATCH_EVERY-th rescan (the limit may have been raised).
 */
const REWATCH_EVERY = 30;
const REWATCH_SAMPLE = 500;

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
  /** Paths the OS refused to watch (chokidar's ENOSPC errors), or beyond the budget, not looked at yet. */
  private readonly refusedPaths: Refusal[] = [];
  /** Paths not watched, each with the folder rescanned in its place. */
  private readonly unwatched = new Map<string, Unwatched>();
  /** Folders chokidar was let watch (counted against the budget). */
  private readonly watchedFolders = new Set<string>();
  private readonly watchBudget: number;
  /** The budget ran out (logged), and has not been below half of it since. */
  private budgetFull = false;
  /** Refused paths asked to be watched again at the last rescan: those not refused again by the next one are watched. */
  private retrying = new Set<string>();
  /** Watches finished folders let go of since the refused paths were last asked for again. */
  private releasedWatches = 0;
  private fallbackSince: number | null = null;
  /** The rescan of the refused folders under way, if any. */
  private fallbackWalk: AsyncGenerator<string> | null = null;
  private nextFallbackScan = 0;
  private fallbackScans = 0;
  private readonly fallbackRescanMs: number;
  /** The start-up walk has not been read through yet (then the skipped incidents are counted in the log). */
  private startupPending = true;
  private skippedNow = 0;
  /** Folders of incidents skipped in this tick: let go of together at its end. */
  private skippedFolders: string[] = [];
  /** Incidents `retry` took in whose manifest was queued for reading. */
  private readonly takenIn = new Set<string>();

  constructor(private readonly options: WatcherOptions) {
    this.clock = options.clock ?? systemClock;
    this.settle = new SettleTracker(options.settleMs, !options.poll, () => this.clock.now());
    this.fallbackRescanMs = options.fallbackRescanMs ?? FALLBACK_RESCAN_MS;
    this.watchBudget = options.watchBudget ?? WATCH_BUDGET;
  }

  /**
   * Watches first and walks the root once the watcher is ready, so a manifest written during
   * start-up is seen by one or the other. The walk at start-up also looks into finished folders.
   */
  async start(): Promise<void> {
    const watchBegan = this.clock.now() - MTIME_SLACK_MS;
    const watch = this.options.watchFactory ?? ((root: string, options: WatchOptions) => chokidar.watch(root, options));
    this.watcher = watch(this.options.root, {
      ignoreInitial: true,
      followSymlinks: false,
      depth: MAX_DEPTH,
      usePolling: this.options.poll,
      interval: this.options.pollIntervalMs,
      binaryInterval: this.options.pollIntervalMs,
      ignored: (path: string, stats) =>
        path !== this.options.root &&
        (isIgnoredName(basename(path)) ||
          (stats?.isDirectory() === true && (this.options.ledger.isFinishedFolder(path) || !this.withinBudget(path)))),
    });
    this.watcher.on('unlinkDir', (dir: string) => this.watchedFolders.delete(dir));
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
    this.watcher.on('error', (err) => {
      const { code, path } = err as NodeJS.ErrnoException;
      // The OS refused one more watch; chokidar goes on without it. Taken in the next tick.
      if (code === 'ENOSPC') {
        this.refusedPaths.push({ path: path ?? this.options.root, overBudget: false });
        this.options.onActivity?.();
        return;
      }
      this.options.log.warn({ event: 'watch.error', err }, `watcher: ${describeError(err)}`);
    });
    await new Promise<void>((resolve) => this.watcher!.once('ready', () => resolve()));
    // Folders beyond the budget are rescanned already; those chokidar watches were seen by it.
    await this.takeRefused();
    const watched = new Set(Object.keys(this.watcher.getWatched()));
    this.walk = findManifests(
      this.options.root,
      0,
      () => false,
      (dir) => this.catchUp(dir, watchBegan, watched),
    );
  }

  /**
   * chokidar reads a folder before it watches it: a folder made in between (an export that began
   * while the daemon started) is never watched, and what is written into it later never seen.
   * The start-up walk has chokidar watch each such folder that changed since the watch began, and
   * scans it on every tick for a while, for what lands there before that watch is in place.
   */
  private async catchUp(dir: string, watchBegan: number, watched: ReadonlySet<string>): Promise<void> {
    if (dir === this.options.root || !this.watcher || watched.has(dir) || this.unwatched.has(dir)) return;
    const changed = await stat(dir).then(
      (s) => s.mtimeMs >= watchBegan,
      () => false,
    );
    if (!changed || this.options.ledger.isFinishedFolder(dir)) return;
    this.freshDirs.set(dir, this.clock.monotonic() + FRESH_DIR_MS);
    this.watcher.add(dir);
  }

  async stop(): Promise<void> {
    await this.walk?.return(undefined);
    this.walk = null;
    await this.fallbackWalk?.return(undefined);
    this.fallbackWalk = null;
    // A watcher started in its place (after a ledger fault) finds out afresh what the OS refuses.
    this.unwatched.clear();
    this.fallbackChanged();
    await this.watcher?.close();
    this.watcher = null;
  }

  /** Whether chokidar may watch the folder; one beyond the budget is rescanned instead (taken in the next tick). */
  private withinBudget(dir: string): boolean {
    if (this.watchedFolders.has(dir)) return true;
    if (this.watchedFolders.size < this.watchBudget) {
      this.watchedFolders.add(dir);
      return true;
    }
    this.budgetExceeded();
    // chokidar asks again at each event in the parent folder: only a folder asked for again by a rescan is refused again.
    if ((!this.unwatched.has(dir) || this.retrying.has(dir)) && !this.options.ledger.isKnownFolder(dir)) {
      this.refusedPaths.push({ path: dir, overBudget: true });
      this.options.onActivity?.();
    }
    return false;
  }

  /** Logged when the budget runs out, once until it was below half of it again. */
  private budgetExceeded(): void {
    if (this.budgetFull) return;
    this.budgetFull = true;
    const rescanSeconds = this.fallbackRescanMs / 1000;
    this.options.log.info(
      { event: 'watch.budget', budget: this.watchBudget, rescanSeconds },
      `more than ${this.watchBudget} unfinished folders below watch.root: the others are not watched; a new export there ` +
        `is found by a rescan every ${rescanSeconds} s, a change to one already read by the rescan every watch.rescan_interval`,
    );
  }

  /** Starts a walk of the tree but for finished folders (taken a page per tick). */
  rescan(): void {
    if (this.walk) return;
    this.walk = findManifests(this.options.root, 0, (dir) => this.options.ledger.isFinishedFolder(dir));
  }

  /** Something is under way: a walk, a manifest waiting to settle, a new folder to look into. */
  get busy(): boolean {
    return (
      this.walk !== null ||
      this.fallbackWalk !== null ||
      this.candidates.size > 0 ||
      this.freshDirs.size > 0 ||
      this.refusedPaths.length > 0
    );
  }

  /**
   * Folders of incidents every target finished with (or skipped) are no longer watched. Give a
   * page at a time (UNWATCH_PAGE folders) and let the event loop turn in between: each watch let
   * go of queues an event in the kernel, and a burst beyond its queue
   * (`fs.inotify.max_queued_events`, 16,384) left Node delivering no event at all afterwards
   * (seen with 6,000 folders of three watches each let go of at once; 5,000 were fine).
   */
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
      if (!within(dir)) continue;
      paths.push(dir, ...names.map((name) => join(dir, name)));
      this.watchedFolders.delete(dir);
    }
    // Said again only once the budget ran well below (not each time a finished folder makes room for one).
    if (this.watchedFolders.size < this.watchBudget / 2) this.budgetFull = false;
    this.watcher.unwatch(paths);
    forgetUnwatched(this.watcher, paths);
    this.releasedWatches += paths.length;
    const fallbackBefore = this.unwatched.size;
    for (const [path, { folder }] of this.unwatched) if (within(folder)) this.unwatched.delete(path);
    if (this.unwatched.size !== fallbackBefore) this.fallbackChanged();
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
    await this.takeRefused();
    await this.takeTakenIn();
    for (const [dir, until] of this.freshDirs) {
      if (until < this.clock.monotonic()) this.freshDirs.delete(dir);
      for await (const path of findManifests(dir, 0, () => false)) this.candidates.add(path);
    }
    this.rescanRefused();
    this.walk = await this.takePage(this.walk);
    this.fallbackWalk = await this.takePage(this.fallbackWalk);
    const paths = [...this.candidates];
    for (let i = 0; i < paths.length; i += CONCURRENT_READS) {
      await Promise.all(paths.slice(i, i + CONCURRENT_READS).map((path) => this.readCandidate(path)));
    }
    const skipped = this.skippedFolders.splice(0);
    for (let i = 0; i < skipped.length; i += UNWATCH_PAGE) {
      this.unwatch(skipped.slice(i, i + UNWATCH_PAGE));
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    this.reportStartup();
    return this.walk !== null || this.fallbackWalk !== null;
  }

  private async readCandidate(path: string): Promise<void> {
    try {
      await this.checkManifest(path);
    } catch (err) {
      this.candidates.delete(path);
      this.options.log.warn({ event: 'manifest.unreadable', path, err }, `cannot read manifest ${path}: ${describeError(err)}`);
    }
  }

  /** A page of a walk's manifests made candidates; the walk, or null once it is through. */
  private async takePage(walk: AsyncGenerator<string> | null): Promise<AsyncGenerator<string> | null> {
    if (!walk) return null;
    for (let n = 0; n < WALK_PAGE; n++) {
      const next = await walk.next();
      if (next.done) return null;
      this.candidates.add(next.value);
    }
    return walk;
  }

  /** The folders of the paths the OS refused to watch since the last tick join the fallback. */
  private async takeRefused(): Promise<void> {
    if (this.refusedPaths.length === 0) return;
    const before = this.unwatched.size;
    for (const { path, overBudget } of this.refusedPaths.splice(0)) {
      this.retrying.delete(path);
      // A folder beyond the budget was stat'ed by chokidar and checked unfinished: rescanned as it is.
      if (overBudget) {
        this.unwatched.set(path, { folder: path, overBudget });
        continue;
      }
      this.watchedFolders.delete(path);
      const folder = await this.folderInPlaceOf(path);
      if (!this.options.ledger.isFinishedFolder(folder)) this.unwatched.set(path, { folder, overBudget });
    }
    if (this.unwatched.size !== before) {
      // Whatever appeared there before the refusal was not seen: rescanned at once.
      this.nextFallbackScan = 0;
      this.fallbackChanged();
    }
  }

  /** The folder rescanned in place of a path the OS refused: itself, or the folder of a file; the root for a path outside it. */
  private async folderInPlaceOf(path: string): Promise<string> {
    const folder = await lstat(path).then(
      (st) => (st.isDirectory() ? path : dirname(path)),
      () => dirname(path),
    );
    const rel = relative(this.options.root, folder);
    return rel.startsWith('..') || isAbsolute(rel) ? this.options.root : folder;
  }

  /**
   * Every fallbackRescanMs, walks the folders the OS refused to watch. Once finished folders let
   * go of watches, as many refused paths are asked for again (and a few every REWATCH_EVERY
   * rescans): those not refused again by the next rescan are watched, and leave the fallback.
   */
  private rescanRefused(): void {
    if (this.unwatched.size === 0 || this.fallbackWalk || this.clock.monotonic() < this.nextFallbackScan) return;
    this.nextFallbackScan = this.clock.monotonic() + this.fallbackRescanMs;
    if (this.retrying.size > 0) {
      for (const path of this.retrying) this.unwatched.delete(path);
      this.retrying = new Set();
      this.fallbackChanged();
      if (this.unwatched.size === 0) return;
    }
    this.forgetReadBeyondBudget();
    const folders = outermost([...new Set([...this.unwatched.values()].map((u) => u.folder))]);
    const rewatch = this.releasedWatches > 0 ? this.releasedWatches : ++this.fallbackScans % REWATCH_EVERY === 0 ? REWATCH_SAMPLE : 0;
    this.releasedWatches = 0;
    if (rewatch > 0 && this.watcher) {
      this.retrying = new Set([...this.unwatched.keys()].slice(0, rewatch));
      this.watcher.add([...this.retrying]);
    }
    this.fallbackWalk = findManifestsIn(folders, (dir) => this.options.ledger.isFinishedFolder(dir));
  }

  /** Folders beyond the budget whose manifest was read since are left to the regular rescan. */
  private forgetReadBeyondBudget(): void {
    for (const [path, { folder, overBudget }] of this.unwatched) {
      if (overBudget && !this.retrying.has(path) && this.options.ledger.isKnownFolder(folder)) this.unwatched.delete(path);
    }
  }

  /**
   * Logs the fallback once when it begins and when it ends, and tells the daemon every change of
   * the folders the OS refused (those beyond the budget are no problem).
   */
  private fallbackChanged(): void {
    const refused = new Set<string>();
    for (const { folder, overBudget } of this.unwatched.values()) if (!overBudget) refused.add(folder);
    const folders = refused.size;
    const rescanSeconds = this.fallbackRescanMs / 1000;
    if (folders === 0) {
      if (this.fallbackSince === null) return;
      this.fallbackSince = null;
      this.options.log.info({ event: 'watch.fallback.ended' }, 'every folder below watch.root is watched again');
      this.options.onFallback?.(null);
      return;
    }
    if (this.fallbackSince === null) {
      this.fallbackSince = this.clock.now();
      this.options.log.warn({ event: 'watch.fallback', folders, rescanSeconds }, watchFallbackMessage(folders, rescanSeconds));
    }
    this.options.onFallback?.({ folders, rescanSeconds, since: this.fallbackSince });
  }

  /** Manifests of skipped incidents `retry` took in are read now, and their folders watched again. */
  private async takeTakenIn(): Promise<void> {
    for (const t of this.options.ledger.takenIn()) {
      if (this.takenIn.has(t.id)) continue;
      this.takenIn.add(t.id);
      this.candidates.add(t.manifestPath);
      // Its folder's files were let go of one by one when it was skipped: each is asked for again.
      const names = await readdir(t.folder).catch(() => []);
      this.watcher?.add([t.folder, ...names.map((name) => join(t.folder, name))]);
      this.options.log.info(
        { event: 'watch.taken_in', incidentId: t.id, path: t.manifestPath },
        `incident ${t.id} taken in by retry: reading its manifest`,
      );
    }
  }

  /** Once the start-up walk is read through, the incidents watch.ignore_older skipped are counted in the log. */
  private reportStartup(): void {
    const seconds = this.options.ignoreOlderSeconds;
    if (!this.startupPending || this.walk !== null || this.candidates.size > 0) return;
    this.startupPending = false;
    if (seconds === undefined) return;
    const skipped = this.options.ledger.skippedCount();
    const setting = formatDuration(seconds);
    this.options.log.info(
      { event: 'watch.ignored_older', skipped, skippedNow: this.skippedNow, ignoreOlder: setting },
      `watch.ignore_older is ${setting}: ${skipped} incident folder(s) skipped, not uploaded, their manifest older than that when first seen ` +
        `(${this.skippedNow} of them found at this start); vms-uplink retry INCIDENT-ID takes one in`,
    );
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
    const incidentId = parsed.manifest.incident.id;
    const seconds = this.options.ignoreOlderSeconds;
    const olderThan = seconds === undefined ? null : this.clock.now() - seconds * 1000;
    const skip = await this.options.ledger.skipIfOld(path, folder, stamp, incidentId, st.mtimeMs, olderThan);
    if (skip !== 'take') {
      this.skippedFolders.push(folder);
      if (skip === 'skipped') {
        this.skippedNow++;
        this.options.log.debug(
          { event: 'watch.skipped', path, incidentId, manifestMtime: new Date(st.mtimeMs).toISOString() },
          `incident ${incidentId} skipped: its manifest is older than watch.ignore_older`,
        );
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
 * chokidar's unwatch() also adds each path it lets go of to a list of ignored paths, which it
 * matches one by one against every path it looks at afterwards (and each new entry against the
 * whole list): with 20,000 finished folders let go of (80,000 entries), one check took 165 ms and
 * a new export's events were minutes late. The watcher's own `ignored` test keeps finished
 * folders out already (a ledger lookup), so the entries unwatch() just added are taken out again.
 * `_ignoredPaths` and `_userIgnored` are chokidar's own fields (declared in its types); should a
 * later chokidar not have them, unwatching still works, only slower.
 */
function forgetUnwatched(watcher: FSWatcher, paths: readonly string[]): void {
  if (!(watcher._ignoredPaths instanceof Set) || paths.length === 0) return;
  const gone = new Set(paths);
  for (const matcher of watcher._ignoredPaths) {
    const path = typeof matcher === 'string' ? matcher : typeof matcher === 'object' && 'path' in matcher ? matcher.path : null;
    if (path !== null && gone.has(path)) watcher._ignoredPaths.delete(matcher);
  }
  watcher._userIgnored = undefined;
}

/** A path not watched: the OS refused it (ENOSPC), or it is beyond the watch budget. */
interface Refusal {
  path: string;
  overBudget: boolean;
}

/** A path not watched, and the folder rescanned in its place. */
interface Unwatched {
  folder: string;
  overBudget: boolean;
}

/** The manifests below each of `folders` (none inside another), finished folders left out. */
async function* findManifestsIn(folders: readonly string[], skip: (dir: string) => boolean): AsyncGenerator<string> {
  for (const folder of folders) yield* findManifests(folder, 0, skip);
}

/** The folders of `folders` that are not inside another of them. */
function outermost(folders: readonly string[]): string[] {
  const all = new Set(folders);
  const inside = (folder: string): boolean => {
    for (let d = dirname(folder); d !== dirname(d); d = dirname(d)) if (all.has(d)) return true;
    return false;
  };
  return [...all].filter((folder) => !inside(folder));
}

/**
 * The manifests below `dir`, found one directory at a time (never the whole tree in memory);
 * folders `skip` says are finished are not entered, each folder entered is shown to `visit`.
 */
async function* findManifests(
  dir: string,
  depth: number,
  skip: (dir: string) => boolean,
  visit?: (dir: string) => Promise<void>,
): AsyncGenerator<string> {
  if (depth > MAX_DEPTH || (depth > 0 && skip(dir))) return;
  await visit?.(dir);
  let entries;
  try {
    entries = await opendir(dir);
  } catch {
    return;
  }
  for await (const e of entries) {
    if (e.isFile() && MANIFESTS.has(e.name)) yield join(dir, e.name);
    // Symlinked folders are not followed: a link could lead out of the export root or in a loop.
    else if (e.isDirectory() && !isIgnoredName(e.name)) yield* findManifests(join(dir, e.name), depth + 1, skip, visit);
  }
}
