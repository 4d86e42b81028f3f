/**
 * Aionvision video uploads v2 (its video upload API document): the server decides the chunk
 * layout at `initiate`; each chunk is PUT to its presigned S3 URL and then confirmed with its
 * ETag; a chunk URL that is missing, near expiry or refused is replaced through `chunks/retry`;
 * after a restart `progress` tells which chunks the platform already holds; `complete` assembles
 * the video.
 *
 * The upload API takes only a file name: the incident title, camera and ids that other
 * platforms receive have nowhere to go, so the video's file name is all Aionvision receives.
 */
import { extname } from 'node:path';
import type { PartLayout, PartSlice } from '../../plan/part-plan.js';
import type { HttpClient } from '../../upload/http.js';
import { Authenticator } from '../auth.js';
import { JsonApi } from '../json-api.js';
import { putPresigned } from '../presigned-put.js';
import { UrlCache } from '../url-cache.js';
import {
  TargetError,
  type CompletedPart,
  type FileRole,
  type PartReceipt,
  type SendPartRequest,
  type SessionState,
  type SourceFile,
  type StartResult,
  type Target,
  type TargetDeps,
  type UploadResult,
} from '../target.js';
import {
  AionSession,
  AnyResponse,
  COMPLETED_STATUSES,
  InitiateResponse,
  MAX_VIDEO_BYTES,
  ProgressResponse,
  RetryResponse,
  SUPPORTED_CONTENT_TYPES,
  SUPPORTED_EXTENSIONS,
} from './api.js';
import type { AionvisionConfig } from './config.js';

/** Progress statuses after which the upload cannot go on. */
const DEAD_STATUSES: ReadonlySet<string> = new Set(['aborted', 'failed', 'expired', 'cancelled', 'canceled']);

export class AionvisionTarget implements Target {
  readonly roles: readonly FileRole[] = ['video'];
  private readonly api: JsonApi;
  private readonly http: HttpClient;
  /** Chunk URLs by media_id, in memory only: after a restart they come from chunks/retry. */
  private readonly urls = new UrlCache();

  constructor(
    readonly name: string,
    config: AionvisionConfig,
    deps: TargetDeps,
  ) {
    this.http = deps.http;
    const api = { platform: `Aionvision (${name})`, baseUrl: config.base_url, requestTimeout: config.request_timeout };
    this.api = new JsonApi(api, deps.http, new Authenticator(config.auth, deps.http, deps.secrets, config.request_timeout), deps.secrets);
  }

  refuse(file: SourceFile): string | null {
    const format = SUPPORTED_CONTENT_TYPES.get(file.contentType);
    if (!format) return `${file.name} is ${file.contentType}; Aionvision accepts MP4, MOV, M4V, WebM and AVI only`;
    if (!SUPPORTED_EXTENSIONS.has(extname(file.name).toLowerCase())) {
      return `${file.name} is ${format}, but Aionvision accepts only file names ending in .mp4, .mov, .m4v, .webm or .avi`;
    }
    if (file.size > MAX_VIDEO_BYTES) {
      return `${file.name} is ${(file.size / 1024 ** 3).toFixed(2)} GiB; Aionvision accepts at most 10 GiB (${MAX_VIDEO_BYTES} bytes) per video`;
    }
    return null;
  }

  layout(): null {
    return null; // the server decides the chunks at initiate
  }

  async start(file: SourceFile, _planned: PartLayout | null, signal: AbortSignal): Promise<StartResult> {
    const res = await this.api.call({
      method: 'POST',
      path: '/video-uploads/initiate',
      json: { filename: file.name, content_type: file.contentType, size_bytes: file.size },
      schema: InitiateResponse,
      signal,
    });
    const session: AionSession = { media_id: res.media_id, upload_id: res.upload_id };
    let layout: PartLayout;
    try {
      layout = chunkLayout(res.chunks, file.size);
    } catch (err) {
      await this.abort(session, file, signal).catch(() => undefined);
      throw err;
    }
    this.urls.put(
      session.media_id,
      res.chunks.map((c) => ({ part: c.chunk_number, url: c.upload_url })),
    );
    return { session, layout };
  }

  async sendPart({ session: raw, file, part, body, sentMd5, signal }: SendPartRequest): Promise<PartReceipt> {
    const session = AionSession.parse(raw);
    const url = await this.urls.get(session.media_id, part.number, () => this.retryUrl(session, part.number, signal));
    let etag: string | null;
    try {
      // The document's PUT carries the video's Content-Type; the URL itself carries the credentials.
      etag = await putPresigned(this.http, url, body(), part.size, signal, file.contentType);
    } catch (err) {
      if (err instanceof TargetError && err.kind === 'new-url') this.urls.drop(session.media_id, part.number);
      throw err;
    }
    if (!etag) throw new TargetError('permanent', `chunk ${part.number}: S3 answered the PUT without an ETag, which chunks/confirm needs`);
    // S3 holding bytes other than those sent is never confirmed: the engine refuses this receipt
    // (ETag ≠ MD5 of what was sent) and sends the chunk again.
    if (/^[0-9a-f]{32}$/i.test(etag) && etag.toLowerCase() !== sentMd5()) return { etag };
    await this.api.call({
      method: 'POST',
      path: '/video-uploads/chunks/confirm',
      // The ETag as S3's header gives it, quotes included, as the document's client sends it.
      json: { ...session, chunk_number: part.number, etag: `"${etag}"`, size_bytes: part.size },
      schema: AnyResponse,
      signal,
    });
    return { etag };
  }

  async confirmedParts(raw: SessionState, _file: SourceFile, signal: AbortSignal): Promise<Array<{ number: number; etag: string | null }>> {
    const session = AionSession.parse(raw);
    const progress = await this.progress(session, signal);
    if (DEAD_STATUSES.has(progress.status.toLowerCase())) {
      throw new TargetError('permanent', `Aionvision reports upload ${session.media_id} as ${progress.status}`);
    }
    return progress.confirmed_chunks.map((number) => ({ number, etag: null }));
  }

  async complete(raw: SessionState, _file: SourceFile, _parts: CompletedPart[], signal: AbortSignal): Promise<UploadResult> {
    const session = AionSession.parse(raw);
    this.urls.forget(session.media_id);
    try {
      await this.api.call({ method: 'POST', path: '/video-uploads/complete', json: session, schema: AnyResponse, signal });
    } catch (err) {
      // A complete sent before a restart may have gone through: progress tells (assumed: the
      // document does not say what a repeated complete answers).
      if (!(err instanceof TargetError && (err.details.status === 404 || err.details.status === 409))) throw err;
      let status: string;
      try {
        status = (await this.progress(session, signal)).status;
      } catch (progressErr) {
        throw progressErr instanceof TargetError && progressErr.kind === 'permanent' ? err : progressErr;
      }
      if (!COMPLETED_STATUSES.has(status.toLowerCase())) throw err;
    }
    return { media_id: session.media_id };
  }

  async abort(raw: SessionState, _file: SourceFile, signal: AbortSignal): Promise<void> {
    const parsed = AionSession.safeParse(raw);
    if (!parsed.success) return; // nothing was started remotely
    const session = parsed.data;
    this.urls.forget(session.media_id);
    try {
      await this.api.call({ method: 'POST', path: '/video-uploads/abort', json: session, schema: AnyResponse, signal });
    } catch (err) {
      // Unknown (already cleaned up) or finished: nothing left to release.
      if (!(err instanceof TargetError && (err.details.status === 404 || err.details.status === 409))) throw err;
    }
  }

  async close(): Promise<void> {
    this.urls.clear();
  }

  private progress(session: AionSession, signal: AbortSignal) {
    return this.api.call({
      method: 'GET',
      path: `/video-uploads/progress/${encodeURIComponent(session.media_id)}`,
      schema: ProgressResponse,
      signal,
    });
  }

  /** A new URL for one chunk (after a restart, near expiry, or refused by S3). */
  private async retryUrl(session: AionSession, chunk: number, signal: AbortSignal): Promise<Array<{ part: number; url: string }>> {
    const res = await this.api.call({
      method: 'POST',
      path: '/video-uploads/chunks/retry',
      json: { ...session, chunk_number: chunk },
      schema: RetryResponse,
      signal,
    });
    if (res.chunk_number !== chunk) {
      throw new TargetError('permanent', `Aionvision chunks/retry for chunk ${chunk} answered a URL for chunk ${res.chunk_number}`);
    }
    return [{ part: chunk, url: res.upload_url }];
  }
}

/** The server's chunks as a part layout: numbered 1..N without gaps, covering the file exactly. */
function chunkLayout(chunks: InitiateResponse['chunks'], fileSize: number): PartLayout {
  const sorted = [...chunks].sort((a, b) => a.chunk_number - b.chunk_number);
  const layout: PartSlice[] = [];
  let offset = 0;
  for (const [i, c] of sorted.entries()) {
    if (c.chunk_number !== i + 1) {
      throw new TargetError(
        'permanent',
        `Aionvision initiate answered chunk ${c.chunk_number} where chunk ${i + 1} of ${sorted.length} belongs: chunks must be numbered 1 to N`,
      );
    }
    if (c.size_bytes === 0) throw new TargetError('permanent', `Aionvision initiate answered an empty chunk ${c.chunk_number}`);
    layout.push({ number: c.chunk_number, offset, size: c.size_bytes });
    offset += c.size_bytes;
  }
  if (offset !== fileSize) {
    throw new TargetError('permanent', `Aionvision initiate answered chunks of ${offset} bytes in all for a file of ${fileSize} bytes`);
  }
  return layout;
}
