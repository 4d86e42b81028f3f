/**
 * TruVideo Upload V3 (its upload document) as a local HTTP server backed by the shared S3Store. It
 * follows the document strictly, as the real service would: every body is validated (400 naming the
 * field), every call needs a fresh Bearer token from the login endpoint (tokens expire), presigned
 * URLs are real S3 UploadPart URLs on the store, parts are registered once their PUT landed in the
 * store, and complete is asynchronous (202, PENDING_COMPLETE, then COMPLETED or FAILED).
 *
 * Where the document is silent (the contract's assumptions and the choices below):
 * - login: `POST /auth/token` `{ "apiKey" }` → `{ "accessToken", "expiresIn" }`;
 * - more URLs: `POST /upload/{uploadId}/presigned-urls` `{ "partNumbers" }` → `{ "presignedUrls" }`;
 * - registered parts: `parts: [{ "partNumber", "eTag", "size" }]` (eTag unquoted, as complete takes it);
 * - complete or more URLs for an upload past INITIALIZED/PARTIAL: 409; an unknown uploadId: 400;
 * - complete must list every part 1..amountOfParts, each with the ETag the store holds;
 * - media.title is at most 255 characters, like creator.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type http from 'node:http';
import { z } from 'zod';
import {
  bearerChallenge,
  EmulatorServer,
  HttpProblem,
  jsonBody,
  loggedBody,
  readBody,
  sendJson,
  validate,
  type Reply,
  type RecordsArrivals,
} from './json-server.js';
import type { TlsIdentity } from './listen.js';
import { S3Error, type S3Store } from './s3-store.js';

export const TRUVIDEO_FILE_TYPES = [
  'MP4',
  'MOV',
  'AVI',
  'MKV',
  'FLV',
  'WMV',
  '3GPP',
  'WEBM', // VIDEO
  'JPG',
  'JPEG',
  'PNG',
  'SVG', // IMAGE
  'MP3',
  'WAV',
  'AAC',
  'FLAC', // AUDIO
  'PDF', // DOCUMENT
] as const;

export const TRUVIDEO_STATUSES = ['INITIALIZED', 'PARTIAL', 'PENDING_COMPLETE', 'COMPLETED', 'FAILED'] as const;
export type TruvideoStatus = (typeof TRUVIDEO_STATUSES)[number];

export interface TruvideoEmulatorOptions {
  store: S3Store;
  /** What the login endpoint must be sent. */
  apiKey: string;
  host?: string;
  port?: number;
  /** Serve HTTPS with this key and certificate. Default: plain HTTP. */
  tls?: TlsIdentity;
  /** Lifetime of an access token. Default 3600. */
  tokenTtlSeconds?: number;
  /** Lifetime of a presigned URL. Default 3600. */
  urlExpiresSeconds?: number;
  /** How many presigned URLs the start answers (the first parts). Default 10. */
  initialUrls?: number;
  /** How long an accepted complete stays PENDING_COMPLETE. Default 200. */
  completeDelayMs?: number;
}

export type TruvideoRoute = 'login' | 'start' | 'presigned_urls' | 'get_upload' | 'complete';

export interface TruvideoCall {
  method: string;
  route: TruvideoRoute | 'unknown';
  /** Epoch milliseconds when the request arrived. */
  at: number;
  uploadId?: string;
  body?: unknown;
  /** 0 when the connection was destroyed instead of answered. */
  status: number;
}

export interface TruvideoPart {
  partNumber: number;
  eTag: string;
  size: number;
}

/** One upload session as the platform keeps it. */
export interface TruvideoUpload {
  uploadId: string;
  mediaId: string;
  s3UploadId: string;
  status: TruvideoStatus;
  bucketName: string;
  keyName: string;
  fileUrl: string | null;
  creator: string | null;
  title: string | null;
  sanitizedTitle: string | null;
  amountOfParts: number;
  /** `media` and `metadata` exactly as the start received them. */
  media: StartBody['media'];
  metadata: Record<string, unknown> | null;
  /** Registered parts: from the store while the upload is open, as completed afterwards. */
  parts: TruvideoPart[];
  failureReason: string | null;
}

export interface TruvideoEmulator extends RecordsArrivals {
  /** TCP connections accepted so far (every request arrives on one): compared with a proxy's tunnels. */
  readonly connections: number;
  /** Origin of the API: what goes in targets.<name>.base_url. */
  readonly baseUrl: string;
  /** The login endpoint: what goes in auth.login.url. */
  readonly loginUrl: string;
  readonly calls: TruvideoCall[];
  uploads(): TruvideoUpload[];
  upload(uploadId: string): TruvideoUpload | undefined;
  /** Every access token the login handed out, for checking that none leaks. */
  readonly issuedTokens: readonly string[];
  /** Every token handed out so far answers 401 from now on. */
  expireTokens(): void;
  /** The next `count` calls of the route are answered with `status` and not carried out. */
  failNext(route: TruvideoRoute, count: number, status?: number): void;
  /** The next `count` calls of the route answer `status` (default 500) with an error echoing the request: URL, query and headers. */
  echoNext(route: TruvideoRoute, count: number, status?: number): void;
  /** The next `count` calls get their connection destroyed: before the call is carried out, or after it (a lost answer). */
  resetNext(route: TruvideoRoute, count: number, when?: 'before' | 'after'): void;
  /** The next accepted complete ends FAILED with this failureReason instead of COMPLETED. */
  failNextCompletion(reason: string): void;
  /**
   * Uploads whose media.title contains `substring` are refused for good with 400 and `message`: at
   * the start (default), before a session exists, or at every complete, once its parts are in S3.
   */
  refuseTitle(substring: string, message: string, at?: 'start' | 'complete'): void;
  setUrlExpiry(seconds: number): void;
  close(): Promise<void>;
}

const MAX_PARTS = 120;
const MAX_TEXT = 255;
const MAX_BODY_BYTES = 16 * 1024 * 1024;
const RESERVED_METADATA = ['failureReason', 'failureTimestamp'];

const startSchema = z.strictObject({
  amountOfParts: z.int().min(1).max(MAX_PARTS),
  media: z.strictObject({
    fileType: z.enum(TRUVIDEO_FILE_TYPES),
    creator: z.string().max(MAX_TEXT).optional(),
    title: z.string().max(MAX_TEXT).optional(),
    duration: z.int().min(0).optional(),
    resolution: z.enum(['LOW', 'NORMAL', 'HIGH']).optional(),
    tags: z.record(z.string(), z.string()).optional(),
    insights: z.strictObject({ isLibrary: z.boolean().optional(), includeInReport: z.boolean().optional() }).optional(),
  }),
  metadata: z
    .record(z.string(), z.unknown())
    .superRefine((m, ctx) => {
      for (const key of RESERVED_METADATA) {
        if (key in m) ctx.addIssue({ code: 'custom', path: [key], message: 'reserved for internal lifecycle tracking' });
      }
    })
    .optional(),
});
type StartBody = z.infer<typeof startSchema>;

const loginSchema = z.strictObject({ apiKey: z.string().min(1) });
const partNumber = z.int().min(1).max(MAX_PARTS);
const moreUrlsSchema = z.strictObject({ partNumbers: z.array(partNumber).min(1).max(MAX_PARTS) });
const completeSchema = z.strictObject({
  parts: z
    .array(z.strictObject({ partNumber, eTag: z.string().min(1) }))
    .min(1)
    .max(MAX_PARTS),
});

export async function startTruvideoEmulator(opts: TruvideoEmulatorOptions): Promise<TruvideoEmulator> {
  const emulator = new TruvideoServer(opts);
  await emulator.listen(opts.host ?? '127.0.0.1', opts.port ?? 0, opts.tls);
  return emulator;
}

class TruvideoServer extends EmulatorServer<TruvideoRoute, TruvideoCall> implements TruvideoEmulator {
  private readonly store: S3Store;
  private readonly tokenTtlMs: number;
  private urlExpiresSeconds: number;
  private readonly initialUrls: number;
  private readonly completeDelayMs: number;
  /** token → expiry (epoch ms). */
  private readonly tokens = new Map<string, number>();
  readonly issuedTokens: string[] = [];
  private readonly sessions = new Map<string, TruvideoUpload>();
  private readonly completionFailures: string[] = [];
  private readonly refusedTitles: Array<{ substring: string; message: string; at: 'start' | 'complete' }> = [];
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(private readonly opts: TruvideoEmulatorOptions) {
    super();
    this.store = opts.store;
    this.tokenTtlMs = (opts.tokenTtlSeconds ?? 3600) * 1000;
    this.urlExpiresSeconds = opts.urlExpiresSeconds ?? 3600;
    this.initialUrls = opts.initialUrls ?? 10;
    this.completeDelayMs = opts.completeDelayMs ?? 200;
  }

  get baseUrl(): string {
    return this.origin;
  }

  get loginUrl(): string {
    return `${this.origin}/auth/token`;
  }

  uploads(): TruvideoUpload[] {
    return [...this.sessions.values()].map((u) => this.view(u));
  }

  upload(uploadId: string): TruvideoUpload | undefined {
    const u = this.sessions.get(uploadId);
    return u && this.view(u);
  }

  expireTokens(): void {
    for (const token of this.tokens.keys()) this.tokens.set(token, 0);
  }

  failNextCompletion(reason: string): void {
    this.completionFailures.push(reason);
  }

  refuseTitle(substring: string, message: string, at: 'start' | 'complete' = 'start'): void {
    this.refusedTitles.push({ substring, message, at });
  }

  setUrlExpiry(seconds: number): void {
    this.urlExpiresSeconds = seconds;
  }

  override async close(): Promise<void> {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    await super.close();
  }

  protected async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const method = req.method ?? '';
    const { pathname } = new URL(req.url ?? '/', 'http://truvideo.invalid');
    const matched = matchRoute(method, pathname);
    const call: TruvideoCall = { method, route: matched.route ?? 'unknown', at: Date.now(), status: 0 };
    if (matched.uploadId !== undefined) call.uploadId = matched.uploadId;

    // A refusal is answered even under a reset-after fault: only a carried-out call loses its answer.
    const reply = await this.carryOut(async () => {
      const raw = await readBody(req, MAX_BODY_BYTES);
      if (raw.length > 0) call.body = loggedBody(raw);
      if (matched.problem) throw matched.problem;
      const route = matched.route!;
      const fault = this.takeFault(route);
      const preempted = this.preemption(fault, req);
      if (preempted) return preempted;
      if (route !== 'login') this.checkToken(req);
      const body = method === 'POST' ? jsonBody(req, raw) : undefined;
      const carriedOut = await this.dispatch(route, matched.uploadId ?? '', body);
      return fault?.kind === 'reset' ? 'reset' : carriedOut;
    });
    this.answer(req, res, call, reply);
  }

  protected problemReply(problem: HttpProblem): Reply {
    return { status: problem.status, body: { status: problem.status, message: problem.message } };
  }

  protected send(res: http.ServerResponse, reply: Reply): void {
    sendJson(res, reply, bearerChallenge(reply.status));
  }

  private checkToken(req: http.IncomingMessage): void {
    const header = req.headers.authorization;
    const token = /^Bearer (\S+)$/.exec(header ?? '')?.[1];
    if (!token)
      throw new HttpProblem(401, header === undefined ? 'missing Authorization header' : 'Authorization must be "Bearer <token>"');
    const expiresAt = this.tokens.get(token);
    if (expiresAt === undefined) throw new HttpProblem(401, 'invalid token');
    if (expiresAt <= Date.now()) throw new HttpProblem(401, 'token expired');
  }

  private async dispatch(route: TruvideoRoute, uploadId: string, body: unknown): Promise<Reply> {
    switch (route) {
      case 'login':
        return this.login(body);
      case 'start':
        return this.start(body);
      case 'presigned_urls':
        return this.moreUrls(this.session(uploadId), body);
      case 'get_upload':
        return { status: 200, body: details(this.view(this.session(uploadId))) };
      case 'complete':
        return this.complete(this.session(uploadId), body);
    }
  }

  private login(body: unknown): Reply {
    const { apiKey } = validate(loginSchema, body);
    if (apiKey !== this.opts.apiKey) throw new HttpProblem(401, 'invalid apiKey');
    const accessToken = randomBytes(24).toString('base64url');
    this.tokens.set(accessToken, Date.now() + this.tokenTtlMs);
    this.issuedTokens.push(accessToken);
    return { status: 200, body: { accessToken, expiresIn: Math.round(this.tokenTtlMs / 1000) } };
  }

  private async start(body: unknown): Promise<Reply> {
    const request = validate(startSchema, body);
    const title = request.media.title ?? null;
    const refusal = this.refusalOf(title, 'start');
    if (refusal) throw new HttpProblem(400, refusal.message);
    const mediaId = randomUUID();
    const sanitizedTitle = title === null ? null : title.replace(/[^A-Za-z0-9._-]/g, '_');
    const keyName = `media/${mediaId}/${sanitizedTitle || mediaId}.${request.media.fileType.toLowerCase()}`;
    const upload: TruvideoUpload = {
      uploadId: randomUUID(),
      mediaId,
      s3UploadId: this.store.createMultipartUpload(keyName),
      status: 'INITIALIZED',
      bucketName: this.store.bucket,
      keyName,
      fileUrl: null,
      creator: request.media.creator ?? null,
      title,
      sanitizedTitle,
      amountOfParts: request.amountOfParts,
      media: request.media,
      metadata: request.metadata ?? null,
      parts: [],
      failureReason: null,
    };
    this.sessions.set(upload.uploadId, upload);
    const first = Array.from({ length: Math.min(this.initialUrls, upload.amountOfParts) }, (_, i) => i + 1);
    return {
      status: 201,
      body: { uploadId: upload.uploadId, mediaId, status: upload.status, sanitizedTitle, presignedUrls: await this.presign(upload, first) },
    };
  }

  private async moreUrls(upload: TruvideoUpload, body: unknown): Promise<Reply> {
    const { partNumbers } = validate(moreUrlsSchema, body);
    partNumbers.forEach((n, i) => {
      if (n > upload.amountOfParts)
        throw new HttpProblem(400, `partNumbers[${i}]: ${n} is more than amountOfParts (${upload.amountOfParts})`);
      if (partNumbers.indexOf(n) !== i) throw new HttpProblem(400, `partNumbers[${i}]: duplicate part number ${n}`);
    });
    this.requireOpen(upload);
    return { status: 200, body: { uploadId: upload.uploadId, presignedUrls: await this.presign(upload, partNumbers) } };
  }

  /** Validates at once (contiguous parts, ETags as stored), answers 202, and assembles the object later. */
  private complete(upload: TruvideoUpload, body: unknown): Reply {
    const { parts } = validate(completeSchema, body);
    this.requireOpen(upload);
    const refusal = this.refusalOf(upload.title, 'complete');
    if (refusal) throw new HttpProblem(400, refusal.message);
    const stored = new Map(this.registeredParts(upload).map((p) => [p.partNumber, p]));
    parts.forEach((p, i) => {
      if (p.partNumber !== i + 1) throw new HttpProblem(400, `parts[${i}].partNumber: expected ${i + 1} (parts must be contiguous from 1)`);
      const held = stored.get(p.partNumber);
      if (!held) throw new HttpProblem(400, `parts[${i}]: part ${p.partNumber} was not uploaded`);
      if (held.eTag !== p.eTag.replace(/"/g, '').toLowerCase())
        throw new HttpProblem(400, `parts[${i}].eTag: does not match part ${p.partNumber} as uploaded`);
    });
    if (parts.length !== upload.amountOfParts) {
      throw new HttpProblem(400, `parts: ${parts.length} parts listed, the upload was started with amountOfParts ${upload.amountOfParts}`);
    }
    upload.parts = [...stored.values()].filter((p) => p.partNumber <= parts.length);
    upload.status = 'PENDING_COMPLETE';
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      this.finish(upload);
    }, this.completeDelayMs);
    this.timers.add(timer);
    return { status: 202, body: { uploadId: upload.uploadId, status: upload.status } };
  }

  /** The asynchronous end of a complete: the object is assembled, or the upload FAILED. */
  private finish(upload: TruvideoUpload): void {
    const injected = this.completionFailures.shift();
    try {
      if (injected !== undefined) {
        this.store.abortMultipartUpload(upload.keyName, upload.s3UploadId);
        upload.status = 'FAILED';
        upload.failureReason = injected;
        return;
      }
      this.store.completeMultipartUpload(
        upload.keyName,
        upload.s3UploadId,
        upload.parts.map((p) => p.eTag),
      );
      upload.status = 'COMPLETED';
      upload.fileUrl = `${this.store.publicOrigin}/${this.store.bucket}/${upload.keyName.split('/').map(encodeURIComponent).join('/')}`;
    } catch (err) {
      upload.status = 'FAILED';
      upload.failureReason = injected ?? (err instanceof S3Error ? `${err.code}: ${err.message}` : String(err));
    }
  }

  private refusalOf(title: string | null, at: 'start' | 'complete'): { message: string } | undefined {
    return title === null ? undefined : this.refusedTitles.find((r) => r.at === at && title.includes(r.substring));
  }

  private requireOpen(upload: TruvideoUpload): void {
    if (upload.status !== 'INITIALIZED' && upload.status !== 'PARTIAL') {
      throw new HttpProblem(409, `upload ${upload.uploadId} is ${upload.status}`);
    }
  }

  private session(uploadId: string): TruvideoUpload {
    const upload = this.sessions.get(uploadId);
    if (!upload) throw new HttpProblem(400, `Invalid uploadId: ${uploadId}`);
    return upload;
  }

  private async presign(upload: TruvideoUpload, partNumbers: number[]): Promise<Array<{ partNumber: number; url: string }>> {
    return Promise.all(
      partNumbers.map(async (n) => ({
        partNumber: n,
        url: await this.store.presignUploadPart(upload.keyName, upload.s3UploadId, n, this.urlExpiresSeconds),
      })),
    );
  }

  /** Parts whose PUT landed in the store, while the multipart upload is open; the completed list after. */
  private registeredParts(upload: TruvideoUpload): TruvideoPart[] {
    if (upload.status !== 'INITIALIZED' && upload.status !== 'PARTIAL') return upload.parts;
    return listParts(this.store, upload.keyName, upload.s3UploadId);
  }

  /** A copy of the upload as it stands now (PARTIAL once a part landed). */
  private view(upload: TruvideoUpload): TruvideoUpload {
    const parts = this.registeredParts(upload);
    const status = upload.status === 'INITIALIZED' && parts.length > 0 ? 'PARTIAL' : upload.status;
    return structuredClone({ ...upload, status, parts });
  }
}

/** The GET /upload/{uploadId} answer: the fields the document lists, and the original title. */
function details(u: TruvideoUpload): Record<string, unknown> {
  return {
    uploadId: u.uploadId,
    mediaId: u.mediaId,
    s3UploadId: u.s3UploadId,
    status: u.status,
    bucketName: u.bucketName,
    keyName: u.keyName,
    fileUrl: u.fileUrl,
    creator: u.creator,
    title: u.title,
    sanitizedTitle: u.sanitizedTitle,
    parts: u.parts,
    failureReason: u.failureReason,
  };
}

/** The parts S3 holds for an open multipart upload; none once it is gone. */
function listParts(store: S3Store, key: string, uploadId: string): TruvideoPart[] {
  if (!store.openMultipartUploads().some((u) => u.uploadId === uploadId && u.key === key)) return [];
  return store.listParts(key, uploadId).map((p) => ({ partNumber: p.partNumber, eTag: p.etag, size: p.size }));
}

function matchRoute(method: string, pathname: string): { route?: TruvideoRoute; uploadId?: string; problem?: HttpProblem } {
  const segments = pathname.split('/').slice(1);
  const only = (allowed: string, route: TruvideoRoute, uploadId?: string) =>
    method === allowed ? { route, uploadId } : { uploadId, problem: new HttpProblem(405, `method ${method} not allowed; use ${allowed}`) };
  if (segments.join('/') === 'auth/token') return only('POST', 'login');
  if (segments[0] !== 'upload' || segments.length < 2 || segments.length > 3 || segments[1] === '') {
    return { problem: new HttpProblem(404, `no route for ${method} ${pathname}`) };
  }
  if (segments.length === 2 && segments[1] === 'start') return only('POST', 'start');
  let uploadId: string;
  try {
    uploadId = decodeURIComponent(segments[1]!);
  } catch {
    return { problem: new HttpProblem(400, 'Invalid uploadId') };
  }
  if (segments.length === 2) return only('GET', 'get_upload', uploadId);
  if (segments[2] === 'complete') return only('POST', 'complete', uploadId);
  if (segments[2] === 'presigned-urls') return only('POST', 'presigned_urls', uploadId);
  return { problem: new HttpProblem(404, `no route for ${method} ${pathname}`) };
}
