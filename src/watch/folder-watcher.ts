/**
 * Finds incident folders under `watch.root` and feeds their manifests to the ledger.
 *
 * chokidar reports changes as they happen (polling with `watch.poll` on SMB/NFS mounts, where
 * change events do not arrive); a full rescan at start-up and every `watch.rescan_interval`
 * makes sure a missed event never loses an export. A manifest is read once it has settled,
 * and only again when its content changes.
 */
import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import chokidar, { type FSWatcher } from 'chokidar';
import type { Logger } from '../log/logger.js';
import { describeError } from '../log/logger.js';
import type { UploadLedger } from '../ledger/upload-ledger.js';
import { MANIFEST_NAMES, parseManifest } from './manifest.js';
import { isIgnoredName } from './paths.js';
import { SettleTracker } from './settle.js';

export interface WatcherOptions {
  root: string;
  poll: boolean;
  pollIntervalMs: number;
  settleMs: number;
  ledger: UploadLedger;
  /** The targets an incident in this folder goes to. */
  route: (folder: string) => string[];
  /** A file that is not a manifest was added or changed (an export going on after its upload?). */
  onFileEvent?: (path: string) => void;
  log: Logger;
}

const MANIFESTS = new Set<string>(MANIFEST_NAMES);
/** Deeper than any VMS export layout; a guard against symlink loops and runaway trees. */
const MAX_DEPTH = 12;
const FRESH_DIR_MS = 10_000;

export class FolderWatcher {
  private watcher: FSWatcher | null = null;
  private readonly settle: SettleTracker;
  /** Manifests found and not yet read in their current version. */
  private readonly candidates = new Set<string>();
  /** The content hash each manifest path was last applied or refused with. */
  private readonly seen = new Map<string, string>();
  private rootMissingLogged = false;
  /** Folders that appeared lately, and until when they are scanned on every tick. */
  private readonly freshDirs = new Map<string, number>();

  constructor(private readonly o: WatcherOptions) {
    this.settle = new SettleTracker(o.settleMs);
  }

  /**
   * Watches first and scans once the watcher is ready, so a manifest written during start-up is
   * seen by one or the other.
   */
  async start(): Promise<void> {
    this.watcher = chokidar.watch(this.o.root, {
      ignoreInitial: true,
      followSymlinks: false,
      depth: MAX_DEPTH,
      usePolling: this.o.poll,
      interval: this.o.pollIntervalMs,
      binaryInterval: this.o.pollIntervalMs,
      ignored: (path: string) => path !== this.o.root && isIgnoredName(basename(path)),
    });
    // The planner stats the files it waits for on every tick; events on other files only tell
    // that an export may have gone on after its upload.
    const onFile = (path: string): void => {
      if (MANIFESTS.has(basename(path))) this.candidates.add(path);
      else this.o.onFileEvent?.(path);
    };
    this.watcher.on('add', onFile).on('change', onFile);
    // An exporter that creates a folder and renames a manifest into it at once can beat the
    // watch on the new folder: such folders are scanned on every tick for a while.
    this.watcher.on('addDir', (dir: string) => this.freshDirs.set(dir, performance.now() + FRESH_DIR_MS));
    this.watcher.on('error', (err) => this.o.log.warn({ event: 'watch.error', err }, `watcher: ${describeError(err)}`));
    await new Promise<void>((resolve) => this.watcher!.once('ready', () => resolve()));
    await this.rescan();
  }

  async stop(): Promise<void> {
    await this.watcher?.close();
    this.watcher = null;
  }

  /** Walks the whole tree; every manifest found is checked again. */
  async rescan(): Promise<void> {
    if ((await this.checkRoot()) !== null) return;
    for (const path of await findManifests(this.o.root, 0)) this.candidates.add(path);
  }

  /** Why watch.root cannot be watched (logged once per episode), or null when it is a folder. */
  async checkRoot(): Promise<string | null> {
    let problem: string | null = null;
    try {
      if (!(await stat(this.o.root)).isDirectory()) problem = `watch root ${this.o.root} is not a folder`;
    } catch (err) {
      problem = `watch root ${this.o.root} is not readable: ${describeError(err)}`;
    }
    if (problem && !this.rootMissingLogged) this.o.log.error({ event: 'watch.root.missing', root: this.o.root }, problem);
    this.rootMissingLogged = problem !== null;
    return problem;
  }

  /** Reads every candidate manifest that has settled; true when the ledger changed. */
  async tick(): Promise<boolean> {
    for (const [dir, until] of this.freshDirs) {
      if (until < performance.now()) this.freshDirs.delete(dir);
      for (const path of await findManifests(dir, 0)) if (!this.seen.has(path)) this.candidates.add(path);
    }
    let changed = false;
    for (const path of [...this.candidates]) {
      try {
        changed = (await this.checkManifest(path)) || changed;
      } catch (err) {
        this.candidates.delete(path);
        this.o.log.warn({ event: 'manifest.unreadable', path, err }, `cannot read manifest ${path}: ${describeError(err)}`);
      }
    }
    return changed;
  }

  private async checkManifest(path: string): Promise<boolean> {
    const st = await stat(path);
    if (this.settle.observe(path, { size: st.size, mtimeMs: st.mtimeMs }, performance.now()) !== 'settled') return false;
    this.candidates.delete(path);
    this.settle.forget(path);
    const text = await readFile(path, 'utf8');
    const sha = createHash('sha256').update(text).digest('hex');
    if (this.seen.get(path) === sha) return false;
    this.seen.set(path, sha);
    const folder = dirname(path);
    const parsed = parseManifest(text, basename(path));
    if (!parsed.ok) {
      if (this.o.ledger.recordManifestError(path, sha, parsed.problems)) {
        for (const problem of parsed.problems) {
          this.o.log.error({ event: 'manifest.invalid', path, problem }, `${path}: ${problem}`);
        }
      }
      return false;
    }
    const applied = this.o.ledger.applyManifest(path, folder, sha, parsed.manifest, this.o.route(folder));
    if (applied) {
      this.o.log.info({ event: 'manifest.applied', path, incidentId: parsed.manifest.incident.id, videos: parsed.manifest.videos.length }, 'manifest read');
    }
    return applied;
  }
}

async function findManifests(dir: string, depth: number): Promise<string[]> {
  if (depth > MAX_DEPTH) return [];
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  const found: string[] = [];
  for (const e of entries) {
    if (e.isFile() && MANIFESTS.has(e.name)) found.push(join(dir, e.name));
    // Symlinked folders are not followed: a link could lead out of the export root or in a loop.
    if (e.isDirectory() && !isIgnoredName(e.name)) found.push(...(await findManifests(join(dir, e.name), depth + 1)));
  }
  return found;
}
