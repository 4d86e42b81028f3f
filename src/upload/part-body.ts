/**
 * The bytes of one part, streamed from the file (never the whole file in memory): hashed with
 * MD5 on the way out — the one digest of the part, what the ledger records and the ETag is
 * checked against — watched for stalls, and paced by the shared bandwidth bucket (each chunk
 * waits for its tokens before it is passed on). The file must be the version that settled
 * (its stamp) when the part is opened and again when it has been read: a file changed under a
 * part ends it with a FileChangedError, never with mixed content sent as the part.
 */
import { createHash } from 'node:crypto';
import { closeSync, constants, createReadStream, fstatSync, openSync } from 'node:fs';
import { Transform, type TransformCallback } from 'node:stream';
import { stampOf } from '../plan/file-stamp.js';
import { FileChangedError } from '../plan/hash.js';
import { PACE_CHUNK, type TokenBucket } from './bandwidth.js';

export class StallError extends Error {
  override readonly name = 'StallError';
}

export class PartBody extends Transform {
  private readonly md5 = createHash('md5');
  bytes = 0;
  /** Aborted when the body is destroyed: a chunk waiting for tokens leaves the bucket's queue. */
  private readonly pacing = new AbortController();

  /**
   * `onBytes(n)` on every chunk passed on, and `onBytes(0)` at least every 250 ms while a chunk
   * waits for bandwidth tokens (waiting under the limit is not a stall).
   */
  constructor(
    private readonly part: { number: number; size: number },
    private readonly onBytes: (n: number) => void,
    private readonly bucket?: TokenBucket,
    /** Whether the file is still the version that settled, once the part was read. */
    private readonly unchanged: () => boolean = () => true,
  ) {
    super({ highWaterMark: 256 * 1024 });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.md5.update(chunk);
    this.bytes += chunk.length;
    if (!this.bucket || this.bucket.unlimited) {
      this.onBytes(chunk.length);
      done(null, chunk);
      return;
    }
    this.paced(chunk, this.bucket).then(
      () => done(),
      (err: unknown) => {
        if (!this.destroyed) done(err as Error);
      },
    );
  }

  /** Passes the chunk on in slices of at most 64 KiB, each once the bucket has its tokens. */
  private async paced(chunk: Buffer, bucket: TokenBucket): Promise<void> {
    const touch = (): void => this.onBytes(0);
    for (let at = 0; at < chunk.length; at += PACE_CHUNK) {
      const slice = chunk.subarray(at, at + PACE_CHUNK);
      await bucket.take(slice.length, { signal: this.pacing.signal, touch });
      if (this.destroyed) return;
      this.onBytes(slice.length);
      this.push(slice);
    }
  }

  override _destroy(err: Error | null, done: (err: Error | null) => void): void {
    this.pacing.abort(err ?? new Error('part body closed'));
    done(err);
  }

  /** A file truncated or rewritten under the part is a changed file, not a network error to retry. */
  override _flush(done: TransformCallback): void {
    if (this.bytes < this.part.size)
      done(new FileChangedError(`part ${this.part.number}: the file ended ${this.part.size - this.bytes} bytes early`));
    else if (!this.unchanged()) done(new FileChangedError(`part ${this.part.number}: the file changed while the part was read`));
    else done();
  }

  /** MD5 of what went through; meaningful once the stream ended. */
  digest(): string {
    return this.md5.copy().digest('hex');
  }
}

/** Opens the part of the file (which must have `stamp`) for sending. */
export function openPart(
  file: { path: string; stamp: string },
  part: { number: number; offset: number; size: number },
  onBytes: (n: number) => void,
  bucket?: TokenBucket,
): PartBody {
  let fd: number;
  try {
    // O_NOFOLLOW: a file swapped for a symlink after it was checked is not followed out of the export root.
    fd = openSync(file.path, constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0));
  } catch (err) {
    const body = new PartBody(part, onBytes, bucket);
    process.nextTick(() => body.destroy(err as Error));
    return body;
  }
  const unchanged = (): boolean => stampOf(fstatSync(fd, { bigint: true })) === file.stamp;
  const body = new PartBody(part, onBytes, bucket, unchanged);
  const stream =
    part.size > 0 && unchanged()
      ? createReadStream('', { fd, autoClose: false, start: part.offset, end: part.offset + part.size - 1, highWaterMark: 256 * 1024 })
      : null;
  // The descriptor is closed with the body, whatever became of it: a body dropped unread (the
  // connection failed before the request went out, as on every retry while a platform is down)
  // would otherwise leak one per attempt until the daemon runs out of descriptors.
  body.once('close', () => {
    // Destroying the read stream closes the descriptor (autoClose only keeps it open past the end).
    if (stream) stream.destroy();
    else closeSync(fd);
  });
  if (stream) {
    stream.once('error', (err) => body.destroy(err));
    stream.pipe(body);
  } else if (part.size === 0) {
    body.end();
  } else {
    process.nextTick(() => body.destroy(new FileChangedError(`part ${part.number}: the file changed since it settled`)));
  }
  return body;
}

/**
 * Aborts when nothing moved for `timeoutMs`: no byte read into the request, and no answer
 * after the last byte. `touch()` on every chunk; `stop()` once the answer arrived.
 */
export class StallWatchdog {
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly timeoutMs: number,
    private readonly controller: AbortController,
  ) {
    this.touch();
  }

  touch(): void {
    if (this.timer) this.timer.refresh();
    else this.arm(this.timeoutMs);
  }

  private arm(ms: number): void {
    this.timer = setTimeout(() => this.controller.abort(new StallError(`no progress for ${Math.round(ms / 1000)} s`)), ms);
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
