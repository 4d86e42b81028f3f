/**
 * A null S3 sink for benchmarks: an S3-compatible HTTP server on 127.0.0.1 that costs every client
 * the same. Each request body is streamed through MD5 and discarded (never held in memory), and the
 * answer is what S3 would give: the ETag is that MD5, multipart uploads get an UploadId and a
 * multipart ETag, HeadObject and the listings report what was received. It does not verify
 * signatures (presigned query strings and Authorization headers are both accepted) and keeps no
 * bytes, only each object's size, ETag and metadata.
 *
 * It also offers the part of the test S3 store that the ALO emulator calls (`AloStore`), so that
 * `startAloEmulator({ store: sink })` hands the daemon presigned URLs pointing here: the same sink
 * then receives the daemon's bytes and those of rclone or the aws CLI.
 *
 * Addressing is path-style only (`http://127.0.0.1:PORT/bucket/key`), for one bucket.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { S3Error, type S3Store } from '../test/emulators/s3-store.js';

/** What the ALO emulator calls on its store; the sink implements exactly these. */
export type AloStore = Pick<
  S3Store,
  | 'createMultipartUpload'
  | 'presignUploadPart'
  | 'presignPutObject'
  | 'completeMultipartUpload'
  | 'abortMultipartUpload'
  | 'openMultipartUploads'
  | 'hasObject'
>;

export interface SinkObject {
  size: number;
  /** Quoted, as S3 sends it: `"<md5>"`, or `"<md5 of the part MD5s>-<parts>"` for a multipart upload. */
  etag: string;
  lastModified: Date;
  /** Content-Type and x-amz-meta-* headers given at upload, answered back by HeadObject. */
  headers: Record<string, string>;
}

interface Part {
  size: number;
  md5: Buffer;
}

interface OpenUpload {
  key: string;
  parts: Map<number, Part>;
  headers: Record<string, string>;
}

interface Target {
  bucket: string;
  key: string;
  query: URLSearchParams;
}

// Dummy credentials: the sink signs its presigned URLs like S3 would but never checks a signature.
export const SINK_ACCESS_KEY_ID = 'AKIANULLSINK00000001';
export const SINK_SECRET_ACCESS_KEY = 'nullSinkSecretKey/00000000000000000000000';
const ALGORITHM = 'AWS4-HMAC-SHA256';
const UNSIGNED_PAYLOAD = 'UNSIGNED-PAYLOAD';
const XMLNS = 'http://s3.amazonaws.com/doc/2006-03-01/';
/** CompleteMultipartUpload names at most 10,000 parts: its XML is small, so it is read whole. */
const MAX_XML_BYTES = 2 * 1024 * 1024;

export class NullSink implements AloStore {
  /** How many requests of each S3 operation were answered (`PutObject`, `UploadPart`…). */
  readonly operations = new Map<string, number>();
  private readonly objects = new Map<string, SinkObject>();
  private readonly uploads = new Map<string, OpenUpload>();
  private readonly server: http.Server;
  private originValue = '';
  private received = 0;

  private constructor(
    readonly bucket: string,
    readonly region: string,
  ) {
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => this.fail(req, res, err));
    });
    // Parts of a big file on a slow machine may take longer than Node's default request timeout.
    this.server.requestTimeout = 0;
  }

  static async start(opts: { bucket?: string; region?: string } = {}): Promise<NullSink> {
    const sink = new NullSink(opts.bucket ?? 'bench', opts.region ?? 'us-east-1');
    await new Promise<void>((resolve, reject) => {
      sink.server.once('error', reject);
      sink.server.listen(0, '127.0.0.1', resolve);
    });
    sink.originValue = `http://127.0.0.1:${(sink.server.address() as AddressInfo).port}`;
    return sink;
  }

  get origin(): string {
    return this.originValue;
  }

  /** Bytes of request bodies received, all requests together. */
  get bytesReceived(): number {
    return this.received;
  }

  object(key: string): SinkObject | undefined {
    return this.objects.get(key);
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }

  // --- the store the ALO emulator calls ---

  createMultipartUpload(key: string, headers: Record<string, string> = {}): string {
    const uploadId = randomBytes(48).toString('base64url');
    this.uploads.set(uploadId, { key, parts: new Map(), headers });
    return uploadId;
  }

  async presignPutObject(key: string, expiresInSeconds: number): Promise<string> {
    return this.presign('PUT', key, { 'x-id': 'PutObject' }, expiresInSeconds);
  }

  async presignUploadPart(key: string, uploadId: string, partNumber: number, expiresInSeconds: number): Promise<string> {
    return this.presign('PUT', key, { partNumber: String(partNumber), uploadId, 'x-id': 'UploadPart' }, expiresInSeconds);
  }

  /** `etags[i]` is part i+1's ETag, quoted or not. */
  completeMultipartUpload(key: string, uploadId: string, etags: string[]): { etag: string } {
    const upload = this.openUpload(key, uploadId);
    const parts = etags.map((etag, i) => {
      const part = upload.parts.get(i + 1);
      if (!part || part.md5.toString('hex') !== unquote(etag)) throw invalidPart();
      return part;
    });
    return this.finish(key, uploadId, parts);
  }

  abortMultipartUpload(key: string, uploadId: string): void {
    this.openUpload(key, uploadId);
    this.uploads.delete(uploadId);
  }

  openMultipartUploads(): Array<{ key: string; uploadId: string; parts: number[] }> {
    return [...this.uploads].map(([uploadId, u]) => ({ key: u.key, uploadId, parts: [...u.parts.keys()].sort((a, b) => a - b) }));
  }

  hasObject(key: string): boolean {
    return this.objects.has(key);
  }

  // --- HTTP ---

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const target = parseTarget(req.url ?? '/');
    const { key, query } = target;
    if (target.bucket !== this.bucket) throw new S3Error(404, 'NoSuchBucket', 'The specified bucket does not exist');
    const method = req.method ?? '';
    if (key === '') return this.bucketRequest(method, query, req, res);
    if (method === 'PUT' && req.headers['x-amz-copy-source'] !== undefined) throw notImplemented('CopyObject');
    if (method === 'PUT' && query.has('uploadId')) return this.uploadPart(key, query, req, res);
    if (method === 'PUT') return this.putObject(key, req, res);
    if (method === 'POST' && query.has('uploads')) return this.createMultipartUploadRequest(key, req, res);
    if (method === 'POST' && query.has('uploadId')) return this.completeRequest(key, query.get('uploadId') ?? '', req, res);
    if (method === 'DELETE' && query.has('uploadId')) {
      await this.count('AbortMultipartUpload', req);
      this.abortMultipartUpload(key, query.get('uploadId') ?? '');
      return void reply(res, 204);
    }
    if (method === 'DELETE') {
      await this.count('DeleteObject', req);
      this.objects.delete(key);
      return void reply(res, 204);
    }
    if (method === 'HEAD' || method === 'GET') return this.readObject(method, key, req, res);
    throw notImplemented(`${method} on an object`);
  }

  private async bucketRequest(method: string, query: URLSearchParams, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    if (method === 'HEAD') {
      await this.count('HeadBucket', req);
      return void reply(res, 200);
    }
    if (method === 'PUT') {
      // us-east-1 answers 200 to the owner creating a bucket it already has.
      await this.count('CreateBucket', req);
      return void reply(res, 200, { location: `/${this.bucket}` });
    }
    if (method === 'GET' && query.has('location')) {
      await this.count('GetBucketLocation', req);
      return void replyXml(res, 200, `<LocationConstraint xmlns="${XMLNS}"></LocationConstraint>`);
    }
    if (method === 'GET' && !query.has('uploads')) {
      const v2 = query.get('list-type') === '2';
      await this.count(v2 ? 'ListObjectsV2' : 'ListObjects', req);
      return void replyXml(res, 200, this.listing(query, v2));
    }
    throw notImplemented(`${method} on a bucket`);
  }

  private async putObject(key: string, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const { size, md5 } = await this.count('PutObject', req);
    const etag = `"${md5.toString('hex')}"`;
    this.objects.set(key, { size, etag, lastModified: new Date(), headers: storedHeaders(req) });
    reply(res, 200, { etag });
  }

  private async uploadPart(key: string, query: URLSearchParams, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const upload = this.openUpload(key, query.get('uploadId') ?? '');
    const partNumber = Number(query.get('partNumber'));
    if (!Number.isInteger(partNumber) || partNumber < 1 || partNumber > 10_000) {
      throw new S3Error(400, 'InvalidArgument', 'Part number must be an integer between 1 and 10000, inclusive');
    }
    const part = await this.count('UploadPart', req);
    upload.parts.set(partNumber, part);
    reply(res, 200, { etag: `"${part.md5.toString('hex')}"` });
  }

  private async createMultipartUploadRequest(key: string, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    await this.count('CreateMultipartUpload', req);
    const uploadId = this.createMultipartUpload(key, storedHeaders(req));
    replyXml(
      res,
      200,
      `<InitiateMultipartUploadResult xmlns="${XMLNS}"><Bucket>${xml(this.bucket)}</Bucket><Key>${xml(key)}</Key><UploadId>${uploadId}</UploadId></InitiateMultipartUploadResult>`,
    );
  }

  private async completeRequest(key: string, uploadId: string, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const body = await this.count('CompleteMultipartUpload', req, MAX_XML_BYTES);
    const upload = this.openUpload(key, uploadId);
    // Only the part numbers and ETags matter here; the rest of the document (checksums) is ignored.
    const listed = [...body.text.matchAll(/<Part>([\s\S]*?)<\/Part>/g)].map(([, inner]) => ({
      partNumber: Number(/<PartNumber>\s*(\d+)\s*<\/PartNumber>/.exec(inner ?? '')?.[1]),
      etag: /<ETag>([^<]*)<\/ETag>/.exec(inner ?? '')?.[1] ?? '',
    }));
    if (listed.length === 0)
      throw new S3Error(400, 'MalformedXML', 'The XML you provided was not well-formed or did not validate against our published schema.');
    const parts = listed.map(({ partNumber, etag }) => {
      const part = upload.parts.get(partNumber);
      if (!part || part.md5.toString('hex') !== unquote(xmlUnescape(etag))) throw invalidPart();
      return part;
    });
    const { etag } = this.finish(key, uploadId, parts);
    replyXml(
      res,
      200,
      `<CompleteMultipartUploadResult xmlns="${XMLNS}"><Location>${xml(`${this.origin}/${this.bucket}/${key}`)}</Location><Bucket>${xml(this.bucket)}</Bucket><Key>${xml(key)}</Key><ETag>${xml(etag)}</ETag></CompleteMultipartUploadResult>`,
    );
  }

  private async readObject(method: 'HEAD' | 'GET', key: string, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    await this.count(method === 'HEAD' ? 'HeadObject' : 'GetObject', req);
    const object = this.objects.get(key);
    if (!object) {
      // A HEAD answer has no body, so S3 says "not found" with the status alone.
      if (method === 'HEAD') return void reply(res, 404);
      throw new S3Error(404, 'NoSuchKey', 'The specified key does not exist.');
    }
    if (method === 'GET') throw notImplemented('GetObject of a stored object (the sink keeps no bytes)');
    reply(res, 200, {
      ...object.headers,
      'content-length': String(object.size),
      etag: object.etag,
      'last-modified': object.lastModified.toUTCString(),
    });
  }

  /** ListObjects (v1) or ListObjectsV2 of what was stored, in one page; enough for clients that compare before they copy. */
  private listing(query: URLSearchParams, v2: boolean): string {
    const prefix = query.get('prefix') ?? '';
    const delimiter = query.get('delimiter') ?? '';
    const after = (v2 ? query.get('start-after') : query.get('marker')) ?? '';
    const encode = query.get('encoding-type') === 'url' ? (s: string) => encodeURIComponent(s).replace(/%2F/g, '/') : (s: string) => s;
    const contents: string[] = [];
    const prefixes = new Set<string>();
    for (const [key, object] of [...this.objects].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      if (!key.startsWith(prefix) || key <= after) continue;
      const cut = delimiter === '' ? -1 : key.indexOf(delimiter, prefix.length);
      if (cut >= 0) {
        prefixes.add(key.slice(0, cut + delimiter.length));
        continue;
      }
      contents.push(
        `<Contents><Key>${xml(encode(key))}</Key><LastModified>${object.lastModified.toISOString()}</LastModified><ETag>${xml(object.etag)}</ETag><Size>${object.size}</Size><StorageClass>STANDARD</StorageClass></Contents>`,
      );
    }
    const common = [...prefixes].map((p) => `<CommonPrefixes><Prefix>${xml(encode(p))}</Prefix></CommonPrefixes>`).join('');
    const head = `<Name>${xml(this.bucket)}</Name><Prefix>${xml(encode(prefix))}</Prefix>${delimiter ? `<Delimiter>${xml(encode(delimiter))}</Delimiter>` : ''}<MaxKeys>1000</MaxKeys>${query.has('encoding-type') ? '<EncodingType>url</EncodingType>' : ''}<IsTruncated>false</IsTruncated>`;
    const paging = v2 ? `<KeyCount>${contents.length + prefixes.size}</KeyCount>` : `<Marker>${xml(encode(after))}</Marker>`;
    return `<ListBucketResult xmlns="${XMLNS}">${head}${paging}${contents.join('')}${common}</ListBucketResult>`;
  }

  /**
   * Counts the request under `operation` and consumes its body: streamed through MD5 and dropped,
   * except the first `keepBytes` (as text) for the one request whose body the sink must read.
   */
  private count(operation: string, req: http.IncomingMessage, keepBytes = 0): Promise<Part & { text: string }> {
    this.operations.set(operation, (this.operations.get(operation) ?? 0) + 1);
    const md5 = createHash('md5');
    const kept: Buffer[] = [];
    let size = 0;
    return new Promise((resolve, reject) => {
      req.on('data', (chunk: Buffer) => {
        md5.update(chunk);
        if (size < keepBytes) kept.push(chunk.subarray(0, keepBytes - size));
        size += chunk.length;
        this.received += chunk.length;
      });
      req.once('end', () => resolve({ size, md5: md5.digest(), text: Buffer.concat(kept).toString('utf8') }));
      req.once('error', reject);
    });
  }

  private openUpload(key: string, uploadId: string): OpenUpload {
    const upload = this.uploads.get(uploadId);
    if (!upload || upload.key !== key) {
      throw new S3Error(
        404,
        'NoSuchUpload',
        'The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.',
      );
    }
    return upload;
  }

  private finish(key: string, uploadId: string, parts: Part[]): { etag: string } {
    const upload = this.openUpload(key, uploadId);
    const etag = `"${createHash('md5')
      .update(Buffer.concat(parts.map((p) => p.md5)))
      .digest('hex')}-${parts.length}"`;
    const size = parts.reduce((sum, p) => sum + p.size, 0);
    this.uploads.delete(uploadId);
    this.objects.set(key, { size, etag, lastModified: new Date(), headers: upload.headers });
    return { etag };
  }

  /**
   * A SigV4 presigned URL as S3 mints it (host-only signature, unsigned payload): clients read
   * X-Amz-Date and X-Amz-Expires to know when it expires. The signature is real, though the sink never checks it.
   */
  private presign(method: string, key: string, extra: Record<string, string>, expiresInSeconds: number): string {
    const amzDate = new Date().toISOString().replace(/[-:]|\.\d{3}/g, '');
    const scope = `${amzDate.slice(0, 8)}/${this.region}/s3/aws4_request`;
    const query = Object.entries({
      ...extra,
      'X-Amz-Algorithm': ALGORITHM,
      'X-Amz-Content-Sha256': UNSIGNED_PAYLOAD,
      'X-Amz-Credential': `${SINK_ACCESS_KEY_ID}/${scope}`,
      'X-Amz-Date': amzDate,
      'X-Amz-Expires': String(expiresInSeconds),
      'X-Amz-SignedHeaders': 'host',
    })
      .map(([k, v]) => [rfc3986(k), rfc3986(v)])
      .sort(([a = ''], [b = '']) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, v]) => `${k}=${v}`)
      .join('&');
    const path = `/${rfc3986(this.bucket)}/${key.split('/').map(rfc3986).join('/')}`;
    const canonicalRequest = [method, path, query, `host:${new URL(this.origin).host}\n`, 'host', UNSIGNED_PAYLOAD].join('\n');
    const stringToSign = [ALGORITHM, amzDate, scope, createHash('sha256').update(canonicalRequest).digest('hex')].join('\n');
    const signingKey = [amzDate.slice(0, 8), this.region, 's3', 'aws4_request'].reduce<Buffer | string>(
      (k, part) => hmac(k, part),
      `AWS4${SINK_SECRET_ACCESS_KEY}`,
    );
    return `${this.origin}${path}?${query}&X-Amz-Signature=${hmac(signingKey, stringToSign).toString('hex')}`;
  }

  private fail(req: http.IncomingMessage, res: http.ServerResponse, err: unknown): void {
    const s3 = err instanceof S3Error ? err : new S3Error(500, 'InternalError', err instanceof Error ? err.message : String(err));
    if (res.headersSent || res.destroyed) return;
    const body = req.method === 'HEAD' ? '' : `<Error><Code>${s3.code}</Code><Message>${xml(s3.message)}</Message></Error>`;
    replyXml(res, s3.status, body);
    // Drain what is left of a refused body so that the connection stays usable.
    req.resume();
  }
}

function parseTarget(rawUrl: string): Target {
  const url = new URL(rawUrl, 'http://sink.invalid');
  const [, bucket = '', ...key] = url.pathname.split('/');
  return { bucket: decodeURIComponent(bucket), key: decodeURIComponent(key.join('/')), query: url.searchParams };
}

/** The request headers S3 keeps with an object and gives back on HeadObject. */
function storedHeaders(req: http.IncomingMessage): Record<string, string> {
  const kept = Object.entries(req.headers).filter(([name]) => name === 'content-type' || name.startsWith('x-amz-meta-'));
  return Object.fromEntries(kept.map(([name, value]) => [name, String(value)]));
}

/** An answer without a body; `headers` may give a content-length (HeadObject's is the object's size). */
function reply(res: http.ServerResponse, status: number, headers: Record<string, string> = {}): void {
  // Left to Node, a bodyless 200 would go out chunked, which S3 never does.
  const length: Record<string, string> = status === 204 ? {} : { 'content-length': '0' };
  res.writeHead(status, { 'x-amz-request-id': randomBytes(8).toString('hex').toUpperCase(), server: 'NullSink', ...length, ...headers });
  res.end();
}

function replyXml(res: http.ServerResponse, status: number, body: string): void {
  const document = body === '' ? '' : `<?xml version="1.0" encoding="UTF-8"?>\n${body}`;
  res.writeHead(status, {
    'x-amz-request-id': randomBytes(8).toString('hex').toUpperCase(),
    server: 'NullSink',
    'content-type': 'application/xml',
    'content-length': String(Buffer.byteLength(document)),
  });
  res.end(document);
}

function invalidPart(): S3Error {
  return new S3Error(400, 'InvalidPart', 'One or more of the specified parts could not be found or its entity tag did not match.');
}

function notImplemented(what: string): S3Error {
  return new S3Error(501, 'NotImplemented', `The null sink does not implement ${what}`);
}

function unquote(etag: string): string {
  return etag.replace(/^"|"$/g, '').toLowerCase();
}

function hmac(key: Buffer | string, data: string): Buffer {
  return createHmac('sha256', key).update(data).digest();
}

function rfc3986(value: string): string {
  return encodeURIComponent(value).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function xml(value: string): string {
  return value.replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

function xmlUnescape(value: string): string {
  return value.replace(/&quot;|&#34;/g, '"').replace(/&amp;/g, '&');
}
