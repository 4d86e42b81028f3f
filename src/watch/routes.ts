/**
 * `routes`: which targets an incident goes to, decided by its folder below `watch.root`.
 */
import { relative, sep } from 'node:path';
import type { Config } from '../config/schema.js';

type Route = NonNullable<Config['routes']>[number];

/** `*` matches within a folder name, `**` across folders (also none), `?` one character. */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*' && glob[i + 1] === '*') {
      const slash = glob[i + 2] === '/';
      re += slash ? '(?:.*/)?' : '.*';
      i += slash ? 2 : 1;
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

export class IncidentRouter {
  private readonly compiled: Array<{ pattern: RegExp; targets: string[] }> | null;

  constructor(
    private readonly root: string,
    routes: readonly Route[] | undefined,
    private readonly allTargets: readonly string[],
  ) {
    this.compiled = routes?.map((r) => ({ pattern: globToRegExp(r.match), targets: r.targets })) ?? null;
  }

  /** The targets for an incident folder; empty when routes are configured and none matches. */
  targetsFor(folder: string): string[] {
    if (!this.compiled) return [...this.allTargets];
    const rel = relative(this.root, folder).split(sep).join('/');
    return this.compiled.find((r) => r.pattern.test(rel))?.targets ?? [];
  }
}
