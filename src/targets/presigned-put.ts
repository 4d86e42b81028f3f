/**
 * PUTting bytes to an S3 presigned URL, shared by every platform that hands out such URLs.
 *
 * Real S3 refuses any `x-amz-*` or `Content-MD5` header its URL did not sign and refuses
 * chunked bodies, so the request carries exactly `Content-Length` (and a `Content-Type` when
 * the platform asks for one), besides the User-Agent every request has (S3 never asks for that
 * one to be signed). Integrity is checked on our side instead: the ETag S3 returns is the
 * part's MD5, compared by the engine with the MD5 of what was read from the file.
 */
import type { Readable } from 'node:stream';
import type { HttpClient, HttpResponse } from '../upload/http.js';
import { retryAfterMs } from '../upload/http.js';
import { redactUrl, redactText } from '../log/redact.js';
import { TargetError } from './target.js';

/** S3 error codes that mean "the same request may well succeed again". */
const RETRYABLE_S3_CODES = new Set(['RequestTimeout', 'IncompleteBody', 'BadDigest', 'SlowDown', 'InternalError', 'ServiceUnavailable']);

export async function putPresigned(
  http: HttpClient,
  url: string,
  body: Readable,
  size: number,
  signal: AbortSignal,
  contentType?: string,
): Promise<string | null> {
  const headers: Record<string, string> = { 'content-length': String(size) };
  if (contentType) headers['content-type'] = contentType;
  // No overall timeout: the engine watches the body for stalls (a part may take minutes on a slow uplink).
  const res = await http.request({ method: 'PUT', url, headers, body, signal, timeoutMs: null });
  if (res.status >= 200 && res.status < 300) return etagOf(res);
  throw presignedError(res, url);
}

function etagOf(res: HttpResponse): string | null {
  const raw = res.headers.etag;
  const value = Array.isArray(raw) ? raw[0] : raw;
  return value ? value.replace(/^W\//, '').replace(/"/g, '') : null;
}

export function presignedError(res: HttpResponse, url: string): TargetError {
  const code = /<Code>([^<]+)<\/Code>/.exec(res.text)?.[1];
  const message = /<Message>([^<]+)<\/Message>/.exec(res.text)?.[1];
  const what = `PUT ${redactUrl(url)} answered ${res.status}${code ? ` ${code}` : ''}${message ? `: ${redactText(message)}` : ''}`;
  if (res.status === 403) return new TargetError('new-url', what, { status: 403 });
  if (res.status === 429 || res.status >= 500 || (code && RETRYABLE_S3_CODES.has(code))) {
    return new TargetError('retryable', what, { status: res.status, retryAfterMs: retryAfterMs(res.headers) });
  }
  return new TargetError('permanent', what, { status: res.status });
}

/** When a presigned URL stops working: X-Amz-Date + X-Amz-Expires, or null if it does not say. */
function presignedExpiry(url: string): number | null {
  const date = /[?&]X-Amz-Date=(\d{8}T\d{6}Z)/i.exec(url)?.[1];
  const expires = /[?&]X-Amz-Expires=(\d+)/i.exec(url)?.[1];
  if (!date || !expires) return null;
  const iso = `${date.slice(0, 4)}-${date.slice(4, 6)}-${date.slice(6, 8)}T${date.slice(9, 11)}:${date.slice(11, 13)}:${date.slice(13, 15)}Z`;
  return Date.parse(iso) + Number(expires) * 1000;
}

/** Fresh URLs are fetched when a tenth of their lifetime (at most 5 min) is left: a part must fit in it. */
const URL_MARGIN_MAX_MS = 5 * 60_000;
/** Lifetime assumed for a URL that does not say when it expires. */
const URL_DEFAULT_LIFETIME_MS = 3600_000;

/** When to stop handing out URLs fetched at `fetchedAt`: before the first of them expires, by the margin. */
export function renewUrlsAt(urls: readonly string[], fetchedAt: number): number {
  const expiresAt = Math.min(...urls.map((u) => presignedExpiry(u) ?? fetchedAt + URL_DEFAULT_LIFETIME_MS));
  return expiresAt - Math.min(URL_MARGIN_MAX_MS, (expiresAt - fetchedAt) / 10);
}
