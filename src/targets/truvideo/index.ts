/**
 * TruVideo Upload V3 (its upload API document): each video is one media item, uploaded as an S3
 * multipart upload through presigned URLs that TruVideo hands out, then completed
 * asynchronously: complete answers 202 and the status is polled until COMPLETED or FAILED.
 *
 *   POST /upload/start                 → uploadId, mediaId, some presigned URLs   (once per file)
 *   POST {more_urls_path}              → presigned URLs for the parts still to send (assumed path)
 *   PUT  <presigned URL> × parts       → ETag (the part's MD5, checked by the engine)
 *   GET  /upload/{uploadId}            → status and registered parts (resume, polling)
 *   POST /upload/{uploadId}/complete   → 202, then GET until COMPLETED / FAILED
 *
 * Sizes: the document's "MB" is read as MiB (2^20 bytes) everywhere, so its 5 MB minimum part is
 * S3's real 5 MiB minimum, and a part is at most 600 MiB; a file is at most 120 × 600 MiB.
 */
import { extname } from 'node:path';
import { redactUrl } from '../../log/redact.js';
import { MiB, planParts, type PartLayout, type PartLimits } from '../../plan/part-plan.js';
import type { HttpClient } from '../../upload/http.js';
import { readFrameSize, type FrameSize } from '../../watch/frame-size.js';
import { Authenticator } from '../auth.js';
import { JsonApi } from '../json-api.js';
import { mediaTitle } from '../media-title.js';
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
  AnyResponse,
  MAX_TEXT_LENGTH,
  MoreUrlsResponse,
  RESERVED_METADATA_KEYS,
  StartResponse,
  TruvideoSession,
  UploadDetails,
  VIDEO_FILE_TYPES,
  type StartRequest,
} from './api.js';
import type { TruvideoConfig } from './config.js';

export const MAX_PARTS = 120;
export const MAX_PART_SIZE = 600 * MiB;
export const MAX_FILE_SIZE = MAX_PARTS * MAX_PART_SIZE;
const CREATOR = 'vms-uplink';
const INCIDENT_METADATA = ['title', 'description', 'incident_at', 'created_at', 'updated_at', 'latitude', 'longitude'] as const;
const VIDEO_METADATA = [
  'camera_id',
  'camera_name',
  'camera_description',
  'camera_latitude',
  'camera_longitude',
  'started_at',
  'ended_at',
] as const;

/**
 * The part size the document recommends, by file size:
 *   < 100 MiB: 10–20 MiB · 100 MiB – 1 GiB (inclusive): 20–50 MiB · > 1 GiB: 50–600 MiB.
 * `upload.part_size` is used when it lies in the band of the file's size class and clamped to the
 * band's nearer end otherwise; should that need more than 120 parts, the part grows to
 * ceil(size / 120) rounded up to a whole MiB (only ever in the last band, and never past 600 MiB
 * for a file refuse() accepts). A file no larger than one part is sent as one part.
 */
export function truvideoPartLimits(fileSize: number): PartLimits {
  if (fileSize < 100 * MiB) return { minPartSize: 10 * MiB, maxPartSize: 20 * MiB, maxParts: MAX_PARTS };
  if (fileSize <= 1024 * MiB) return { minPartSize: 20 * MiB, maxPartSize: 50 * MiB, maxParts: MAX_PARTS };
  return { minPartSize: 50 * MiB, maxPartSize: MAX_PART_SIZE, maxParts: MAX_PARTS };
}

/** A complete TruVideo accepted in this process: polled until final, then forgotten. */
interface Completing {
  since: number;
  polls: number;
}

export class TruvideoTarget implements Target {
  readonly roles: readonly FileRole[] = ['video'];
  private readonly api: JsonApi;
  private readonly http: HttpClient;
  /** Presigned URLs by uploadId, in memory only. */
  private readonly urls = new UrlCache();
  /** Parts acknowledged (sent, or registered by TruVideo) since this process started, by uploadId. */
  private readonly done = new Map<string, Set<number>>();
  private readonly completing = new Map<string, Completing>();
  /** Sessions given up (abort): TruVideo cannot release them, and they are never used again. */
  private readonly retired = new Set<string>();

  constructor(
    readonly name: string,
    private readonly config: TruvideoConfig,
    deps: TargetDeps,
  ) {
    this.http = deps.http;
    const api = { platform: `TruVideo (${name})`, baseUrl: config.base_url, requestTimeout: config.request_timeout };
    this.api = new JsonApi(api, deps.http, new Authenticator(config.auth, deps.http, deps.secrets, config.request_timeout), deps.secrets);
  }

  refuse(file: SourceFile): string | null {
    if (!fileTypeOf(file.name)) {
      const shown = extname(file.name) || '(none)';
      return `TruVideo accepts video files ${Object.keys(VIDEO_FILE_TYPES)
        .map((t) => `.${t.toLowerCase()}`)
        .join(', ')}; ${file.name} has extension ${shown}`;
    }
    if (file.size > MAX_FILE_SIZE) {
      return `${file.name} is ${file.size} bytes; TruVideo accepts at most ${MAX_PARTS} parts of 600 MiB (${MAX_FILE_SIZE} bytes)`;
    }
    return null;
  }

  layout(file: SourceFile, preferredPartSize: number): PartLayout {
    return planParts(file.size, preferredPartSize, truvideoPartLimits(file.size));
  }

  /**
   * The start is the one call that is not idempotent: each one opens a media item, and the
   * document warns against resending it blindly after a token refresh. A 401 proves nothing was
   * created, so the engine's retry after the fresh login is safe. A start whose answer was lost
   * (connection dropped after sending, timeout, some 5xx) cannot be told apart from one that never
   * arrived, and TruVideo has neither an idempotency key nor a way to list sessions: the engine
   * retries it, and the worst case is one orphan INITIALIZED media item without bytes. The
   * session is in the ledger before any part is sent, so a restart resumes it, never starts again.
   */
  async start(file: SourceFile, layout: PartLayout | null, signal: AbortSignal): Promise<StartResult> {
    if (!layout || layout.length < 1 || layout.length > MAX_PARTS) {
      throw new TargetError('permanent', `TruVideo takes 1 to ${MAX_PARTS} parts, planned ${layout?.length ?? 0}`);
    }
    const frame = await readFrameSize(file.path).catch(() => null);
    const json = startRequest(file, layout.length, frame);
    const res = await this.api.call({ method: 'POST', path: '/upload/start', json, schema: StartResponse, signal });
    const session: TruvideoSession = { uploadId: res.uploadId, mediaId: res.mediaId, amountOfParts: layout.length };
    this.urls.put(
      session.uploadId,
      res.presignedUrls.map((u) => ({ part: u.partNumber, url: u.url })),
    );
    return { session };
  }

  async sendPart({ session: raw, part, body, sentMd5, signal }: SendPartRequest): Promise<PartReceipt> {
    const session = this.session(raw);
    const url = await this.urls.get(session.uploadId, part.number, () => this.moreUrls(session, part.number, signal));
    try {
      const etag = await putPresigned(this.http, url, body(), part.size, signal);
      // S3 holding bytes other than those sent: the engine refuses this receipt and the part is sent
      // again, so it is not done yet, and its URL is still needed.
      if (etag && /^[0-9a-f]{32}$/i.test(etag) && etag.toLowerCase() !== sentMd5()) return { etag };
      this.doneParts(session.uploadId).add(part.number);
      this.urls.drop(session.uploadId, part.number);
      return { etag };
    } catch (err) {
      // A refused URL has most likely expired, and its siblings were minted with it.
      if (err instanceof TargetError && err.kind === 'new-url') this.urls.forget(session.uploadId);
      throw err;
    }
  }

  /** After a restart: the parts TruVideo registered, with their ETags. */
  async confirmedParts(raw: SessionState, _file: SourceFile, signal: AbortSignal): Promise<Array<{ number: number; etag: string | null }>> {
    const session = this.session(raw);
    const details = await this.details(session, signal);
    if (details.status === 'FAILED') throw failed(session, details);
    // A part registered without its ETag cannot be listed in complete: it is sent again.
    const registered = details.parts.filter((p) => p.eTag !== null);
    for (const p of registered) this.doneParts(session.uploadId).add(p.partNumber);
    return registered.map((p) => ({ number: p.partNumber, etag: p.eTag }));
  }

  /**
   * Completes once, then tells the status each time it is asked, until COMPLETED or FAILED: while
   * TruVideo still works on it, it answers `not-ready` with the delay to ask again after (capped
   * backoff up to poll_interval), and the pacer asks again. A complete refused with a 4xx (e.g.
   * 409: already completing, after a restart or a lost answer) is judged by the status:
   * PENDING_COMPLETE, COMPLETED or FAILED mean the complete was already accepted (assumed: the
   * document does not say what a repeated complete answers). After poll_timeout of waiting the
   * complete is given up as a temporary failure, and sent again.
   */
  async complete(raw: SessionState, _file: SourceFile, parts: CompletedPart[], signal: AbortSignal): Promise<UploadResult> {
    const session = this.session(raw);
    let waiting = this.completing.get(session.uploadId);
    if (!waiting) {
      const known = await this.sendComplete(session, parts, signal);
      // No part is sent after this: its URLs are of no more use.
      this.urls.forget(session.uploadId);
      this.done.delete(session.uploadId);
      waiting = { since: Date.now(), polls: 0 };
      this.completing.set(session.uploadId, waiting);
      if (known) return this.judge(session, known, waiting);
    }
    return this.judge(session, await this.details(session, signal), waiting);
  }

  /** POSTs complete; the status when a 4xx refusal means an earlier complete was accepted. */
  private async sendComplete(session: TruvideoSession, parts: CompletedPart[], signal: AbortSignal): Promise<UploadDetails | null> {
    try {
      await this.api.call({
        method: 'POST',
        path: `${uploadPath(session)}/complete`,
        json: { parts: [...parts].sort((a, b) => a.number - b.number).map((p) => ({ partNumber: p.number, eTag: p.etag })) },
        schema: AnyResponse,
        signal,
      });
      return null;
    } catch (err) {
      const refused =
        err instanceof TargetError && err.kind === 'permanent' && (err.details.status ?? 0) >= 400 && (err.details.status ?? 0) < 500;
      if (!refused) throw err;
      const known = await this.details(session, signal);
      if (known.status !== 'PENDING_COMPLETE' && known.status !== 'COMPLETED' && known.status !== 'FAILED') throw err;
      return known;
    }
  }

  private judge(session: TruvideoSession, details: UploadDetails, waiting: Completing): UploadResult {
    const final = details.status === 'COMPLETED' || details.status === 'FAILED';
    const timedOut = Date.now() - waiting.since > this.config.poll_timeout * 1000;
    if (final || timedOut) this.completing.delete(session.uploadId);
    if (details.status === 'FAILED') throw failed(session, details);
    if (details.status === 'COMPLETED') {
      const result: UploadResult = { uploadId: session.uploadId, mediaId: session.mediaId };
      if (details.fileUrl) result.fileUrl = redactUrl(details.fileUrl);
      return result;
    }
    if (timedOut) {
      throw new TargetError(
        'retryable',
        `TruVideo upload ${session.uploadId} is still ${details.status} ${this.config.poll_timeout} s after complete`,
      );
    }
    const intervalMs = this.config.poll_interval * 1000;
    const retryAfterMs = Math.min(intervalMs, (intervalMs / 4) * 2 ** waiting.polls++);
    throw new TargetError('not-ready', `TruVideo upload ${session.uploadId} is ${details.status}`, { retryAfterMs });
  }

  /** The document has no abort: the session is dropped here and never used again. */
  async abort(raw: SessionState): Promise<void> {
    const parsed = TruvideoSession.safeParse(raw);
    if (!parsed.success) return;
    this.retired.add(parsed.data.uploadId);
    this.forget(parsed.data.uploadId);
  }

  async close(): Promise<void> {
    this.urls.clear();
    this.done.clear();
    this.completing.clear();
  }

  private forget(uploadId: string): void {
    this.urls.forget(uploadId);
    this.done.delete(uploadId);
    this.completing.delete(uploadId);
  }

  private details(session: TruvideoSession, signal: AbortSignal): Promise<UploadDetails> {
    return this.api.call({ method: 'GET', path: uploadPath(session), schema: UploadDetails, signal });
  }

  /** URLs for `part` and every other part still to send that has none fresh, in one batch. */
  private async moreUrls(session: TruvideoSession, part: number, signal: AbortSignal): Promise<Array<{ part: number; url: string }>> {
    const done = this.doneParts(session.uploadId);
    const wanted: number[] = [];
    for (let n = 1; n <= (session.amountOfParts ?? 0); n++) {
      if (n === part || (!done.has(n) && !this.urls.fresh(session.uploadId, n))) wanted.push(n);
    }
    const path = this.config.more_urls_path.replaceAll('{uploadId}', encodeURIComponent(session.uploadId));
    const res = await this.api.call({ method: 'POST', path, json: { partNumbers: wanted }, schema: MoreUrlsResponse, signal });
    return res.presignedUrls.map((u) => ({ part: u.partNumber, url: u.url }));
  }

  private doneParts(uploadId: string): Set<number> {
    let done = this.done.get(uploadId);
    if (!done) this.done.set(uploadId, (done = new Set()));
    return done;
  }

  private session(raw: SessionState): TruvideoSession {
    const parsed = TruvideoSession.safeParse(raw);
    if (!parsed.success) throw new TargetError('permanent', 'the ledger holds no TruVideo session (uploadId, mediaId) for this upload');
    if (this.retired.has(parsed.data.uploadId)) {
      throw new TargetError('permanent', `TruVideo upload ${parsed.data.uploadId} was given up and is not used again`);
    }
    return parsed.data;
  }
}

/** `media.fileType` from the file's extension; undefined when TruVideo takes no video of that kind. */
export function fileTypeOf(fileName: string): string | undefined {
  return VIDEO_FILE_TYPES[extname(fileName).slice(1).toUpperCase()];
}

export function startRequest(file: SourceFile, amountOfParts: number, frame: FrameSize | null = null): StartRequest {
  const { incident, video } = file;
  const tags: Record<string, string> = {};
  const tag = (key: string, value: string | undefined): void => {
    if (value) tags[key] = value;
  };
  tag('incidentId', incident.id);
  tag('videoId', video.id);
  tag('cameraId', video.camera_id);
  tag('cameraName', video.camera_name);

  // The incident's fields and the video's camera fields and time range, as the manifest names them.
  const metadata: Record<string, unknown> = {};
  for (const key of INCIDENT_METADATA) if (incident[key] !== undefined) metadata[key] = incident[key];
  for (const key of VIDEO_METADATA) if (video[key] !== undefined) metadata[key] = video[key];
  for (const key of RESERVED_METADATA_KEYS) delete metadata[key];

  const media: StartRequest['media'] = {
    fileType: fileTypeOf(file.name) ?? '',
    title: mediaTitle(file, MAX_TEXT_LENGTH),
    creator: CREATOR,
    tags,
  };
  const duration = durationMs(video.started_at, video.ended_at);
  if (duration !== undefined) media.duration = duration;
  if (frame) media.resolution = resolutionLabel(frame);
  return { amountOfParts, media, metadata };
}

/**
 * TruVideo's label for a frame size: LOW is 480p, NORMAL 720p, HIGH 1080p (its document); the
 * nearest by the frame's short side, so portrait video and 4K are labelled sensibly. A video
 * whose size is unknown (not MP4/MOV) gets no label, and TruVideo assumes NORMAL.
 */
export function resolutionLabel(frame: FrameSize): 'LOW' | 'NORMAL' | 'HIGH' {
  const lines = Math.min(frame.width, frame.height);
  if (lines < 600) return 'LOW';
  return lines < 900 ? 'NORMAL' : 'HIGH';
}

/** Milliseconds between the export's start and end, when both are known and in order. */
function durationMs(startedAt: string | undefined, endedAt: string | undefined): number | undefined {
  if (!startedAt || !endedAt) return undefined;
  const ms = Date.parse(endedAt) - Date.parse(startedAt);
  return Number.isFinite(ms) && ms >= 0 ? Math.round(ms) : undefined;
}

function failed(session: TruvideoSession, details: UploadDetails): TargetError {
  return new TargetError('permanent', `TruVideo upload ${session.uploadId} FAILED: ${details.failureReason ?? '(no failureReason given)'}`);
}

function uploadPath(session: TruvideoSession): string {
  return `/upload/${encodeURIComponent(session.uploadId)}`;
}
