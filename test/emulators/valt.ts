/**
 * The Valt records API v3 (its upload recording document) as a local HTTP server: a login that
 * hands out access tokens, `POST /records/create-upload`, and the chunk POST that appends
 * multipart/form-data bodies to a video file on disk. Strict where a real service would be: the
 * body of every call is validated (400 naming the field), the token is required as the
 * `access_token` query parameter (401), multipart bodies are really parsed, and each chunk's
 * Content-Range must be RFC 9110 (inclusive end), match the bytes of the `file` field, and continue
 * the video exactly where it stands. The one tolerated repetition is an exact repeat of the last
 * accepted chunk (a client whose answer was lost sends it again): it is acknowledged without being
 * appended twice.
 */
import { createHash, randomBytes, randomUUID, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm, type FileHandle } from 'node:fs/promises';
import type http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import {
  echoMessage,
  EmulatorServer,
  HttpProblem,
  isRecord,
  jsonBody,
  readBody,
  sendJson,
  validate,
  type RecordsArrivals,
  type Reply,
} from './json-server.js';
import type { TlsIdentity } from './listen.js';

export interface ValtEmulatorOptions {
  /** The credentials `POST /login` accepts. */
  username: string;
  password: string;
  /** Lifetime of an access token. Default 3600. */
  tokenTtlSeconds?: number;
  /** true: every answer wrapped in `data`; false: never. Default: alternate per record (plain, data, plain…). */
  wrapInData?: boolean;
  host?: string;
  port?: number;
  /** Serve HTTPS with this key and certificate. Default: plain HTTP. */
  tls?: TlsIdentity;
  /** Largest request body accepted (413 above). Default 64 MiB + 64 KiB. */
  maxBodyBytes?: number;
}

export type ValtRoute = 'login' | 'create-upload' | 'chunk';

export interface ValtCall {
  method: string;
  route: ValtRoute | 'unknown';
  /** The path, without the query. */
  path: string;
  /** The query, with `access_token` shown as `***` (empty when absent). */
  query: Record<string, string>;
  /** The JSON body of login (password masked) and create-upload. */
  body?: unknown;
  contentRange?: string;
  contentLength?: string;
  transferEncoding?: string;
  /** 0 when the connection was destroyed instead of answered. */
  status: number;
}

export interface ValtChunk {
  contentRange: string;
  /** The answer; 0 when the connection was destroyed or the answer held instead (the chunk may still have been kept: see accepted). */
  status: number;
  /** Carried out, but its answer never left (holdNext). */
  held?: boolean;
  /** Appended, or acknowledged as a repeat. */
  accepted: boolean;
  /** An exact repeat of the last accepted chunk, acknowledged without appending. */
  repeat: boolean;
}

/** A record as Valt holds it (a snapshot). */
export interface ValtRecord {
  id: string;
  videoId: string;
  name: string;
  template: Record<string, string> | null;
  share: { users?: number[]; groups?: number[] } | null;
  /** Whether this record's answers came bare (`plain`) or wrapped in `data`. */
  shape: 'plain' | 'data';
  /** Bytes appended so far. */
  bytes: number;
  /** TOTAL of the first chunk's Content-Range; null before any chunk. */
  total: number | null;
  /** SHA-256 of the bytes appended so far. */
  sha256: string;
  complete: boolean;
  /** The download URL, once complete. */
  url: string | null;
  /** Filename and Content-Type of the `file` part of the first chunk. */
  filename: string | null;
  contentType: string | null;
  /** Every chunk POST that reached this video, in arrival order, with its answer. */
  chunks: ValtChunk[];
  /** The Content-Range headers of the chunks accepted (appended or repeated), in arrival order. */
  contentRanges: string[];
  /** The most chunk POSTs this video had open at once (Valt appends: 1 for a well-behaved client). */
  maxChunksInFlight: number;
  /** Chunk POSTs of this video not answered yet. */
  chunksInFlight: number;
}

export interface ValtEmulator extends RecordsArrivals {
  /** TCP connections accepted so far (every request arrives on one): compared with a proxy's tunnels. */
  readonly connections: number;
  /** `${origin}/api/v3`: what goes in targets.<name>.base_url. */
  readonly baseUrl: string;
  /** `${baseUrl}/login`: what goes in auth.login.url. */
  readonly loginUrl: string;
  readonly records: ValtRecord[];
  readonly calls: ValtCall[];
  /** Every access token handed out, for checking that none leaks. */
  readonly issuedTokens: readonly string[];
  /** SHA-256 of the video file on disk, as assembled from the chunks. */
  assembledSha256(recordId: string): Promise<string>;
  /** The next `count` calls of the route are answered with `status` and not carried out. */
  failNext(route: ValtRoute, count: number, status?: number): void;
  /** The next `count` calls of the route answer `status` (default 500) with an error echoing the request: URL, query and headers. */
  echoNext(route: ValtRoute, count: number, status?: number): void;
  /**
   * The next `count` calls of the route get their connection destroyed instead of an answer:
   * 'before' it is carried out (for chunks, as soon as body bytes arrive: mid-body; default), or
   * 'after' it, as when the answer is lost on the way back.
   */
  resetNext(route: ValtRoute, count: number, when?: 'before' | 'after'): void;
  /**
   * Records whose names contain `substring` are refused for good with 400 and this message: at
   * create-upload (default), before anything exists, or at every chunk after the first, once the
   * record exists and holds the first chunk.
   */
  refuseName(substring: string, message: string, at?: 'create-upload' | 'chunk'): void;
  /** The next `count` chunks are appended, but their answers never leave (a SIGKILL lands in between). */
  holdNext(route: 'chunk', count: number): void;
  /** Tokens the login hands out from now on expire after `seconds`. */
  setTokenTtl(seconds: number): void;
  /** Delays every chunk answer by `ms` (after the chunk was appended). */
  setLatency(ms: number): void;
  /** Every token handed out so far stops working (as after a server restart or a revocation). */
  expireTokens(): void;
  close(): Promise<void>;
}

/** What the emulator keeps per record: the snapshot's fields, the file being assembled, and the last chunk. */
interface RecordState extends Pick<
  ValtRecord,
  'id' | 'videoId' | 'name' | 'template' | 'share' | 'shape' | 'bytes' | 'total' | 'url' | 'filename' | 'contentType' | 'chunks'
> {
  file: FileHandle;
  filePath: string;
  hash: Hash;
  last: { range: string; sha256: string } | null;
  inFlight: number;
  maxInFlight: number;
}

const loginSchema = z.strictObject({ username: z.string(), password: z.string() });

const createUploadSchema = z.strictObject({
  name: z.string().refine((s) => s.trim() !== '', { message: 'must not be empty' }),
  template: z.record(z.string(), z.string()).optional(),
  share: z
    .strictObject({
      users: z.array(z.int().positive()).optional(),
      groups: z.array(z.int().positive()).optional(),
    })
    .optional(),
});

const CONTENT_RANGE = /^bytes (\d{1,15})-(\d{1,15})\/(\d{1,15})$/;

export async function startValtEmulator(opts: ValtEmulatorOptions): Promise<ValtEmulator> {
  const dir = await mkdtemp(join(tmpdir(), 'valt-emulator-'));
  const emulator = new ValtServer(opts, dir);
  await emulator.listen(opts.host ?? '127.0.0.1', opts.port ?? 0, opts.tls);
  return emulator;
}

class ValtServer extends EmulatorServer<ValtRoute, ValtCall> implements ValtEmulator {
  readonly issuedTokens: string[] = [];
  private readonly tokens = new Map<string, number>();
  private readonly recordStates = new Map<string, RecordState>();
  private readonly refusals: Array<{ substring: string; message: string; at: 'create-upload' | 'chunk' }> = [];
  private latencyMs = 0;
  private tokenTtlMs: number;
  private created = 0;
  private readonly maxBodyBytes: number;

  constructor(
    private readonly opts: ValtEmulatorOptions,
    private readonly dir: string,
  ) {
    super();
    this.maxBodyBytes = opts.maxBodyBytes ?? 64 * 1024 * 1024 + 64 * 1024;
    this.tokenTtlMs = (opts.tokenTtlSeconds ?? 3600) * 1000;
  }

  get baseUrl(): string {
    return `${this.origin}/api/v3`;
  }

  get loginUrl(): string {
    return `${this.baseUrl}/login`;
  }

  get records(): ValtRecord[] {
    return [...this.recordStates.values()].map((r) => ({
      id: r.id,
      videoId: r.videoId,
      name: r.name,
      template: r.template && { ...r.template },
      share: r.share && structuredClone(r.share),
      shape: r.shape,
      bytes: r.bytes,
      total: r.total,
      sha256: r.hash.copy().digest('hex'),
      complete: r.total !== null && r.bytes === r.total,
      url: r.url,
      filename: r.filename,
      contentType: r.contentType,
      chunks: r.chunks.map((c) => ({ ...c })),
      contentRanges: r.chunks.filter((c) => c.accepted).map((c) => c.contentRange),
      maxChunksInFlight: r.maxInFlight,
      chunksInFlight: r.inFlight,
    }));
  }

  async assembledSha256(recordId: string): Promise<string> {
    const record = this.recordStates.get(recordId);
    if (!record) throw new Error(`no record ${recordId}`);
    const sha = createHash('sha256');
    for await (const chunk of createReadStream(record.filePath)) sha.update(chunk as Buffer);
    return sha.digest('hex');
  }

  refuseName(substring: string, message: string, at: 'create-upload' | 'chunk' = 'create-upload'): void {
    this.refusals.push({ substring, message, at });
  }

  holdNext(route: 'chunk', count: number): void {
    this.queueFaults(route, count, { kind: 'hold' });
  }

  setTokenTtl(seconds: number): void {
    this.tokenTtlMs = seconds * 1000;
  }

  setLatency(ms: number): void {
    this.latencyMs = ms;
  }

  expireTokens(): void {
    this.tokens.clear();
  }

  override async close(): Promise<void> {
    await super.close();
    for (const r of this.recordStates.values()) await r.file.close().catch(() => undefined);
    await rm(this.dir, { recursive: true, force: true });
  }

  protected async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://valt.invalid');
    const method = req.method ?? '';
    const matched = matchRoute(method, url.pathname);
    const query = Object.fromEntries([...url.searchParams].map(([k, v]) => [k, k === 'access_token' ? '***' : v]));
    const call: ValtCall = { method, route: matched.route ?? 'unknown', path: url.pathname, query, status: 0 };
    const header = (name: string): string | undefined => {
      const v = req.headers[name];
      return Array.isArray(v) ? v.join(', ') : v;
    };
    if (header('content-range') !== undefined) call.contentRange = header('content-range');
    if (header('content-length') !== undefined) call.contentLength = header('content-length');
    if (header('transfer-encoding') !== undefined) call.transferEncoding = header('transfer-encoding');

    // A chunk for a known video is kept in its history, whatever its answer.
    const known = matched.route === 'chunk' && !matched.problem ? this.recordStates.get(matched.recordId!) : undefined;
    const record = known?.videoId === matched.videoId ? known : undefined;
    const entry: ValtChunk = { contentRange: call.contentRange ?? '', status: 0, accepted: false, repeat: false };
    if (record) {
      record.chunks.push(entry);
      record.maxInFlight = Math.max(record.maxInFlight, ++record.inFlight);
    }
    try {
      await this.serve(req, res, url, matched, call, entry);
    } finally {
      if (record) record.inFlight--;
    }
  }

  private async serve(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    url: URL,
    matched: Matched,
    call: ValtCall,
    entry: ValtChunk,
  ): Promise<void> {
    const fault = matched.route ? this.takeFault(matched.route) : undefined;
    if (fault?.kind === 'reset' && fault.when === 'before') {
      // Mid-body: let the first bytes arrive, then drop the connection.
      await new Promise<void>((resolve) => {
        req.once('data', () => resolve());
        req.once('end', () => resolve());
      });
      this.answer(req, res, call, 'reset');
      return;
    }

    let raw: Buffer;
    try {
      raw = await readBody(req, this.maxBodyBytes, `request body larger than ${this.maxBodyBytes} bytes`);
      if (!req.complete) throw new Error('connection closed mid-body');
    } catch (err) {
      if (err instanceof HttpProblem) {
        // The rest of an oversized body is left unread, so the connection cannot carry another request.
        res.setHeader('connection', 'close');
        this.answer(req, res, call, this.problemReply(err));
      } else {
        this.answer(req, res, call, 'reset'); // the client went away mid-body: nothing is kept
      }
      return;
    }

    const reply = await this.carryOut(() => {
      if (matched.problem) throw matched.problem;
      if (fault?.kind === 'status') throw new HttpProblem(fault.status, this.injectedMessage(fault.status));
      if (fault?.kind === 'echo') throw new HttpProblem(fault.status, echoMessage(req));
      switch (matched.route!) {
        case 'login':
          return this.login(req, raw, call);
        case 'create-upload':
          this.checkToken(url);
          return this.createUpload(req, raw, call);
        case 'chunk':
          this.checkToken(url);
          return this.appendChunk(req, raw, this.recordOf(matched.recordId!, matched.videoId!), entry);
      }
    });
    entry.status = fault?.kind === 'reset' || fault?.kind === 'hold' ? 0 : reply.status;
    if (fault?.kind === 'hold') {
      entry.held = true;
      call.status = reply.status;
      this.calls.push(call);
      return; // carried out; the answer never leaves
    }
    if (matched.route === 'chunk' && this.latencyMs > 0) await new Promise((r) => setTimeout(r, this.latencyMs));
    this.answer(req, res, call, fault?.kind === 'reset' ? 'reset' : reply);
  }

  protected override injectedMessage(status: number): string {
    return status === 401 ? 'Invalid or expired API token (injected)' : super.injectedMessage(status);
  }

  protected problemReply(problem: HttpProblem): Reply {
    return { status: problem.status, body: { error: { code: problem.status, message: problem.message } } };
  }

  protected send(res: http.ServerResponse, reply: Reply): void {
    if (!res.destroyed) sendJson(res, reply, { 'content-type': 'application/json; charset=utf-8' });
  }

  private checkToken(url: URL): void {
    const token = url.searchParams.get('access_token');
    if (!token) throw new HttpProblem(401, 'No API token provided');
    const expiresAt = this.tokens.get(token);
    if (expiresAt === undefined || expiresAt <= Date.now()) {
      this.tokens.delete(token);
      throw new HttpProblem(401, 'Invalid or expired API token');
    }
  }

  private login(req: http.IncomingMessage, raw: Buffer, call: ValtCall): Reply {
    const body = jsonBody(req, raw, 'Content-Type');
    call.body = isRecord(body) && 'password' in body ? { ...body, password: '***' } : body;
    const { username, password } = validate(loginSchema, body);
    if (username !== this.opts.username || password !== this.opts.password) throw new HttpProblem(401, 'Bad credentials.');
    const token = randomBytes(16).toString('hex');
    this.tokens.set(token, Date.now() + this.tokenTtlMs);
    this.issuedTokens.push(token);
    return { status: 200, body: { data: { access_token: token } } };
  }

  private async createUpload(req: http.IncomingMessage, raw: Buffer, call: ValtCall): Promise<Reply> {
    const body = jsonBody(req, raw, 'Content-Type');
    call.body = body;
    const input = validate(createUploadSchema, body);
    const refusal = this.refusals.find((r) => r.at === 'create-upload' && input.name.includes(r.substring));
    if (refusal) throw new HttpProblem(400, refusal.message);
    const id = randomUUID();
    const videoId = randomUUID();
    const filePath = join(this.dir, `${videoId}.video`);
    const wrap = this.opts.wrapInData ?? this.created % 2 === 1;
    this.created++;
    const record: RecordState = {
      id,
      videoId,
      name: input.name,
      template: input.template ?? null,
      share: input.share ?? null,
      shape: wrap ? 'data' : 'plain',
      file: await open(filePath, 'w+'),
      filePath,
      hash: createHash('sha256'),
      bytes: 0,
      total: null,
      last: null,
      url: null,
      filename: null,
      contentType: null,
      chunks: [],
      inFlight: 0,
      maxInFlight: 0,
    };
    this.recordStates.set(id, record);
    return { status: 200, body: shaped(record, { id, videos: [videoId] }) };
  }

  private recordOf(recordId: string, videoId: string): RecordState {
    const record = this.recordStates.get(recordId);
    if (!record) throw new HttpProblem(404, `Record ${recordId} not found`);
    if (record.videoId !== videoId) throw new HttpProblem(404, `Video ${videoId} not found in record ${recordId}`);
    return record;
  }

  private async appendChunk(req: http.IncomingMessage, raw: Buffer, record: RecordState, entry: ValtChunk): Promise<Reply> {
    if (req.headers['content-length'] === undefined)
      throw new HttpProblem(411, 'Content-Length: required (chunked request bodies are not accepted)');
    const boundary = multipartBoundary(req.headers['content-type']);
    const range = parseContentRange(req.headers['content-range']);
    const file = fileField(parseMultipart(raw, boundary));
    const expected = range.last - range.first + 1;
    if (file.data.length !== expected) {
      throw new HttpProblem(400, `file: ${file.data.length} bytes, but Content-Range "${range.text}" announces ${expected}`);
    }
    if (record.total !== null && range.total !== record.total) {
      throw new HttpProblem(400, `Content-Range: total ${range.total} differs from ${record.total}, given with the first chunk`);
    }
    const sha256 = createHash('sha256').update(file.data).digest('hex');
    if (record.last?.range === range.text) {
      if (record.last.sha256 !== sha256)
        throw new HttpProblem(400, `Content-Range: "${range.text}" was already received with different bytes`);
      entry.repeat = true;
      entry.accepted = true;
      return { status: 200, body: this.chunkAnswer(record) };
    }
    if (record.total !== null && record.bytes === record.total)
      throw new HttpProblem(400, `video ${record.videoId} is already complete (${record.total} bytes)`);
    const refusal = this.refusals.find((r) => r.at === 'chunk' && record.name.includes(r.substring));
    if (refusal && record.bytes > 0) throw new HttpProblem(400, refusal.message);
    if (range.first !== record.bytes) {
      const what = range.first > record.bytes ? 'a gap' : 'an overlap';
      throw new HttpProblem(400, `Content-Range: the next chunk must start at byte ${record.bytes}, got ${range.first} (${what})`);
    }
    // Accepted: the state moves now (a concurrent chunk sees it), the answer waits for the disk.
    entry.accepted = true;
    record.total = range.total;
    record.bytes += file.data.length;
    record.hash.update(file.data);
    record.last = { range: range.text, sha256 };
    record.filename ??= file.filename;
    record.contentType ??= file.contentType;
    if (record.bytes === record.total) record.url = `${this.baseUrl}/records/${record.id}/videos/${record.videoId}/download`;
    await record.file.write(file.data, 0, file.data.length, range.first);
    return { status: 200, body: this.chunkAnswer(record) };
  }

  private chunkAnswer(record: RecordState): unknown {
    return shaped(record, { id: record.id, videos: [record.videoId], ...(record.url ? { url: record.url } : {}) });
  }
}

function shaped(record: RecordState, body: Record<string, unknown>): unknown {
  return record.shape === 'data' ? { data: body } : body;
}

interface Matched {
  route?: ValtRoute;
  recordId?: string;
  videoId?: string;
  problem?: HttpProblem;
}

function matchRoute(method: string, pathname: string): Matched {
  const post = (route: ValtRoute, ids: { recordId?: string; videoId?: string } = {}) =>
    method === 'POST' ? { route, ...ids } : { route, ...ids, problem: new HttpProblem(405, `method ${method} not allowed; use POST`) };
  if (pathname === '/api/v3/login') return post('login');
  if (pathname === '/api/v3/records/create-upload') return post('create-upload');
  const m = /^\/api\/v3\/records\/([^/]+)\/videos\/([^/]+)$/.exec(pathname);
  if (m) {
    try {
      return post('chunk', { recordId: decodeURIComponent(m[1]!), videoId: decodeURIComponent(m[2]!) });
    } catch {
      /* a malformed escape: no such record */
    }
  }
  return { problem: new HttpProblem(404, `no route for ${method} ${pathname}`) };
}

function parseContentRange(header: string | undefined): { text: string; first: number; last: number; total: number } {
  if (header === undefined) throw new HttpProblem(400, 'Content-Range: header is required');
  const m = CONTENT_RANGE.exec(header);
  if (!m) throw new HttpProblem(400, `Content-Range: expected "bytes FIRST-LAST/TOTAL", got "${header}"`);
  const [first, last, total] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (last < first) throw new HttpProblem(400, `Content-Range: last byte ${last} is before first byte ${first}`);
  if (last >= total) {
    throw new HttpProblem(
      400,
      `Content-Range: last byte ${last} must be below the total ${total} (the last byte position is inclusive: RFC 9110 §14.4)`,
    );
  }
  return { text: header, first, last, total };
}

function multipartBoundary(contentType: string | undefined): string {
  const m = /^multipart\/form-data\s*;(?:.*;)?\s*boundary=(?:"([^"]+)"|([^\s;]+))/i.exec(contentType ?? '');
  const boundary = m?.[1] ?? m?.[2];
  if (!boundary) throw new HttpProblem(415, `Content-Type must be multipart/form-data with a boundary, got "${contentType ?? ''}"`);
  return boundary;
}

interface FormPart {
  name: string;
  filename: string | null;
  contentType: string | null;
  data: Buffer;
}

/** RFC 7578 multipart/form-data, parsed from the whole body. */
function parseMultipart(raw: Buffer, boundary: string): FormPart[] {
  const delimiter = Buffer.from(`--${boundary}`);
  const next = Buffer.from(`\r\n--${boundary}`);
  if (raw.indexOf(delimiter) !== 0) throw new HttpProblem(400, 'multipart body: does not start with the boundary');
  const parts: FormPart[] = [];
  let pos = delimiter.length;
  for (;;) {
    if (raw.subarray(pos, pos + 2).toString('latin1') === '--') return parts;
    if (raw.subarray(pos, pos + 2).toString('latin1') !== '\r\n') throw new HttpProblem(400, 'multipart body: malformed boundary line');
    const headerEnd = raw.indexOf('\r\n\r\n', pos + 2);
    if (headerEnd < 0) throw new HttpProblem(400, 'multipart body: part headers do not end');
    const headers = new Map<string, string>();
    for (const line of raw
      .subarray(pos + 2, headerEnd)
      .toString('utf8')
      .split('\r\n')) {
      const colon = line.indexOf(':');
      if (colon <= 0) throw new HttpProblem(400, `multipart body: malformed part header "${line}"`);
      headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
    }
    const end = raw.indexOf(next, headerEnd + 4);
    if (end < 0) throw new HttpProblem(400, 'multipart body: ends before the closing boundary');
    const disposition = headers.get('content-disposition') ?? '';
    if (!/^form-data\s*(;|$)/i.test(disposition))
      throw new HttpProblem(400, 'multipart body: a part without Content-Disposition: form-data');
    const name = dispositionParam(disposition, 'name');
    if (name === null) throw new HttpProblem(400, 'multipart body: a part without a name');
    parts.push({
      name,
      filename: dispositionParam(disposition, 'filename'),
      contentType: headers.get('content-type') ?? null,
      data: raw.subarray(headerEnd + 4, end),
    });
    pos = end + next.length;
  }
}

function dispositionParam(disposition: string, param: string): string | null {
  const m =
    new RegExp(`;\\s*${param}="((?:[^"\\\\]|\\\\.)*)"`, 'i').exec(disposition) ??
    new RegExp(`;\\s*${param}=([^;\\s]+)`, 'i').exec(disposition);
  return m ? m[1]!.replace(/%22/g, '"').replace(/%0D/gi, '\r').replace(/%0A/gi, '\n') : null;
}

/** The one field Valt reads: `file`, a file. */
function fileField(parts: FormPart[]): FormPart & { filename: string } {
  const other = parts.find((p) => p.name !== 'file');
  if (other) throw new HttpProblem(400, `${other.name}: unexpected form field (only file is read)`);
  if (parts.length === 0) throw new HttpProblem(400, 'file: required form field');
  if (parts.length > 1) throw new HttpProblem(400, 'file: given more than once');
  const file = parts[0]!;
  if (!file.filename) throw new HttpProblem(400, 'file: must be a file (filename missing)');
  return file as FormPart & { filename: string };
}
