/**
 * An S3-compatible object store for tests. It accepts only what real S3 accepts from a client holding
 * presigned URLs: SigV4 query signatures are verified independently of the SDK that minted them, so a
 * client that re-encodes the URL, adds unsigned headers, sends credentials of its own (an
 * Authorization header) or sends a chunked body fails here as it would against AWS.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import type { Socket } from 'node:net';
import https from 'node:https';
import { listen, type TlsIdentity } from './listen.js';
import os from 'node:os';
import path from 'node:path';
import { Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { PutObjectCommand, S3Client, UploadPartCommand } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';

export interface S3StoreOptions {
  host?: string;
  port?: number;
  /** Default: a fresh directory under os.tmpdir(), removed by close(). */
  dataDir?: string;
  region?: string;
  bucket?: string;
  /** Origin written into presigned URLs; default the server's own origin. Lets a fault proxy sit in between. */
  publicOrigin?: string;
  /** Serve HTTPS with this key and certificate (presigned URLs are then https://). Default: plain HTTP. */
  tls?: TlsIdentity;
}

export interface S3RequestRecord {
  method: string;
  /** The request target as received (path and query, signature included), byte for byte. */
  url: string;
  key: string;
  partNumber?: number;
  uploadId?: string;
  bytesReceived: number;
  /** 0 when the connection was destroyed instead of answered. */
  status: number;
  code?: string;
  /** S3's error message, when it refused the request (`Request has expired`…). */
  message?: string;
  /** Epoch milliseconds when the request arrived. */
  at: number;
  /**
   * Every header as received: names lower-cased, values untouched; a header sent more than once has
   * its values joined with ", " (taken from the raw headers, so that Node's dropping of repeated
   * Authorization headers hides none). Lets a test prove that no platform token reached S3.
   */
  headers: Readonly<Record<string, string>>;
}

/** Restricts a fault to PUTs of one key and/or one part number; absent fields match anything. */
export interface S3FaultMatch {
  key?: string;
  partNumber?: number;
}

export type S3Fault =
  /** `echo`: the error message gives the request line back, presigned query (signature) included. */
  (
    | { kind: 'status'; status: number; code: string; echo?: boolean }
    | { kind: 'reset-midbody'; afterBytes: number }
    | { kind: 'reset-before' }
    | { kind: 'stall' }
    /**
     * The body is stored as sent (ListParts and completion see its true MD5), but the PUT is answered
     * with a well-formed ETag that is not its MD5: a client that trusts the answer confirms or
     * completes with an ETag S3 does not hold.
     */
    | { kind: 'wrong-etag' }
    /**
     * The body is corrupted on its way in: one byte (at `atByte`, default the middle one; clamped to
     * the last) has its bits inverted before it is stored and hashed, so the ETag answered is the MD5
     * of the corrupt bytes, as S3 answers for data damaged before it arrived. Only a client comparing
     * that ETag with the MD5 of its own bytes notices. An empty body has no byte to corrupt.
     */
    | { kind: 'corrupt'; atByte?: number }
    /**
     * The body is stored and recorded as accepted (status 200, ListParts sees it), but the answer
     * never leaves: the connection stays open until the client gives up, as when the answer is
     * lost after S3 kept the part. Lets a SIGKILL land between the two.
     */
    | { kind: 'hold-answer' }
  ) &
    S3FaultMatch;

/** A presigned URL as the store minted it: for which object (and part), and when. */
export interface PresignedUrl {
  url: string;
  key: string;
  partNumber?: number;
  uploadId?: string;
  /** Epoch milliseconds when it was minted. */
  at: number;
}

export interface S3Store {
  /** Where the server really listens. */
  readonly origin: string;
  /** What presigned URLs point at (origin unless publicOrigin was given). */
  readonly publicOrigin: string;
  readonly bucket: string;
  presignPutObject(key: string, expiresInSeconds: number): Promise<string>;
  createMultipartUpload(key: string): string;
  presignUploadPart(key: string, uploadId: string, partNumber: number, expiresInSeconds: number): Promise<string>;
  completeMultipartUpload(key: string, uploadId: string, etags: string[]): { etag: string };
  abortMultipartUpload(key: string, uploadId: string): void;
  hasObject(key: string): boolean;
  objectSize(key: string): number;
  objectSha256(key: string): Promise<string>;
  openMultipartUploads(): Array<{ key: string; uploadId: string; parts: number[] }>;
  /** S3 ListParts: the parts an open multipart upload holds, with their ETags (unquoted MD5). */
  listParts(key: string, uploadId: string): Array<{ partNumber: number; etag: string; size: number }>;
  readonly requests: S3RequestRecord[];
  /** Requests that arrived and are not yet answered or given up (a part on the wire, or held by the latency). */
  readonly inProgress: number;
  /** Every presigned URL handed out, in order, for checking that no signature leaks. */
  readonly presignedUrls: readonly string[];
  /** The same URLs with what each was minted for, and when. */
  readonly presigned: readonly PresignedUrl[];
  injectFaults(...faults: S3Fault[]): void;
  /** Every successful PUT is answered this many ms after its body arrived (a slow uplink, made visible). */
  setLatency(ms: number): void;
  /** For a proxy started after the store: later presigned URLs point at this origin. */
  setPublicOrigin(origin: string): void;
  /** TCP connections accepted so far: what a test compares with the connections a proxy opened. */
  readonly connections: number;
  close(): Promise<void>;
}

export class S3Error extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** Extra elements of S3's XML error document (Key, HeadersNotSigned, ServerTime…). */
    readonly details: Readonly<Record<string, string>> = {},
  ) {
    super(message);
    this.name = 'S3Error';
  }
}

// Fake, but shaped like real credentials so that anything masking secrets sees a realistic value.
const ACCESS_KEY_ID = 'AKIAALOEMULATOR00001';
const SECRET_ACCESS_KEY = 'emulatorSecretKey/0000000000000000000000';
const ALGORITHM = 'AWS4-HMAC-SHA256';
const UNSIGNED_PAYLOAD = 'UNSIGNED-PAYLOAD';
/** What makes a request query-authenticated (SigV4 and SigV2 presigned URLs). */
const QUERY_AUTH_PARAMS = new Set(['X-Amz-Algorithm', 'X-Amz-Credential', 'X-Amz-Signature', 'Signature', 'AWSAccessKeyId']);
const MIN_PART_SIZE = 5 * 1024 * 1024;
const MAX_PART_SIZE = 5 * 1024 * 1024 * 1024;
const MAX_PART_NUMBER = 10_000;
const MAX_EXPIRES_SECONDS = 604_800;
// S3 tolerates this much clock skew for requests dated in the future.
const MAX_CLOCK_SKEW_MS = 15 * 60 * 1000;

const INCOMPLETE_BODY_MESSAGE = 'You did not provide the number of bytes specified by the Content-Length HTTP header';
const NO_SUCH_UPLOAD_MESSAGE =
  'The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.';

interface StoredBlob {
  file: string;
  size: number;
  md5: Buffer;
}

interface StoredObject {
  blobs: StoredBlob[];
  size: number;
  etag: string;
}

interface MultipartUpload {
  key: string;
  uploadId: string;
  parts: Map<number, StoredBlob>;
}

interface RequestTarget {
  rawPath: string;
  query: Array<[string, string]>;
  key: string;
}

interface PutPlan {
  key: string;
  contentLength: number;
  part?: { uploadId: string; partNumber: number };
}

export async function startS3Store(opts: S3StoreOptions = {}): Promise<S3Store> {
  const ownsDataDir = opts.dataDir === undefined;
  const dataDir = opts.dataDir ?? (await mkdtemp(path.join(os.tmpdir(), 's3-store-')));
  await mkdir(path.join(dataDir, 'blobs'), { recursive: true });
  const store = new S3StoreServer(dataDir, ownsDataDir, opts.region ?? 'us-east-1', opts.bucket ?? 'alo-media', opts.tls);
  await store.listen(opts.host ?? '127.0.0.1', opts.port ?? 0, opts.publicOrigin);
  return store;
}

class S3StoreServer implements S3Store {
  readonly requests: S3RequestRecord[] = [];
  inProgress = 0;
  readonly presigned: PresignedUrl[] = [];
  private readonly server: http.Server | https.Server;
  connections = 0;
  private readonly objects = new Map<string, StoredObject>();
  private readonly sha256s = new WeakMap<StoredObject, Promise<string>>();
  private readonly uploads = new Map<string, MultipartUpload>();
  private readonly faults: S3Fault[] = [];
  /** Blobs being read (objectSha256) → readers; a blob discarded meanwhile is removed by its last reader. */
  private readonly readers = new Map<StoredBlob, number>();
  private readonly discardedWhileRead = new Set<StoredBlob>();
  private latencyMs = 0;
  private client: S3Client | undefined;
  private originValue = '';
  private publicOriginValue = '';

  constructor(
    private readonly dataDir: string,
    private readonly ownsDataDir: boolean,
    private readonly region: string,
    readonly bucket: string,
    tls: TlsIdentity | undefined,
  ) {
    const serve = (req: http.IncomingMessage, res: http.ServerResponse, expectContinue: boolean) => {
      this.inProgress++;
      this.handle(req, res, expectContinue)
        .catch((err: unknown) => {
          if (!res.headersSent && !res.destroyed) {
            res.writeHead(500, { 'content-type': 'application/xml' });
            res.end(errorXml('InternalError', err instanceof Error ? err.message : String(err), {}));
          }
        })
        .finally(() => this.inProgress--);
    };
    this.server = tls
      ? https.createServer(tls, (req, res) => serve(req, res, false))
      : http.createServer((req, res) => serve(req, res, false));
    this.server.on('connection', () => this.connections++);
    // Like S3, refuse a request that waits for 100-continue before its body is sent, not after.
    this.server.on('checkContinue', (req: http.IncomingMessage, res: http.ServerResponse) => serve(req, res, true));
    // Real S3 lets a slow upload run for hours; Node's default 5-minute request timeout would not.
    this.server.requestTimeout = 0;
    // Node's parser, not handle(), sees a client that half-closes before sending Content-Length bytes;
    // answer it in S3's words rather than with Node's bare 400.
    this.server.on('clientError', (err: NodeJS.ErrnoException, duplex) => {
      const socket = duplex as Socket;
      if (socket.writable && socket.bytesWritten === 0) {
        const body =
          err.code === 'HPE_INVALID_EOF_STATE'
            ? errorXml('IncompleteBody', INCOMPLETE_BODY_MESSAGE, {})
            : errorXml('BadRequest', 'An error occurred when parsing the HTTP request.', {});
        socket.end(
          `HTTP/1.1 400 Bad Request\r\nContent-Type: application/xml\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
        );
      }
      socket.destroySoon();
    });
  }

  get origin(): string {
    return this.originValue;
  }

  get presignedUrls(): string[] {
    return this.presigned.map((p) => p.url);
  }

  get publicOrigin(): string {
    return this.publicOriginValue;
  }

  async listen(host: string, port: number, publicOrigin: string | undefined): Promise<void> {
    this.originValue = await listen(this.server, host, port);
    this.setPublicOrigin(publicOrigin ?? this.originValue);
  }

  setPublicOrigin(origin: string): void {
    // The SDK warns on every process started under Node 20; that noise says nothing about the tests.
    process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';
    this.client?.destroy();
    this.publicOriginValue = new URL(origin).origin;
    this.client = new S3Client({
      region: this.region,
      endpoint: this.publicOriginValue,
      forcePathStyle: true,
      credentials: { accessKeyId: ACCESS_KEY_ID, secretAccessKey: SECRET_ACCESS_KEY },
      // Newer SDKs otherwise sign a CRC32 of an empty body into PutObject URLs, which no real upload matches.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
  }

  async presignPutObject(key: string, expiresInSeconds: number): Promise<string> {
    const url = await getSignedUrl(this.requireClient(), new PutObjectCommand({ Bucket: this.bucket, Key: key }), {
      expiresIn: expiresInSeconds,
    });
    this.presigned.push({ url, key, at: Date.now() });
    return assertHostOnlySignature(url);
  }

  async presignUploadPart(key: string, uploadId: string, partNumber: number, expiresInSeconds: number): Promise<string> {
    const command = new UploadPartCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId, PartNumber: partNumber });
    const url = await getSignedUrl(this.requireClient(), command, { expiresIn: expiresInSeconds });
    this.presigned.push({ url, key, partNumber, uploadId, at: Date.now() });
    return assertHostOnlySignature(url);
  }

  createMultipartUpload(key: string): string {
    // Real upload ids are long base64-like strings with '.' and '_' in them.
    const uploadId = randomBytes(96).toString('base64').replace(/\+/g, '.').replace(/\//g, '_').replace(/=+$/, '');
    this.uploads.set(uploadId, { key, uploadId, parts: new Map() });
    return uploadId;
  }

  completeMultipartUpload(key: string, uploadId: string, etags: string[]): { etag: string } {
    const upload = this.uploads.get(uploadId);
    if (!upload || upload.key !== key) throw new S3Error(404, 'NoSuchUpload', NO_SUCH_UPLOAD_MESSAGE);
    if (etags.length === 0) {
      throw new S3Error(400, 'MalformedXML', 'The XML you provided was not well-formed or did not validate against our published schema.');
    }
    const listed: StoredBlob[] = [];
    etags.forEach((etag, index) => {
      const part = upload.parts.get(index + 1);
      if (!part || part.md5.toString('hex') !== etag.replace(/^"|"$/g, '').toLowerCase()) {
        throw new S3Error(
          400,
          'InvalidPart',
          "One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not have matched the part's entity tag.",
        );
      }
      listed.push(part);
    });
    listed.forEach((part, index) => {
      if (index < listed.length - 1 && part.size < MIN_PART_SIZE) {
        throw new S3Error(400, 'EntityTooSmall', 'Your proposed upload is smaller than the minimum allowed size');
      }
    });
    const etag = `"${md5Hex(Buffer.concat(listed.map((p) => p.md5)))}-${listed.length}"`;
    const size = listed.reduce((sum, p) => sum + p.size, 0);
    this.uploads.delete(uploadId);
    const kept = new Set(listed);
    this.discard([...upload.parts.values()].filter((p) => !kept.has(p)));
    this.replaceObject(key, { blobs: listed, size, etag });
    return { etag };
  }

  abortMultipartUpload(key: string, uploadId: string): void {
    const upload = this.uploads.get(uploadId);
    if (!upload || upload.key !== key) throw new S3Error(404, 'NoSuchUpload', NO_SUCH_UPLOAD_MESSAGE);
    this.uploads.delete(uploadId);
    this.discard([...upload.parts.values()]);
  }

  hasObject(key: string): boolean {
    return this.objects.has(key);
  }

  objectSize(key: string): number {
    return this.requireObject(key).size;
  }

  async objectSha256(key: string): Promise<string> {
    const object = this.requireObject(key);
    // An object never changes once stored (a PUT or a completion replaces it whole): hashed once,
    // however often a test polls it.
    let sha256 = this.sha256s.get(object);
    if (!sha256) {
      sha256 = this.hashObject(object);
      this.sha256s.set(object, sha256);
      void sha256.catch(() => this.sha256s.delete(object));
    }
    return sha256;
  }

  private async hashObject(object: StoredObject): Promise<string> {
    // Like a GET on S3, a read sees the object as it was when it began, even if a PUT or a
    // completion replaces it meanwhile: its blobs stay on disk until the read is done.
    for (const blob of object.blobs) this.readers.set(blob, (this.readers.get(blob) ?? 0) + 1);
    try {
      const hash = createHash('sha256');
      for (const blob of object.blobs) {
        for await (const chunk of createReadStream(blob.file)) hash.update(chunk as Buffer);
      }
      return hash.digest('hex');
    } finally {
      for (const blob of object.blobs) {
        const left = (this.readers.get(blob) ?? 1) - 1;
        if (left > 0) {
          this.readers.set(blob, left);
          continue;
        }
        this.readers.delete(blob);
        if (this.discardedWhileRead.delete(blob)) this.discard([blob]);
      }
    }
  }

  listParts(key: string, uploadId: string): Array<{ partNumber: number; etag: string; size: number }> {
    const upload = this.uploads.get(uploadId);
    if (!upload || upload.key !== key) throw new S3Error(404, 'NoSuchUpload', NO_SUCH_UPLOAD_MESSAGE);
    return [...upload.parts.entries()]
      .sort(([a], [b]) => a - b)
      .map(([partNumber, blob]) => ({ partNumber, etag: blob.md5.toString('hex'), size: blob.size }));
  }

  openMultipartUploads(): Array<{ key: string; uploadId: string; parts: number[] }> {
    return [...this.uploads.values()].map((u) => ({
      key: u.key,
      uploadId: u.uploadId,
      parts: [...u.parts.keys()].sort((a, b) => a - b),
    }));
  }

  injectFaults(...faults: S3Fault[]): void {
    this.faults.push(...faults);
  }

  setLatency(ms: number): void {
    this.latencyMs = ms;
  }

  async close(): Promise<void> {
    this.client?.destroy();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
    if (this.ownsDataDir) await rm(this.dataDir, { recursive: true, force: true });
  }

  private requireClient(): S3Client {
    if (!this.client) throw new Error('S3 store is not listening');
    return this.client;
  }

  private requireObject(key: string): StoredObject {
    const object = this.objects.get(key);
    if (!object) throw new S3Error(404, 'NoSuchKey', `The specified key does not exist: ${key}`);
    return object;
  }

  private replaceObject(key: string, object: StoredObject): void {
    const previous = this.objects.get(key);
    this.objects.set(key, object);
    if (previous) this.discard(previous.blobs);
  }

  private discard(blobs: StoredBlob[]): void {
    for (const blob of blobs) {
      if (this.readers.has(blob)) this.discardedWhileRead.add(blob);
      else void rm(blob.file, { force: true }).catch(() => undefined);
    }
  }

  private takeFault(plan: PutPlan): S3Fault | undefined {
    const index = this.faults.findIndex(
      (f) => (f.key === undefined || f.key === plan.key) && (f.partNumber === undefined || f.partNumber === plan.part?.partNumber),
    );
    return index < 0 ? undefined : this.faults.splice(index, 1)[0];
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse, expectContinue: boolean): Promise<void> {
    const record: S3RequestRecord = {
      method: req.method ?? '',
      url: req.url ?? '',
      key: '',
      bytesReceived: 0,
      status: 0,
      at: Date.now(),
      headers: receivedHeaders(req),
    };
    let plan: PutPlan;
    try {
      plan = this.admit(req, record);
    } catch (err) {
      if (!(err instanceof S3Error)) throw err;
      this.answerError(req, res, record, err);
      return;
    }

    const fault = this.takeFault(plan);
    if (fault?.kind === 'reset-before' || (fault?.kind === 'reset-midbody' && fault.afterBytes <= 0)) {
      this.reset(req, record);
      return;
    }
    if (expectContinue) res.writeContinue();
    const resetAfter = fault?.kind === 'reset-midbody' ? fault.afterBytes : Infinity;
    const corruptAt =
      fault?.kind === 'corrupt' && plan.contentLength > 0
        ? Math.min(Math.max(fault.atByte ?? Math.floor(plan.contentLength / 2), 0), plan.contentLength - 1)
        : -1;
    let injectedReset = false;
    const md5 = createHash('md5');
    const meter = new Transform({
      transform: (chunk: Buffer, _encoding, callback) => {
        const room = resetAfter - record.bytesReceived;
        if (chunk.length >= room) {
          record.bytesReceived += room;
          injectedReset = true;
          this.reset(req, record);
          callback(new Error('injected reset'));
          return;
        }
        const start = record.bytesReceived;
        record.bytesReceived += chunk.length;
        if (corruptAt >= start && corruptAt < record.bytesReceived) {
          // A copy: the chunk may be a view of a buffer that is not ours to change.
          const damaged = Buffer.from(chunk);
          const at = corruptAt - start;
          damaged[at] = damaged[at]! ^ 0xff;
          chunk = damaged;
        }
        md5.update(chunk);
        callback(null, chunk);
      },
    });

    if (fault?.kind === 'stall') {
      // Reads the whole body, then never answers: the client's own timeout must fire.
      await pipeline(req, meter, discardSink()).catch(() => undefined);
      record.status = 0;
      record.code = 'Stalled';
      this.requests.push(record);
      return;
    }

    if (fault?.kind === 'status') {
      // A throttled or failing S3 still reads the whole body before it answers.
      try {
        await pipeline(req, meter, discardSink());
      } catch {
        if (!injectedReset) this.recordAbort(req, res, record);
        return;
      }
      const message = fault.echo ? `${faultMessage(fault.code)} (request: ${req.method} ${req.url})` : faultMessage(fault.code);
      this.answerError(req, res, record, new S3Error(fault.status, fault.code, message));
      return;
    }

    const file = path.join(this.dataDir, 'blobs', randomBytes(12).toString('hex'));
    try {
      await pipeline(req, meter, createWriteStream(file));
    } catch {
      await rm(file, { force: true }).catch(() => undefined);
      if (!injectedReset) this.recordAbort(req, res, record);
      return;
    }
    if (record.bytesReceived !== plan.contentLength) {
      await rm(file, { force: true });
      this.answerError(req, res, record, incompleteBody(plan.contentLength, record.bytesReceived));
      return;
    }

    const blob: StoredBlob = { file, size: record.bytesReceived, md5: md5.digest() };
    if (plan.part) {
      // The upload may have been completed or aborted while this part was in flight.
      const upload = this.uploads.get(plan.part.uploadId);
      if (!upload || upload.key !== plan.key) {
        await rm(file, { force: true });
        this.answerError(req, res, record, new S3Error(404, 'NoSuchUpload', NO_SUCH_UPLOAD_MESSAGE));
        return;
      }
      const previous = upload.parts.get(plan.part.partNumber);
      upload.parts.set(plan.part.partNumber, blob);
      if (previous) this.discard([previous]);
    } else {
      this.replaceObject(plan.key, { blobs: [blob], size: blob.size, etag: `"${blob.md5.toString('hex')}"` });
    }
    if (this.latencyMs > 0) await new Promise((r) => setTimeout(r, this.latencyMs));
    record.status = 200;
    if (fault?.kind === 'wrong-etag') record.code = 'InjectedWrongETag';
    if (fault?.kind === 'corrupt') record.code = 'InjectedCorruption';
    if (fault?.kind === 'hold-answer') record.code = 'AnswerHeld';
    this.requests.push(record);
    if (fault?.kind === 'hold-answer') return; // kept; the answer never leaves
    // Still 32 lower-case hex digits, quoted: nothing in its form tells it from a true ETag.
    const answered =
      fault?.kind === 'wrong-etag' ? md5Hex(Buffer.concat([Buffer.from('not this body:'), blob.md5])) : blob.md5.toString('hex');
    res.writeHead(200, {
      etag: `"${answered}"`,
      'content-length': '0',
      'x-amz-request-id': requestId(),
      server: 'AmazonS3',
    });
    res.end();
  }

  /** Everything S3 decides from the request line and headers, before a byte of the body is read. */
  private admit(req: http.IncomingMessage, record: S3RequestRecord): PutPlan {
    const target = this.parseTarget(req.url ?? '');
    record.key = target.key;
    const queryValue = (name: string) => target.query.find(([k]) => k === name)?.[1];
    const partNumberText = queryValue('partNumber');
    const uploadId = queryValue('uploadId');
    if (uploadId !== undefined) record.uploadId = uploadId;
    if (partNumberText !== undefined && /^\d+$/.test(partNumberText)) record.partNumber = Number(partNumberText);

    if (req.method !== 'PUT') {
      throw new S3Error(405, 'MethodNotAllowed', 'The specified method is not allowed against this resource.');
    }
    if (/\bchunked\b/i.test(req.headers['transfer-encoding'] ?? '')) {
      throw new S3Error(501, 'NotImplemented', 'A header you provided implies functionality that is not implemented');
    }
    const contentLengthText = req.headers['content-length'];
    if (contentLengthText === undefined) {
      throw new S3Error(411, 'MissingContentLength', 'You must provide the Content-Length HTTP header.');
    }
    this.verifySignature(req, target);
    if (target.key === '') throw new S3Error(400, 'InvalidRequest', 'A key is required for this request.');

    const contentLength = Number(contentLengthText);
    const plan: PutPlan = { key: target.key, contentLength };
    if (partNumberText !== undefined || uploadId !== undefined) {
      if (uploadId === undefined || uploadId === '') {
        throw new S3Error(400, 'InvalidRequest', 'partNumber requires an uploadId.');
      }
      const partNumber = record.partNumber;
      if (partNumber === undefined || partNumber < 1 || partNumber > MAX_PART_NUMBER) {
        throw new S3Error(400, 'InvalidArgument', 'Part number must be an integer between 1 and 10000, inclusive');
      }
      const upload = this.uploads.get(uploadId);
      if (!upload || upload.key !== target.key) throw new S3Error(404, 'NoSuchUpload', NO_SUCH_UPLOAD_MESSAGE);
      plan.part = { uploadId, partNumber };
    }
    if (contentLength > MAX_PART_SIZE) {
      throw new S3Error(400, 'EntityTooLarge', 'Your proposed upload exceeds the maximum allowed size');
    }
    return plan;
  }

  private parseTarget(rawUrl: string): RequestTarget {
    if (!rawUrl.startsWith('/')) throw new S3Error(400, 'InvalidURI', "Couldn't parse the specified URI.");
    const queryStart = rawUrl.indexOf('?');
    const rawPath = queryStart < 0 ? rawUrl : rawUrl.slice(0, queryStart);
    const rawQuery = queryStart < 0 ? '' : rawUrl.slice(queryStart + 1);
    const query = rawQuery
      .split('&')
      .filter((pair) => pair !== '')
      .map((pair): [string, string] => {
        const eq = pair.indexOf('=');
        return eq < 0 ? [uriDecode(pair), ''] : [uriDecode(pair.slice(0, eq)), uriDecode(pair.slice(eq + 1))];
      });
    const slash = rawPath.indexOf('/', 1);
    const bucket = uriDecode(slash < 0 ? rawPath.slice(1) : rawPath.slice(1, slash));
    if (bucket !== this.bucket) throw new S3Error(404, 'NoSuchBucket', 'The specified bucket does not exist');
    const key = slash < 0 ? '' : uriDecode(rawPath.slice(slash + 1));
    return { rawPath, query, key };
  }

  private verifySignature(req: http.IncomingMessage, target: RequestTarget): void {
    const param = (name: string) => target.query.find(([k]) => k === name)?.[1];
    const authorization = req.headers['authorization'];
    if (authorization !== undefined) {
      // S3 decides how a request authenticates before it checks anything else: query parameters
      // and an Authorization header together are refused whatever either holds, and S3 echoes the
      // header's value back in the error (as real S3 does: a leaked token ends up in that body).
      const details = { ArgumentName: 'Authorization', ArgumentValue: authorization };
      const queryAuth = target.query.some(([k]) => QUERY_AUTH_PARAMS.has(k));
      if (queryAuth) {
        throw new S3Error(
          400,
          'InvalidArgument',
          'Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified',
          details,
        );
      }
      if (!authorization.startsWith(`${ALGORITHM} `) && !authorization.startsWith('AWS ')) {
        throw new S3Error(400, 'InvalidArgument', 'Unsupported Authorization Type', details);
      }
      // A well-formed SigV4/SigV2 header: this store hands out presigned URLs only and knows no header signing.
      throw new S3Error(403, 'AccessDenied', 'Access Denied');
    }
    const algorithm = param('X-Amz-Algorithm');
    const credential = param('X-Amz-Credential');
    const amzDate = param('X-Amz-Date');
    const expiresText = param('X-Amz-Expires');
    const signedHeadersText = param('X-Amz-SignedHeaders');
    const signature = param('X-Amz-Signature');
    if ([algorithm, credential, amzDate, expiresText, signedHeadersText, signature].every((v) => v === undefined)) {
      throw new S3Error(403, 'AccessDenied', 'Access Denied');
    }
    if (
      algorithm === undefined ||
      credential === undefined ||
      amzDate === undefined ||
      expiresText === undefined ||
      signedHeadersText === undefined ||
      signature === undefined
    ) {
      throw new S3Error(
        403,
        'AccessDenied',
        'Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.',
      );
    }
    if (algorithm !== ALGORITHM) {
      throw new S3Error(403, 'AccessDenied', `X-Amz-Algorithm only supports "${ALGORITHM}"`);
    }
    const dateMs = parseAmzDate(amzDate);
    if (dateMs === undefined) {
      throw new S3Error(403, 'AccessDenied', "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"");
    }
    const expires = /^\d+$/.test(expiresText) ? Number(expiresText) : NaN;
    if (!(expires >= 1 && expires <= MAX_EXPIRES_SECONDS)) {
      throw new S3Error(403, 'AccessDenied', 'X-Amz-Expires must be between 1 and 604800 seconds');
    }
    const [accessKeyId, scopeDate, scopeRegion, scopeService, terminator, ...extra] = credential.split('/');
    if (accessKeyId !== ACCESS_KEY_ID) {
      throw new S3Error(403, 'InvalidAccessKeyId', 'The AWS Access Key Id you provided does not exist in our records.');
    }
    if (
      extra.length > 0 ||
      scopeDate !== amzDate.slice(0, 8) ||
      scopeService !== 's3' ||
      terminator !== 'aws4_request' ||
      scopeRegion === undefined
    ) {
      throw new S3Error(403, 'AccessDenied', `Error parsing the X-Amz-Credential parameter: ${credential}`);
    }
    if (scopeRegion !== this.region) {
      throw new S3Error(
        403,
        'AccessDenied',
        `Error parsing the X-Amz-Credential parameter; the region '${scopeRegion}' is wrong; expecting '${this.region}'`,
      );
    }
    const signedHeaders = signedHeadersText.split(';');
    if (!signedHeaders.includes('host') || signedHeaders.some((h) => h === '' || h !== h.toLowerCase())) {
      throw new S3Error(403, 'AccessDenied', 'X-Amz-SignedHeaders must contain the host header, in lower case');
    }
    if (!/^[0-9a-f]{64}$/.test(signature)) {
      throw new S3Error(403, 'AccessDenied', 'X-Amz-Signature must be 64 lower-case hexadecimal characters');
    }
    const payloadHash = param('X-Amz-Content-Sha256') ?? UNSIGNED_PAYLOAD;
    if (payloadHash !== UNSIGNED_PAYLOAD) {
      throw new S3Error(403, 'AccessDenied', 'This store only accepts presigned URLs with an UNSIGNED-PAYLOAD');
    }

    const unsigned = Object.keys(req.headers).filter(
      (name) => (name === 'content-md5' || name.startsWith('x-amz-')) && !signedHeaders.includes(name),
    );
    if (unsigned.length > 0) {
      throw new S3Error(403, 'AccessDenied', 'There were headers present in the request which were not signed', {
        HeadersNotSigned: unsigned.join(', '),
      });
    }

    const canonicalQuery = target.query
      .filter(([k]) => k !== 'X-Amz-Signature')
      .map(([k, v]): [string, string] => [rfc3986(k), rfc3986(v)])
      .sort(([ka, va], [kb, vb]) => (ka < kb ? -1 : ka > kb ? 1 : va < vb ? -1 : va > vb ? 1 : 0))
      .map(([k, v]) => `${k}=${v}`)
      .join('&');
    const canonicalHeaders = signedHeaders.map((name) => `${name}:${headerValue(req, name)}\n`).join('');
    const canonicalRequest = [req.method ?? '', target.rawPath, canonicalQuery, canonicalHeaders, signedHeadersText, payloadHash].join(
      '\n',
    );
    const scope = `${scopeDate}/${scopeRegion}/s3/aws4_request`;
    const stringToSign = [ALGORITHM, amzDate, scope, sha256Hex(canonicalRequest)].join('\n');
    const signingKey = ['s3', 'aws4_request'].reduce(
      (key, part) => hmac(key, part),
      hmac(hmac(`AWS4${SECRET_ACCESS_KEY}`, scopeDate), scopeRegion),
    );
    const expected = hmac(signingKey, stringToSign);
    if (!timingSafeEqual(expected, Buffer.from(signature, 'hex'))) {
      throw new S3Error(
        403,
        'SignatureDoesNotMatch',
        'The request signature we calculated does not match the signature you provided. Check your key and signing method.',
        { StringToSign: stringToSign, CanonicalRequest: canonicalRequest },
      );
    }

    const now = Date.now();
    if (now > dateMs + expires * 1000) {
      throw new S3Error(403, 'AccessDenied', 'Request has expired', {
        'X-Amz-Expires': String(expires),
        Expires: new Date(dateMs + expires * 1000).toISOString(),
        ServerTime: new Date(now).toISOString(),
      });
    }
    if (dateMs > now + MAX_CLOCK_SKEW_MS) {
      throw new S3Error(403, 'AccessDenied', 'Request is not yet valid');
    }
  }

  private answerError(req: http.IncomingMessage, res: http.ServerResponse, record: S3RequestRecord, err: S3Error): void {
    record.status = err.status;
    record.code = err.code;
    record.message = err.message;
    this.requests.push(record);
    const body = errorXml(err.code, err.message, { ...(record.key ? { Key: record.key } : {}), ...err.details });
    res.writeHead(err.status, {
      'content-type': 'application/xml',
      'content-length': String(Buffer.byteLength(body)),
      'x-amz-request-id': requestId(),
      server: 'AmazonS3',
    });
    res.end(body);
    // Discard whatever of the body is still coming so that the connection stays usable.
    req.resume();
  }

  /** The client went away before sending Content-Length bytes. */
  private recordAbort(req: http.IncomingMessage, res: http.ServerResponse, record: S3RequestRecord): void {
    const declared = Number(req.headers['content-length']);
    const err = incompleteBody(declared, record.bytesReceived);
    if (res.writable && !res.headersSent && !req.socket.destroyed) {
      this.answerError(req, res, record, err);
      return;
    }
    record.status = err.status;
    record.code = err.code;
    this.requests.push(record);
  }

  private reset(req: http.IncomingMessage, record: S3RequestRecord): void {
    record.status = 0;
    record.code = 'InjectedReset';
    this.requests.push(record);
    req.socket.destroy();
  }
}

function incompleteBody(declared: number, received: number): S3Error {
  return new S3Error(400, 'IncompleteBody', INCOMPLETE_BODY_MESSAGE, {
    NumberBytesExpected: String(declared),
    NumberBytesProvided: String(received),
  });
}

function faultMessage(code: string): string {
  switch (code) {
    case 'SlowDown':
      return 'Please reduce your request rate.';
    case 'InternalError':
      return 'We encountered an internal error. Please try again.';
    case 'ServiceUnavailable':
      return 'Service is unable to handle request.';
    case 'RequestTimeout':
      return 'Your socket connection to the server was not read from or written to within the timeout period. Idle connections will be closed.';
    default:
      return `Injected fault ${code}`;
  }
}

function assertHostOnlySignature(url: string): string {
  const params = new URL(url).searchParams;
  const checksumParams = [...params.keys()].filter((k) => /checksum/i.test(k));
  if (checksumParams.length > 0 || params.get('X-Amz-SignedHeaders') !== 'host') {
    // Such a URL would demand headers or a body checksum that a plain presigned PUT never carries.
    throw new Error(`presigned URL signs more than the host: ${[...params.keys()].join(', ')}`);
  }
  return url;
}

function receivedHeaders(req: http.IncomingMessage): Record<string, string> {
  // A Map first: a header named like an Object.prototype member must not collide with it.
  const headers = new Map<string, string>();
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = (req.rawHeaders[i] ?? '').toLowerCase();
    const value = req.rawHeaders[i + 1] ?? '';
    const earlier = headers.get(name);
    headers.set(name, earlier === undefined ? value : `${earlier}, ${value}`);
  }
  return Object.fromEntries(headers);
}

function parseAmzDate(value: string): number | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(value);
  if (!m) return undefined;
  const ms = Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]));
  return Number.isNaN(ms) ? undefined : ms;
}

function headerValue(req: http.IncomingMessage, name: string): string {
  const values: string[] = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    if (req.rawHeaders[i]?.toLowerCase() === name) values.push((req.rawHeaders[i + 1] ?? '').trim().replace(/\s+/g, ' '));
  }
  return values.join(',');
}

function uriDecode(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    throw new S3Error(400, 'InvalidURI', "Couldn't parse the specified URI.");
  }
}

function rfc3986(value: string): string {
  return encodeURIComponent(value).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function hmac(key: string | Buffer, data: string): Buffer {
  return createHmac('sha256', key).update(data, 'utf8').digest();
}

function sha256Hex(data: string): string {
  return createHash('sha256').update(data, 'utf8').digest('hex');
}

function md5Hex(data: Buffer): string {
  return createHash('md5').update(data).digest('hex');
}

function requestId(): string {
  return randomBytes(8).toString('hex').toUpperCase();
}

function xmlEscape(value: string): string {
  return value.replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

function errorXml(code: string, message: string, details: Record<string, string>): string {
  const extra = Object.entries(details)
    .map(([name, value]) => `<${name}>${xmlEscape(value)}</${name}>`)
    .join('');
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${xmlEscape(code)}</Code><Message>${xmlEscape(message)}</Message>${extra}<RequestId>${requestId()}</RequestId></Error>`;
}

function discardSink(): Writable {
  return new Writable({
    write: (_chunk, _encoding, callback) => callback(),
  });
}
