// Building blocks of the configuration schema, shared by the daemon-wide sections
// (schema.ts) and by each platform's own block (src/targets/<platform>/config.ts).
//
// Leaves are `z.unknown()` + a parser that throws a readable message, so that every message is
// ours, values are coerced the same way everywhere, and a default goes through the same parser
// as a value from the file. Problems are named by YAML path (`targets.alo.base_url: Invalid URL`).

import path from 'node:path';
import { validate as validateCron, validateDetailed as validateCronDetailed } from 'node-cron';
import { z } from 'zod';
import { Secret } from './secret.js';
import { formatSize, parseDuration, parseRate, parseSize } from './units.js';

export type Parser<T> = (v: unknown) => T;

/** Marks an issue raised by a mapping for a key it does not know; the message gets a suggestion. */
const UNKNOWN_KEY = 'unknown key';

export function fail(message: string): never {
  throw new Error(message);
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function describeInput(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return 'a string';
  if (typeof v === 'number') return 'a number';
  if (typeof v === 'boolean') return 'a boolean';
  return typeof v;
}

/**
 * A key that must be present, unless it has a fallback, which is parsed like a value from the
 * file. (An absent key is only handed to the parser through prefault: zod skips absent keys.)
 */
export function required<T>(parse: Parser<T>, fallback?: unknown) {
  const schema = z.unknown().transform((input, ctx): T => {
    if (input === undefined) {
      ctx.addIssue({ code: 'custom', message: 'required', input });
      return z.NEVER;
    }
    try {
      return parse(input);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message, input });
      return z.NEVER;
    }
  });
  return fallback === undefined ? schema : schema.prefault(fallback);
}

/** A key that may be left out (the resolved value is then undefined). */
export function optional<T>(parse: Parser<T>) {
  return required(parse).optional();
}

/** A mapping with a fixed set of keys; any other key is reported, by its own path. */
export function section<S extends z.ZodRawShape>(shape: S): z.ZodObject<S, z.core.$strip> {
  const knownKeys = Object.keys(shape);
  const strict = z.object(shape).catchall(
    z.unknown().superRefine((_v, ctx) => {
      ctx.addIssue({ code: 'custom', message: UNKNOWN_KEY, params: { knownKeys } });
    }),
  );
  // Typed as a plain object: a valid value has no other keys (the catchall refuses them all).
  return strict;
}

/**
 * Cross-key checks run even when some keys are invalid, so that every problem is reported at
 * once; they only need the value to be a mapping (and must cope with invalid keys in it).
 */
export const ALWAYS = { when: (payload: { value: unknown }) => isPlainObject(payload.value) } as const;

type Picked<T> = { schema: z.ZodType<T> } | { problem: string; path?: (string | number)[] };

/**
 * Chooses the schema for a value by looking at it (the target `type`, which auth form) and
 * reports the nested problems under this value's path. zod's unions would instead report
 * every alternative's complaints at once.
 */
export function dispatch<T>(pick: (input: unknown) => Picked<T>) {
  return z.unknown().transform((input, ctx): T => {
    const picked = pick(input);
    if ('problem' in picked) {
      ctx.addIssue({ code: 'custom', message: picked.problem, path: picked.path ?? [], input });
      return z.NEVER;
    }
    const result = picked.schema.safeParse(input, { error: configErrorMap });
    if (result.success) return result.data;
    for (const issue of result.error.issues) {
      ctx.addIssue({ code: 'custom', message: issue.message, path: issue.path, input, params: issueParams(issue) });
    }
    return z.NEVER;
  });
}

function issueParams(issue: z.core.$ZodIssue): Record<string, unknown> | undefined {
  return issue.code === 'custom' ? (issue.params as Record<string, unknown> | undefined) : undefined;
}

/** `a` or `a_file` (or, for auth headers, `value`/`value_file`): exactly one of the two. */
export function exactlyOne(
  ctx: z.core.$RefinementCtx<unknown>,
  v: Record<string, unknown>,
  a: string,
  b: string,
  requiredMessage = `required (or ${b})`,
): void {
  if (v[a] !== undefined && v[b] !== undefined) {
    // At the enclosing key: a problem at `b` itself would hide behind one from reading the file.
    ctx.addIssue({ code: 'custom', message: `give either ${a} or ${b}, not both` });
  } else if (v[a] === undefined && v[b] === undefined) {
    ctx.addIssue({ code: 'custom', message: requiredMessage, path: [a] });
  }
}

// ----- leaf parsers -----

export function text(v: unknown): string {
  if (typeof v !== 'string') fail(`expected a string, got ${describeInput(v)}`);
  if (v.trim() === '') fail('must not be empty');
  return v;
}

export function bool(v: unknown): boolean {
  // Strings too, so that `poll: ${WATCH_POLL}` works after substitution.
  if (v === true || v === 'true') return true;
  if (v === false || v === 'false') return false;
  return fail(`expected true or false, got ${describeInput(v)}`);
}

export function integer(min: number, max: number): Parser<number> {
  return (v) => {
    const n = typeof v === 'string' && /^\s*-?\d+\s*$/.test(v) ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isInteger(n)) fail(`expected a whole number, got ${describeInput(v)}`);
    if (n < min || n > max) fail(`must be between ${min} and ${max}`);
    return n;
  };
}

function asStringOrNumber(v: unknown, what: string): string | number {
  if (typeof v === 'string' || typeof v === 'number') return v;
  return fail(`expected ${what}, got ${describeInput(v)}`);
}

export function size(limits: { min?: number; max?: number } = {}): Parser<number> {
  return (v) => {
    const bytes = parseSize(asStringOrNumber(v, 'a size such as 16MiB'));
    if (limits.min !== undefined && bytes < limits.min) fail(`must be at least ${formatSize(limits.min)}`);
    if (limits.max !== undefined && bytes > limits.max) fail(`must be at most ${formatSize(limits.max)}`);
    return bytes;
  };
}

/** Seconds; `positive` refuses 0 where zero would mean "never" or "spin". */
export function duration(limits: { positive?: boolean } = {}): Parser<number> {
  return (v) => {
    const seconds = parseDuration(asStringOrNumber(v, 'a duration such as 30s'));
    if (limits.positive && seconds <= 0) fail('must be more than 0 seconds');
    return seconds;
  };
}

export function rate(v: unknown): number | null {
  return parseRate(asStringOrNumber(v, 'a rate such as 4MiB/s or unlimited'));
}

export const folderGlob: Parser<string> = (v) => {
  if (typeof v !== 'string' || v.trim() === '') throw new Error(`expected a folder glob such as "site-a/**", got ${describeInput(v)}`);
  return v;
};

export const targetNameList: Parser<string[]> = (v) => {
  if (!Array.isArray(v) || v.length === 0 || v.some((n) => typeof n !== 'string')) {
    throw new Error(`expected a non-empty list of target names, got ${describeInput(v)}`);
  }
  return v as string[];
};

export function oneOf<const T extends readonly string[]>(values: T): Parser<T[number]> {
  return (v) => {
    if (typeof v === 'string' && (values as readonly string[]).includes(v)) return v;
    return fail(`must be one of ${values.join(', ')}`);
  };
}

export function absolutePath(baseDir: string | undefined): Parser<string> {
  return (v) => path.resolve(baseDir ?? process.cwd(), text(v));
}

export function httpUrl(v: unknown): URL {
  const s = text(v).trim();
  let url: URL;
  try {
    url = new URL(s);
  } catch {
    return fail('Invalid URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') fail('must be an http:// or https:// URL');
  return url;
}

/** A base URL: paths are appended to it, so no query or fragment, and no trailing slash kept. */
export function baseUrl(v: unknown): string {
  const url = httpUrl(v);
  if (url.search || url.hash) fail('must not have a query (?…) or fragment (#…)');
  return (v as string).trim().replace(/\/+$/, '');
}

// RFC 9110 token: what an HTTP header name may contain.
const HEADER_NAME_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

export function headerName(v: unknown): string {
  const s = text(v);
  if (!HEADER_NAME_RE.test(s)) fail('is not a valid HTTP header name');
  return s;
}

/** A secret sent in a header or URL: one line, never echoed in a message. */
export function secretLine(v: unknown): Secret {
  const s = text(v);
  if (/[\r\n]/.test(s)) fail('must be a single line');
  return new Secret(s);
}

export function jsonObjectText(v: unknown): Secret {
  const s = text(v);
  let parsed: unknown;
  try {
    parsed = JSON.parse(s);
  } catch {
    // JSON.parse's message quotes the input, which is a secret here.
    return fail('the file does not hold valid JSON');
  }
  if (!isPlainObject(parsed)) fail('the file must hold a JSON object');
  return new Secret(JSON.stringify(parsed));
}

export function jsonObject(v: unknown): Secret {
  if (!isPlainObject(v)) fail(`expected a mapping (the JSON body), got ${describeInput(v)}`);
  return new Secret(JSON.stringify(v));
}

export function tokenField(v: unknown): string {
  const s = text(v).trim();
  if (s.split('.').some((part) => part === '')) fail('must be a dotted path such as data.access_token');
  return s;
}

export function cronExpression(v: unknown): string {
  const s = text(v).trim();
  if (!validateCron(s)) {
    let detail = '';
    try {
      detail = validateCronDetailed(s)
        .errors.map((e) => e.message)
        .join('; ');
    } catch {
      // only used to explain; validate() has the last word
    }
    fail(`invalid cron expression ${JSON.stringify(s)}${detail ? `: ${detail}` : ''}`);
  }
  return s;
}

/** `host:port`, `[v6]:port`, `:port` or a bare port; the host defaults to loopback. */
export function listenAddress(v: unknown): { host: string; port: number } {
  const s = typeof v === 'number' ? String(v) : text(v).trim();
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d+)$/.exec(s) ?? /^()()(\d+)$/.exec(s);
  if (!m) return fail('expected host:port or a port number, e.g. 127.0.0.1:9420');
  const port = Number(m[3]);
  if (port > 65535) fail('the port must be between 0 and 65535');
  return { host: m[1] || m[2] || '127.0.0.1', port };
}

export const MiB = 1024 ** 2;
export const GiB = 1024 ** 3;

// Error messages for the few checks zod does itself (types of mappings and lists, ids in lists).

export const configErrorMap: z.core.$ZodErrorMap = (issue) => {
  switch (issue.code) {
    case 'invalid_type': {
      if (issue.input === undefined) return 'required';
      const expected: Record<string, string> = {
        object: 'a mapping',
        array: 'a list',
        record: 'a mapping',
        string: 'a string',
        number: 'a number',
        int: 'a whole number',
        boolean: 'true or false',
      };
      return `expected ${expected[issue.expected] ?? issue.expected}, got ${describeInput(issue.input)}`;
    }
    case 'too_small':
      return issue.origin === 'array' ? `must list at least ${issue.minimum}` : `must be at least ${issue.minimum}`;
    case 'too_big':
      return issue.origin === 'array' ? `must list at most ${issue.maximum}` : `must be at most ${issue.maximum}`;
    default:
      return undefined;
  }
};

// Problems, named by YAML path.

export type ConfigPath = (string | number)[];

export interface ConfigProblem {
  /** Keys and list indexes from the top of the file. */
  path: ConfigPath;
  message: string;
}

/** `targets.alo.base_url`, `upload.bandwidth[1].cron`. */
export function formatConfigPath(p: readonly PropertyKey[]): string {
  let out = '';
  for (const seg of p) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else out += out === '' ? String(seg) : `.${String(seg)}`;
  }
  return out;
}

export function formatProblem(problem: ConfigProblem): string {
  return problem.path.length > 0 ? `${formatConfigPath(problem.path)}: ${problem.message}` : problem.message;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length] ?? 0;
}

function unknownKeyMessage(key: string, knownKeys: readonly string[]): string {
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(key.length / 3)) + 1;
  for (const candidate of knownKeys) {
    const d = editDistance(key.toLowerCase(), candidate.toLowerCase());
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best ? `${UNKNOWN_KEY} (did you mean ${best}?)` : UNKNOWN_KEY;
}

export function toProblem(issue: z.core.$ZodIssue): ConfigProblem {
  const p = issue.path.map((seg) => (typeof seg === 'number' ? seg : String(seg)));
  const knownKeys = issueParams(issue)?.knownKeys;
  const last = p[p.length - 1];
  if (issue.message === UNKNOWN_KEY && Array.isArray(knownKeys) && typeof last === 'string') {
    return { path: p, message: unknownKeyMessage(last, knownKeys as string[]) };
  }
  return { path: p, message: issue.message };
}
