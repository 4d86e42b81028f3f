/**
 * Calls to a platform's API: credentials applied, bounded by the target's `request_timeout`,
 * every refusal turned into a TargetError of the right kind — here and only here — and JSON
 * answers validated with a zod schema.
 */
import type { Readable } from 'node:stream';
import type { z } from 'zod';
import type { Secrets } from '../log/redact.js';
import type { HttpClient, HttpResponse } from '../upload/http.js';
import { retryAfterMs, statusKind } from '../upload/http.js';
import type { Authenticator } from './auth.js';
import { TargetError } from './target.js';

export interface ApiCall<S extends z.ZodType> {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** Path below the base URL, already encoded. */
  path: string;
  query?: Record<string, string>;
  json?: unknown;
  schema: S;
  signal?: AbortSignal;
}

/** A request whose body is not JSON (a chunk in a multipart form), sent and refused like any API call. */
export interface RawCall {
  method: 'POST' | 'PUT';
  path: string;
  headers: Record<string, string>;
  body: Readable | string;
  /** Shown after the path in errors (e.g. the Content-Range of a chunk). */
  detail?: string;
  /** A chunk's body is watched for stalls by the engine: no overall limit then. */
  timeoutMs?: number | null;
  signal?: AbortSignal;
}

export interface PlatformApi {
  /** Shown in errors: which platform said it, e.g. `ALO (alo)`. */
  platform: string;
  baseUrl: string;
  /** Seconds an API call may take (the target's request_timeout). */
  requestTimeout: number;
}

export class JsonApi {
  constructor(
    private readonly api: PlatformApi,
    private readonly http: HttpClient,
    private readonly auth: Authenticator,
    private readonly secrets: Secrets,
  ) {}

  async call<S extends z.ZodType>(call: ApiCall<S>): Promise<z.infer<S>> {
    const qs = call.query ? `?${new URLSearchParams(call.query).toString()}` : '';
    const headers: Record<string, string> = { accept: 'application/json' };
    if (call.json !== undefined) headers['content-type'] = 'application/json';
    const what = `${this.api.platform} ${call.method} ${call.path}`;
    const res = await this.request(
      what,
      `${call.path}${qs}`,
      { method: call.method, headers, body: call.json === undefined ? null : JSON.stringify(call.json) },
      call.signal,
    );
    let body: unknown;
    try {
      body = res.text === '' ? {} : JSON.parse(res.text);
    } catch {
      throw new TargetError(
        'retryable',
        `${what} answered ${res.status} with a body that is not JSON: ${this.secrets.text(res.text.slice(0, 200))}`,
      );
    }
    const parsed = call.schema.safeParse(body);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new TargetError('permanent', `${what} answered an unexpected body (${issue?.path.join('.') || 'body'}: ${issue?.message})`);
    }
    return parsed.data;
  }

  /** Sends a raw body; resolves with the answer's text on a 2xx. */
  async send(call: RawCall): Promise<string> {
    const what = `${this.api.platform} ${call.method} ${call.path}${call.detail ? ` (${call.detail})` : ''}`;
    const res = await this.request(
      what,
      call.path,
      { method: call.method, headers: { accept: 'application/json', ...call.headers }, body: call.body, timeoutMs: call.timeoutMs },
      call.signal,
    );
    return res.text;
  }

  private async request(
    what: string,
    pathAndQuery: string,
    req: {
      method: ApiCall<z.ZodType>['method'];
      headers: Record<string, string>;
      body: Readable | string | null;
      timeoutMs?: number | null;
    },
    signal: AbortSignal | undefined,
  ): Promise<HttpResponse> {
    const authorized = await this.auth.authorize(`${this.api.baseUrl}${pathAndQuery}`, req.headers, signal);
    const timeoutMs = req.timeoutMs === undefined ? this.api.requestTimeout * 1000 : req.timeoutMs;
    const res = await this.http.request({
      method: req.method,
      url: authorized.url,
      headers: authorized.headers,
      body: req.body,
      signal,
      timeoutMs,
    });
    if (res.status < 200 || res.status >= 300) throw this.refusal(res, what);
    return res;
  }

  /** The one mapping of a platform's refusal to the kind of error the pacer acts on. */
  private refusal(res: HttpResponse, what: string): TargetError {
    let kind = statusKind(res.status);
    // A 401 means "log in again" only where there is a login; a fixed credential stays refused.
    if (kind === 'reauth' && !this.auth.invalidate()) kind = 'permanent';
    return new TargetError(kind, `${what} answered ${res.status}: ${platformMessage(res.text, this.secrets)}`, {
      status: res.status,
      retryAfterMs: retryAfterMs(res.headers),
    });
  }
}

/** The platform's own words from an error body, whatever its shape. */
export function platformMessage(text: string, secrets: Secrets): string {
  try {
    const body = JSON.parse(text) as Record<string, unknown>;
    const err = body.error;
    const msg = (err && typeof err === 'object' ? (err as Record<string, unknown>).message : err) ?? body.message ?? body.detail ?? text;
    return secrets.text(typeof msg === 'string' ? msg : JSON.stringify(msg)).slice(0, 500);
  } catch {
    return secrets.text(text.slice(0, 500)) || '(empty body)';
  }
}
