/**
 * The local HTTP API, shaped like the camera fleet API operators already use: cameras with
 * their backlog and state, incidents, retries, health and Prometheus metrics, and the status page
 * at `/` that shows them in a browser. Every route but /healthz and the page's own files needs
 * `Authorization: Bearer <api.token>`; errors are `{ "code", "message" }` with the HTTP status as
 * the code. Every answer carries a strict Content-Security-Policy: the page runs only its own
 * files, and nothing a manifest or a platform wrote can run in it.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { listenAddress } from '../config/fields.js';
import type { ApiConfig } from '../config/schema.js';
import { LedgerFaultError } from '../ledger/faults.js';
import type { Ledger } from '../ledger/ledger.js';
import type { CameraView, UploadMetricsView } from '../ledger/views/cameras.js';
import type { Logger } from '../log/logger.js';
import { describeError } from '../log/logger.js';
import type { Secrets } from '../log/redact.js';
import type { UploadMetrics } from '../metrics/upload-metrics.js';
import type { BandwidthState } from '../upload/bandwidth.js';
import { PageFiles } from './page-files.js';
import type * as Page from './page/wire.js';

export interface LocalApiOptions {
  config: ApiConfig;
  ledger: Pick<Ledger, 'status' | 'cameras' | 'operator'>;
  secrets: Secrets;
  metrics: UploadMetrics;
  /** Why the daemon is not healthy (problems) or not all well (warnings); both empty while it is. */
  health: () => Health;
  /** What the status page's header shows of the daemon beside its health, read at each request. */
  facts: () => DaemonFacts;
  /** The ledger gained work (a resumed camera, a retry): look for it now. */
  onWork: () => void;
  log: Logger;
}

export interface DaemonFacts {
  version: string;
  /** When the daemon started (ISO 8601). */
  startedAt: string;
  /** Free bytes on the ledger's filesystem (null when it cannot be read), and ledger.min_free (0: no floor). */
  disk: { freeBytes: number | null; minFreeBytes: number };
  bandwidth: BandwidthState;
}

export interface Health {
  /** The daemon cannot do its work: 503. */
  problems: string[];
  /** Work it cannot finish on its own (a platform refused something): 200, degraded. */
  warnings: string[];
}

class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

interface Reply {
  status: number;
  body: unknown;
  contentType?: string;
}

type Handler = (params: string[], req: IncomingMessage) => Reply | Promise<Reply>;

interface Route {
  pattern: RegExp;
  methods: Partial<Record<string, Handler>>;
  open?: boolean;
}

const SEGMENT = '([^/]+)';
const sha256 = (s: string): Buffer => createHash('sha256').update(s).digest();

/**
 * On every answer. The page loads only its own script and stylesheet (no inline script or style,
 * no eval), talks only to this origin, cannot be framed, and sends no Referer anywhere.
 */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " +
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};

/** Incidents per page of GET /incidents: the default, and the most one request may ask for. */
const PAGE_DEFAULT = 100;
const PAGE_MAX = 1000;

export class LocalApi {
  private readonly server: Server;
  private readonly routes: Route[];
  private tokenDigest!: Buffer;
  private readonly page = new PageFiles();

  constructor(private readonly options: LocalApiOptions) {
    this.reconfigure(options.config);
    this.routes = [
      { pattern: /^\/$/, methods: { GET: () => this.pageFile('index.html') }, open: true },
      { pattern: new RegExp(`^/page/${SEGMENT}$`), methods: { GET: ([name]) => this.pageFile(name!) }, open: true },
      { pattern: /^\/healthz$/, methods: { GET: () => this.health() }, open: true },
      { pattern: /^\/status$/, methods: { GET: () => ok(this.status()) } },
      { pattern: /^\/metrics$/, methods: { GET: () => this.metrics() } },
      { pattern: /^\/cameras$/, methods: { GET: () => ok(this.cameras()) } },
      { pattern: new RegExp(`^/cameras/${SEGMENT}$`), methods: { GET: ([id]) => ok(this.camera(id!)) } },
      { pattern: new RegExp(`^/cameras/${SEGMENT}/video-upload-metrics$`), methods: { GET: ([id]) => ok(this.uploadMetrics(id!)) } },
      {
        pattern: new RegExp(`^/cameras/${SEGMENT}/state/${SEGMENT}$`),
        methods: { PUT: ([id, state]) => this.setCameraState(id!, state!) },
      },
      { pattern: /^\/incidents$/, methods: { GET: (_params, req) => ok(this.incidents(req)) } },
      { pattern: new RegExp(`^/incidents/${SEGMENT}$`), methods: { GET: ([id]) => ok(this.incident(id!)) } },
      { pattern: new RegExp(`^/uploads/${SEGMENT}/retry$`), methods: { POST: ([id]) => this.retry(id!) } },
    ];
    this.server = createServer((req, res) => void this.handle(req, res));
    // Operators' scrapers keep connections open; none of them may hold a shutdown.
    this.server.keepAliveTimeout = 5_000;
  }

  /** The api settings of a reloaded configuration: its token from now on (api.listen stays as bound). */
  reconfigure(config: ApiConfig): void {
    const token = (config.token ?? config.token_file)!.reveal();
    this.tokenDigest = sha256(token);
    this.options.secrets.register(token);
  }

  /** Starts listening; resolves with the port (api.listen may ask for any free one). */
  async listen(): Promise<number> {
    const { host, port } = listenAddress(this.options.config.listen);
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', (err) => reject(new Error(`api.listen ${host}:${port}: ${err.message}`)));
      this.server.listen(port, host, () => {
        this.server.removeAllListeners('error');
        this.server.on('error', (err) => this.options.log.warn({ event: 'api.error', err }, `local API: ${describeError(err)}`));
        resolve();
      });
    });
    const bound = (this.server.address() as AddressInfo).port;
    this.options.log.info(
      { event: 'api.listening', host, port: bound },
      `local API on http://${host.includes(':') ? `[${host}]` : host}:${bound}`,
    );
    return bound;
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let reply: Reply;
    try {
      reply = await this.route(req);
    } catch (err) {
      if (err instanceof ApiError) {
        for (const [name, value] of Object.entries(err.headers)) res.setHeader(name, value);
        reply = { status: err.status, body: { code: err.status, message: err.message } };
      } else if (err instanceof LedgerFaultError) {
        reply = { status: 503, body: { code: 503, message: `${err.message}: try again once the ledger can be written` } };
      } else {
        this.options.log.error({ event: 'api.error', method: req.method, err }, `local API: ${describeError(err)}`);
        reply = { status: 500, body: { code: 500, message: 'Failed.' } };
      }
    }
    const text = Buffer.isBuffer(reply.body) ? reply.body : reply.contentType ? String(reply.body) : JSON.stringify(reply.body);
    res.writeHead(reply.status, {
      ...SECURITY_HEADERS,
      'content-type': reply.contentType ?? 'application/json; charset=utf-8',
      'cache-control': 'no-store',
    });
    res.end(req.method === 'HEAD' ? undefined : text);
    // The request's body is not used by any route; drain it so the connection can be reused.
    req.resume();
  }

  private async route(req: IncomingMessage): Promise<Reply> {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    for (const route of this.routes) {
      const match = route.pattern.exec(path);
      if (!match) continue;
      if (!route.open) this.authenticate(req);
      const handler = route.methods[req.method ?? ''];
      if (!handler) throw new ApiError(405, `${req.method} is not allowed on ${path}`, { allow: Object.keys(route.methods).join(', ') });
      const params = match.slice(1).map(decodeSegment);
      return handler(params, req);
    }
    // Unknown routes are refused the same way to everyone: no route list leaks without a token.
    this.authenticate(req);
    throw new ApiError(404, `no such route: ${path}`);
  }

  /** Constant time: comparing digests of equal length tells nothing of the token's length or prefix. */
  private authenticate(req: IncomingMessage): void {
    const header = req.headers.authorization ?? '';
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!match || !timingSafeEqual(sha256(match[1]!), this.tokenDigest)) {
      throw new ApiError(401, match ? 'Authentication failed.' : 'Authentication failed: send Authorization: Bearer <api token>.', {
        'www-authenticate': 'Bearer',
      });
    }
  }

  private pageFile(name: string): Reply {
    const file = this.page.get(name);
    if (!file) throw new ApiError(404, `no such file: ${name}`);
    return { status: 200, body: file.body, contentType: file.contentType };
  }

  private health(): Reply {
    const verdict = this.healthVerdict();
    return { status: verdict.status === 'unhealthy' ? 503 : 200, body: verdict };
  }

  private healthVerdict(): Page.HealthVerdict {
    const { problems, warnings } = this.options.health();
    if (problems.length > 0) return { status: 'unhealthy', reasons: problems };
    return warnings.length > 0 ? { status: 'degraded', reasons: warnings } : { status: 'ok' };
  }

  /** The daemon at a glance, for the status page's header: version, uptime, health, disk, bandwidth, totals. */
  private status(): Page.DaemonStatus {
    const facts = this.options.facts();
    return {
      ...facts,
      uptimeSeconds: Math.max(0, Math.round((Date.now() - Date.parse(facts.startedAt)) / 1000)),
      health: this.healthVerdict(),
      totals: this.options.ledger.status.totals(null),
      incidentCount: this.options.ledger.status.incidentCount(),
    };
  }

  private async metrics(): Promise<Reply> {
    const registry = this.options.metrics.registry;
    return { status: 200, body: await registry.metrics(), contentType: registry.contentType };
  }

  private cameras(): Page.Camera[] {
    return this.options.ledger.cameras.cameras();
  }

  private camera(id: string): CameraView {
    const camera = this.options.ledger.cameras.cameras(id)[0];
    if (!camera) throw new ApiError(404, `no camera ${id} in any manifest`);
    return camera;
  }

  private uploadMetrics(id: string): UploadMetricsView {
    this.camera(id);
    return this.options.ledger.cameras.uploadMetrics(id);
  }

  /**
   * Incidents a page at a time (`limit`, default 100, at most 1000), along the order they were
   * first seen: oldest first, continuing `?after=ID`; or newest first (`?order=newest`, as the
   * status page lists them), continuing `?before=ID`.
   */
  private incidents(req: IncomingMessage): Page.Incident[] {
    const query = new URL(req.url ?? '/', 'http://localhost').searchParams;
    const limit = Math.min(PAGE_MAX, Math.max(1, Number(query.get('limit') ?? PAGE_DEFAULT) || PAGE_DEFAULT));
    const [order, after, before] = [query.get('order'), query.get('after'), query.get('before')];
    if (order !== null && order !== 'oldest' && order !== 'newest') throw new ApiError(422, `order must be oldest or newest, not ${order}`);
    const newest = order === 'newest' || (order === null && before !== null);
    if (newest ? after !== null : before !== null) {
      throw new ApiError(
        422,
        newest ? 'newest first continues with ?before=ID, not ?after' : 'oldest first continues with ?after=ID, not ?before',
      );
    }
    const status = this.options.ledger.status;
    return newest ? status.incidentsBefore(before, limit) : status.incidentsAfter(after, limit);
  }

  private setCameraState(id: string, state: string): Reply {
    if (state !== 'running' && state !== 'paused') throw new ApiError(422, `state must be running or paused, not ${state}`);
    if (!this.options.ledger.operator.setCameraState(id, state)) throw new ApiError(404, `no camera ${id} in any manifest`);
    this.options.log.info(
      { event: state === 'paused' ? 'camera.paused' : 'camera.resumed', cameraId: id },
      `camera ${id} ${state === 'paused' ? 'paused' : 'running again'}`,
    );
    this.options.onWork();
    return { status: 201, body: { code: 0, message: `camera ${id} is ${state}` } };
  }

  private incident(id: string): Page.Incident {
    const incident = this.options.ledger.status.incident(id);
    if (!incident) throw new ApiError(404, `no incident ${id}`);
    return incident;
  }

  private retry(id: string): Reply {
    if (!/^\d{1,15}$/.test(id)) throw new ApiError(404, `no upload ${id}: upload ids are numbers`);
    const state = this.options.ledger.operator.uploadState(Number(id));
    if (!state) throw new ApiError(404, `no upload ${id}`);
    const done = this.options.ledger.operator.retry(id);
    if (!done) throw new ApiError(409, `upload ${id} is ${state}, not failed: nothing to retry`);
    this.options.log.info({ event: 'upload.requeued', uploadId: Number(id) }, `upload #${id} put back in the queue`);
    this.options.onWork();
    return ok({ code: 0, message: `upload ${id} requeued`, uploads: done.uploads });
  }
}

function ok(body: unknown): Reply {
  return { status: 200, body };
}

function decodeSegment(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new ApiError(404, `bad id ${s}`);
  }
}
