/**
 * The one HTTP client: undici dispatchers with a bounded keep-alive pool per origin, one straight
 * out and one per proxy (network.ts says which a URL takes). Every request of the daemon goes
 * through here: platform APIs, logins and presigned PUTs.
 *
 * URLs are sent byte for byte as the platform gave them: presigned URLs are signed over their
 * exact path and query, so we hand undici the raw path instead of a re-serialised URL object.
 * Network failures become TargetErrors here, once, so nobody above parses messages: a proxy that
 * refuses or cannot be reached is retryable and named; a TLS certificate the box does not trust is
 * a `configuration` problem naming the host. Both are also recorded in NetworkHealth for `status`
 * and `/healthz`, until the host answers again.
 *
 * Through a proxy, https:// URLs go in a CONNECT tunnel and http:// URLs as absolute-form requests
 * (`GET http://host/path`): undici's ProxyAgent tunnels both unless `proxyTunnel` is false.
 *
 * Each request has a timeout: API calls get their target's `request_timeout`; part uploads get
 * none here, because their bodies are watched for stalls instead (upload.stall_timeout), and a
 * slow uplink may take minutes for one part while bytes keep moving.
 */
import { STATUS_CODES } from 'node:http';
import type { Readable } from 'node:stream';
import { createSecureContext } from 'node:tls';
import { Agent, ProxyAgent, errors as undiciErrors, type Dispatcher } from 'undici';
import type { Secrets } from '../log/redact.js';
import { TargetError } from '../targets/target.js';
import { BUILD } from '../version.js';
import type { NetworkHealth } from './network-health.js';
import { NetworkSettings, type ProxyRoute } from './network.js';

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

export interface HttpClientOptions {
  connectionsPerOrigin: number;
  /** Proxies and trusted CAs. Default: straight out, Node's trusted CAs. */
  network?: NetworkSettings;
  /** Where TLS and proxy problems are recorded for status and /healthz. Default: nowhere. */
  health?: NetworkHealth;
}

export class HttpClient {
  private readonly network: NetworkSettings;
  private readonly direct: Agent;
  /** One dispatcher per configured proxy. */
  private readonly proxied = new Map<ProxyRoute, ProxyAgent>();

  constructor(
    private readonly options: HttpClientOptions,
    private readonly secrets: Secrets,
  ) {
    this.network = options.network ?? NetworkSettings.direct;
    const pool = {
      connections: options.connectionsPerOrigin,
      pipelining: 1,
      keepAliveTimeout: 30_000,
      // Timeouts are per request (see HttpRequest.timeoutMs); a connect that hangs is bounded here.
      headersTimeout: 0,
      bodyTimeout: 0,
      connectTimeout: 30_000,
    };
    // One context for every connection: given as `ca`, each TLS connection would parse the whole set again.
    const trust = this.network.ca ? { secureContext: createSecureContext({ ca: [...this.network.ca] }) } : undefined;
    this.direct = new Agent({ ...pool, ...(trust && { connect: trust }) });
    for (const route of new Set(Object.values(this.network.proxies))) {
      if (!route || this.proxied.has(route)) continue;
      const authorization = route.proxy.authorization();
      for (const secret of [route.proxy.username?.reveal(), route.proxy.password?.reveal(), authorization?.slice('Basic '.length)]) {
        if (secret) secrets.register(secret);
      }
      this.proxied.set(
        route,
        new ProxyAgent({
          ...pool,
          // The URL without credentials: undici keeps it, and it must not surface in an error.
          uri: route.proxy.origin,
          ...(authorization && { token: authorization }),
          proxyTunnel: false,
          ...(trust && { requestTls: trust, proxyTls: trust }),
        }),
      );
    }
  }

  async request(req: HttpRequest): Promise<HttpResponse> {
    const { origin, path } = splitUrl(req.url, this.secrets);
    const target = new URL(origin);
    const route = this.network.proxyFor(target);
    const dispatcher: Dispatcher = route ? this.proxied.get(route)! : this.direct;
    let bodyError: Error | null = null;
    if (req.body && typeof req.body === 'object' && 'on' in req.body) {
      req.body.once('error', (err: Error) => (bodyError = err));
    }
    const timeout = req.timeoutMs === null ? null : AbortSignal.timeout(req.timeoutMs);
    const signal = timeout && req.signal ? AbortSignal.any([req.signal, timeout]) : (timeout ?? req.signal);
    try {
      const res = await dispatcher.request({
        origin,
        path,
        method: req.method,
        // Platform operators tell a site's version by it. Not a signed header of presigned URLs, so S3 accepts it there too.
        headers: { 'user-agent': BUILD.userAgent, ...req.headers },
        body: req.body ?? null,
        signal,
      });
      this.options.health?.answered(target.host);
      const text = await res.body.text();
      return { status: res.statusCode, headers: res.headers, text };
    } catch (err) {
      if (bodyError) throw new BodyReadError(bodyError);
      const timedOut = timeout?.aborted && !req.signal?.aborted;
      const classified = classifyNetworkError(
        timedOut ? new RequestTimeoutError(`no complete answer within ${req.timeoutMs} ms`) : err,
        req,
        { target, route },
        this.secrets,
      );
      if (classified.problem) this.options.health?.failed(classified.problem.kind, target.host, classified.problem.message);
      throw classified.error;
    }
  }

  async close(): Promise<void> {
    await Promise.all([this.direct.close(), ...[...this.proxied.values()].map((p) => p.close())]);
  }
}

/** Node's codes for a server certificate it does not accept. */
const CERTIFICATE_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_SIGNATURE_FAILURE',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'CERT_CHAIN_TOO_LONG',
  'INVALID_CA',
  'INVALID_PURPOSE',
  'CERT_REVOKED',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'HOSTNAME_MISMATCH',
]);

/** Failures to open a connection: through a proxy, the connection is the proxy's. */
const CONNECT_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_CONNECT_TIMEOUT']);

const NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ECONNABORTED',
]);

interface Classified {
  error: Error;
  /** What NetworkHealth records for the host, beside the error. */
  problem?: { kind: 'tls' | 'proxy'; message: string };
}

function classifyNetworkError(
  err: unknown,
  req: HttpRequest,
  where: { target: URL; route: ProxyRoute | null },
  secrets: Secrets,
): Classified {
  if (req.signal?.aborted) return { error: (req.signal.reason as Error) ?? (err as Error) };
  if (err instanceof TargetError) return { error: err };
  const e = err as Error & { code?: string };
  const what = `${req.method} ${secrets.url(req.url)}`;
  const host = where.target.host;

  const certificate = codeInChain(err, CERTIFICATE_CODES);
  if (certificate) {
    const message = `TLS certificate of ${host} not accepted: ${certificate.code} (${secrets.text(certificate.message)}); ${certificateHint(certificate.code)}`;
    return {
      error: new TargetError('configuration', `${what}: ${message}`, { cause: err, reason: 'tls_certificate' }),
      problem: { kind: 'tls', message },
    };
  }

  const route = where.route;
  if (route) {
    const proxy = `proxy ${route.proxy.origin}`;
    const refusedWith = proxyRefusalStatus(err);
    if (refusedWith !== null) {
      const request = where.target.protocol === 'https:' ? `CONNECT to ${host}` : `the request to ${host}`;
      const message =
        `${proxy} refused ${request}: ${refusedWith} ${STATUS_CODES[refusedWith] ?? ''}`.trimEnd() + proxyHint(refusedWith, route);
      return {
        error: new TargetError('retryable', `${what}: ${message}`, { cause: err, reason: 'proxy_refused' }),
        problem: { kind: 'proxy', message },
      };
    }
    const unreachable = codeInChain(err, CONNECT_CODES);
    if (unreachable) {
      const message = `${proxy} (${route.source}) cannot be reached for ${host}: ${unreachable.code}`;
      return {
        error: new TargetError('retryable', `${what}: ${message}`, { cause: err, reason: 'proxy_unreachable' }),
        problem: { kind: 'proxy', message },
      };
    }
  }

  const isNetwork = e instanceof undiciErrors.UndiciError || NETWORK_CODES.has(e.code ?? '');
  return {
    error: new TargetError(isNetwork ? 'retryable' : 'permanent', `${what}: ${e.code ? `${e.code} ` : ''}${secrets.text(e.message)}`, {
      cause: err,
    }),
  };
}

/** The first error along the `cause` chain whose code is one of `codes` (undici wraps some). */
function codeInChain(err: unknown, codes: ReadonlySet<string>): { code: string; message: string } | null {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && codes.has(code)) return { code, message: e.message };
  }
  return null;
}

function certificateHint(code: string): string {
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID' || code === 'HOSTNAME_MISMATCH') return 'the certificate is for another host name';
  if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID')
    return "the certificate is outside its validity dates (is the box's clock right?)";
  return 'it is not issued by a CA this box trusts: if the network inspects TLS (a corporate proxy), put that CA in network.ca_file';
}

function proxyHint(status: number, route: ProxyRoute): string {
  // 407 is the proxy's "who are you"; some proxies (tinyproxy) answer wrong credentials with 401.
  if (status === 407 || status === 401) {
    return route.proxy.hasCredentials
      ? ` (the user name or password in ${route.source} is not accepted)`
      : ` (the proxy wants a user name and password, and ${route.source} gives none)`;
  }
  if (status === 403) return ' (the proxy does not allow this host or port)';
  return '';
}

/**
 * The status a proxy refused with. undici's ProxyAgent gives it only in its message:
 * `Proxy response (407) !== 200 when HTTP Tunneling` (a refused CONNECT, lib/dispatcher/proxy-agent.js)
 * and `Proxy Authentication Required (407)` (an absolute-form request answered 407).
 */
function proxyRefusalStatus(err: unknown): number | null {
  if (err instanceof undiciErrors.RequestAbortedError) {
    const m = /^Proxy response \((\d{3})\)/.exec(err.message);
    if (m) return Number(m[1]);
  }
  if (err instanceof undiciErrors.InvalidArgumentError && /^Proxy Authentication Required \(407\)$/.test(err.message)) return 407;
  return null;
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
