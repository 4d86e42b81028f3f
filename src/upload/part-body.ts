/**
 * The bytes of one part, streamed from the file (never the whole file in memory): hashed with
 * MD5 on the way out so we know exactly what was sent, and watched for stalls.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Transform, type TransformCallback } from 'node:stream';

export class StallError extends Error {
  override readonly name = 'StallError';
}

export class PartBody extends Transform {
  private readonly md5 = createHash('md5');
  bytes = 0;

  constructor(private readonly onBytes: (n: number) => void) {
    super({ highWaterMark: 256 * 1024 });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.md5.update(chunk);
    this.bytes += chunk.length;
    this.onBytes(chunk.length);
    done(null, chunk);
  }

  /** MD5 of what went through; meaningful once the stream ended. */
  digest(): string {
    return this.md5.copy().digest('hex');
  }
}

export function openPart(path: string, offset: number, size: number, onBytes: (n: number) => void): PartBody {
  const body = new PartBody(onBytes);
  if (size === 0) {
    body.end();
    return body;
  }
  const file = createReadStream(path, { start: offset, end: offset + size - 1, highWaterMark: 256 * 1024 });
  file.once('error', (err) => body.destroy(err));
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
    else
      this.timer = setTimeout(
        () => this.controller.abort(new StallError(`no progress for ${Math.round(this.timeoutMs / 1000)} s`)),
        this.timeoutMs,
      );
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
