/**
 * A TCP fault proxy on 127.0.0.1 (node:net) between the daemon and one upstream (a platform
 * emulator or the S3 store). Bytes are forwarded unchanged, so presigned URLs minted for the
 * proxy's origin (`store.setPublicOrigin(proxy.origin)`) keep their signatures: the Host header
 * the daemon sends is the one that was signed.
 *
 * What it can break, per connection or for the whole proxy:
 * - latency (every chunk held back `ms`, both directions) and a bandwidth cap (bytes/s, shared by
 *   all connections, per direction), so a part takes as long as the test needs;
 * - `resetNext`: the next request(s) get their connection reset (RST) after N body bytes reached
 *   the upstream (client → upstream), i.e. mid-body;
 * - `stallNext`: the next request(s) are accepted and then nothing more is forwarded and nothing
 *   answered, until the client gives up; `stallFirstOfEach`: so is the first of every distinct
 *   request (method and path), and the same request sent again passes;
 * - `respondNext`: the next request(s) are answered by the proxy itself with a canned HTTP status
 *   (a 429/503 storm at the edge) and never reach the upstream;
 * - `refuse`/`downFor`: new connections are refused (listener closed → ECONNREFUSED, or
 *   accepted and reset at once) and open ones dropped, for good or until a time.
 *
 * Requests are told apart by reading HTTP/1.1 heads and Content-Length on the client → upstream
 * side (the daemon never sends chunked bodies; a connection that does is passed through untouched).
 * Counters (`proxy.counters`) are what tests assert on.
 */
import net from 'node:net';

export interface FaultProxyCounters {
  /** Connections accepted and forwarded (refused ones not counted). */
  opened: number;
  /** Connections currently open. */
  open: number;
  /** Connections refused while down/refusing (reset mode; listener mode refuses in the kernel). */
  refused: number;
  /** HTTP requests seen on the client → upstream side. */
  requests: number;
  bytesUp: number;
  bytesDown: number;
  /** Mid-body resets injected by `resetNext`. */
  resets: number;
  /** Requests stalled by `stallNext`. */
  stalls: number;
  /** Requests answered by the proxy itself (`respondNext`). */
  injectedResponses: number;
  /** Connections dropped because the proxy went down. */
  dropped: number;
}

/** Which requests a fault applies to: by method and/or a substring (or pattern) of the path. */
export interface RequestMatch {
  method?: string;
  path?: string | RegExp;
}

/** One HTTP request as the proxy saw it on its way up. */
export interface ProxiedRequest {
  method: string;
  path: string;
  bodyBytes: number;
  /** When its head arrived (ms since epoch). */
  at: number;
  /** When its last body byte went upstream; unset if it never did. */
  sentAt?: number;
  /** When its connection closed, if it closed before the request was sent. */
  closedAt?: number;
  fault?: 'reset' | 'stall' | 'response';
}

interface ArmedFault {
  match: RequestMatch;
}
interface ArmedStall extends ArmedFault {
  read: boolean;
}
interface ArmedReset extends ArmedFault {
  afterBodyBytes: number;
}
interface ArmedResponse extends ArmedFault {
  status: number;
  body: string;
  contentType: string;
  headers: Record<string, string>;
}

const REASONS: Record<number, string> = {
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};
const SLICE = 16 * 1024;
const HIGH_WATER = 256 * 1024;

export type RefuseMode = 'listener' | 'reset';

export class FaultProxy {
  readonly counters: FaultProxyCounters = {
    opened: 0,
    open: 0,
    refused: 0,
    requests: 0,
    bytesUp: 0,
    bytesDown: 0,
    resets: 0,
    stalls: 0,
    injectedResponses: 0,
    dropped: 0,
  };
  private server: net.Server;
  private port = 0;
  private readonly conns = new Set<Connection>();
  private latencyMs = 0;
  /** bytes/s per direction; 0 = unlimited. */
  private bandwidth = 0;
  /** When each direction's shared bandwidth is next free (ms since epoch). */
  readonly freeAt = { up: 0, down: 0 };
  /** When each refused connection was refused (reset mode): how often the client tries. */
  readonly refusedAt: number[] = [];
  /** Every request seen, oldest first. */
  readonly requests: ProxiedRequest[] = [];
  readonly armedResets: ArmedReset[] = [];
  readonly armedStalls: ArmedStall[] = [];
  readonly armedResponses: ArmedResponse[] = [];
  /** `stallFirstOfEach`: which requests, which not, and the `METHOD path`s stalled so far. */
  private firstOfEach: { match: RequestMatch; except: RequestMatch | null; stalled: Set<string> } | null = null;
  private refusing: RefuseMode | null = null;
  private downTimer: NodeJS.Timeout | null = null;
  private closed = false;

  private constructor(
    readonly upstreamHost: string,
    readonly upstreamPort: number,
  ) {
    this.server = this.newServer();
  }

  /** Starts a proxy for `upstream` (`http://127.0.0.1:PORT`, any path ignored). */
  static async start(upstream: string): Promise<FaultProxy> {
    const url = new URL(upstream);
    const proxy = new FaultProxy(url.hostname.replace(/^\[|\]$/g, ''), Number(url.port || (url.protocol === 'https:' ? 443 : 80)));
    await proxy.listen(0);
    return proxy;
  }

  /** `http://127.0.0.1:PORT`: give this to the daemon instead of the upstream's origin. */
  get origin(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Replaces the upstream's origin with the proxy's in `url` (a base URL, a login URL). */
  rewrite(url: string): string {
    const u = new URL(url);
    return `${this.origin}${url.slice(u.origin.length)}`;
  }

  setLatency(ms: number): void {
    this.latencyMs = ms;
  }

  get latency(): number {
    return this.latencyMs;
  }

  /** Caps the throughput of each direction, across all connections; 0 lifts the cap. */
  setBandwidth(bytesPerSecond: number): void {
    this.bandwidth = bytesPerSecond;
    this.freeAt.up = this.freeAt.down = 0;
    for (const c of this.conns) c.pump();
  }

  get bandwidthCap(): number {
    return this.bandwidth;
  }

  /** The next `count` matching requests have their connection reset once `afterBodyBytes` of their body went upstream. */
  resetNext(count: number, afterBodyBytes: number, match: RequestMatch = {}): void {
    for (let i = 0; i < count; i++) this.armedResets.push({ afterBodyBytes, match });
  }

  /**
   * The next `count` matching requests are held: nothing more is forwarded either way, nothing
   * answered. `read: true` (default) keeps reading and dropping the client's bytes (a server that
   * never answers), `false` stops reading them (a zero TCP window: the client's writes block).
   */
  stallNext(count: number, match: RequestMatch = {}, options: { read?: boolean } = {}): void {
    for (let i = 0; i < count; i++) this.armedStalls.push({ match, read: options.read ?? true });
  }

  /**
   * From now on the first of each distinct request (method and path, query included) that matches
   * `match` and not `except` is stalled as by `stallNext` (read and dropped, never answered); the
   * same method and path sent again passes. Every call the client makes meets a platform that
   * hangs once, so each call's own timeout shows. `stopStallingFirstOfEach` ends it.
   */
  stallFirstOfEach(match: RequestMatch = {}, except?: RequestMatch): void {
    this.firstOfEach = { match, except: except ?? null, stalled: new Set() };
  }

  stopStallingFirstOfEach(): void {
    this.firstOfEach = null;
  }

  /** @internal whether this request is the first of its kind under `stallFirstOfEach` (and is now counted). */
  takeFirstOfEach(method: string, path: string): boolean {
    const f = this.firstOfEach;
    if (!f || !matches(f.match, method, path) || (f.except && matches(f.except, method, path))) return false;
    const key = `${method} ${path}`;
    if (f.stalled.has(key)) return false;
    f.stalled.add(key);
    return true;
  }

  /**
   * The next `count` matching requests are answered by the proxy (after it read their body) with
   * `status` and `Connection: close`; they never reach the upstream.
   */
  respondNext(
    count: number,
    status: number,
    options: { match?: RequestMatch; body?: string; contentType?: string; headers?: Record<string, string> } = {},
  ): void {
    for (let i = 0; i < count; i++) {
      this.armedResponses.push({
        status,
        match: options.match ?? {},
        body: options.body ?? JSON.stringify({ error: REASONS[status] ?? 'injected', message: `injected ${status} by the fault proxy` }),
        contentType: options.contentType ?? 'application/json',
        headers: options.headers ?? {},
      });
    }
  }

  /** Faults armed and not yet used (resets, stalls, responses). */
  get pendingFaults(): number {
    return this.armedResets.length + this.armedStalls.length + this.armedResponses.length;
  }

  /**
   * Stops accepting: 'listener' closes the listening socket (ECONNREFUSED), 'reset' accepts and
   * resets at once (ECONNRESET). Open connections are dropped: the network went away.
   */
  async refuse(mode: RefuseMode = 'listener'): Promise<void> {
    this.refusing = mode;
    for (const c of [...this.conns]) {
      this.counters.dropped++;
      c.destroy(true);
    }
    if (mode === 'listener' && this.server.listening) await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Accepts connections again (on the same port). */
  async restore(): Promise<void> {
    if (this.downTimer) clearTimeout(this.downTimer);
    this.downTimer = null;
    const mode = this.refusing;
    this.refusing = null;
    if (mode === 'listener' && !this.closed) {
      this.server = this.newServer();
      await this.listen(this.port);
    }
  }

  /** Down (refusing) for `ms`, then back on its own. Resolves when it is back. */
  downFor(ms: number, mode: RefuseMode = 'listener'): Promise<void> {
    return this.refuse(mode).then(
      () =>
        new Promise<void>((resolve, reject) => {
          this.downTimer = setTimeout(() => void this.restore().then(resolve, reject), ms);
        }),
    );
  }

  get isDown(): boolean {
    return this.refusing !== null;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.downTimer) clearTimeout(this.downTimer);
    for (const c of [...this.conns]) c.destroy(false);
    if (this.server.listening) await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** @internal */
  forget(c: Connection): void {
    if (this.conns.delete(c)) this.counters.open--;
  }

  /** @internal the first armed fault of `list` that matches this request, removed from the list. */
  take<T extends ArmedFault>(list: T[], method: string, path: string): T | undefined {
    const i = list.findIndex((f) => matches(f.match, method, path));
    return i < 0 ? undefined : list.splice(i, 1)[0];
  }

  private newServer(): net.Server {
    const server = net.createServer({ pauseOnConnect: true }, (client) => {
      if (this.refusing || this.closed) {
        this.counters.refused++;
        this.refusedAt.push(Date.now());
        client.resetAndDestroy();
        return;
      }
      const c = new Connection(this, client);
      this.conns.add(c);
      this.counters.opened++;
      this.counters.open++;
    });
    server.on('error', () => undefined);
    return server;
  }

  private listen(port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', () => {
        this.server.off('error', reject);
        this.port = (this.server.address() as net.AddressInfo).port;
        resolve();
      });
    });
  }
}

function matches(m: RequestMatch, method: string, path: string): boolean {
  if (m.method && m.method.toUpperCase() !== method) return false;
  if (m.path === undefined) return true;
  return typeof m.path === 'string' ? path.includes(m.path) : m.path.test(path);
}

interface Slice {
  buf: Buffer;
  readyAt: number;
  /** Reset the connection right after this slice went out. */
  resetAfter?: boolean;
  /** Called once this slice went out. */
  onSent?: () => void;
}

/** One direction of a connection: latency, bandwidth and backpressure. */
class Pipe {
  private readonly queue: Slice[] = [];
  private queued = 0;
  private timer: NodeJS.Timeout | null = null;
  private waitingDrain = false;

  constructor(
    private readonly proxy: FaultProxy,
    private readonly conn: Connection,
    private readonly src: net.Socket,
    private readonly dst: net.Socket,
    private readonly dir: 'up' | 'down',
  ) {
    dst.on('drain', () => {
      this.waitingDrain = false;
      this.pump();
    });
  }

  push(chunk: Buffer, resetAfter = false, onSent?: () => void): void {
    const readyAt = Date.now() + this.proxy.latency;
    for (let at = 0; at < chunk.length; at += SLICE) {
      const buf = chunk.subarray(at, at + SLICE);
      const last = at + SLICE >= chunk.length;
      this.queue.push({ buf, readyAt, resetAfter: resetAfter && last, ...(last && onSent ? { onSent } : {}) });
      this.queued += buf.length;
    }
    if (chunk.length === 0 && (resetAfter || onSent)) this.queue.push({ buf: chunk, readyAt, resetAfter, ...(onSent ? { onSent } : {}) });
    if (this.queued > HIGH_WATER) this.src.pause();
    this.pump();
  }

  pump(): void {
    if (this.timer || this.waitingDrain || this.conn.frozen || this.conn.gone) return;
    while (this.queue.length > 0) {
      const item = this.queue[0]!;
      const now = Date.now();
      const cap = this.proxy.bandwidthCap;
      const at = cap > 0 ? Math.max(item.readyAt, this.proxy.freeAt[this.dir]) : item.readyAt;
      if (at > now) {
        this.timer = setTimeout(() => {
          this.timer = null;
          this.pump();
        }, at - now);
        return;
      }
      this.queue.shift();
      this.queued -= item.buf.length;
      if (cap > 0) this.proxy.freeAt[this.dir] = Math.max(now, this.proxy.freeAt[this.dir]) + (item.buf.length / cap) * 1000;
      if (this.dir === 'up') this.proxy.counters.bytesUp += item.buf.length;
      else this.proxy.counters.bytesDown += item.buf.length;
      const ok = item.buf.length === 0 || this.dst.write(item.buf);
      item.onSent?.();
      if (item.resetAfter) {
        this.proxy.counters.resets++;
        this.conn.destroy(true);
        return;
      }
      if (!ok) {
        this.waitingDrain = true;
        return;
      }
    }
    if (this.queued <= HIGH_WATER / 2 && !this.conn.frozen) this.src.resume();
    if (this.ended && this.queue.length === 0) this.dst.end();
  }

  ended = false;
  end(): void {
    this.ended = true;
    this.pump();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.queue.length = 0;
  }
}

/** One client connection and its upstream connection, with the request tracker on the way up. */
class Connection {
  frozen = false;
  gone = false;
  private readonly upstream: net.Socket;
  private readonly up: Pipe;
  private readonly down: Pipe;
  /** Request tracking (client → upstream). */
  private head = Buffer.alloc(0);
  private bodyLeft = 0;
  private inBody = false;
  private passthrough = false;
  private resetAt = -1;
  private intercept: ArmedResponse | null = null;
  private current: ProxiedRequest | null = null;

  constructor(
    private readonly proxy: FaultProxy,
    private readonly client: net.Socket,
  ) {
    this.upstream = net.connect({ host: proxy.upstreamHost, port: proxy.upstreamPort });
    this.up = new Pipe(proxy, this, client, this.upstream, 'up');
    this.down = new Pipe(proxy, this, this.upstream, client, 'down');
    client.on('data', (chunk: Buffer) => this.fromClient(chunk));
    this.upstream.on('data', (chunk: Buffer) => this.down.push(chunk));
    client.on('end', () => this.up.end());
    this.upstream.on('end', () => this.down.end());
    client.on('error', () => this.destroy(false));
    this.upstream.on('error', () => this.destroy(true));
    client.on('close', () => this.destroy(false));
    this.upstream.on('close', () => this.destroy(false));
    this.upstream.once('connect', () => client.resume());
  }

  pump(): void {
    this.up.pump();
    this.down.pump();
  }

  destroy(reset: boolean): void {
    if (this.gone) return;
    this.gone = true;
    if (this.current && this.current.sentAt === undefined) this.current.closedAt = Date.now();
    this.up.stop();
    this.down.stop();
    if (reset) {
      this.client.resetAndDestroy();
      this.upstream.resetAndDestroy();
    } else {
      this.client.destroy();
      this.upstream.destroy();
    }
    this.proxy.forget(this);
  }

  private fromClient(chunk: Buffer): void {
    if (this.gone) return;
    if (this.frozen) return; // a stalled request: swallowed, never forwarded
    if (this.passthrough) return this.up.push(chunk);
    while (chunk.length > 0 && !this.gone && !this.frozen) {
      if (this.inBody) {
        const n = Math.min(this.bodyLeft, chunk.length);
        const piece = chunk.subarray(0, n);
        chunk = chunk.subarray(n);
        this.bodyLeft -= n;
        if (this.intercept) {
          if (this.bodyLeft === 0) this.answer(this.intercept);
          continue;
        }
        if (this.resetAt >= 0 && n >= this.resetAt) {
          this.up.push(piece.subarray(0, this.resetAt), true);
          this.resetAt = -1;
          return;
        }
        if (this.resetAt >= 0) this.resetAt -= n;
        if (this.bodyLeft === 0) {
          this.inBody = false;
          this.up.push(piece, false, this.sentMarker());
        } else this.up.push(piece);
        continue;
      }
      this.head = Buffer.concat([this.head, chunk]);
      const end = this.head.indexOf('\r\n\r\n');
      if (end < 0) {
        if (this.head.length > 64 * 1024) this.passThrough();
        return;
      }
      const headBytes = this.head.subarray(0, end + 4);
      chunk = this.head.subarray(end + 4);
      this.head = Buffer.alloc(0);
      this.startRequest(headBytes);
    }
  }

  private passThrough(): void {
    this.passthrough = true;
    const rest = this.head;
    this.head = Buffer.alloc(0);
    this.up.push(rest);
  }

  private startRequest(headBytes: Buffer): void {
    const text = headBytes.toString('latin1');
    const [requestLine = ''] = text.split('\r\n', 1);
    const [method = '', path = ''] = requestLine.split(' ');
    const chunked = /\r\ntransfer-encoding:[^\r]*chunked/i.test(text);
    const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(text)?.[1] ?? 0);
    this.proxy.counters.requests++;
    const record: ProxiedRequest = { method, path, bodyBytes: length, at: Date.now() };
    this.proxy.requests.push(record);
    this.current = record;
    if (chunked) {
      this.passthrough = true;
      this.up.push(headBytes);
      return;
    }
    this.bodyLeft = length;
    this.inBody = length > 0;
    const stall =
      this.proxy.take(this.proxy.armedStalls, method, path) ?? (this.proxy.takeFirstOfEach(method, path) ? { read: true } : undefined);
    if (stall) {
      record.fault = 'stall';
      this.proxy.counters.stalls++;
      // Nothing of this request reaches the upstream and nothing is answered; its bytes are read
      // and dropped, so the proxy still sees the client give up (close).
      this.frozen = true;
      if (!stall.read) this.client.pause();
      return;
    }
    const response = this.proxy.take(this.proxy.armedResponses, method, path);
    if (response) {
      record.fault = 'response';
      this.intercept = response;
      if (length === 0) this.answer(response);
      return;
    }
    const reset = this.proxy.take(this.proxy.armedResets, method, path);
    this.resetAt = reset ? reset.afterBodyBytes : -1;
    if (reset) record.fault = 'reset';
    if (reset && (length === 0 || reset.afterBodyBytes <= 0)) {
      this.up.push(headBytes, true);
      return;
    }
    this.up.push(headBytes, false, length === 0 ? this.sentMarker() : undefined);
  }

  private sentMarker(): () => void {
    const record = this.current;
    return () => {
      if (record) record.sentAt = Date.now();
    };
  }

  private answer(r: ArmedResponse): void {
    this.proxy.counters.injectedResponses++;
    this.intercept = null;
    this.inBody = false;
    const headers = {
      'content-type': r.contentType,
      'content-length': String(Buffer.byteLength(r.body)),
      connection: 'close',
      ...r.headers,
    };
    const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`);
    this.client.end(`HTTP/1.1 ${r.status} ${REASONS[r.status] ?? 'Injected'}\r\n${lines.join('')}\r\n${r.body}`);
    this.gone = true;
    this.up.stop();
    this.down.stop();
    this.upstream.destroy();
    this.proxy.forget(this);
  }
}
