/**
 * The upload engine: takes queued uploads from the ledger, keeps `upload.concurrency` parts in
 * flight across all of them, and records in the ledger what each platform acknowledged.
 *
 * All waiting and retrying happens here, in `retrying`, driven by the error's kind. A target
 * that is down only ever holds its own uploads: its parts release their slot while they back
 * off, and each target may run at most `concurrency` uploads at once.
 */
import { setMaxListeners } from 'node:events';
import { stat } from 'node:fs/promises';
import type { Logger } from '../log/logger.js';
import { describeError } from '../log/logger.js';
import type { UploadLedger, QueuedUpload, PlannedPart, PendingAbort } from '../ledger/upload-ledger.js';
import { LedgerFaultError } from '../ledger/faults.js';
import { digestFile, FileChangedError } from '../plan/hash.js';
import type { PartLayout } from '../plan/part-plan.js';
import { TargetError, type ErrorKind, type PartReceipt, type SessionState, type Target } from '../targets/target.js';
import { backoffDelay, sleep, type BackoffPolicy } from './backoff.js';
import type { TokenBucket } from './bandwidth.js';
import { BodyReadError } from './http.js';
import { openPart, StallError, StallWatchdog, type PartBody } from './part-body.js';
import { Semaphore, ShutdownError } from './semaphore.js';

export interface EngineOptions {
  ledger: UploadLedger;
  targets: ReadonlyMap<string, Target>;
  concurrency: number;
  stallTimeoutMs: number;
  backoff: BackoffPolicy;
  log: Logger;
  /** `upload.bandwidth`: shared by every part of every upload and target; none = unlimited. */
  bandwidth?: TokenBucket;
  /** Told what happens (metrics, target health). */
  observer?: UploadObserver;
}

/** What the engine tells about its work, as it happens. */
export interface UploadObserver {
  partSent(target: string, bytes: number, seconds: number): void;
  uploadCompleted(target: string): void;
  uploadFailed(target: string): void;
  /** A call to the platform failed and is retried; `reason` is short and stable (http_503, stall…). */
  retried(target: string, reason: string): void;
  /** A call to the platform succeeded. */
  answered(target: string): void;
}

/** The camera of an upload under way was paused through the API: the upload waits, unfailed. */
class CameraPausedError extends Error {
  override readonly name = 'CameraPausedError';
}

/**
 * The ledger withdrew an upload under way (its file changed, or a manifest rewrite replaced the
 * file): it stops, and the uploads planned for the new content take over.
 */
class UploadWithdrawnError extends Error {
  override readonly name = 'UploadWithdrawnError';
}

/** After this many refused URLs in a row, fresh URLs clearly do not help: treat it as a failure. */
const MAX_URL_RENEWALS = 5;
const ABORT_ATTEMPTS = 20;

export class UploadEngine {
  private readonly parts: Semaphore;
  private readonly active = new Map<number, { target: string; cameraId: string | undefined; ctl: AbortController; done: Promise<void> }>();
  private readonly root = new AbortController();
  private stopping = false;
  private aborting: Promise<void> | null = null;
  private holding = false;
  /** When each queued abort may be tried again (in memory: after a restart they are all due). */
  private readonly abortRetryAt = new Map<number, number>();

  constructor(private readonly o: EngineOptions) {
    this.parts = new Semaphore(o.concurrency);
    // Every running upload listens for the shutdown: as many as concurrency × targets.
    setMaxListeners(0, this.root.signal);
  }

  /** Looks for work in the ledger; call whenever it may have gained some. */
  poke(): void {
    if (this.stopping) return;
    this.interruptHalted();
    if (this.holding) return;
    const perTarget = new Map<string, number>();
    for (const a of this.active.values()) perTarget.set(a.target, (perTarget.get(a.target) ?? 0) + 1);
    const busy = new Set(this.active.keys());
    for (const id of this.o.ledger.queuedUploadIds(this.o.concurrency * this.o.targets.size, busy)) {
      const upload = this.o.ledger.loadUpload(id);
      if (!upload) continue;
      const target = this.o.targets.get(upload.target);
      const running = perTarget.get(upload.target) ?? 0;
      if (!target || running >= this.o.concurrency) continue;
      perTarget.set(upload.target, running + 1);
      const ctl = new AbortController();
      const done = this.runUpload(upload, target, ctl).finally(() => {
        this.active.delete(id);
        this.poke();
      });
      this.active.set(id, { target: upload.target, cameraId: upload.file.video.camera_id, ctl, done });
    }
    if (!this.aborting && this.o.ledger.pendingAborts().length > 0) {
      this.aborting = this.drainAborts().finally(() => (this.aborting = null));
    }
  }

  get activeUploads(): number {
    return this.active.size;
  }

  /**
   * While held (the ledger's disk is below its free-space floor) no new upload starts; those
   * under way go on.
   */
  hold(held: boolean): void {
    this.holding = held;
    if (!held) this.poke();
  }

  /**
   * Uploads under way whose camera was paused, or that the ledger withdrew, stop now; the parts
   * the platform acknowledged stay done.
   */
  private interruptHalted(): void {
    if (this.active.size === 0) return;
    for (const [id, why] of this.o.ledger.haltedUploads([...this.active.keys()])) {
      const a = this.active.get(id)!;
      if (a.ctl.signal.aborted) continue;
      a.ctl.abort(why === 'paused' ? new CameraPausedError(`camera ${a.cameraId} paused`) : new UploadWithdrawnError('withdrawn: the file changed or the manifest replaced it'));
    }
  }

  /**
   * Stops taking new parts, lets the parts in flight finish for up to `drainMs`, then aborts the
   * rest. Whatever was not acknowledged stays pending in the ledger for the next start.
   */
  async stop(drainMs: number): Promise<void> {
    this.stopping = true;
    this.parts.close();
    const settled = Promise.allSettled([...this.active.values()].map((a) => a.done));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([settled, new Promise((resolve) => (timer = setTimeout(resolve, drainMs)))]);
    clearTimeout(timer);
    this.root.abort(new ShutdownError('stopped'));
    await settled;
    await this.aborting?.catch(() => undefined);
  }

  private async runUpload(upload: QueuedUpload, target: Target, ctl: AbortController): Promise<void> {
    const { file } = upload;
    const log = this.o.log.child({ uploadId: upload.id, incidentId: file.incident.id, videoId: file.video.id, target: target.name, role: file.role });
    setMaxListeners(this.o.concurrency * 4 + 10, ctl.signal);
    const onRootAbort = (): void => ctl.abort(this.root.signal.reason);
    this.root.signal.addEventListener('abort', onRootAbort, { once: true });
    try {
      let session = upload.session;
      let parts = upload.parts;
      if (!session) {
        ({ session, parts } = await this.startUpload(upload, target, ctl.signal, log));
        log.info({ event: 'upload.started', parts: parts.length, bytes: file.size }, 'upload started');
      } else {
        parts = await this.recordConfirmedParts(upload, target, session, ctl.signal, log);
      }
      session = await this.sendParts(upload, target, session, parts, ctl, log);
      await this.checkUnchanged(upload);
      const done = this.o.ledger.loadUpload(upload.id)?.parts ?? [];
      const result = await this.retrying(
        ctl.signal,
        log,
        target.name,
        'complete',
        () => target.complete(session, file, done.map((p) => ({ number: p.number, size: p.size, etag: p.etag })), ctl.signal),
        this.troubleOf(upload),
      );
      if (!this.o.ledger.uploadDone(upload.id, result)) throw new UploadWithdrawnError(`withdrawn while it completed (the platform has it as ${JSON.stringify(result)})`);
      this.o.observer?.uploadCompleted(target.name);
      const superseded = upload.superseded ?? undefined;
      log.info({ event: 'upload.completed', bytes: file.size, result, superseded }, superseded ? `upload completed, superseding ${JSON.stringify(superseded)}` : 'upload completed');
    } catch (err) {
      this.settleFailure(upload, err, log);
    } finally {
      this.root.signal.removeEventListener('abort', onRootAbort);
    }
  }

  private settleFailure(upload: QueuedUpload, err: unknown, log: Logger): void {
    if (err instanceof LedgerFaultError) {
      log.warn({ event: 'upload.paused', reason: err.message }, 'the ledger cannot be written; the upload resumes when it can');
      return;
    }
    if (err instanceof CameraPausedError) {
      log.info({ event: 'upload.camera.paused', cameraId: upload.file.video.camera_id }, 'camera paused: the upload waits until it runs again');
      return;
    }
    if (err instanceof UploadWithdrawnError) {
      log.info({ event: 'upload.withdrawn', reason: err.message }, `upload stopped: ${err.message}`);
      return;
    }
    if (this.root.signal.aborted || err instanceof ShutdownError) {
      log.info({ event: 'upload.interrupted' }, 'upload interrupted by shutdown; it resumes at the next start');
      return;
    }
    if (err instanceof FileChangedError) {
      this.o.ledger.videoChanged(upload.file.incident.id, upload.file.video.id, `restarted: ${err.message}`);
      log.warn({ event: 'upload.restarted', reason: err.message }, 'file changed after it was hashed; upload restarts');
      return;
    }
    const message = describeError(err);
    this.o.ledger.uploadFailed(upload.id, message);
    this.o.observer?.uploadFailed(upload.target);
    log.error({ event: 'upload.failed', err }, `upload failed: ${message}`);
  }

  private async startUpload(upload: QueuedUpload, target: Target, signal: AbortSignal, log: Logger): Promise<{ session: SessionState; parts: QueuedUpload['parts'] }> {
    const planned: PartLayout | null = upload.parts.length > 0 ? upload.parts : null;
    const started = await this.retrying(signal, log, target.name, 'start', () => target.start(upload.file, planned, signal), this.troubleOf(upload));
    let serverParts: PlannedPart[] | undefined;
    if (started.layout) {
      // The platform chose the layout: hash the file again along it, and make sure it is the content we hashed.
      try {
        const digest = await digestFile(upload.file.path, [started.layout], signal);
        if (digest.sha256 !== upload.file.sha256) throw new FileChangedError('content differs from the hashed file');
        serverParts = started.layout.map((p, i) => ({ ...p, md5: digest.partMd5s[0]![i]! }));
      } catch (err) {
        // The session is not in the ledger yet, so nothing else would release it.
        await target.abort(started.session, upload.file, signal).catch(() => undefined);
        throw err;
      }
    }
    if (!this.o.ledger.uploadStarted(upload.id, started.session, serverParts)) {
      await target.abort(started.session, upload.file, signal).catch(() => undefined);
      throw new UploadWithdrawnError('withdrawn before the platform opened it');
    }
    const parts = serverParts ? serverParts.map((p) => ({ ...p, state: 'pending' as const, etag: null })) : upload.parts;
    return { session: started.session, parts };
  }

  /** Resuming: parts the platform acknowledged just before a crash are recorded, not sent again. */
  private async recordConfirmedParts(upload: QueuedUpload, target: Target, session: SessionState, signal: AbortSignal, log: Logger): Promise<QueuedUpload['parts']> {
    if (!target.confirmedParts) return upload.parts;
    const confirmed = await this.retrying(signal, log, target.name, 'resume', () => target.confirmedParts!(session, upload.file, signal), this.troubleOf(upload));
    const byNumber = new Map(confirmed.map((c) => [c.number, c.etag]));
    return upload.parts.map((p) => {
      if (p.state === 'done' || !byNumber.has(p.number)) return p;
      const etag = byNumber.get(p.number) ?? null;
      this.o.ledger.partDone(upload.id, p.number, etag);
      log.info({ event: 'upload.part.confirmed', part: p.number }, 'part already held by the platform');
      return { ...p, state: 'done' as const, etag };
    });
  }

  /** Sends every pending part; the first failure that is not retried stops its siblings. */
  private async sendParts(
    upload: QueuedUpload,
    target: Target,
    initial: SessionState,
    parts: QueuedUpload['parts'],
    ctl: AbortController,
    log: Logger,
  ): Promise<SessionState> {
    let session = initial;
    let failure: unknown = null;
    const sendOne = async (part: PlannedPart): Promise<void> => {
      const receipt = await this.retrying(
        ctl.signal,
        log.child({ part: part.number }),
        target.name,
        `part ${part.number}`,
        async () => {
          await this.parts.acquire(ctl.signal);
          try {
            return await this.sendPartOnce(upload, target, session, part, ctl.signal);
          } finally {
            this.parts.release();
          }
        },
        (err) => this.o.ledger.partFailed(upload.id, part.number, describeError(err)),
      );
      if (receipt.session) session = receipt.session;
      this.o.ledger.partDone(upload.id, part.number, receipt.etag, receipt.session);
      log.debug({ event: 'upload.part.done', part: part.number, bytes: part.size }, 'part done');
    };
    // As many workers as parts may be in flight: each takes the next pending part in order.
    const queue = parts.filter((p) => p.state === 'pending');
    const worker = async (): Promise<void> => {
      for (let part = queue.shift(); part && failure === null; part = queue.shift()) {
        await sendOne(part).catch((err: unknown) => {
          if (failure === null) failure = err;
          ctl.abort(err);
        });
      }
    };
    const workers = target.sequentialParts ? 1 : Math.min(this.o.concurrency, queue.length);
    await Promise.all(Array.from({ length: workers }, worker));
    if (failure !== null) throw failure;
    return session;
  }

  private async sendPartOnce(upload: QueuedUpload, target: Target, session: SessionState, part: PlannedPart, signal: AbortSignal): Promise<PartReceipt> {
    const attempt = new AbortController();
    const onAbort = (): void => attempt.abort(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    const watchdog = new StallWatchdog(this.o.stallTimeoutMs, attempt);
    const startedAt = performance.now();
    let body: PartBody | null = null;
    try {
      const receipt = await target.sendPart({
        session,
        file: upload.file,
        part,
        body: () => (body = openPart(upload.file.path, part, () => watchdog.touch(), this.o.bandwidth)),
        signal: attempt.signal,
      });
      const sent = body as PartBody | null;
      if (!sent) throw new Error(`${target.name} acknowledged part ${part.number} without reading it`);
      // What went out must be what we hashed, or the object would mix two versions of the file.
      if (sent.bytes !== part.size || sent.digest() !== part.md5) {
        throw new FileChangedError(`part ${part.number} no longer matches the file as hashed`);
      }
      if (receipt.etag && /^[0-9a-f]{32}$/i.test(receipt.etag) && receipt.etag.toLowerCase() !== part.md5) {
        throw new TargetError('retryable', `part ${part.number}: ETag ${receipt.etag} is not the MD5 of the bytes sent (${part.md5})`);
      }
      this.o.observer?.partSent(target.name, part.size, (performance.now() - startedAt) / 1000);
      return receipt;
    } finally {
      watchdog.stop();
      // Whatever became of the attempt, its body is done with: closing it releases the file's fd
      // (a body the target never read, e.g. after a refused connection, is otherwise left open).
      (body as PartBody | null)?.destroy();
      signal.removeEventListener('abort', onAbort);
    }
  }

  /** Records a retried error on the upload, so `status` says why it waits. */
  private troubleOf(upload: QueuedUpload): (err: unknown) => void {
    return (err) => this.o.ledger.uploadTrouble(upload.id, describeError(err));
  }

  private async checkUnchanged(upload: QueuedUpload): Promise<void> {
    const now = await stat(upload.file.path).catch(() => null);
    if (!now) throw new FileChangedError(`${upload.file.name} disappeared before the upload completed`);
    if (now.size !== upload.file.size || now.mtimeMs !== upload.mtimeMs) {
      throw new FileChangedError(`${upload.file.name} changed (size ${upload.file.size} → ${now.size}) before the upload completed`);
    }
  }

  /**
   * The one retry loop. Retryable errors back off exponentially with jitter (forever: a platform
   * may be down for hours); refused URLs and expired tokens are renewed and retried at once.
   */
  private async retrying<T>(signal: AbortSignal, log: Logger, target: string, what: string, op: () => Promise<T>, onError?: (err: unknown) => void): Promise<T> {
    let attempt = 0;
    let renewals = 0;
    for (;;) {
      try {
        const result = await op();
        this.o.observer?.answered(target);
        return result;
      } catch (err) {
        if (signal.aborted) throw signal.reason;
        const kind = classify(err);
        if (kind === null) throw err;
        onError?.(err);
        if (kind === 'permanent') throw err;
        this.o.observer?.retried(target, retryReason(err, kind));
        const renew = kind === 'new-url' || kind === 'reauth';
        renewals = renew ? renewals + 1 : 0;
        if (kind === 'new-url' && renewals > MAX_URL_RENEWALS) {
          throw new TargetError('permanent', `${describeError(err)} (still refused after ${MAX_URL_RENEWALS} fresh URLs)`);
        }
        const hinted = err instanceof TargetError ? err.details.retryAfterMs : undefined;
        const delay = renew && renewals <= 2 ? 0 : Math.max(hinted ?? 0, backoffDelay(attempt++, this.o.backoff));
        log.warn({ event: 'upload.retry', what, kind, delayMs: delay, err }, `${what}: ${describeError(err)}; retrying in ${delay} ms`);
        await sleep(delay, signal);
      }
    }
  }

  /** Releases remote uploads that were given up (queued in the ledger, so a restart still does it). */
  private async drainAborts(): Promise<void> {
    for (const pending of this.o.ledger.pendingAborts()) {
      if (this.stopping) return;
      const target = this.o.targets.get(pending.target);
      if (!target || (this.abortRetryAt.get(pending.id) ?? 0) > Date.now()) continue;
      try {
        await target.abort(pending.session, pending.file, this.root.signal);
        this.o.ledger.abortDone(pending.id);
        this.o.log.info({ event: 'upload.aborted', ...abortIds(pending) }, 'remote upload aborted');
      } catch (err) {
        const kind = classify(err);
        if (kind === 'permanent' || kind === null || pending.attempts + 1 >= ABORT_ATTEMPTS) {
          this.o.ledger.abortDone(pending.id);
          this.o.log.warn({ event: 'upload.abort.failed', ...abortIds(pending), err }, `could not abort remote upload: ${describeError(err)}`);
        } else {
          this.o.ledger.abortFailed(pending.id, describeError(err));
          this.abortRetryAt.set(pending.id, Date.now() + backoffDelay(pending.attempts, this.o.backoff));
        }
      }
    }
  }
}

/** The kind of an error for the retry loop; null for errors that are not about the platform. */
function classify(err: unknown): ErrorKind | null {
  if (err instanceof TargetError) return err.kind;
  if (err instanceof StallError) return 'retryable';
  if (err instanceof BodyReadError) {
    if (err.original instanceof FileChangedError) throw err.original;
    const code = (err.original as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new FileChangedError('the file disappeared while it was being sent');
    if (code === 'ELOOP') throw new FileChangedError('the file was replaced by a symlink while it was being sent');
    return 'retryable';
  }
  return null;
}

/** A short, stable label for why a call is retried (the metrics' `reason`). */
function retryReason(err: unknown, kind: ErrorKind): string {
  if (kind === 'new-url') return 'url_refused';
  if (kind === 'reauth') return 'token_expired';
  if (err instanceof StallError) return 'stall';
  if (err instanceof TargetError && err.details.status !== undefined) return `http_${err.details.status}`;
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    const code = (e as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return code.toLowerCase();
  }
  return 'network';
}

/** The ids that follow a video through the log, for a remote upload being aborted. */
function abortIds(pending: PendingAbort): Record<string, unknown> {
  return { target: pending.target, abortId: pending.id, incidentId: pending.file.incident.id, videoId: pending.file.video.id, role: pending.file.role };
}
