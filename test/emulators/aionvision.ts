/**
 * Aionvision's video upload API v2 (its upload document) as a local HTTP server backed by an
 * S3Store: the server decides the chunks (10 MiB, the last one shorter), mints one S3 multipart
 * upload per video and a presigned UploadPart URL per chunk, and checks every confirm against what
 * S3 really holds (the part's ETag and size). Where the document is silent it answers as the
 * contract assumes, or as a strict real service would: unknown fields, wrong types, ids that do
 * not belong together are refused with a 400 naming the field; no credentials is a 401.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type http from 'node:http';
import { extname } from 'node:path';
import { z } from 'zod';
import {
  bearerChallenge,
  EmulatorServer,
  HttpProblem,
  isRecord,
  jsonBody,
  loggedBody,
  parseJson,
  readBody,
  sendJson,
  validate,
  type Reply,
  type RecordsArrivals,
} from './json-server.js';
import type { TlsIdentity } from './listen.js';
import { S3Error, type S3Store } from './s3-store.js';

export const AION_TEST_KEY = 'aion-test-key';
export const AION_MAX_VIDEO_BYTES = 10 * 1024 ** 3;
const MiB = 1024 * 1024;
const MAX_BODY_BYTES = 1024 * 1024;
/** The seed's list: MP4, MOV, M4V, WebM, AVI. */
const FORMATS: Record<string, string> = {
  'video/mp4': '.mp4',
  'video/quicktime': '.mov',
  'video/x-m4v': '.m4v',
  'video/webm': '.webm',
  'video/x-msvideo': '.avi',
};
const EXTENSIONS = new Set(Object.values(FORMATS));

export interface AionvisionEmulatorOptions {
  store: S3Store;
  host?: string;
  port?: number;
  /** Serve HTTPS with this key and certificate. Default: plain HTTP. */
  tls?: TlsIdentity;
  /** Every API call must carry this header with exactly this value. Default: Authorization: Bearer aion-test-key. */
  auth?: { header: string; value: string };
  /** The chunk size the server decides. Default 10 MiB, as the seed says. */
  chunkSizeBytes?: number;
  /** Lifetime of every chunk URL. Default 3600. */
  urlExpiresSeconds?: number;
}

export type AionRoute = 'initiate' | 'confirm' | 'retry' | 'complete' | 'abort' | 'progress';

export interface AionChunk {
  number: number;
  offset: number;
  size: number;
}

/** One video as the platform holds it. */
export interface AionUpload {
  mediaId: string;
  uploadId: string;
  filename: string;
  contentType: string;
  size: number;
  /** Where S3 assembles it (objectSha256 once completed). */
  s3Key: string;
  chunks: AionChunk[];
  /** Chunk number → what its confirm said. */
  confirmed: Map<number, { etag: string; size: number }>;
  status: 'uploading' | 'completed' | 'aborted';
}

export interface AionCall {
  method: string;
  route: AionRoute | 'unknown';
  path: string;
  body?: unknown;
  mediaId?: string;
  chunkNumber?: number;
  /** 0 when the connection was destroyed instead of answered. */
  status: number;
  /** The call was carried out but its answer never sent (holdNext). */
  held?: boolean;
  /** Epoch milliseconds when the request arrived. */
  at: number;
  /** confirm only: successful S3 PUTs of this chunk already answered when the confirm arrived. */
  putsBefore?: number;
}

export interface AionvisionEmulator extends RecordsArrivals {
  /** TCP connections accepted so far (every request arrives on one): compared with a proxy's tunnels. */
  readonly connections: number;
  /** `${origin}/api/v2`, what goes in targets.<name>.base_url. */
  readonly baseUrl: string;
  readonly uploads: ReadonlyMap<string, AionUpload>;
  readonly calls: AionCall[];
  /** The next `count` calls of the route are answered with `status` and not carried out. */
  failNext(route: AionRoute, count: number, status?: number): void;
  /** The next `count` calls of the route answer `status` (default 500) with an error echoing the request: URL, query and headers. */
  echoNext(route: AionRoute, count: number, status?: number): void;
  /** The next `count` calls of the route get their connection destroyed, before or after being carried out. */
  resetNext(route: AionRoute, count: number, when?: 'before' | 'after'): void;
  /** The next `count` calls of the route are carried out but never answered (a SIGKILL lands in between). */
  holdNext(route: AionRoute, count: number): void;
  /**
   * This file name is refused for good with `status` (default 422) and the message: at initiate
   * (default), before anything is opened, or at every chunk confirm, once its upload is open and S3 holds the chunk.
   */
  refuseFilename(filename: string, message: string, options?: { status?: number; at?: 'initiate' | 'confirm' }): void;
  setUrlExpiry(seconds: number): void;
  close(): Promise<void>;
}

const id = z.string().min(1);
const chunkNumber = z.int().min(1);
const initiateSchema = z.strictObject({
  filename: z.string().min(1).max(255),
  content_type: z.string().min(1),
  size_bytes: z.int().min(1),
});
const confirmSchema = z.strictObject({
  media_id: id,
  upload_id: id,
  chunk_number: chunkNumber,
  etag: z.string().min(1),
  size_bytes: z.int().min(0),
});
const retrySchema = z.strictObject({ media_id: id, upload_id: id, chunk_number: chunkNumber });
const sessionSchema = z.strictObject({ media_id: id, upload_id: id });

export async function startAionvisionEmulator(opts: AionvisionEmulatorOptions): Promise<AionvisionEmulator> {
  const emulator = new AionvisionServer(opts);
  await emulator.listen(opts.host ?? '127.0.0.1', opts.port ?? 0, opts.tls);
  return emulator;
}

class AionvisionServer extends EmulatorServer<AionRoute, AionCall> implements AionvisionEmulator {
  readonly uploads = new Map<string, AionUpload>();
  private readonly store: S3Store;
  private readonly auth: { header: string; value: string };
  private readonly chunkSize: number;
  private urlExpiresSeconds: number;
  private readonly refusals = new Map<string, { status: number; message: string; at: 'initiate' | 'confirm' }>();

  constructor(opts: AionvisionEmulatorOptions) {
    super();
    this.store = opts.store;
    this.auth = { header: (opts.auth?.header ?? 'authorization').toLowerCase(), value: opts.auth?.value ?? `Bearer ${AION_TEST_KEY}` };
    this.chunkSize = opts.chunkSizeBytes ?? 10 * MiB;
    this.urlExpiresSeconds = opts.urlExpiresSeconds ?? 3600;
  }

  get baseUrl(): string {
    return `${this.origin}/api/v2`;
  }

  holdNext(route: AionRoute, count: number): void {
    this.queueFaults(route, count, { kind: 'hold' });
  }

  refuseFilename(filename: string, message: string, options: { status?: number; at?: 'initiate' | 'confirm' } = {}): void {
    this.refusals.set(filename, { status: options.status ?? 422, message, at: options.at ?? 'initiate' });
  }

  setUrlExpiry(seconds: number): void {
    this.urlExpiresSeconds = seconds;
  }

  protected async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const at = Date.now();
    const method = req.method ?? '';
    const path = new URL(req.url ?? '/', 'http://aion.invalid').pathname;
    const matched = matchRoute(method, path);
    const call: AionCall = { method, route: matched.route ?? 'unknown', path, status: 0, at };
    if (matched.mediaId !== undefined) call.mediaId = matched.mediaId;
    const raw = await readBody(req, MAX_BODY_BYTES).catch((err: unknown) =>
      err instanceof HttpProblem ? err : new HttpProblem(400, 'could not read the request body'),
    );
    if (raw instanceof HttpProblem) return this.answer(req, res, call, this.problemReply(raw));
    if (raw.length > 0) call.body = loggedBody(raw);
    const parsed = parseJson(raw);
    if (isRecord(parsed)) {
      if (typeof parsed.media_id === 'string') call.mediaId = parsed.media_id;
      if (typeof parsed.chunk_number === 'number') call.chunkNumber = parsed.chunk_number;
    }
    if (matched.problem || !matched.route)
      return this.answer(req, res, call, this.problemReply(matched.problem ?? new HttpProblem(404, 'Not Found')));
    const route = matched.route;

    const fault = this.takeFault(route);
    const preempted = this.preemption(fault, req);
    if (preempted) return this.answer(req, res, call, preempted);

    const result = await this.carryOut(() => {
      const given = req.headers[this.auth.header];
      if (given !== this.auth.value)
        throw new HttpProblem(401, given === undefined ? `missing ${this.auth.header} header` : 'Invalid API key');
      if (route === 'progress') return this.progress(matched.mediaId ?? '');
      const body = jsonBody(req, raw);
      if (route === 'confirm') call.putsBefore = this.putsOf(body);
      return this.dispatch(route, body);
    });
    if (fault?.kind === 'hold') {
      call.status = result.status;
      call.held = true;
      this.calls.push(call);
      return; // carried out; the answer never leaves
    }
    this.answer(req, res, call, fault?.kind === 'reset' ? 'reset' : result);
  }

  protected override injectedMessage(status: number): string {
    return `injected ${status}`;
  }

  protected problemReply(problem: HttpProblem): Reply {
    return { status: problem.status, body: { detail: problem.message } };
  }

  protected send(res: http.ServerResponse, reply: Reply): void {
    sendJson(res, reply, { 'x-request-id': randomBytes(8).toString('hex'), ...bearerChallenge(reply.status) });
  }

  private dispatch(route: Exclude<AionRoute, 'progress'>, body: unknown): Promise<Reply> | Reply {
    switch (route) {
      case 'initiate':
        return this.initiate(validate(initiateSchema, body));
      case 'confirm':
        return this.confirm(validate(confirmSchema, body));
      case 'retry':
        return this.retry(validate(retrySchema, body));
      case 'complete':
        return this.complete(validate(sessionSchema, body));
      case 'abort':
        return this.abort(validate(sessionSchema, body));
    }
  }

  private async initiate(req: z.infer<typeof initiateSchema>): Promise<Reply> {
    if (/[/\\]/.test(req.filename)) throw new HttpProblem(400, 'filename: must be a file name, not a path');
    const refusal = this.refusals.get(req.filename);
    if (refusal?.at === 'initiate') throw new HttpProblem(refusal.status, refusal.message);
    if (!(req.content_type in FORMATS)) {
      throw new HttpProblem(
        400,
        `content_type: unsupported video format "${req.content_type}"; supported formats are MP4, MOV, M4V, WebM and AVI`,
      );
    }
    if (!EXTENSIONS.has(extname(req.filename).toLowerCase())) {
      throw new HttpProblem(
        400,
        `filename: unsupported file extension "${extname(req.filename)}"; supported formats are MP4, MOV, M4V, WebM and AVI`,
      );
    }
    if (req.size_bytes > AION_MAX_VIDEO_BYTES)
      throw new HttpProblem(400, `size_bytes: ${req.size_bytes} exceeds the maximum of 10GB (${AION_MAX_VIDEO_BYTES} bytes) per video`);

    const mediaId = randomUUID();
    const s3Key = `videos/${mediaId}/${req.filename}`;
    const uploadId = this.store.createMultipartUpload(s3Key);
    const chunks: AionChunk[] = [];
    for (let offset = 0; offset < req.size_bytes; offset += this.chunkSize) {
      chunks.push({ number: chunks.length + 1, offset, size: Math.min(this.chunkSize, req.size_bytes - offset) });
    }
    const upload: AionUpload = {
      mediaId,
      uploadId,
      filename: req.filename,
      contentType: req.content_type,
      size: req.size_bytes,
      s3Key,
      chunks,
      confirmed: new Map(),
      status: 'uploading',
    };
    this.uploads.set(mediaId, upload);
    const expiresAt = new Date(Date.now() + this.urlExpiresSeconds * 1000).toISOString();
    const listed = [];
    for (const c of chunks) {
      listed.push({ chunk_number: c.number, upload_url: await this.chunkUrl(upload, c.number), size_bytes: c.size, expires_at: expiresAt });
    }
    return {
      status: 200,
      body: { media_id: mediaId, upload_id: uploadId, total_chunks: chunks.length, chunk_size_bytes: this.chunkSize, chunks: listed },
    };
  }

  private confirm(req: z.infer<typeof confirmSchema>): Reply {
    const upload = this.openUpload(req);
    const refusal = this.refusals.get(upload.filename);
    if (refusal?.at === 'confirm') throw new HttpProblem(refusal.status, refusal.message);
    const chunk = this.chunkOf(upload, req.chunk_number);
    if (req.size_bytes !== chunk.size)
      throw new HttpProblem(400, `size_bytes: chunk ${chunk.number} is ${chunk.size} bytes, not ${req.size_bytes}`);
    const held = recordedPart(this.store, upload, chunk.number);
    if (!held) throw new HttpProblem(400, `chunk_number: chunk ${chunk.number} has not been uploaded`);
    if (held.size !== chunk.size)
      throw new HttpProblem(400, `chunk_number: S3 holds ${held.size} bytes for chunk ${chunk.number}, which is ${chunk.size} bytes`);
    if (unquote(req.etag) !== unquote(held.etag))
      throw new HttpProblem(400, `etag: "${req.etag}" is not the ETag of uploaded chunk ${chunk.number}`);
    upload.confirmed.set(chunk.number, { etag: req.etag, size: req.size_bytes });
    return {
      status: 200,
      body: {
        media_id: upload.mediaId,
        chunk_number: chunk.number,
        status: 'confirmed',
        confirmed_chunks: upload.confirmed.size,
        total_chunks: upload.chunks.length,
      },
    };
  }

  private async retry(req: z.infer<typeof retrySchema>): Promise<Reply> {
    const upload = this.openUpload(req);
    const chunk = this.chunkOf(upload, req.chunk_number);
    return { status: 200, body: { chunk_number: chunk.number, upload_url: await this.chunkUrl(upload, chunk.number) } };
  }

  private progress(mediaId: string): Reply {
    const upload = this.uploads.get(mediaId);
    if (!upload) throw new HttpProblem(404, `media_id: no video upload ${mediaId}`);
    const confirmed = [...upload.confirmed.keys()].sort((a, b) => a - b);
    const bytes = confirmed.reduce((sum, n) => sum + (upload.chunks[n - 1]?.size ?? 0), 0);
    const body = {
      media_id: mediaId,
      status: upload.status,
      total_chunks: upload.chunks.length,
      confirmed_chunks: confirmed,
      uploaded_bytes: bytes,
      size_bytes: upload.size,
    };
    return { status: 200, body };
  }

  private complete(req: z.infer<typeof sessionSchema>): Reply {
    const upload = this.knownUpload(req);
    if (upload.status !== 'uploading') throw new HttpProblem(409, `upload ${upload.mediaId} is already ${upload.status}`);
    const missing = upload.chunks.filter((c) => !upload.confirmed.has(c.number)).map((c) => c.number);
    if (missing.length > 0) throw new HttpProblem(400, `chunks not confirmed: ${missing.join(', ')}`);
    try {
      this.store.completeMultipartUpload(
        upload.s3Key,
        upload.uploadId,
        upload.chunks.map((c) => upload.confirmed.get(c.number)!.etag),
      );
    } catch (err) {
      if (!(err instanceof S3Error)) throw err;
      throw new HttpProblem(400, `${err.code}: ${err.message}`);
    }
    upload.status = 'completed';
    return { status: 200, body: { media_id: upload.mediaId, status: 'completed', filename: upload.filename, size_bytes: upload.size } };
  }

  private abort(req: z.infer<typeof sessionSchema>): Reply {
    const upload = this.knownUpload(req);
    if (upload.status === 'completed') throw new HttpProblem(409, `upload ${upload.mediaId} is already completed`);
    if (upload.status === 'uploading') {
      this.store.abortMultipartUpload(upload.s3Key, upload.uploadId);
      upload.status = 'aborted';
      upload.confirmed.clear(); // "chunk records are cleaned up"
    }
    return { status: 200, body: { media_id: upload.mediaId, status: 'aborted' } };
  }

  private knownUpload(req: { media_id: string; upload_id: string }): AionUpload {
    const upload = this.uploads.get(req.media_id);
    if (!upload) throw new HttpProblem(404, `media_id: no video upload ${req.media_id}`);
    if (upload.uploadId !== req.upload_id) throw new HttpProblem(400, `upload_id: not the upload of media ${req.media_id}`);
    return upload;
  }

  private openUpload(req: { media_id: string; upload_id: string }): AionUpload {
    const upload = this.knownUpload(req);
    if (upload.status !== 'uploading') throw new HttpProblem(409, `upload ${upload.mediaId} is already ${upload.status}`);
    return upload;
  }

  private chunkOf(upload: AionUpload, n: number): AionChunk {
    const chunk = upload.chunks[n - 1];
    if (!chunk) throw new HttpProblem(400, `chunk_number: must be between 1 and ${upload.chunks.length}`);
    return chunk;
  }

  private chunkUrl(upload: AionUpload, n: number): Promise<string> {
    return this.store.presignUploadPart(upload.s3Key, upload.uploadId, n, this.urlExpiresSeconds);
  }

  /** For the ordering check: how many PUTs of the confirmed chunk S3 had answered by now. */
  private putsOf(body: unknown): number | undefined {
    if (!isRecord(body) || typeof body.media_id !== 'string') return undefined;
    const upload = this.uploads.get(body.media_id);
    if (!upload) return undefined;
    return this.store.requests.filter(
      (r) => r.method === 'PUT' && r.status === 200 && r.uploadId === upload.uploadId && r.partNumber === body.chunk_number,
    ).length;
  }
}

/** The ETag and size S3 recorded for a part (S3's ListParts). */
function recordedPart(store: S3Store, upload: AionUpload, n: number): { etag: string; size: number } | undefined {
  return store.listParts(upload.s3Key, upload.uploadId).find((p) => p.partNumber === n);
}

function matchRoute(method: string, path: string): { route?: AionRoute; mediaId?: string; problem?: HttpProblem } {
  const prefix = '/api/v2/video-uploads/';
  if (!path.startsWith(prefix)) return { problem: new HttpProblem(404, `no route for ${method} ${path}`) };
  const rest = path.slice(prefix.length);
  const progress = /^progress\/([^/]+)$/.exec(rest);
  const posts: Record<string, AionRoute> = {
    initiate: 'initiate',
    'chunks/confirm': 'confirm',
    'chunks/retry': 'retry',
    complete: 'complete',
    abort: 'abort',
  };
  const route = progress ? 'progress' : posts[rest];
  if (!route) return { problem: new HttpProblem(404, `no route for ${method} ${path}`) };
  const expected = route === 'progress' ? 'GET' : 'POST';
  const mediaId = progress ? safeDecode(progress[1]!) : undefined;
  if (method !== expected) return { route, problem: new HttpProblem(405, `method ${method} not allowed; use ${expected}`) };
  return mediaId === undefined ? { route } : { route, mediaId };
}

function safeDecode(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

/**
 * An ETag as S3 holds it: one pair of surrounding quotes is optional, hex case does not matter.
 * Nothing else is forgiven (a weak `W/` prefix, quotes inside): complete hands the confirmed ETag
 * to S3, which would refuse such a form, so a confirm that accepted it would only move the refusal.
 */
function unquote(etag: string): string {
  return etag.replace(/^"(.*)"$/, '$1').toLowerCase();
}
