/**
 * From a video the manifest names to uploads in the ledger: wait until its files exist and have
 * settled, apply the file rules of CONTRACT §3, hash, and plan one upload per target.
 *
 * A file counts as completely written when its size and mtime have not changed for
 * `watch.settle_seconds`. The engine checks size and mtime once more before completing, and
 * every part's MD5 against the hash, so a file that changes later restarts its upload instead
 * of completing an object with mixed content.
 */
import { lstat } from 'node:fs/promises';
import type { Logger } from '../log/logger.js';
import { describeError } from '../log/logger.js';
import type { HashedFile, UploadLedger, UploadPlan, WaitingVideo } from '../ledger/upload-ledger.js';
import type { FileRole, SourceFile, Target } from '../targets/target.js';
import { ExportPathChangedError, resolveExportPath } from '../watch/paths.js';
import { SettleTracker } from '../watch/settle.js';
import { readHead, sniffImage, sniffVideo } from '../watch/sniff.js';
import { digestFile, FileChangedError } from './hash.js';
import type { PartLayout } from './part-plan.js';

export interface PlannerOptions {
  ledger: UploadLedger;
  targets: readonly Target[];
  preferredPartSize: number;
  settleMs: number;
  missingMs: number;
  log: Logger;
}

interface CheckedFile {
  role: FileRole;
  relPath: string;
  path: string;
  size: number;
  mtimeMs: number;
  contentType: string;
}

/** Why a video cannot be uploaded (it becomes a failed video), or why it must wait. */
type Verdict = { kind: 'wait' } | { kind: 'fail'; error: string } | { kind: 'ok'; files: CheckedFile[]; notes: string[] };

export class VideoPlanner {
  private readonly settle: SettleTracker;
  private running: Promise<boolean> | null = null;

  constructor(private readonly o: PlannerOptions) {
    this.settle = new SettleTracker(o.settleMs);
  }

  /** Checks every waiting video once; true when some video changed state. Never runs twice at once. */
  tick(signal?: AbortSignal): Promise<boolean> {
    this.running ??= this.checkAll(signal).finally(() => (this.running = null));
    return this.running;
  }

  private async checkAll(signal?: AbortSignal): Promise<boolean> {
    let changed = false;
    for (const video of this.o.ledger.waitingVideos()) {
      if (signal?.aborted) break;
      try {
        changed = (await this.check(video, signal)) || changed;
      } catch (err) {
        this.o.log.error({ event: 'export.check.failed', incidentId: video.incidentId, videoId: video.videoId, err }, `checking export failed: ${describeError(err)}`);
      }
    }
    return changed;
  }

  private async check(video: WaitingVideo, signal?: AbortSignal): Promise<boolean> {
    const ids = { incidentId: video.incidentId, videoId: video.videoId };
    const verdict = video.targets?.length === 0 ? noRoute(video) : await this.inspect(video, Date.now());
    if (verdict.kind === 'wait') return false;
    if (verdict.kind === 'fail') {
      this.o.ledger.failVideo(video.incidentId, video.videoId, [verdict.error]);
      this.o.log.warn({ event: 'export.failed', ...ids, reason: verdict.error }, `export refused: ${verdict.error}`);
      return true;
    }
    try {
      await this.plan(video, verdict.files, verdict.notes, signal);
    } catch (err) {
      if (!(err instanceof FileChangedError)) throw err;
      for (const f of verdict.files) this.settle.forget(f.path);
      return false;
    }
    for (const f of verdict.files) this.settle.forget(f.path);
    this.o.log.info({ event: 'export.settled', ...ids, files: verdict.files.map((f) => ({ role: f.role, bytes: f.size })) }, 'export settled and hashed');
    return true;
  }

  private async inspect(video: WaitingVideo, now: number): Promise<Verdict> {
    const files: CheckedFile[] = [];
    const notes: string[] = [];
    let waiting = false;
    const overdue = now - video.firstSeenAt > this.o.missingMs;
    for (const { role, relPath } of video.files) {
      const where = await resolveExportPath(video.folder, relPath);
      if (where.kind === 'refused') return { kind: 'fail', error: where.reason };
      if (where.kind === 'missing') {
        const seconds = Math.round(this.o.missingMs / 1000);
        if (!overdue) waiting = true;
        else if (role === 'video') return { kind: 'fail', error: `export file ${relPath} did not appear within ${seconds} s` };
        else notes.push(`thumbnail ${relPath} did not appear within ${seconds} s; uploaded without it`);
        continue;
      }
      // lstat, not stat: if the checked file was replaced by a symlink meanwhile, this must not
      // report (and settle on) the size of whatever the link leads to; the next tick's
      // resolveExportPath sees the link and refuses it.
      const st = await lstat(where.path).catch(() => null);
      if (!st?.isFile()) {
        this.settle.forget(where.path);
        waiting = true;
        continue;
      }
      if (this.settle.observe(where.path, { size: st.size, mtimeMs: st.mtimeMs }, performance.now()) !== 'settled') {
        waiting = true;
        continue;
      }
      let contentType: Awaited<ReturnType<VideoPlanner['contentType']>>;
      try {
        contentType = await this.contentType(role, relPath, where.path, st.size);
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
      } else files.push({ role, relPath, path: where.path, size: st.size, mtimeMs: st.mtimeMs, contentType: contentType.type });
    }
    return waiting ? { kind: 'wait' } : { kind: 'ok', files, notes };
  }

  private async contentType(role: FileRole, relPath: string, path: string, size: number): Promise<{ type: string; error?: undefined } | { type?: undefined; error: string }> {
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

  /** Hashes each file once, with the part MD5s of every target's layout, and records the uploads. */
  private async plan(video: WaitingVideo, files: CheckedFile[], notes: string[], signal?: AbortSignal): Promise<void> {
    const hashed: HashedFile[] = [];
    const plans: UploadPlan[] = [];
    const { incident, info, targets: routed } = this.o.ledger.videoContext(video.incidentId, video.videoId);
    const incidentTargets = this.o.targets.filter((t) => !routed || routed.includes(t.name));
    for (const f of files) {
      const source: SourceFile = {
        role: f.role,
        path: f.path,
        name: f.relPath.split(/[\\/]/).pop() ?? f.relPath,
        size: f.size,
        sha256: '',
        contentType: f.contentType,
        incident,
        video: info,
      };
      const targets = incidentTargets.filter((t) => t.roles.includes(f.role));
      const layouts = new Map<Target, PartLayout | null | string>();
      for (const t of targets) layouts.set(t, layoutOrRefusal(t, source, this.o.preferredPartSize));
      const known = [...layouts.values()].filter((l): l is PartLayout => Array.isArray(l));
      const digest = await digestFile(f.path, known, signal);
      if (digest.size !== f.size || digest.mtimeMs !== f.mtimeMs) throw new FileChangedError('changed since it settled');
      hashed.push({ role: f.role, path: f.path, size: f.size, mtimeMs: f.mtimeMs, sha256: digest.sha256, contentType: f.contentType });
      for (const [t, layout] of layouts) {
        if (typeof layout === 'string') {
          plans.push({ target: t.name, role: f.role, refused: layout });
          continue;
        }
        const md5s = layout ? digest.partMd5s[known.indexOf(layout)]! : null;
        plans.push({ target: t.name, role: f.role, parts: layout ? layout.map((p, i) => ({ ...p, md5: md5s![i]! })) : null });
      }
    }
    this.o.ledger.videoReady(video.incidentId, video.videoId, hashed, plans, notes);
  }
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
