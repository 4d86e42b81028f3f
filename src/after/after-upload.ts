/**
 * After upload: what happens to an export once every target has it.
 *
 * - `after_upload: delete | move`: a video's files (video and thumbnail) are deleted, or moved
 *   under `after_upload_dir` with their path below `watch.root`, once every target the video is
 *   routed to has every one of them (uploads `done`) and every reporting target (ALO) has
 *   acknowledged the incident's latest report, and once they settled longer ago than
 *   `watch.missing_file_seconds`: an exporter that paused for longer than settle_seconds may still
 *   be writing to a file within that window (export-changes.ts), and deleting it then would lose
 *   the rest of the export. Right before acting, each file must still have the size and mtime it
 *   was uploaded with; one that changed is uploaded again instead. A video with an upload that is
 *   not done (failed, or still queued) is never touched. The incident folder (the manifest and
 *   what is left) is removed or moved once all its videos are handled, failed exports counting
 *   as handled.
 * - `retention.delete_uploaded_after` (with `keep`): a node-cron job, also run at start, deletes
 *   the files of videos confirmed that way longer ago than the age.
 *
 * The file operation comes first and the ledger records it after (one transaction); both are
 * idempotent, so a crash in between only repeats the operation (a missing source is fine).
 * Deleting a folder removes only its manifest and the empty folders: any file no upload
 * confirmed (a thumbnail that was not an image, a stray file) stays.
 */
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { copyFile, lstat, mkdir, open, readdir, readFile, readlink, rename, rmdir, symlink, unlink } from 'node:fs/promises';
import path from 'node:path';
import cron, { type ScheduledTask } from 'node-cron';
import { systemClock, type Clock } from '../clock.js';
import type { Config } from '../config/schema.js';
import type { AfterUploadLedger, FilesAction, FolderToHandle, UploadedCursor, UploadedVideo } from '../ledger/after-ledger.js';
import { LedgerFaultError } from '../ledger/faults.js';
import type { Logger } from '../log/logger.js';
import { describeError } from '../log/logger.js';
import type { ExportChanges } from '../watch/export-changes.js';
import { MANIFEST_NAMES } from '../watch/manifest.js';

/** How often the delete/move stage looks at the ledger (the daemon ticks faster). */
const TICK_MS = 1000;
/** Videos and folders looked at per step. */
const PAGE = 100;

export interface AfterUploadOptions {
  config: Pick<Config, 'after_upload' | 'after_upload_dir' | 'retention' | 'watch'>;
  ledger: AfterUploadLedger;
  /** Every configured target (an incident without a route goes to all of them). */
  targets: readonly string[];
  /** Checks that files are as they were uploaded, and sends changed ones round again. */
  changes: Pick<ExportChanges, 'check'>;
  log: Logger;
  /** What the change window, the retention age and the pace of steps are measured on. Default the system's clock. */
  clock?: Clock;
}

/**
 * The cron pattern of the retention sweep: hourly, or more often when the age is short enough
 * that an hour would be a large share of it (node-cron takes a sixth field for seconds).
 */
export function retentionCron(ageSeconds: number): string {
  if (ageSeconds >= 3600) return '0 * * * *';
  if (ageSeconds >= 60) return '* * * * *';
  return '* * * * * *';
}

export class AfterUpload {
  private busy: Promise<void> | null = null;
  /** The ids of the video or incident folder the running step handles, for its error line. */
  private at: Record<string, string> = {};
  private lastTick = 0;
  private task: ScheduledTask | null = null;
  private stopped = false;
  /** Where the next page of uploaded videos starts (the step after a full page goes on from there). */
  private cursor: UploadedCursor | null = null;
  private readonly clock: Clock;

  constructor(private readonly options: AfterUploadOptions) {
    this.clock = options.clock ?? systemClock;
  }

  private get action(): Config['after_upload'] {
    return this.options.config.after_upload;
  }

  /** Schedules the retention sweep (when configured with keep) and runs it once now. */
  start(): void {
    const retention = this.options.config.retention;
    if (!retention || this.action !== 'keep') return;
    const pattern = retentionCron(retention.delete_uploaded_after);
    this.task = cron.schedule(pattern, () => this.exclusive(() => this.sweep()), { name: 'retention', noOverlap: true });
    void this.exclusive(() => this.sweep());
  }

  /** One step of delete/move; returns at once when another step is under way. */
  async tick(): Promise<void> {
    if (this.action === 'keep' || this.clock.now() - this.lastTick < TICK_MS) return;
    this.lastTick = this.clock.now();
    await this.exclusive(() => this.handleUploaded());
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.task) await this.task.destroy();
    this.task = null;
    await this.busy;
  }

  /** Runs `fn` unless a step is under way (steps never overlap: they touch the same files). */
  private exclusive(fn: () => Promise<void>): Promise<void> {
    if (this.busy || this.stopped) return Promise.resolve();
    this.at = {};
    const run = fn()
      .catch((err) => {
        if (err instanceof LedgerFaultError) return; // made again once the ledger commits
        // The ids of the video or folder the step was at, so the error can be followed.
        this.options.log.error({ event: 'after_upload.error', ...this.at, err }, `after upload: ${describeError(err)}`);
      })
      .finally(() => (this.busy = null));
    this.busy = run;
    return run;
  }

  private async handleUploaded(): Promise<void> {
    const action = this.action;
    if (action === 'keep') return;
    const page = this.options.ledger.uploaded(this.options.targets, this.changeWindowStart(), this.cursor, PAGE);
    this.cursor = page.next;
    for (const video of page.videos) {
      if (this.stopped) return;
      await this.handleVideo(video, action);
    }
    for (const folder of this.options.ledger.foldersToHandle(PAGE)) {
      if (this.stopped) return;
      await this.handleFolder(folder, action);
    }
  }

  /** The retention sweep: deletes files confirmed uploaded longer ago than the age. */
  async sweep(): Promise<void> {
    const retention = this.options.config.retention;
    if (!retention || this.action !== 'keep') return;
    const before = this.clock.now() - retention.delete_uploaded_after * 1000;
    let deleted = 0;
    let cursor: UploadedCursor | null = null;
    do {
      const page = this.options.ledger.uploaded(this.options.targets, this.changeWindowStart(), cursor, PAGE);
      cursor = page.next;
      for (const video of page.videos) {
        if (this.stopped) return;
        if (video.confirmedAt <= before && (await this.handleVideo(video, 'retention'))) deleted++;
      }
    } while (cursor);
    for (const folder of this.options.ledger.foldersToHandle(PAGE)) {
      if (this.stopped) return;
      // With keep, a folder goes only once retention took every video of it with a file.
      if (folder.handled.length === 0 || folder.handled.some((a) => a !== 'retention')) continue;
      await this.handleFolder(folder, 'retention');
    }
    this.options.log.debug({ event: 'retention.swept', deleted }, `retention sweep: ${deleted} video(s) deleted`);
  }

  /** Files that settled after this may still be written by a stalled exporter (watch.missing_file_seconds). */
  private changeWindowStart(): number {
    return this.clock.now() - this.options.config.watch.missing_file_seconds * 1000;
  }

  /** Deletes or moves the video's files; false (nothing done) when one changed since it was uploaded. */
  private async handleVideo(video: UploadedVideo, action: FilesAction): Promise<boolean> {
    const ids = { incidentId: video.incidentId, videoId: video.videoId };
    this.at = ids;
    if (await this.options.changes.check(video.files)) return false;
    for (const file of video.files) {
      if (action === 'move') {
        const dest = this.movedPath(file.path);
        const outcome = await moveFile(file.path, dest);
        if (outcome === 'missing')
          this.options.log.warn({ event: 'after_upload.missing', ...ids, path: file.path }, `${file.path} is gone: nothing to move`);
      } else {
        await removeFile(file.path);
      }
    }
    this.options.ledger.filesHandled(video.incidentId, video.videoId, action);
    this.options.log.info(
      {
        event: action === 'retention' ? 'retention.deleted' : `after_upload.${action === 'move' ? 'moved' : 'deleted'}`,
        ...ids,
        files: video.files.map((f) => f.path),
      },
      `${action === 'move' ? 'moved' : 'deleted'} the uploaded files of video ${video.videoId}`,
    );
    return true;
  }

  private async handleFolder(folder: FolderToHandle, action: FilesAction): Promise<void> {
    const ids = { incidentId: folder.incidentId, folder: folder.folder };
    this.at = ids;
    // A manifest rewritten since the ledger read it is the VMS adding to the incident: leave it.
    const text = await readFile(folder.manifestPath, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return null;
      throw err;
    });
    if (text !== null && createHash('sha256').update(text).digest('hex') !== folder.manifestSha256) return;
    if (action === 'move') {
      await moveTree(folder.folder, this.movedPath(folder.folder));
    } else if (text !== null) {
      await removeFile(folder.manifestPath);
    }
    const left = await removeEmptyDirs(folder.folder);
    this.options.ledger.folderHandled(folder.incidentId, action);
    if (left > 0) {
      this.options.log.warn(
        { event: 'after_upload.folder.kept', ...ids, left },
        `${folder.folder} keeps ${left} file(s) no upload confirmed; left in place`,
      );
    } else {
      this.options.log.info(
        { event: action === 'move' ? 'after_upload.folder.moved' : 'after_upload.folder.removed', ...ids },
        `incident folder ${action === 'move' ? 'moved' : 'removed'}`,
      );
    }
  }

  /** Where `from` (below watch.root) goes under after_upload_dir. */
  private movedPath(from: string): string {
    const dir = this.options.config.after_upload_dir;
    if (dir === undefined) throw new Error('not moving');
    const rel = path.relative(this.options.config.watch.root, from);
    if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) throw new Error(`${from} is not below watch.root`);
    return path.join(dir, rel);
  }
}

const isMissing = (err: unknown): boolean => (err as NodeJS.ErrnoException).code === 'ENOENT';

async function removeFile(file: string): Promise<void> {
  try {
    await unlink(file);
  } catch (err) {
    if (!isMissing(err)) throw err;
  }
}

async function fsyncPath(p: string): Promise<void> {
  const fh = await open(p, constants.O_RDONLY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Moves one file (or symlink) to `dest`, replacing what is there: a rename, or across
 * filesystems a copy to a temp name beside `dest`, fsync, rename, then the source is unlinked.
 * 'missing': the source is gone (moved before a crash, or removed by someone else).
 */
export async function moveFile(src: string, dest: string): Promise<'moved' | 'missing'> {
  let st;
  try {
    st = await lstat(src);
  } catch (err) {
    if (isMissing(err)) return 'missing';
    throw err;
  }
  const dir = path.dirname(dest);
  await mkdir(dir, { recursive: true });
  try {
    await rename(src, dest);
    await fsyncPath(dir);
    return 'moved';
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
  }
  const tmp = path.join(dir, `.${path.basename(dest)}.vms-uplink-move`);
  await removeFile(tmp);
  if (st.isSymbolicLink()) {
    await symlink(await readlink(src), tmp);
  } else {
    await copyFile(src, tmp);
    await fsyncPath(tmp);
  }
  await rename(tmp, dest);
  await fsyncPath(dir);
  await unlink(src);
  await fsyncPath(path.dirname(src)).catch(() => undefined);
  return 'moved';
}

/** Moves everything below `src` into `dest` (merging with what is there). */
async function moveTree(src: string, dest: string): Promise<void> {
  let entries;
  try {
    entries = await readdir(src, { withFileTypes: true });
  } catch (err) {
    if (isMissing(err)) return;
    throw err;
  }
  await mkdir(dest, { recursive: true });
  for (const e of entries) {
    const from = path.join(src, e.name);
    const to = path.join(dest, e.name);
    if (!e.isDirectory()) await moveFile(from, to);
    // A folder with its own manifest is another incident: it is handled on its own.
    else if (!(await hasManifest(from))) await moveTree(from, to);
  }
}

async function hasManifest(dir: string): Promise<boolean> {
  const names = await readdir(dir).catch(() => [] as string[]);
  return names.some((n) => (MANIFEST_NAMES as readonly string[]).includes(n));
}

/** Removes `dir` and the folders below it that hold no file; returns how many files are left. */
async function removeEmptyDirs(dir: string): Promise<number> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    if (isMissing(err)) return 0;
    throw err;
  }
  let left = 0;
  for (const e of entries) {
    if (e.isDirectory()) left += await removeEmptyDirs(path.join(dir, e.name));
    else left++;
  }
  if (left === 0) {
    try {
      await rmdir(dir);
    } catch (err) {
      if (!isMissing(err)) throw err;
    }
  }
  return left;
}
