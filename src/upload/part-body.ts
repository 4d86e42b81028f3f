/**
 * The bytes of one part, streamed from the file (never the whole file in memory): hashed with
 * MD5 on the way out so we know exactly what was sent, watched for stalls, and paced by the
 * shared bandwidth bucket (each chunk waits for its tokens before it is passed on).
 */
import { createHash } from 'node:crypto';
import { constants, createReadStream, openSync } from 'node:fs';
import { Transform, type TransformCallback } from 'node:stream';
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

  /** A file truncated after hashing ends the part early: that is a changed file, not a network error to retry. */
  override _flush(done: TransformCallback): void {
    if (this.bytes < this.part.size) done(new FileChangedError(`part ${this.part.number}: the file ended ${this.part.size - this.bytes} bytes early`));
    else done();
  }

  /** MD5 of what went through; meaningful once the stream ended. */
  digest(): string {
    return this.md5.copy().digest('hex');
  }
}

export function openPart(
  path: string,
  part: { number: number; offset: number; size: number },
  onBytes: (n: number) => void,
  bucket?: TokenBucket,
): PartBody {
  const body = new PartBody(part, onBytes, bucket);
  if (part.size === 0) {
    body.end();
    return body;
  }
  let fd: number;
  try {
    // O_NOFOLLOW: a file swapped for a symlink after it was checked is not followed out of the export root.
    fd = openSync(path, constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0));
  } catch (err) {
    process.nextTick(() => body.destroy(err as Error));
    return body;
  }
  const file = createReadStream('', { fd, start: part.offset, end: part.offset + part.size - 1, highWaterMark: 256 * 1024 });
  file.once('error', (err) => body.destroy(err));
  // A body that is dropped unread (the connection failed before the request went out: every retry
  // while a platform is down) must still close the file: piping does not, and the fd would leak
  // once per attempt until the daemon runs out of descriptors.
  body.once('close', () => file.destroy());
  file.pipe(body);
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
