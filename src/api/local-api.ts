/**
 * The local HTTP API, shaped like the camera fleet API operators already use: cameras with
 * their backlog and state, incidents, retries, health and Prometheus metrics. Every route but
 * /healthz needs `Authorization: Bearer <api.token>`; errors are `{ "code", "message" }` with
 * the HTTP status as the code.
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

export interface LocalApiOptions {
  config: ApiConfig;
  ledger: Pick<Ledger, 'status' | 'cameras' | 'operator'>;
  secrets: Secrets;
  metrics: UploadMetrics;
  /** Why the daemon is not healthy (problems) or not all well (warnings); both empty while it is. */
  health: () => Health;
  /** The ledger gained work (a resumed camera, a retry): look for it now. */
  onWork: () => void;
  log: Logger;
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

export class LocalApi {
  private readonly server: Server;
  private readonly routes: Route[];
  private tokenDigest!: Buffer;

  constructor(private readonly options: LocalApiOptions) {
    this.reconfigure(options.config);
    this.routes = [
      { pattern: /^\/healthz$/, methods: { GET: () => this.health() }, open: true },
      { pattern: /^\/metrics$/, methods: { GET: () => this.metrics() } },
      { pattern: /^\/cameras$/, methods: { GET: () => ok(options.ledger.cameras.cameras()) } },
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
    const text = reply.contentType ? String(reply.body) : JSON.stringify(reply.body);
    res.writeHead(reply.status, { 'content-type': reply.contentType ?? 'application/json; charset=utf-8', 'cache-control': 'no-store' });
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

  private health(): Reply {
    const { problems, warnings } = this.options.health();
    if (problems.length > 0) return { status: 503, body: { status: 'unhealthy', reasons: problems } };
    return warnings.length > 0 ? ok({ status: 'degraded', reasons: warnings }) : ok({ status: 'ok' });
  }

  private async metrics(): Promise<Reply> {
    const registry = this.options.metrics.registry;
    return { status: 200, body: await registry.metrics(), contentType: registry.contentType };
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

  /** Incidents, oldest first; `?after=ID&limit=N` pages through a large ledger (default 100, at most 1000). */
  private incidents(req: IncomingMessage): unknown {
    const query = new URL(req.url ?? '/', 'http://localhost').searchParams;
    const limit = Math.min(1000, Math.max(1, Number(query.get('limit') ?? 100) || 100));
    return this.options.ledger.status.incidentsAfter(query.get('after'), limit);
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

  private incident(id: string): unknown {
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
