/**
 * The local API as the page calls it: the token in the Authorization header of every call (never
 * in a URL, so it reaches no log, history or Referer), and each failure sorted once by what the
 * page does about it.
 */
import type { ApiError } from './wire.js';

/** 401: the daemon does not take this token. The page forgets it and asks again. */
export class TokenRefused extends Error {}

/** No answer (the daemon stopped, restarts, or the network is down): the page tries again. */
export class Unreachable extends Error {}

/** Any other refusal, with the API's own message (a camera no manifest named, a retry of an upload that is not failed). */
export class Refused extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export class Api {
  constructor(private readonly token: string) {}

  get<T>(path: string): Promise<T> {
    return this.call<T>('GET', path);
  }

  /** An action: PUT or POST, so that no link or cross-site form can trigger it (they send no bearer token either). */
  act(method: 'PUT' | 'POST', path: string): Promise<{ message: string }> {
    return this.call<{ message: string }>(method, path);
  }

  private async call<T>(method: string, path: string): Promise<T> {
    let res: Response;
    try {
      res = await fetch(path, {
        method,
        headers: { authorization: `Bearer ${this.token}`, accept: 'application/json' },
        cache: 'no-store',
        credentials: 'omit',
        referrerPolicy: 'no-referrer',
      });
    } catch (err) {
      throw new Unreachable(err instanceof Error ? err.message : String(err));
    }
    const body: unknown = await res.json().catch(() => null);
    if (res.ok) return body as T;
    const message = (body as Partial<ApiError> | null)?.message ?? `HTTP ${res.status}`;
    if (res.status === 401) throw new TokenRefused(message);
    throw new Refused(res.status, message);
  }
}
