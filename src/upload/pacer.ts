/**
 * The one place that decides when to try again, for every caller: part PUTs and API calls (run
 * here, waiting here), aborts and incident reports (scheduled by their owners with `delayAfter`),
 * the ledger's probe after a storage fault (`backoff`), and polling a platform that is still
 * working on an upload (`not-ready`).
 *
 * What to do is decided by the error's kind, classified where the error arose (TargetError):
 * retryable errors back off exponentially with full jitter, capped, and never sooner than a
 * `Retry-After` the platform sent — many boxes behind one uplink must not retry in step; refused
 * URLs and expired tokens are renewed and tried again at once (a few times, then backed off);
 * `not-ready` is polled after the delay the platform's module asks for, without counting as a
 * failure; a `configuration` problem (an untrusted TLS certificate) is tried again only at the
 * longest delay, so that it neither hammers the network nor gives the upload up; a permanent error
 * is never retried. Waits end early on the shutdown signal, and on `retryUntil` (a drain).
 */
import { TargetError, type ErrorKind } from '../targets/target.js';
import { StallError } from './part-body.js';

export interface PacerPolicy {
  /** The first retry's delay (ms); it doubles with each failure in a row. */
  initialMs: number;
  /** The longest delay (ms). */
  maxMs: number;
}

/** How a retry waits: resolves after `ms`, or rejects with the signal's reason as soon as it aborts. */
export type Sleep = (ms: number, signal: AbortSignal) => Promise<void>;

export interface PacerOptions {
  /** The jitter, in [0, 1). Default Math.random. */
  random?: () => number;
  /** How a retry waits. Default `sleep` (a timer); tests pass one that records the wait instead. */
  sleep?: Sleep;
}

export interface RunOptions {
  signal: AbortSignal;
  /** Told of every failure that is retried or not (status shows the last one). */
  onError?: (err: unknown) => void;
  /** Told before each wait of a retry. */
  onRetry?: (err: unknown, kind: ErrorKind, delayMs: number) => void;
  /**
   * Once aborted, nothing is tried again: a wait in progress ends and the run rejects with its
   * reason. Unlike `signal`, it never cuts the attempt in progress (a shutdown's drain).
   */
  retryUntil?: AbortSignal;
}

/** After this many refused URLs in a row, fresh URLs clearly do not help: treat it as a failure. */
const MAX_URL_RENEWALS = 5;
/** Renewals (of a URL or a token) tried at once, before they back off like any failure. */
const IMMEDIATE_RENEWALS = 2;

/** The kind of an error for retrying; null for errors that are not about the platform (they are not retried here). */
export function kindOf(err: unknown): ErrorKind | null {
  if (err instanceof TargetError) return err.kind;
  if (err instanceof StallError) return 'retryable';
  return null;
}

export class Pacer {
  private readonly random: () => number;
  private readonly wait: Sleep;

  constructor(
    private readonly policy: PacerPolicy,
    options: PacerOptions = {},
  ) {
    this.random = options.random ?? Math.random;
    this.wait = options.sleep ?? sleep;
  }

  /** The wait before try `failures + 1`: exponential with full jitter, capped, at least half the first delay. */
  backoff(failures: number): number {
    const ceiling = Math.min(this.policy.maxMs, this.policy.initialMs * 2 ** Math.min(failures, 30));
    return Math.max(this.policy.initialMs / 2, Math.round(ceiling * this.random()));
  }

  /**
   * For callers that keep their own schedule (reports, aborts): the wait before trying again after
   * `err` and `failures` earlier failures in a row, or null when it must not be tried again.
   */
  delayAfter(err: unknown, failures: number): number | null {
    const kind = kindOf(err) ?? 'permanent';
    if (kind === 'permanent') return null;
    if (kind === 'not-ready') return hintOf(err) ?? this.policy.initialMs;
    if (kind === 'configuration') return this.policy.maxMs;
    if (kind === 'reauth' && failures === 0) return 0;
    return Math.max(hintOf(err) ?? 0, this.backoff(failures));
  }

  /** Runs `op` until it succeeds; rejects with the first error that is not retried, or the signal's reason. */
  async run<T>(op: () => Promise<T>, options: RunOptions): Promise<T> {
    let failures = 0;
    let renewals = 0;
    for (;;) {
      try {
        return await op();
      } catch (err) {
        if (options.signal.aborted) throw options.signal.reason;
        const kind = kindOf(err);
        if (kind === null) throw err;
        if (kind === 'not-ready') {
          await this.waitToRetry(hintOf(err) ?? this.policy.initialMs, options);
          continue;
        }
        options.onError?.(err);
        if (kind === 'permanent') throw err;
        const renew = kind === 'new-url' || kind === 'reauth';
        renewals = renew ? renewals + 1 : 0;
        if (kind === 'new-url' && renewals > MAX_URL_RENEWALS) {
          throw new TargetError('permanent', `${(err as Error).message} (still refused after ${MAX_URL_RENEWALS} fresh URLs)`, {
            cause: err,
          });
        }
        const delay =
          kind === 'configuration'
            ? this.policy.maxMs
            : renew && renewals <= IMMEDIATE_RENEWALS
              ? 0
              : Math.max(hintOf(err) ?? 0, this.backoff(failures++));
        options.onRetry?.(err, kind, delay);
        await this.waitToRetry(delay, options);
      }
    }
  }

  private async waitToRetry(ms: number, { signal, retryUntil }: RunOptions): Promise<void> {
    if (!retryUntil) return this.wait(ms, signal);
    if (retryUntil.aborted) throw retryUntil.reason;
    await this.wait(ms, AbortSignal.any([signal, retryUntil]));
  }
}

function hintOf(err: unknown): number | undefined {
  return err instanceof TargetError ? err.details.retryAfterMs : undefined;
}

/** Resolves after `ms`, or rejects with the signal's reason as soon as it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason as Error);
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal!.reason as Error);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
