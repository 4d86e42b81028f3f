/**
 * From a video the manifest names to uploads in the ledger: wait until its files exist and have
 * settled, apply the file rules (paths stay inside the incident folder, a video is a known
 * container), and plan one upload per target.
 *
 * A file counts as completely written when its size and mtime have not changed for
 * `watch.settle_seconds`. Its stamp is recorded then; every later read of it is checked against
 * the stamp, so a file that changes afterwards restarts its upload instead of completing an
 * object with mixed content. Its identity (SHA-256) is computed here only when the content could
 * equal another upload of the incident; otherwise beside the upload (see identity.ts).
 *
 * The ledger is read a page at a time, the page after the last one each tick, from the oldest
 * again at the end: a backlog of any size costs the same memory, and videos still waiting for
 * their files never hold back those after them.
 */
import { lstat } from 'node:fs/promises';
import { systemClock, type Clock } from '../clock.js';
import type { PlanLedger, ReadyVideo, SettledFile, UploadPlan, VideoCursor, WaitingVideo } from '../ledger/plan-ledger.js';
import type { Logger } from '../log/logger.js';
import { describeError } from '../log/logger.js';
import type { FileRole, SourceFile, Target } from '../targets/target.js';
import { ExportPathChangedError, resolveExportPath } from '../watch/paths.js';
import { SettleTracker } from '../watch/settle.js';
import { readHead, sniffImage, sniffVideo } from '../watch/sniff.js';
import { stampOf } from './file-stamp.js';
import { FileChangedError } from './hash.js';
import type { FileIdentities } from './identity.js';
import type { PartLayout } from './part-plan.js';

export interface PlannerOptions {
  ledger: PlanLedger;
  identities: FileIdentities;
  targets: readonly Target[];
  preferredPartSize: number;
  settleMs: number;
  missingMs: number;
  /** A local disk: a file whose mtime is older than settleMs has settled (false on network mounts). */
  trustMtime: boolean;
  log: Logger;
  /** What settling and the missing-file wait are measured on. Default the system's clocks. */
  clock?: Clock;
}

/** Videos looked at per tick. */
const PAGE = 200;

interface CheckedFile {
  role: FileRole;
  relPath: string;
  path: string;
  size: number;
  mtimeMs: number;
  stamp: string;
  contentType: string;
}

/** Why a video cannot be uploaded (it becomes a failed video), or why it must wait. */
type Verdict = { kind: 'wait' } | { kind: 'fail'; error: string } | { kind: 'ok'; files: CheckedFile[]; notes: string[] };

export class VideoPlanner {
  private readonly settle: SettleTracker;
  private running: Promise<boolean> | null = null;
  private cursor: VideoCursor | null = null;
  private readonly clock: Clock;

  constructor(private readonly options: PlannerOptions) {
    this.clock = options.clock ?? systemClock;
    this.settle = new SettleTracker(options.settleMs, options.trustMtime, () => this.clock.now());
  }

  /** A full page was checked last time: more videos wait after it. */
  get hasMore(): boolean {
    return this.cursor !== null;
  }

  /** Checks a page of waiting videos; true when some video changed state. Never runs twice at once. */
  tick(signal: AbortSignal): Promise<boolean> {
    this.running ??= this.checkPage(signal).finally(() => (this.running = null));
    return this.running;
  }

  private async checkPage(signal: AbortSignal): Promise<boolean> {
    const page = this.options.ledger.waiting(this.cursor, PAGE);
    const last = page.at(-1);
    this.cursor =
      page.length < PAGE || !last ? null : { firstSeenAt: last.firstSeenAt, incidentId: last.incidentId, position: last.position };
    const ready: ReadyVideo[] = [];
    let changed = false;
    for (const video of page) {
      if (signal.aborted) break;
      try {
        const outcome = await this.check(video, signal);
        if (outcome === 'failed') changed = true;
        else if (outcome) ready.push(await this.withTwinIdentities(outcome, ready, signal));
      } catch (err) {
        if (err instanceof FileChangedError) continue; // it settles again first
        this.options.log.error(
          { event: 'export.check.failed', incidentId: video.incidentId, videoId: video.videoId, err },
          `checking export failed: ${describeError(err)}`,
        );
      }
    }
    // One transaction for the page: a backlog is planned at the speed of the disk, not of fsync.
    this.options.ledger.videosReady(ready);
    for (const v of ready) {
      const files = v.files.map((f) => ({ role: f.role, bytes: f.size }));
      this.options.log.info({ event: 'export.settled', incidentId: v.incidentId, videoId: v.videoId, files }, 'export settled');
    }
    return changed || ready.length > 0;
  }

  /** The video planned (ready), failed, or null while it waits. */
  private async check(video: WaitingVideo, signal: AbortSignal): Promise<ReadyVideo | 'failed' | null> {
    const verdict = video.targets?.length === 0 ? noRoute(video) : await this.inspect(video, this.clock.now());
    if (verdict.kind === 'wait') return null;
    if (verdict.kind === 'fail') {
      this.options.ledger.failVideo(video.incidentId, video.videoId, [verdict.error]);
      this.options.log.warn(
        { event: 'export.failed', incidentId: video.incidentId, videoId: video.videoId, reason: verdict.error },
        `export refused: ${verdict.error}`,
      );
      return 'failed';
    }
    for (const f of verdict.files) this.settle.forget(f.path);
    return this.plan(video, verdict.files, verdict.notes, signal);
  }

  /**
   * Videos of one incident planned in the same page are not in the ledger yet: a file as big as
   * one of theirs (of the same role) may hold the same content, so both get their identity now.
   */
  private async withTwinIdentities(video: ReadyVideo, batch: readonly ReadyVideo[], signal: AbortSignal): Promise<ReadyVideo> {
    for (const file of video.files) {
      const twins = batch
        .filter((v) => v.incidentId === video.incidentId)
        .flatMap((v) => v.files.filter((f) => f.role === file.role && f.size === file.size).map((f) => ({ v, f })));
      if (twins.length === 0) continue;
      for (const { v, f } of [...twins, { v: video, f: file }])
        f.sha256 ??= await this.options.identities.of(
          { incidentId: v.incidentId, videoId: v.videoId, role: f.role, path: f.path, stamp: f.stamp },
          signal,
        );
    }
    return video;
  }

  private async inspect(video: WaitingVideo, now: number): Promise<Verdict> {
    const files: CheckedFile[] = [];
    const notes: string[] = [];
    let waiting = false;
    const overdue = now - video.firstSeenAt > this.options.missingMs;
    for (const { role, relPath } of video.files) {
      const where = await resolveExportPath(video.folder, relPath);
      if (where.kind === 'refused') return { kind: 'fail', error: where.reason };
      if (where.kind === 'missing') {
        const seconds = Math.round(this.options.missingMs / 1000);
        if (!overdue) waiting = true;
        else if (role === 'video') return { kind: 'fail', error: `export file ${relPath} did not appear within ${seconds} s` };
        else notes.push(`thumbnail ${relPath} did not appear within ${seconds} s; uploaded without it`);
        continue;
      }
      // lstat, not stat: if the checked file was replaced by a symlink meanwhile, this must not
      // report (and settle on) the size of whatever the link leads to; the next tick's
      // resolveExportPath sees the link and refuses it.
      const st = await lstat(where.path, { bigint: true }).catch(() => null);
      if (!st?.isFile()) {
        this.settle.forget(where.path);
        waiting = true;
        continue;
      }
      const size = Number(st.size);
      const mtimeMs = Number(st.mtimeNs / 1_000_000n);
      if (this.settle.observe(where.path, { size, mtimeMs }, this.clock.monotonic()) !== 'settled') {
        waiting = true;
        continue;
      }
      let contentType: Awaited<ReturnType<VideoPlanner['contentType']>>;
      try {
        contentType = await this.contentType(role, relPath, where.path, size);
      } catch (err) {
        // Swapped for a symlink (or another kind of file) since resolveExportPath: check it again next tick.
        if (!(err instanceof ExportPathChangedError)) throw err;
        this.settle.forget(where.path);
        waiting = true;
        continue;
      }
      if (contentType.error !== undefined) {
        if (role === 'video') return { kind: 'fail', error: contentType.error };
        notes.push(`${contentType.error}; uploaded without it`);
      } else files.push({ role, relPath, path: where.path, size, mtimeMs, stamp: stampOf(st), contentType: contentType.type });
    }
    return waiting ? { kind: 'wait' } : { kind: 'ok', files, notes };
  }

  private async contentType(
    role: FileRole,
    relPath: string,
    path: string,
    size: number,
  ): Promise<{ type: string; error?: undefined } | { type?: undefined; error: string }> {
    const what = role === 'video' ? 'export file' : 'thumbnail';
    if (size === 0) return { error: `${what} ${relPath} is empty` };
    const head = await readHead(path);
    const type = role === 'video' ? sniffVideo(head)?.contentType : sniffImage(head)?.contentType;
    if (!type) {
      const first = Buffer.from(head.subarray(0, 8)).toString('hex');
      return { error: `${what} ${relPath} is not a known ${role === 'video' ? 'video container' : 'image format'} (first bytes ${first})` };
    }
    return { type };
  }

  /** The video's files as they settled, and one upload per target and role (or why a target refuses the file). */
  private async plan(video: WaitingVideo, files: CheckedFile[], notes: string[], signal: AbortSignal): Promise<ReadyVideo> {
    const settled: SettledFile[] = [];
    const plans: UploadPlan[] = [];
    const { incident, info } = this.options.ledger.videoContext(video.incidentId, video.videoId);
    const incidentTargets = this.options.targets.filter((t) => !video.targets || video.targets.includes(t.name));
    for (const f of files) {
      const identity = { incidentId: video.incidentId, videoId: video.videoId, role: f.role, path: f.path, stamp: f.stamp };
      // Equal content means equal size: only then is the identity needed before anything is sent.
      const sha256 = this.options.ledger.mayShareContent(video.incidentId, f.role, f.size)
        ? await this.options.identities.of(identity, signal)
        : null;
      settled.push({ role: f.role, path: f.path, size: f.size, mtimeMs: f.mtimeMs, stamp: f.stamp, sha256, contentType: f.contentType });
      const source: SourceFile = {
        role: f.role,
        path: f.path,
        name: baseName(f.relPath),
        size: f.size,
        sha256,
        stamp: f.stamp,
        contentType: f.contentType,
        incident,
        video: info,
      };
      for (const t of incidentTargets.filter((target) => target.roles.includes(f.role))) {
        const layout = layoutOrRefusal(t, source, this.options.preferredPartSize);
        plans.push(
          typeof layout === 'string' ? { target: t.name, role: f.role, refused: layout } : { target: t.name, role: f.role, parts: layout },
        );
      }
    }
    return { incidentId: video.incidentId, videoId: video.videoId, files: settled, plans, notes };
  }
}

function baseName(relPath: string): string {
  return relPath.split(/[\\/]/).pop() ?? relPath;
}

function noRoute(video: WaitingVideo): Verdict {
  return { kind: 'fail', error: `no route in \`routes\` matches the incident folder ${video.folder}: not uploaded anywhere` };
}

/** The target's layout for the file, null when the platform decides it, or why it refuses the file. */
function layoutOrRefusal(target: Target, file: SourceFile, preferred: number): PartLayout | null | string {
  const refusal = target.refuse(file);
  if (refusal) return refusal;
  try {
    return target.layout(file, preferred);
  } catch (err) {
    return describeError(err);
  }
}
