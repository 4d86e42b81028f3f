/**
 * The upload engine: takes queued uploads from the ledger, keeps `upload.concurrency` parts in
 * flight across all of them, and records in the ledger what each platform acknowledged.
 *
 * Each part is read from the file once, as it is sent, and MD5'd on the way (part-body.ts): that
 * digest is what the ledger records and the ETag is checked against. The file's identity
 * (SHA-256) is computed beside the parts (plan/identity.ts) and awaited only before `complete`,
 * with a last check that the file is still the version that settled. All waiting and retrying
 * is the pacer's; a target that is down only holds its own uploads: its parts release their slot
 * while they back off, and each target runs at most `concurrency` uploads of several parts at
 * once. A small file (one part on every platform) runs beside them, SMALL_PER_SLOT for each: its
 * platform calls and ledger commit, not its bytes, are most of its time, so a part slot alone
 * would sit idle.
 */
import { setMaxListeners } from 'node:events';
import type { Logger } from '../log/logger.js';
import { describeError } from '../log/logger.js';
import { LedgerFaultError } from '../ledger/faults.js';
import type { AcknowledgedPart, PendingAbort, QueuedPart, QueuedUpload, UploadLedger } from '../ledger/upload-ledger.js';
import { currentStamp } from '../plan/file-stamp.js';
import { FileChangedError } from '../plan/hash.js';
import type { FileIdentities } from '../plan/identity.js';
import type { PartSlice } from '../plan/part-plan.js';
import { TargetError, type ErrorKind, type PartReceipt, type SessionState, type Target } from '../targets/target.js';
import type { TokenBucket } from './bandwidth.js';
import { BodyReadError } from './http.js';
import { kindOf, type Pacer } from './pacer.js';
import { openPart, StallError, StallWatchdog, type PartBody } from './part-body.js';
import { Semaphore, ShutdownError } from './semaphore.js';

export interface EngineOptions {
  ledger: UploadLedger;
  identities: FileIdentities;
  targets: ReadonlyMap<string, Target>;
  concurrency: number;
  stallTimeoutMs: number;
  pacer: Pacer;
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

/** Small files uploaded at once per `concurrency` slot (a larger file takes the whole slot). */
const SMALL_PER_SLOT = 4;
/** A file this small is one part on every platform (S3's smallest part). */
const SMALL_FILE_BYTES = 5 * 1024 * 1024;

/** Aborts still to make that one look at the ledger takes on. */
const ABORTS_PAGE = 50;

interface ActiveUpload {
  target: string;
  /** 1 for a small file, SMALL_PER_SLOT for any other. */
  weight: number;
  cameraId: string | undefined;
  ctl: AbortController;
  done: Promise<void>;
}

export class UploadEngine {
  private readonly parts: Semaphore;
  private readonly active = new Map<number, ActiveUpload>();
  private readonly root = new AbortController();
  /** Aborted when a stop begins: nothing is tried again, while the attempts in flight go on. */
  private readonly draining = new AbortController();
  private stopping = false;
  private aborting: Promise<void> | null = null;
  private holding = false;
  /** When each queued abort may be tried again (in memory: after a restart they are all due). */
  private readonly abortRetryAt = new Map<number, number>();

  constructor(private readonly options: EngineOptions) {
    this.parts = new Semaphore(options.concurrency);
    // The shutdown signal holds one listener per upload under way and one per identity pass it
    // waits for, each removed when that ends: more than Node's default of 10 once small files
    // run side by side, and never more than this.
    setMaxListeners(2 * options.concurrency * SMALL_PER_SLOT * Math.max(1, options.targets.size) + 10, this.root.signal);
  }

  /** Starts queued uploads while there is room; call whenever the ledger may have gained some. */
  poke(): void {
    if (this.stopping || this.holding) return;
    const budget = this.options.concurrency * SMALL_PER_SLOT;
    const used = new Map<string, number>();
    for (const a of this.active.values()) used.set(a.target, (used.get(a.target) ?? 0) + a.weight);
    const room = budget * this.options.targets.size - [...used.values()].reduce((a, b) => a + b, 0);
    if (room <= 0) return;
    for (const id of this.options.ledger.queued(room, new Set(this.active.keys()), [...this.options.targets.keys()])) {
      const upload = this.options.ledger.load(id);
      const target = upload && this.options.targets.get(upload.target);
      if (!upload || !target) continue;
      const weight = upload.file.size <= SMALL_FILE_BYTES ? 1 : SMALL_PER_SLOT;
      const running = used.get(upload.target) ?? 0;
      if (running + weight > budget) continue;
      used.set(upload.target, running + weight);
      this.begin(upload, target, weight);
    }
  }

  /**
   * What only needs looking at now and then (each tick of the daemon, and when an operator acts):
   * uploads under way that were paused or withdrawn stop, and remote uploads due to be aborted are.
   */
  review(): void {
    if (this.stopping) return;
    this.interruptHalted();
    this.abortDue();
  }

  /** Releases the remote uploads due to be aborted, unless that is under way already. */
  private abortDue(): void {
    if (!this.aborting && this.options.ledger.abortsDue(1).length > 0) {
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
    const released = this.holding && !held;
    this.holding = held;
    if (released) this.poke();
  }

  /**
   * Stops taking new parts and retrying, lets the parts in flight finish for up to `drainMs`
   * (Infinity: until they end), then aborts the rest. Whatever was not acknowledged stays pending
   * in the ledger for the next start.
   */
  async stop(drainMs: number): Promise<void> {
    this.stopping = true;
    this.parts.close();
    // An upload backing off between attempts holds nothing in flight: it stops now.
    this.draining.abort(new ShutdownError('stopped'));
    const settled = Promise.allSettled([...this.active.values()].map((a) => a.done));
    let timer: NodeJS.Timeout | undefined;
    const deadline = Number.isFinite(drainMs) ? [new Promise((resolve) => (timer = setTimeout(resolve, drainMs)))] : [];
    await Promise.race([settled, ...deadline]);
    clearTimeout(timer);
    this.root.abort(new ShutdownError('stopped'));
    await settled;
    await this.aborting?.catch(() => undefined);
  }

  private begin(upload: QueuedUpload, target: Target, weight: number): void {
    // Stopped by the shutdown (root) or on its own (a paused camera, a withdrawal): one signal each.
    const ctl = new AbortController();
    const onRootAbort = (): void => ctl.abort(this.root.signal.reason);
    this.root.signal.addEventListener('abort', onRootAbort, { once: true });
    const done = this.runUpload(upload, target, ctl.signal).finally(() => {
      this.root.signal.removeEventListener('abort', onRootAbort);
      this.active.delete(upload.id);
      this.poke();
    });
    this.active.set(upload.id, { target: upload.target, weight, cameraId: upload.file.video.camera_id, ctl, done });
  }

  /**
   * Uploads under way whose camera was paused, or that the ledger withdrew, stop now; the parts
   * the platform acknowledged stay done.
   */
  private interruptHalted(): void {
    if (this.active.size === 0) return;
    for (const [id, why] of this.options.ledger.halted([...this.active.keys()])) {
      const a = this.active.get(id)!;
      if (a.ctl.signal.aborted) continue;
      a.ctl.abort(
        why === 'paused'
          ? new CameraPausedError(`camera ${a.cameraId} paused`)
          : new UploadWithdrawnError('withdrawn: the file changed or the manifest replaced it'),
      );
    }
  }

  private async runUpload(upload: QueuedUpload, target: Target, signal: AbortSignal): Promise<void> {
    const { file } = upload;
    const log = this.options.log.child({
      uploadId: upload.id,
      incidentId: file.incident.id,
      videoId: file.video.id,
      target: target.name,
      role: file.role,
    });
    const startedAt = Date.now();
    // The identity pass runs beside the parts, shared by every target's upload of the file.
    const identity = this.options.identities.of(
      { incidentId: file.incident.id, videoId: file.video.id, role: file.role, path: file.path, stamp: file.stamp },
      this.root.signal,
    );
    identity.catch(() => undefined);
    try {
      let session = upload.session;
      let parts = upload.parts;
      let recordEachPart = true;
      if (!session) {
        const started = await this.startUpload(upload, target, signal, log);
        ({ session, parts } = started);
        // Nothing remote to resume (ALO's single PUT): the part is recorded with the completion.
        recordEachPart = started.remote || parts.length > 1;
        log.info({ event: 'upload.started', parts: parts.length, bytes: file.size }, 'upload started');
      } else {
        await this.checkUnchanged(upload);
        parts = await this.recordConfirmedParts(upload, target, session, signal, log);
      }
      const sent = await this.sendParts(upload, target, session, parts, signal, log, recordEachPart);
      const sha256 = await until(identity, signal);
      await this.checkUnchanged(upload);
      const completed = [...parts.filter((p) => p.state === 'done'), ...sent.acknowledged].map((p) => ({
        number: p.number,
        size: partSize(parts, p.number),
        etag: p.etag,
      }));
      const result = await this.call(target, signal, log, 'complete', () =>
        target.complete(
          sent.session,
          file,
          completed.sort((a, b) => a.number - b.number),
          signal,
        ),
      );
      const unrecorded = recordEachPart ? [] : sent.acknowledged;
      if (!(await this.options.ledger.done(upload.id, { result, sha256, session: sent.session, parts: unrecorded, startedAt }))) {
        throw new UploadWithdrawnError(`withdrawn while it completed (the platform has it as ${JSON.stringify(result)})`);
      }
      this.options.observer?.uploadCompleted(target.name);
      const superseded = upload.superseded ?? undefined;
      log.info(
        { event: 'upload.completed', bytes: file.size, result, superseded },
        superseded ? `upload completed, superseding ${JSON.stringify(superseded)}` : 'upload completed',
      );
    } catch (err) {
      this.settleFailure(upload, err, log);
    }
  }

  private settleFailure(upload: QueuedUpload, err: unknown, log: Logger): void {
    if (err instanceof LedgerFaultError) {
      log.warn({ event: 'upload.paused', reason: err.message }, 'the ledger cannot be written; the upload resumes when it can');
    } else if (err instanceof CameraPausedError) {
      log.info(
        { event: 'upload.camera.paused', cameraId: upload.file.video.camera_id },
        'camera paused: the upload waits until it runs again',
      );
    } else if (err instanceof UploadWithdrawnError) {
      log.info({ event: 'upload.withdrawn', reason: err.message }, `upload stopped: ${err.message}`);
    } else if (this.root.signal.aborted || err instanceof ShutdownError) {
      log.info({ event: 'upload.interrupted' }, 'upload interrupted by shutdown; it resumes at the next start');
    } else if (err instanceof FileChangedError) {
      this.options.ledger.fileChanged(upload.file.incident.id, upload.file.video.id, `restarted: ${err.message}`);
      log.warn({ event: 'upload.restarted', reason: err.message }, 'file changed after it was hashed; upload restarts');
    } else {
      const message = describeError(err);
      this.options.ledger.failed(upload.id, message);
      // Given up: its remote upload is released now, not at the next review.
      this.abortDue();
      this.options.observer?.uploadFailed(upload.target);
      log.error({ event: 'upload.failed', err }, `upload failed: ${message}`);
    }
  }

  private async startUpload(
    upload: QueuedUpload,
    target: Target,
    signal: AbortSignal,
    log: Logger,
  ): Promise<{ session: SessionState; parts: QueuedPart[]; remote: boolean }> {
    const planned = upload.parts.length > 0 ? upload.parts : null;
    const started = await this.call(target, signal, log, 'start', () => target.start(upload.file, planned, signal));
    if (started.deferredError) {
      const message = describeError(started.deferredError);
      this.options.ledger.trouble(upload.id, message);
      log.warn({ event: 'upload.start.deferred', err: started.deferredError }, `start: ${message}; asked for again with the first part`);
    }
    const remote = started.remote !== false;
    if (remote && !this.options.ledger.started(upload.id, started.session, started.layout)) {
      // Not in the ledger, so nothing else would release it.
      await target.abort(started.session, upload.file, signal).catch(() => undefined);
      throw new UploadWithdrawnError('withdrawn before the platform opened it');
    }
    const parts = started.layout
      ? started.layout.map((p): QueuedPart => ({ ...p, state: 'pending', etag: null, md5: null }))
      : upload.parts;
    return { session: started.session, parts, remote };
  }

  /** Resuming: parts the platform acknowledged just before a crash are recorded, not sent again. */
  private async recordConfirmedParts(
    upload: QueuedUpload,
    target: Target,
    session: SessionState,
    signal: AbortSignal,
    log: Logger,
  ): Promise<QueuedPart[]> {
    if (!target.confirmedParts) return upload.parts;
    const confirmed = await this.call(target, signal, log, 'resume', () => target.confirmedParts!(session, upload.file, signal));
    const byNumber = new Map(confirmed.map((c) => [c.number, c.etag]));
    return upload.parts.map((p) => {
      if (p.state === 'done' || !byNumber.has(p.number)) return p;
      const etag = byNumber.get(p.number) ?? null;
      // What the platform holds of a part it confirmed is what was sent: S3's ETag is its MD5.
      const md5 = etag && /^[0-9a-f]{32}$/i.test(etag) ? etag.toLowerCase() : '';
      this.options.ledger.partDone(upload.id, { number: p.number, etag, md5 });
      log.info({ event: 'upload.part.confirmed', part: p.number }, 'part already held by the platform');
      return { ...p, state: 'done' as const, etag, md5 };
    });
  }

  /**
   * Sends every pending part; the first failure that is not retried stops its siblings. Returns
   * the session as the parts left it, and the parts acknowledged now.
   */
  private async sendParts(
    upload: QueuedUpload,
    target: Target,
    initial: SessionState,
    parts: readonly QueuedPart[],
    signal: AbortSignal,
    log: Logger,
    recordEachPart: boolean,
  ): Promise<{ session: SessionState; acknowledged: AcknowledgedPart[] }> {
    let session = initial;
    const acknowledged: AcknowledgedPart[] = [];
    const siblings = new AbortController();
    const partSignal = AbortSignal.any([signal, siblings.signal]);
    const failed: { first?: Error } = {};
    const sendOne = async (part: QueuedPart): Promise<void> => {
      const partLog = log.child({ part: part.number });
      const { receipt, md5 } = await this.call(
        target,
        partSignal,
        partLog,
        `part ${part.number}`,
        async () => {
          await this.parts.acquire(partSignal);
          try {
            return await this.sendPartOnce(upload, target, session, part, partSignal);
          } finally {
            this.parts.release();
          }
        },
        (err) => this.options.ledger.partFailed(upload.id, part.number, describeError(err)),
      );
      if (receipt.session) session = receipt.session;
      const ack = { number: part.number, etag: receipt.etag, md5 };
      if (recordEachPart) this.options.ledger.partDone(upload.id, ack, receipt.session);
      acknowledged.push(ack);
      partLog.debug({ event: 'upload.part.done', bytes: part.size }, 'part done');
    };
    // As many workers as parts may be in flight: each takes the next pending part in order.
    const queue = parts.filter((p) => p.state === 'pending');
    const worker = async (): Promise<void> => {
      for (let part = queue.shift(); part && !failed.first; part = queue.shift()) {
        await sendOne(part).catch((err: unknown) => {
          failed.first ??= err as Error;
          // A drain (ShutdownError) lets the siblings in flight finish; anything else stops them.
          if (!(err instanceof ShutdownError)) siblings.abort(err);
        });
      }
    };
    const workers = target.sequentialParts ? 1 : Math.min(this.options.concurrency, queue.length);
    await Promise.all(Array.from({ length: workers }, worker));
    if (failed.first) throw failed.first;
    return { session, acknowledged };
  }

  private async sendPartOnce(
    upload: QueuedUpload,
    target: Target,
    session: SessionState,
    part: PartSlice,
    signal: AbortSignal,
  ): Promise<{ receipt: PartReceipt; md5: string }> {
    const attempt = new AbortController();
    const attemptSignal = AbortSignal.any([signal, attempt.signal]);
    const watchdog = new StallWatchdog(this.options.stallTimeoutMs, attempt);
    const startedAt = performance.now();
    let body: PartBody | null = null;
    try {
      const receipt = await target.sendPart({
        session,
        file: upload.file,
        part: { number: part.number, offset: part.offset, size: part.size },
        body: () => (body = openPart(upload.file, part, () => watchdog.touch(), this.options.bandwidth)),
        sentMd5: () => body?.digest() ?? '',
        signal: attemptSignal,
      });
      const sent = body as PartBody | null;
      if (!sent) throw new Error(`${target.name} acknowledged part ${part.number} without reading it`);
      if (sent.bytes !== part.size) throw new FileChangedError(`part ${part.number}: ${sent.bytes} bytes were read of ${part.size}`);
      const md5 = sent.digest();
      if (receipt.etag && /^[0-9a-f]{32}$/i.test(receipt.etag) && receipt.etag.toLowerCase() !== md5) {
        throw new TargetError('retryable', `part ${part.number}: ETag ${receipt.etag} is not the MD5 of the bytes sent (${md5})`);
      }
      this.options.observer?.partSent(target.name, part.size, (performance.now() - startedAt) / 1000);
      return { receipt, md5 };
    } catch (err) {
      throw fileErrorOf(err);
    } finally {
      watchdog.stop();
      // Whatever became of the attempt, its body is done with: closing it releases the file's descriptor.
      (body as PartBody | null)?.destroy();
    }
  }

  /** A call to the platform through the pacer, with what it tells the observer and the log. */
  private async call<T>(
    target: Target,
    signal: AbortSignal,
    log: Logger,
    what: string,
    op: () => Promise<T>,
    onError?: (err: unknown) => void,
  ): Promise<T> {
    const result = await this.options.pacer
      .run(op, {
        signal,
        retryUntil: this.draining.signal,
        onError: onError ?? ((err) => this.options.ledger.trouble(Number(log.bindings().uploadId), describeError(err))),
        onRetry: (err, kind, delayMs) => {
          this.options.observer?.retried(target.name, retryReason(err, kind));
          log.warn({ event: 'upload.retry', what, kind, delayMs, err }, `${what}: ${describeError(err)}; retrying in ${delayMs} ms`);
        },
      })
      .catch((err: unknown) => {
        // A refusal for good is an answer: the platform is up, this request is wrong.
        if (err instanceof TargetError && err.kind === 'permanent' && err.details.status !== undefined)
          this.options.observer?.answered(target.name);
        throw err;
      });
    this.options.observer?.answered(target.name);
    return result;
  }

  /** The file must still be the version that settled (and whose parts were sent). */
  private async checkUnchanged(upload: QueuedUpload): Promise<void> {
    const now = await currentStamp(upload.file.path);
    if (now === null) throw new FileChangedError(`${upload.file.name} disappeared before the upload completed`);
    if (now !== upload.file.stamp) throw new FileChangedError(`${upload.file.name} changed before the upload completed`);
  }

  /** Releases remote uploads that were given up (queued in the ledger, so a restart still does it). */
  private async drainAborts(): Promise<void> {
    for (const pending of this.options.ledger.abortsDue(ABORTS_PAGE)) {
      if (this.stopping) return;
      const target = this.options.targets.get(pending.target);
      if (!target || (this.abortRetryAt.get(pending.id) ?? 0) > Date.now()) continue;
      try {
        await target.abort(pending.session, pending.file, this.root.signal);
        this.options.ledger.abortDone(pending.id);
        this.abortRetryAt.delete(pending.id);
        this.options.log.info({ event: 'upload.aborted', ...abortIds(pending) }, 'remote upload aborted');
      } catch (err) {
        const delay = kindOf(err) === null ? null : this.options.pacer.delayAfter(err, pending.attempts);
        if (delay === null || pending.attempts + 1 >= ABORT_ATTEMPTS) {
          this.options.ledger.abortDone(pending.id);
          this.abortRetryAt.delete(pending.id);
          this.options.log.warn(
            { event: 'upload.abort.failed', ...abortIds(pending), err },
            `could not abort remote upload: ${describeError(err)}`,
          );
        } else {
          this.options.ledger.abortFailed(pending.id, describeError(err));
          this.abortRetryAt.set(pending.id, Date.now() + delay);
        }
      }
    }
  }
}

/** Aborts are tried this often at most, then given up (the platform cleans up stale uploads itself). */
const ABORT_ATTEMPTS = 20;

function partSize(parts: readonly QueuedPart[], number: number): number {
  return parts.find((p) => p.number === number)?.size ?? 0;
}

/** Errors of reading the file while it was sent are a changed file when it changed or went away; else retried. */
function fileErrorOf(err: unknown): unknown {
  if (!(err instanceof BodyReadError)) return err;
  if (err.original instanceof FileChangedError) return err.original;
  const code = (err.original as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return new FileChangedError('the file disappeared while it was being sent');
  if (code === 'ELOOP') return new FileChangedError('the file was replaced by a symlink while it was being sent');
  return new TargetError('retryable', `reading the file failed: ${err.message}`, { cause: err });
}

/** Resolves with `promise`, or rejects with the signal's reason as soon as it aborts. */
function until<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** A short, stable label for why a call is retried (the metrics' `reason`). */
function retryReason(err: unknown, kind: ErrorKind): string {
  if (err instanceof TargetError && err.details.reason) return err.details.reason;
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
  return {
    target: pending.target,
    abortId: pending.id,
    incidentId: pending.file.incident.id,
    videoId: pending.file.video.id,
    role: pending.file.role,
  };
}
