/**
 * The three `auth` forms of the configuration: a bearer token, a fixed header, or a token
 * fetched by a JSON login and fetched again after a 401. Credentials go on platform API calls
 * only, never on presigned URLs (those carry their own signature).
 */
import type { AuthConfig } from '../config/target-keys.js';
import type { Secrets } from '../log/redact.js';
import type { HttpClient } from '../upload/http.js';
import { statusKind } from '../upload/http.js';
import { TargetError } from './target.js';

export interface AuthorizedRequest {
  url: string;
  headers: Record<string, string>;
}

export class Authenticator {
  private token: string | null = null;
  private login: Promise<string> | null = null;

  constructor(
    private readonly config: AuthConfig,
    private readonly http: HttpClient,
    private readonly secrets: Secrets,
    /** Seconds a login may take (the target's request_timeout). */
    private readonly requestTimeout: number,
  ) {
    // Whatever a platform echoes back (an error page with our headers, a URL with our token),
    // these values leave the daemon's logs and errors masked.
    for (const value of configuredSecrets(config)) secrets.register(value);
  }

  /** The URL and headers with the credentials applied; logs in first when needed. */
  async authorize(url: string, headers: Record<string, string>, signal?: AbortSignal): Promise<AuthorizedRequest> {
    const c = this.config;
    if ('login' in c) {
      const token = await this.currentToken(signal);
      const send = c.send_as;
      if (send?.query !== undefined) {
        const sep = url.includes('?') ? '&' : '?';
        return { url: `${url}${sep}${encodeURIComponent(send.query)}=${encodeURIComponent(token)}`, headers };
      }
      if (send?.header !== undefined) return { url, headers: { ...headers, [send.header.toLowerCase()]: token } };
      return { url, headers: { ...headers, authorization: `Bearer ${token}` } };
    }
    if ('header' in c) return { url, headers: { ...headers, [c.header.toLowerCase()]: (c.value ?? c.value_file)!.reveal() } };
    return { url, headers: { ...headers, authorization: `Bearer ${(c.bearer ?? c.bearer_file)!.reveal()}` } };
  }

  /** The platform answered 401: the next call logs in again. Fixed credentials cannot be renewed. */
  invalidate(): boolean {
    if (!('login' in this.config)) return false;
    this.token = null;
    return true;
  }

  private currentToken(signal?: AbortSignal): Promise<string> {
    if (this.token) return Promise.resolve(this.token);
    this.login ??= this.fetchToken(signal).finally(() => (this.login = null));
    return this.login;
  }

  private async fetchToken(signal?: AbortSignal): Promise<string> {
    if (!('login' in this.config)) throw new Error('not a login auth');
    const { url, token_field: tokenField } = this.config.login;
    const body = (this.config.login.body ?? this.config.login.body_file)!.reveal();
    const res = await this.http.request({
      method: 'POST',
      url,
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body,
      signal,
      timeoutMs: this.requestTimeout * 1000,
    });
    if (res.status < 200 || res.status >= 300) {
      const kind = statusKind(res.status) === 'retryable' ? 'retryable' : 'permanent';
      throw new TargetError(
        kind,
        `login at ${this.secrets.url(url)} answered ${res.status}: ${this.secrets.text(res.text.slice(0, 300))}`,
        { status: res.status },
      );
    }
    const token = fieldAt(res.text, tokenField);
    if (typeof token !== 'string' || token === '') {
      throw new TargetError('permanent', `login at ${this.secrets.url(url)} answered without a token at "${tokenField}"`);
    }
    this.secrets.register(token, 'issued');
    this.token = token;
    return token;
  }
}

/** The value at a dotted path of a JSON text (`data.access_token`), or undefined. */
function fieldAt(text: string, dotted: string): unknown {
  try {
    return dotted
      .split('.')
      .reduce<unknown>((o, k) => (o && typeof o === 'object' ? (o as Record<string, unknown>)[k] : undefined), JSON.parse(text));
  } catch {
    return undefined;
  }
}

/** The credential values of an auth block: the token, the header value, or a login body's secret fields. */
function configuredSecrets(config: AuthConfig): string[] {
  if ('login' in config) return secretFields((config.login.body ?? config.login.body_file)!.reveal());
  if ('header' in config) return [(config.value ?? config.value_file)!.reveal()];
  return [(config.bearer ?? config.bearer_file)!.reveal()];
}

/** The values of a login body's fields that name a credential (password, apiKey, client_secret…), at any depth. */
function secretFields(bodyText: string): string[] {
  const out: string[] = [];
  const walk = (value: unknown, key: string): void => {
    if (typeof value === 'string') {
      if (/pass|secret|key|token|credential/i.test(key)) out.push(value);
    } else if (value && typeof value === 'object') {
      for (const [k, v] of Object.entries(value)) walk(v, k);
    }
  };
  try {
    walk(JSON.parse(bodyText), '');
  } catch {
    // Not JSON: nothing to pick out (the body is only ever sent, never logged).
  }
  return out;
}
