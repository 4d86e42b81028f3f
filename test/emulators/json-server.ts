/**
 * What the platform emulators have in common: each is a strict JSON API over node:http whose tests
 * queue faults per route. An emulator keeps its own routes, error body and headers; the pieces here
 * refuse with the same statuses and messages every emulator used when it had its own copy.
 */
import type http from 'node:http';
import type https from 'node:https';
import type { z } from 'zod';
import { createServer, listen, type TlsIdentity } from './listen.js';

/** A refusal: thrown by a handler, answered in the platform's error body with this status. */
export class HttpProblem extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export interface Reply {
  status: number;
  body: unknown;
}

/** What a test makes of a route's next call; 'hold' is queued only by emulators that offer holdNext. */
export type Fault =
  { kind: 'status'; status: number } | { kind: 'reset'; when: 'before' | 'after' } | { kind: 'hold' } | { kind: 'echo'; status: number };

/** A request as it arrived, before any check or fault: what the client sent of its own accord. */
export interface Arrival {
  method: string;
  /** The path, without the query (which may hold a token). */
  path: string;
  /** The User-Agent header; undefined when there was none. */
  userAgent: string | undefined;
}

/** What every emulator keeps besides its own log of calls. */
export interface RecordsArrivals {
  /** Every request received, in order, whether or not it was carried out. */
  readonly arrivals: readonly Arrival[];
}

/**
 * An emulator's server, its log of calls and its per-route fault queues. `Call` is the emulator's
 * log entry, with status 0 when the connection was destroyed instead of answered.
 */
export abstract class EmulatorServer<Route, Call extends { status: number }> implements RecordsArrivals {
  readonly calls: Call[] = [];
  readonly arrivals: Arrival[] = [];
  /** `http://host:port` (or https://), once listening. */
  protected origin = '';
  /** TCP connections accepted so far: what a test compares with the connections a proxy opened. */
  connections = 0;
  private server: http.Server | https.Server | null = null;
  private readonly faults = new Map<Route, Fault[]>();

  /** Listens on `host:port`, over HTTPS with `tls`. */
  async listen(host: string, port: number, tls?: TlsIdentity): Promise<void> {
    this.server = createServer((req, res) => {
      this.arrivals.push({ method: req.method ?? '', path: (req.url ?? '').split('?')[0]!, userAgent: req.headers['user-agent'] });
      this.handle(req, res).catch((err: unknown) => {
        // A bug in the emulator still gets an answer, unless the connection is past taking one.
        if (res.headersSent || res.destroyed) return;
        const message = err instanceof Error ? err.message : String(err);
        this.send(res, this.problemReply(new HttpProblem(500, message)));
      });
    }, tls);
    this.server.on('connection', () => this.connections++);
    this.origin = await listen(this.server, host, port);
  }

  failNext(route: Route, count: number, status = 503): void {
    this.queueFaults(route, count, { kind: 'status', status });
  }

  resetNext(route: Route, count: number, when: 'before' | 'after' = 'before'): void {
    this.queueFaults(route, count, { kind: 'reset', when });
  }

  /**
   * The next `count` calls of the route are answered with `status` (a 5xx by default) whose error
   * message echoes the request back: method, URL with its query, and every header (Authorization
   * included), as a careless proxy or framework error page does. For tests that no secret in
   * a platform's error body reaches the daemon's logs.
   */
  echoNext(route: Route, count: number, status = 500): void {
    this.queueFaults(route, count, { kind: 'echo', status });
  }

  /** Drops the faults still queued for the route. */
  clearFaults(route: Route): void {
    this.faults.delete(route);
  }

  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
  }

  protected abstract handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void>;

  /** The platform's answer to a refusal. */
  protected abstract problemReply(problem: HttpProblem): Reply;

  protected abstract send(res: http.ServerResponse, reply: Reply): void;

  protected queueFaults(route: Route, count: number, fault: Fault): void {
    const queue = this.faults.get(route) ?? [];
    for (let i = 0; i < count; i++) queue.push({ ...fault });
    this.faults.set(route, queue);
  }

  protected takeFault(route: Route): Fault | undefined {
    return this.faults.get(route)?.shift();
  }

  /** The message of an injected status (failNext). */
  protected injectedMessage(_status: number): string {
    return 'Service temporarily unavailable (injected)';
  }

  /**
   * What a fault answers in place of the call: its injected status, or a reset before the call is
   * carried out. undefined: the call is carried out.
   */
  protected preemption(fault: Fault | undefined, req?: http.IncomingMessage): Reply | 'reset' | undefined {
    if (fault?.kind === 'status') {
      return this.problemReply(new HttpProblem(fault.status, this.injectedMessage(fault.status)));
    }
    if (fault?.kind === 'echo') return this.problemReply(new HttpProblem(fault.status, echoMessage(req)));
    if (fault?.kind === 'reset' && fault.when === 'before') return 'reset';
    return undefined;
  }

  /** Runs a call's work; a refusal it throws becomes the reply, anything else stays a crash (500). */
  protected async carryOut<T extends Reply | 'reset'>(work: () => T | Promise<T>): Promise<T | Reply> {
    try {
      return await work();
    } catch (err) {
      if (!(err instanceof HttpProblem)) throw err;
      return this.problemReply(err);
    }
  }

  /** Logs the call with its outcome, then answers it or, for 'reset', destroys the connection. */
  protected answer(req: http.IncomingMessage, res: http.ServerResponse, call: Call, reply: Reply | 'reset'): void {
    call.status = reply === 'reset' ? 0 : reply.status;
    this.calls.push(call);
    if (reply === 'reset') req.socket.destroy();
    else this.send(res, reply);
  }
}

/** An error message that gives the request back, secrets and all (see echoNext). */
export function echoMessage(req: http.IncomingMessage | undefined): string {
  if (!req) return 'internal error (injected)';
  return `internal error (injected) while handling ${req.method} ${req.url} with headers ${JSON.stringify(req.headers)}`;
}

/** The whole request body; past `maxBytes` it is refused with 413 and `tooLarge`. */
export async function readBody(req: http.IncomingMessage, maxBytes: number, tooLarge = 'request body too large'): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > maxBytes) throw new HttpProblem(413, tooLarge);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/** The body parsed as JSON; undefined when it is empty or not JSON (JSON itself has no undefined). */
export function parseJson(raw: Buffer): unknown {
  try {
    return JSON.parse(raw.toString('utf8')) as unknown;
  } catch {
    return undefined;
  }
}

/** A non-empty body as a call log shows it: its JSON, or its text when it is not JSON. */
export function loggedBody(raw: Buffer): unknown {
  return parseJson(raw) ?? raw.toString('utf8');
}

/**
 * The JSON body of a call. A JSON API reads a body only when it is declared as JSON: anything else
 * is refused (415), not guessed at. `headerName` is how the refusal spells the header.
 */
export function jsonBody(req: http.IncomingMessage, raw: Buffer, headerName = 'content-type'): unknown {
  const contentType = req.headers['content-type'] ?? '';
  if (!/^application\/json\s*(;|$)/i.test(contentType)) {
    throw new HttpProblem(415, `${headerName} must be application/json, got "${contentType}"`);
  }
  if (raw.length === 0) throw new HttpProblem(400, 'request body is required');
  const value = parseJson(raw);
  if (value === undefined) throw new HttpProblem(400, 'request body is not valid JSON');
  return value;
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * The value as the schema has it, or a 400 naming every offending field as `field: what`
 * (`media.tags.cameraId: expected string`, `parts[0].eTag: …`). `prefix` is where the value sits in
 * the body, when it is only part of it.
 */
export function validate<T extends z.ZodType>(schema: T, value: unknown, prefix?: string): z.infer<T> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const where = (path: PropertyKey[]) => fieldPath(prefix === undefined ? path : [prefix, ...path]) || 'body';
  throw new HttpProblem(400, result.error.issues.map((issue) => `${where(issue.path)}: ${issue.message}`).join('; '));
}

function fieldPath(path: PropertyKey[]): string {
  return path.reduce<string>((out, p) => (typeof p === 'number' ? `${out}[${p}]` : out ? `${out}.${String(p)}` : String(p)), '');
}

/** Sends the reply as JSON with its length; `headers` add to these or override the content type. */
export function sendJson(res: http.ServerResponse, reply: Reply, headers: http.OutgoingHttpHeaders = {}): void {
  const text = JSON.stringify(reply.body);
  res.writeHead(reply.status, {
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(text)),
    ...headers,
  });
  res.end(text);
}

/** The challenge a Bearer-token API sends with a 401. */
export function bearerChallenge(status: number): http.OutgoingHttpHeaders {
  return status === 401 ? { 'www-authenticate': 'Bearer' } : {};
}
