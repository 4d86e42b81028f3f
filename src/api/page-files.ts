/**
 * The status page's files, as the build leaves them beside this module (dist/src/api/page):
 * index.html, its stylesheet, its scripts (compiled from src/api/page/*.ts) and icon. They hold
 * no data (the page asks the API for it with the token), so they are served without one.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { extname, join } from 'node:path';

export interface PageFile {
  body: Buffer;
  contentType: string;
}

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
};

export class PageFiles {
  private files: Map<string, PageFile> | null = null;
  private readonly dir = join(import.meta.dirname, 'page');

  /** The file of that name, or null: only the folder's own files of the types above, never a path. */
  get(name: string): PageFile | null {
    return this.load().get(name) ?? null;
  }

  /** Read once, at the first request: a few small files, and a request can never name anything else. */
  private load(): Map<string, PageFile> {
    if (this.files) return this.files;
    const files = new Map<string, PageFile>();
    let names: string[] = [];
    try {
      names = readdirSync(this.dir);
    } catch {
      // Not built (the daemon run from its TypeScript sources): the API works, the page is absent.
    }
    for (const name of names) {
      const contentType = CONTENT_TYPES[extname(name)];
      if (contentType) files.set(name, { body: readFileSync(join(this.dir, name)), contentType });
    }
    this.files = files;
    return files;
  }
}
