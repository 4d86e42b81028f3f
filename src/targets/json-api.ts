/**
 * JSON calls to a platform's API: credentials applied, the response validated with a zod schema,
 * and every failure turned into a TargetError of the right kind, here and only here.
 */
import type { z } from 'zod';
import type { HttpClient } from '../upload/http.js';
import { retryAfterMs, statusKind } from '../upload/http.js';
import { redactText } from '../log/redact.js';
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

export class JsonApi {
  constructor(
    /** Shown in errors: which platform said it. */
    private readonly platform: string,
    private readonly baseUrl: string,
    private readonly http: HttpClient,
    private readonly auth: Authenticator,
  ) {}

  async call<S extends z.ZodType>(call: ApiCall<S>): Promise<z.infer<S>> {
    const qs = call.query ? `?${new URLSearchParams(call.query).toString()}` : '';
    const headers: Record<string, string> = { accept: 'application/json' };
    if (call.json !== undefined) headers['content-type'] = 'application/json';
    const authorized = await this.auth.authorize(`${this.baseUrl}${call.path}${qs}`, headers, call.signal);
    const res = await this.http.request({
      method: call.method,
      url: authorized.url,
      headers: authorized.headers,
      body: call.json === undefined ? null : JSON.stringify(call.json),
      signal: call.signal,
    });
    const what = `${this.platform} ${call.method} ${call.path.split('?')[0]}`;
    if (res.status < 200 || res.status >= 300) {
      let kind = statusKind(res.status);
      if (kind === 'reauth' && !this.auth.invalidate()) kind = 'permanent';
      throw new TargetError(kind, `${what} answered ${res.status}: ${platformMessage(res.text)}`, {
        status: res.status,
        retryAfterMs: retryAfterMs(res.headers),
      });
    }
    let body: unknown;
    try {
      body = res.text === '' ? {} : JSON.parse(res.text);
    } catch {
      throw new TargetError('retryable', `${what} answered ${res.status} with a body that is not JSON: ${redactText(res.text.slice(0, 200))}`);
    }
    const parsed = call.schema.safeParse(body);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new TargetError('permanent', `${what} answered an unexpected body (${issue?.path.join('.') || 'body'}: ${issue?.message})`);
    }
    return parsed.data;
  }
}

/** The platform's own words from an error body, whatever its shape. */
export function platformMessage(text: string): string {
  try {
    const body = JSON.parse(text) as Record<string, unknown>;
    const err = body.error;
    const msg =
      (err && typeof err === 'object' ? (err as Record<string, unknown>).message : err) ?? body.message ?? body.detail ?? text;
    return redactText(typeof msg === 'string' ? msg : JSON.stringify(msg)).slice(0, 500);
  } catch {
    return redactText(text.slice(0, 500)) || '(empty body)';
  }
}
