/**
 * Files that change after their upload completed.
 *
 * A file counts as completely written once its size and mtime were still for settle_seconds, but
 * an exporter on a busy disk can pause for longer and then go on writing. Such a file was uploaded
 * short: once it changes, its video settles and is hashed again and every completed upload of it
 * is replaced by the final content (ALO: the same key again; elsewhere a new media item or record,
 * the superseded one named in the log). The files of completed uploads are watched for that while
 * they are within the change window (settled less than `windowMs` ago; `watch.missing_file_seconds`),
 * and after-upload handling checks them once more before it deletes or moves anything. Files of
 * videos still uploading are watched as well: a change just before an upload completes must not
 * slip between the engine's last check and the ledger's record of the completion.
 *
 * Cheap on a recorder: a file is stat'ed when the folder watcher reports an event for it, and all
 * of them once per `sweepMs` (a missed event), a page at a time; unchanged files are never read.
 */
import { basename } from 'node:path';
import type { PlanLedger, WatchedFile } from '../ledger/plan-ledger.js';
import { currentStamp, stampedSize } from '../plan/file-stamp.js';
import type { Logger } from '../log/logger.js';

export interface ExportChangeObserver {
  exportChangedAfterUpload(): void;
}

export interface ExportChangeOptions {
  ledger: Pick<PlanLedger, 'watchedFiles' | 'fileChanged'>;
  /** How long after a file settled a change still counts as the exporter going on (ms). */
  windowMs: number;
  /** How often every watched file is stat'ed, events or not (ms). */
  sweepMs: number;
  log: Logger;
  observer?: ExportChangeObserver;
}

const SWEEP_PAGE = 500;
/**
 * Files stat'ed side by side: 20,000 stats one at a time cost ~0.9 s of CPU here (an event-loop
 * turn each), in batches of 64 ~0.4 s; a batch stays small beside the 4 threads that also read
 * the files being uploaded.
 */
const STAT_BATCH = 64;

export class ExportChanges {
  /** Paths the folder watcher reported an event for since the last tick. */
  private readonly touched = new Set<string>();
  private lastSweep = performance.now();

  constructor(private readonly options: ExportChangeOptions) {}

  /** The folder watcher saw this file added or changed. */
  fileEvent(path: string): void {
    this.touched.add(path);
  }

  /** Checks the files events named, and every watched file when a sweep is due; true when a video changed. */
  async tick(): Promise<boolean> {
    const settledAfter = Date.now() - this.options.windowMs;
    let changed = false;
    if (this.touched.size > 0) {
      const paths = [...this.touched];
      this.touched.clear();
      changed = await this.check(this.options.ledger.watchedFiles(settledAfter, { paths }));
    }
    if (performance.now() - this.lastSweep < this.options.sweepMs) return changed;
    this.lastSweep = performance.now();
    for (let afterRow = 0; ;) {
      const page = this.options.ledger.watchedFiles(settledAfter, { afterRow, limit: SWEEP_PAGE });
      changed = (await this.check(page)) || changed;
      if (page.length < SWEEP_PAGE) return changed;
      afterRow = page.at(-1)!.row;
    }
  }

  /**
   * Stats the files as they were uploaded; a video with one that changed is sent round again.
   * True when one did. A file that is gone is no change (it may have been archived by hand).
   */
  async check(files: readonly WatchedFile[]): Promise<boolean> {
    const changedVideos = new Set<string>();
    for (let at = 0; at < files.length; at += STAT_BATCH) {
      const batch = files.slice(at, at + STAT_BATCH);
      const stamps = await Promise.all(batch.map((file) => currentStamp(file.path)));
      batch.forEach((file, i) => {
        const key = `${file.incidentId}\u0000${file.videoId}`;
        const now = stamps[i]!;
        if (changedVideos.has(key) || now === null || now === file.stamp) return;
        changedVideos.add(key);
        this.changed(file, stampedSize(now));
      });
    }
    return changedVideos.size > 0;
  }

  private changed(file: WatchedFile, nowBytes: number): void {
    const how = nowBytes > file.size ? 'grew' : nowBytes < file.size ? 'shrank' : 'was rewritten';
    const note = `${basename(file.path)} ${how} after it was uploaded (${file.size} → ${nowBytes} bytes): uploaded again`;
    const superseded = this.options.ledger.fileChanged(file.incidentId, file.videoId, note);
    const ids = { incidentId: file.incidentId, videoId: file.videoId, role: file.role, path: file.path, hashedBytes: file.size, nowBytes };
    if (superseded.length === 0) {
      // No upload of it had completed: its uploads simply start over with the final content.
      this.options.log.warn(
        { event: 'upload.restarted', ...ids },
        `${basename(file.path)} ${how} after it was hashed; its upload restarts`,
      );
      return;
    }
    this.options.observer?.exportChangedAfterUpload();
    this.options.log.warn(
      { event: 'export.changed_after_upload', ...ids, uploadedBytes: file.size, superseded },
      `${note}; the exporter paused for longer than watch.settle_seconds`,
    );
  }
}
