/**
 * Presigned URLs a platform handed out, in memory only (never persisted: after a restart they
 * are asked for again). A URL is handed out until shortly before it expires (renewUrlsAt), so a
 * part never starts on a URL that dies under it; one refused by S3 is dropped. Callers asking
 * for URLs of one upload at the same time share a single request to the platform.
 */
import { renewUrlsAt } from './presigned-put.js';
import { TargetError } from './target.js';

interface CachedUrl {
  url: string;
  renewAt: number;
}

export interface FetchedUrl {
  part: number;
  url: string;
}

export class UrlCache {
  private readonly uploads = new Map<string, Map<number, CachedUrl>>();
  private readonly fetching = new Map<string, Promise<void>>();

  /**
   * The part's URL while fresh, else fetched. `fetch` answers URLs for this part and maybe
   * others; a fetch already under way for the upload is awaited first, as it may bring this one.
   */
  async get(upload: string, part: number, fetch: () => Promise<FetchedUrl[]>): Promise<string> {
    for (let fetched = false; ;) {
      const fresh = this.fresh(upload, part);
      if (fresh) return fresh;
      const pending = this.fetching.get(upload);
      if (pending) await pending.catch(() => undefined);
      else if (fetched) throw new TargetError('permanent', `the platform handed out no URL for part ${part}`);
      else {
        fetched = true;
        await this.fetchOnce(upload, fetch);
      }
    }
  }

  /** The part's URL while it has time left, else undefined. */
  fresh(upload: string, part: number, now = Date.now()): string | undefined {
    const cached = this.uploads.get(upload)?.get(part);
    return cached && cached.renewAt > now ? cached.url : undefined;
  }

  /** URLs the platform handed out unasked (with the start of an upload). */
  put(upload: string, urls: readonly FetchedUrl[]): void {
    const now = Date.now();
    let parts = this.uploads.get(upload);
    if (!parts) this.uploads.set(upload, (parts = new Map<number, CachedUrl>()));
    for (const { part, url } of urls) parts.set(part, { url, renewAt: renewUrlsAt([url], now) });
  }

  /** A URL S3 refused (expired, or signed for something else), or one used up: never handed out again. */
  drop(upload: string, part: number): void {
    this.uploads.get(upload)?.delete(part);
  }

  /** The upload is complete or given up. */
  forget(upload: string): void {
    this.uploads.delete(upload);
  }

  clear(): void {
    this.uploads.clear();
  }

  private fetchOnce(upload: string, fetch: () => Promise<FetchedUrl[]>): Promise<void> {
    let pending = this.fetching.get(upload);
    if (!pending) {
      pending = fetch()
        .then((urls) => this.put(upload, urls))
        .finally(() => this.fetching.delete(upload));
      this.fetching.set(upload, pending);
    }
    return pending;
  }
}
