/**
 * The three `auth` forms of the configuration: a bearer token, a fixed header, or a token
 * fetched by a JSON login and fetched again after a 401. Credentials go on platform API calls
 * only, never on presigned URLs (those carry their own signature).
 */
import type { AuthConfig } from '../config/schema.js';
import type { HttpClient } from '../upload/http.js';
import { statusKind } from '../upload/http.js';
import { redactText, redactUrl, registerSecret } from '../log/redact.js';
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
  ) {
    // Whatever a platform echoes back (an error page with our headers, a URL with our token),
    // these values leave the daemon's logs and errors masked.
    if (config.kind === 'bearer') registerSecret(config.token.reveal());
    if (config.kind === 'header') registerSecret(config.value.reveal());
    if (config.kind === 'login') for (const value of secretFields(config.body.reveal())) registerSecret(value);
  }

  /** The URL and headers with the credentials applied; logs in first when needed. */
  async authorize(url: string, headers: Record<string, string>, signal?: AbortSignal): Promise<AuthorizedRequest> {
    const c = this.config;
    switch (c.kind) {
      case 'bearer':
        return { url, headers: { ...headers, authorization: `Bearer ${c.token.reveal()}` } };
      case 'header':
        return { url, headers: { ...headers, [c.name.toLowerCase()]: c.value.reveal() } };
      case 'login': {
        const token = await this.currentToken(signal);
        const send = c.sendAs;
        if (send.kind === 'query') {
          const sep = url.includes('?') ? '&' : '?';
          return { url: `${url}${sep}${encodeURIComponent(send.name)}=${encodeURIComponent(token)}`, headers };
        }
        if (send.kind === 'header') return { url, headers: { ...headers, [send.name.toLowerCase()]: token } };
        return { url, headers: { ...headers, authorization: `Bearer ${token}` } };
      }
    }
  }

  /** The platform answered 401: the next call logs in again. Fixed credentials cannot be renewed. */
  invalidate(): boolean {
    if (this.config.kind !== 'login') return false;
    this.token = null;
    return true;
  }

  private currentToken(signal?: AbortSignal): Promise<string> {
    if (this.token) return Promise.resolve(this.token);
    this.login ??= this.fetchToken(signal).finally(() => (this.login = null));
    return this.login;
  }

  private async fetchToken(signal?: AbortSignal): Promise<string> {
    if (this.config.kind !== 'login') throw new Error('not a login auth');
    const { url, body, tokenField } = this.config;
    const res = await this.http.request({
      method: 'POST',
      url,
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: body.reveal(),
      signal,
    });
    if (res.status < 200 || res.status >= 300) {
      const kind = statusKind(res.status) === 'retryable' ? 'retryable' : 'permanent';
      throw new TargetError(kind, `login at ${redactUrl(url)} answered ${res.status}: ${redactText(res.text.slice(0, 300))}`, { status: res.status });
    }
    let token: unknown;
    try {
      token = tokenField.split('.').reduce<unknown>((o, k) => (o && typeof o === 'object' ? (o as Record<string, unknown>)[k] : undefined), JSON.parse(res.text));
    } catch {
      token = undefined;
    }
    if (typeof token !== 'string' || token === '') {
      throw new TargetError('permanent', `login at ${redactUrl(url)} answered without a token at "${tokenField}"`);
    }
    registerSecret(token, 'issued');
    this.token = token;
    return token;
  }
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
