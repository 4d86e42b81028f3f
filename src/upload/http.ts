/**
 * The one HTTP client: an undici Agent with a bounded keep-alive pool per origin.
 *
 * URLs are sent byte for byte as the platform gave them: presigned URLs are signed over their
 * exact path and query, so we hand undici the raw path instead of a re-serialised URL object.
 * Network failures become retryable TargetErrors here, once, so nobody above parses messages.
 *
 * Each request has a timeout: API calls get their target's `request_timeout`; part uploads get
 * none here, because their bodies are watched for stalls instead (upload.stall_timeout), and a
 * slow uplink may take minutes for one part while bytes keep moving.
 */
import { Agent, errors as undiciErrors } from 'undici';
import type { Readable } from 'node:stream';
import type { Secrets } from '../log/redact.js';
import { TargetError } from '../targets/target.js';
import { BUILD } from '../version.js';

export interface HttpRequest {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  url: string;
  headers?: Record<string, string>;
  body?: string | Buffer | Readable | null;
  signal?: AbortSignal;
  /** The whole request (connect, send, answer) may take this long; null: no limit (the caller watches progress). */
  timeoutMs: number | null;
}

export interface HttpResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

/** Errors of the request body's own stream (reading the file), kept apart from network errors. */
export class BodyReadError extends Error {
  override readonly name = 'BodyReadError';
  constructor(readonly original: Error) {
    super(original.message, { cause: original });
  }
}

export function splitUrl(url: string, secrets: Secrets): { origin: string; path: string } {
  const m = /^(https?:\/\/[^/?#]+)(.*)$/i.exec(url);
  if (!m) throw new TargetError('permanent', `not an http(s) URL: ${secrets.url(url)}`);
  const rest = m[2] ?? '';
  return { origin: m[1]!, path: rest.startsWith('/') ? rest : `/${rest}` };
}

/** A request that took longer than its timeout: retryable, like any network failure. */
class RequestTimeoutError extends Error {
  override readonly name = 'RequestTimeoutError';
  readonly code = 'ETIMEDOUT';
}

export class HttpClient {
  private readonly agent: Agent;

  constructor(
    options: { connectionsPerOrigin: number },
    private readonly secrets: Secrets,
  ) {
    this.agent = new Agent({
      connections: options.connectionsPerOrigin,
      pipelining: 1,
      keepAliveTimeout: 30_000,
      // Timeouts are per request (see HttpRequest.timeoutMs); a connect that hangs is bounded here.
      headersTimeout: 0,
      bodyTimeout: 0,
      connectTimeout: 30_000,
    });
  }

  async request(req: HttpRequest): Promise<HttpResponse> {
    const { origin, path } = splitUrl(req.url, this.secrets);
    let bodyError: Error | null = null;
    if (req.body && typeof req.body === 'object' && 'on' in req.body) {
      req.body.once('error', (err: Error) => (bodyError = err));
    }
    const timeout = req.timeoutMs === null ? null : AbortSignal.timeout(req.timeoutMs);
    const signal = timeout && req.signal ? AbortSignal.any([req.signal, timeout]) : (timeout ?? req.signal);
    try {
      const res = await this.agent.request({
        origin,
        path,
        method: req.method,
        // Platform operators tell a site's version by it. Not a signed header of presigned URLs, so S3 accepts it there too.
        headers: { 'user-agent': BUILD.userAgent, ...req.headers },
        body: req.body ?? null,
        signal,
      });
      const text = await res.body.text();
      return { status: res.statusCode, headers: res.headers, text };
    } catch (err) {
      if (bodyError) throw new BodyReadError(bodyError);
      const timedOut = timeout?.aborted && !req.signal?.aborted;
      throw classifyNetworkError(
        timedOut ? new RequestTimeoutError(`no complete answer within ${req.timeoutMs} ms`) : err,
        req,
        this.secrets,
      );
    }
  }

  async close(): Promise<void> {
    await this.agent.close();
  }
}

function classifyNetworkError(err: unknown, req: HttpRequest, secrets: Secrets): Error {
  if (req.signal?.aborted) return (req.signal.reason as Error) ?? (err as Error);
  if (err instanceof TargetError) return err;
  const e = err as Error & { code?: string };
  const isNetwork =
    e instanceof undiciErrors.UndiciError ||
    ['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ECONNABORTED'].includes(
      e.code ?? '',
    );
  const what = `${req.method} ${secrets.url(req.url)}`;
  return new TargetError(isNetwork ? 'retryable' : 'permanent', `${what}: ${e.code ? `${e.code} ` : ''}${secrets.text(e.message)}`, {
    cause: err,
  });
}

/** The class of an HTTP status every platform shares; platform modules refine it where their API says more. */
export function statusKind(status: number): 'retryable' | 'reauth' | 'permanent' {
  if (status === 401) return 'reauth';
  if (status === 408 || status === 425 || status === 429 || status >= 500) return 'retryable';
  return 'permanent';
}

export function retryAfterMs(headers: HttpResponse['headers']): number | undefined {
  const raw = headers['retry-after'];
  const value = Array.isArray(raw) ? raw[0] : raw;
  if (!value) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(value);
  return Number.isFinite(date) ? Math.max(0, date - Date.now()) : undefined;
}
