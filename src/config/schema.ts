// The configuration file, key by key. This file is the reference documentation of
// /etc/vms-uplink/config.yaml: every key, its default, its unit and its limits are written
// next to the code that enforces them.
//
// Conventions that hold everywhere:
// - Unknown keys are errors (`watch.settle_secnds: unknown key (did you mean settle_seconds?)`):
//   a typo in a hand-edited file must never be silently ignored.
// - A key given with no value (`retention:`) is the same as a key left out.
// - Sizes: a number of bytes, or a number with B, KiB, MiB, GiB, TiB (powers of 1024) or
//   KB, MB, GB, TB (powers of 1000); decimals allowed (`1.5GiB`). See units.ts.
// - Durations: seconds (`0.5`), or 500ms, 30s, 15m, 2h, 7d, 1w, combinable (`1h30m`).
//   The resolved configuration holds every duration in SECONDS (a number, maybe fractional).
// - Rates: `unlimited`, a size per second (`4MiB/s`, `100Mbit/s`) or bytes per second.
// - Relative paths (watch.root, ledger.path, after_upload_dir and every `*_file`) are taken
//   relative to the directory of the configuration file, then made absolute.
// - `${NAME}` in any string is replaced by the environment variable NAME before validation;
//   `${NAME:-fallback}` uses the fallback when NAME is unset or empty; `$${` is a literal `${`.
//   An unset variable without fallback is an error. (Done by load.ts.)
// - Every secret also has a `*_file` form (`bearer_file`, `value_file`, `body_file`,
//   `token_file`) whose value is the path of a file holding the secret, e.g. a systemd
//   credential (`${CREDENTIALS_DIRECTORY}/alo_token`) or a Docker secret. The file is read
//   once at start, trailing whitespace and newlines removed. (Done by load.ts.)
//
// The resolved configuration (type `Config`) uses camelCase keys, bytes for sizes, bytes per
// second for rates (null = unlimited) and seconds for durations; secrets are `Secret` objects
// that print as `***`.

import path from 'node:path';
import { validate as validateCron, validateDetailed as validateCronDetailed } from 'node-cron';
import { z } from 'zod';
import { Secret } from './secret.js';
import { formatSize, parseDuration, parseRate, parseSize } from './units.js';

// ---------------------------------------------------------------------------------------------
// Resolved types: what the rest of the daemon reads.

/** Where the ledger lives unless `ledger.path` says otherwise (systemd StateDirectory=vms-uplink). */
export const DEFAULT_LEDGER_PATH = '/var/lib/vms-uplink/ledger.db';

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export const TARGET_TYPES = ['alo', 'aionvision', 'truvideo', 'valt'] as const;
export type TargetType = (typeof TARGET_TYPES)[number];

export const AFTER_UPLOAD_ACTIONS = ['keep', 'delete', 'move'] as const;

export interface WatchConfig {
  /** Absolute path of the folder the VMS exports incidents into. */
  root: string;
  /** Seconds a file's size and mtime must stay unchanged before it counts as completely written. */
  settleSeconds: number;
  /** Seconds to wait for a video file a manifest names before it becomes a failed video. */
  missingFileSeconds: number;
  /** Poll the file system instead of relying on change events (SMB/NFS mounts). */
  poll: boolean;
  /** Seconds between polls when `poll` is true. */
  pollInterval: number;
  /** Seconds between full rescans of the root, so a missed event never loses an export. */
  rescanInterval: number;
}

export interface LedgerConfig {
  /** Absolute path of the SQLite part ledger. */
  path: string;
  /** Bytes that must stay free on the ledger's filesystem; below it no new work is taken. 0 = no floor. */
  minFree: number;
}

export interface BandwidthScheduleEntry {
  /** node-cron expression (5 or 6 fields) at which this limit starts to apply. */
  cron: string;
  /** null = unlimited. */
  bytesPerSecond: number | null;
}

export type BandwidthConfig =
  | { kind: 'fixed'; bytesPerSecond: number | null }
  | { kind: 'schedule'; entries: BandwidthScheduleEntry[] };

export interface UploadConfig {
  /** Parts in flight across all uploads and targets. */
  concurrency: number;
  /** Preferred part size in bytes; each target clamps it to its own limits. */
  partSize: number;
  bandwidth: BandwidthConfig;
  /** Seconds without a single byte moving before a part is aborted and retried. */
  stallTimeout: number;
  /** Seconds of the first retry delay; doubles up to retryMax. */
  retryInitial: number;
  /** Seconds: the retry backoff cap. */
  retryMax: number;
  /** Seconds SIGTERM waits for parts in flight before the daemon exits anyway. */
  drainTimeout: number;
}

export type AfterUploadConfig = { action: 'keep' } | { action: 'delete' } | { action: 'move'; dir: string };

export interface RetentionConfig {
  /** Seconds after an incident is completely uploaded at which its files are deleted. */
  deleteUploadedAfter: number;
}

/** How a token fetched by a login is sent on API calls. */
export type SendAs = { kind: 'bearer' } | { kind: 'query'; name: string } | { kind: 'header'; name: string };

export interface BearerAuthConfig {
  kind: 'bearer';
  token: Secret;
}

export interface HeaderAuthConfig {
  kind: 'header';
  /** HTTP header name, e.g. X-API-Key. */
  name: string;
  value: Secret;
}

export interface LoginAuthConfig {
  kind: 'login';
  /** URL the JSON body is POSTed to. */
  url: string;
  /** The JSON request body text, ready to send. */
  body: Secret;
  /** Dotted path of the token in the JSON response, e.g. `data.access_token`. */
  tokenField: string;
  sendAs: SendAs;
}

export type AuthConfig = BearerAuthConfig | HeaderAuthConfig | LoginAuthConfig;

interface TargetCommon {
  /** The key under `targets:`. */
  name: string;
  /** http(s) URL without a trailing slash. */
  baseUrl: string;
  auth: AuthConfig;
  /** Seconds an API call (not a part upload) may take. */
  requestTimeout: number;
}

export interface AloTargetConfig extends TargetCommon {
  type: 'alo';
  /** Files of at least this many bytes go through multipart upload, smaller ones in one PUT. */
  multipartThreshold: number;
}

export interface AionvisionTargetConfig extends TargetCommon {
  type: 'aionvision';
}

export interface TruvideoTargetConfig extends TargetCommon {
  type: 'truvideo';
  /** Path (below baseUrl) asking for more presigned URLs; `{uploadId}` is replaced. */
  moreUrlsPath: string;
  /** Seconds between status polls after complete. */
  pollInterval: number;
  /** Seconds of polling after complete before the wait is given up and retried (complete again, then the status). */
  pollTimeout: number;
}

export interface ValtTargetConfig extends TargetCommon {
  type: 'valt';
  /** Bytes per POST (one Content-Range chunk). */
  chunkSize: number;
  /** Additional-information template fields (field id → value); null = not sent. */
  template: Record<string, string> | null;
  /** Users and groups the record is shared with; null = not sent. */
  share: { users: number[]; groups: number[] } | null;
}

export type TargetConfig = AloTargetConfig | AionvisionTargetConfig | TruvideoTargetConfig | ValtTargetConfig;

export interface ApiConfig {
  /** Address to listen on; IPv6 without brackets. */
  host: string;
  /** 0 = any free port. */
  port: number;
  /** Bearer token every endpoint except /healthz requires. */
  token: Secret;
  /** Seconds every target must have been failing before /healthz answers 503. */
  targetsDownAfter: number;
}

export interface LogConfig {
  level: LogLevel;
}

/** Which targets the incidents of matching folders go to. */
export interface Route {
  /** Glob over the incident folder's path below watch.root: `*` within a name, `**` across folders. */
  match: string;
  targets: string[];
}

export interface Config {
  watch: WatchConfig;
  ledger: LedgerConfig;
  upload: UploadConfig;
  afterUpload: AfterUploadConfig;
  /** null = uploaded files are kept (subject to afterUpload). */
  retention: RetentionConfig | null;
  /** In file order. */
  targets: Record<string, TargetConfig>;
  /** null = every incident goes to every target; else the first matching route decides. */
  routes: Route[] | null;
  /** null = no local API. */
  api: ApiConfig | null;
  log: LogConfig;
}

/** Keys whose value is the path of a file holding a secret; load.ts replaces it by the file's content. */
export const SECRET_FILE_KEYS: ReadonlySet<string> = new Set(['bearer_file', 'value_file', 'body_file', 'token_file']);

// ---------------------------------------------------------------------------------------------
// Building blocks. Leaves are `z.unknown()` + a parser that throws a readable message, so that
// every message is ours, values are coerced the same way everywhere, and a default goes through
// the same parser as a value from the file.

type Parser<T> = (v: unknown) => T;

/** Marks an issue raised by a mapping for a key it does not know; the message gets a suggestion. */
const UNKNOWN_KEY = 'unknown key';

function fail(message: string): never {
  throw new Error(message);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describeInput(v: unknown): string {
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
function required<T>(parse: Parser<T>, fallback?: unknown) {
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
function optional<T>(parse: Parser<T>) {
  return required(parse).optional();
}

/** A mapping with a fixed set of keys; any other key is reported, by its own path. */
function section<S extends z.ZodRawShape>(shape: S) {
  const knownKeys = Object.keys(shape);
  return z.object(shape).catchall(
    z.unknown().superRefine((_v, ctx) => {
      ctx.addIssue({ code: 'custom', message: UNKNOWN_KEY, params: { knownKeys } });
    }),
  );
}

/**
 * Cross-key checks run even when some keys are invalid, so that every problem is reported at
 * once; they only need the value to be a mapping (and must cope with invalid keys in it).
 */
const ALWAYS = { when: (payload: { value: unknown }) => isPlainObject(payload.value) } as const;

type Picked<T> = { schema: z.ZodType<T> } | { problem: string; path?: (string | number)[] };

/**
 * Chooses the schema for a value by looking at it (the target `type`, which auth form) and
 * reports the nested problems under this value's path. zod's unions would instead report
 * every alternative's complaints at once.
 */
function dispatch<T>(pick: (input: unknown) => Picked<T>) {
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
function exactlyOne(
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

function text(v: unknown): string {
  if (typeof v !== 'string') fail(`expected a string, got ${describeInput(v)}`);
  if (v.trim() === '') fail('must not be empty');
  return v;
}

function bool(v: unknown): boolean {
  // Strings too, so that `poll: ${WATCH_POLL}` works after substitution.
  if (v === true || v === 'true') return true;
  if (v === false || v === 'false') return false;
  return fail(`expected true or false, got ${describeInput(v)}`);
}

function integer(min: number, max: number): Parser<number> {
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

function size(limits: { min?: number; max?: number } = {}): Parser<number> {
  return (v) => {
    const bytes = parseSize(asStringOrNumber(v, 'a size such as 16MiB'));
    if (limits.min !== undefined && bytes < limits.min) fail(`must be at least ${formatSize(limits.min)}`);
    if (limits.max !== undefined && bytes > limits.max) fail(`must be at most ${formatSize(limits.max)}`);
    return bytes;
  };
}

/** Seconds; `positive` refuses 0 where zero would mean "never" or "spin". */
function duration(limits: { positive?: boolean } = {}): Parser<number> {
  return (v) => {
    const seconds = parseDuration(asStringOrNumber(v, 'a duration such as 30s'));
    if (limits.positive && seconds <= 0) fail('must be more than 0 seconds');
    return seconds;
  };
}

function rate(v: unknown): number | null {
  return parseRate(asStringOrNumber(v, 'a rate such as 4MiB/s or unlimited'));
}

const folderGlob: Parser<string> = (v) => {
  if (typeof v !== 'string' || v.trim() === '') throw new Error(`expected a folder glob such as "site-a/**", got ${describeInput(v)}`);
  return v;
};

const targetNameList: Parser<string[]> = (v) => {
  if (!Array.isArray(v) || v.length === 0 || v.some((n) => typeof n !== 'string')) {
    throw new Error(`expected a non-empty list of target names, got ${describeInput(v)}`);
  }
  return v as string[];
};

function oneOf<const T extends readonly string[]>(values: T): Parser<T[number]> {
  return (v) => {
    if (typeof v === 'string' && (values as readonly string[]).includes(v)) return v as T[number];
    return fail(`must be one of ${values.join(', ')}`);
  };
}

function absolutePath(baseDir: string | undefined): Parser<string> {
  return (v) => path.resolve(baseDir ?? process.cwd(), text(v));
}

function httpUrl(v: unknown): URL {
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
function baseUrl(v: unknown): string {
  const url = httpUrl(v);
  if (url.search || url.hash) fail('must not have a query (?…) or fragment (#…)');
  return (v as string).trim().replace(/\/+$/, '');
}

// RFC 9110 token: what an HTTP header name may contain.
const HEADER_NAME_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

function headerName(v: unknown): string {
  const s = text(v);
  if (!HEADER_NAME_RE.test(s)) fail('is not a valid HTTP header name');
  return s;
}

/** A secret sent in a header or URL: one line, never echoed in a message. */
function secretLine(v: unknown): Secret {
  const s = text(v);
  if (/[\r\n]/.test(s)) fail('must be a single line');
  return new Secret(s);
}

function jsonObjectText(v: unknown): Secret {
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

function jsonObject(v: unknown): Secret {
  if (!isPlainObject(v)) fail(`expected a mapping (the JSON body), got ${describeInput(v)}`);
  return new Secret(JSON.stringify(v));
}

function tokenField(v: unknown): string {
  const s = text(v).trim();
  if (s.split('.').some((part) => part === '')) fail('must be a dotted path such as data.access_token');
  return s;
}

function cronExpression(v: unknown): string {
  const s = text(v).trim();
  if (!validateCron(s)) {
    let detail = '';
    try {
      detail = validateCronDetailed(s).errors.map((e) => e.message).join('; ');
    } catch {
      // only used to explain; validate() has the last word
    }
    fail(`invalid cron expression ${JSON.stringify(s)}${detail ? `: ${detail}` : ''}`);
  }
  return s;
}

/** `host:port`, `[v6]:port`, `:port` or a bare port; the host defaults to loopback. */
function listenAddress(v: unknown): { host: string; port: number } {
  const s = typeof v === 'number' ? String(v) : text(v).trim();
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d+)$/.exec(s) ?? /^()()(\d+)$/.exec(s);
  if (!m) return fail('expected host:port or a port number, e.g. 127.0.0.1:9420');
  const port = Number(m[3]);
  if (port > 65535) fail('the port must be between 0 and 65535');
  return { host: m[1] || m[2] || '127.0.0.1', port };
}

function moreUrlsPath(v: unknown): string {
  const s = text(v).trim();
  if (!s.startsWith('/')) fail('must start with /');
  if (!s.includes('{uploadId}')) fail('must contain {uploadId}');
  return s;
}

function scalarString(v: unknown): string {
  if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return String(v);
  return fail(`expected a string, got ${describeInput(v)}`);
}

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;

// ---------------------------------------------------------------------------------------------
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

// ---------------------------------------------------------------------------------------------
// The schema.

export interface ConfigSchemaOptions {
  /** Directory relative paths are resolved against: the configuration file's. Default: cwd. */
  baseDir?: string;
}

// auth: how a target's API calls authenticate. Exactly one of these forms:
//   { bearer: TOKEN }              → Authorization: Bearer TOKEN
//   { bearer_file: PATH }          → same, token read from a file
//   { header: NAME, value: V }     → NAME: V (e.g. X-API-Key); or value_file: PATH
//   { login: { url, body | body_file, token_field }, send_as: … }
//       POST body (a mapping, or body_file: a file holding a JSON object) as JSON to url,
//       read the token at token_field (dotted path, default accessToken) of the JSON answer,
//       and send it as `Authorization: Bearer` unless send_as is { query: NAME } (URL query
//       parameter, e.g. Valt's access_token) or { header: NAME }. Fetched again after a 401.
const bearerAuth = section({
  bearer: optional(secretLine),
  bearer_file: optional(secretLine),
})
  .superRefine((v, ctx) => exactlyOne(ctx, v, 'bearer', 'bearer_file'), ALWAYS)
  .transform((v): BearerAuthConfig => ({ kind: 'bearer', token: (v.bearer ?? v.bearer_file) as Secret }));

const headerAuth = section({
  header: required(headerName),
  value: optional(secretLine),
  value_file: optional(secretLine),
})
  .superRefine((v, ctx) => exactlyOne(ctx, v, 'value', 'value_file'), ALWAYS)
  .transform((v): HeaderAuthConfig => ({ kind: 'header', name: v.header, value: (v.value ?? v.value_file) as Secret }));

const loginRequest = section({
  url: required((v) => {
    httpUrl(v);
    return (v as string).trim();
  }),
  body: optional(jsonObject),
  body_file: optional(jsonObjectText),
  token_field: required(tokenField, 'accessToken'),
}).superRefine((v, ctx) => exactlyOne(ctx, v, 'body', 'body_file'), ALWAYS);

const sendAs = section({
  query: optional(text),
  header: optional(headerName),
})
  .superRefine((v, ctx) => exactlyOne(ctx, v, 'query', 'header', 'give query: NAME or header: NAME'), ALWAYS)
  .transform((v): SendAs => (v.query !== undefined ? { kind: 'query', name: v.query } : { kind: 'header', name: v.header as string }));

const loginAuth = section({
  login: loginRequest,
  send_as: sendAs.optional(),
}).transform(
  (v): LoginAuthConfig => ({
    kind: 'login',
    url: v.login.url,
    body: (v.login.body ?? v.login.body_file) as Secret,
    tokenField: v.login.token_field,
    sendAs: v.send_as ?? { kind: 'bearer' },
  }),
);

const AUTH_FORMS = '{ bearer }, { bearer_file }, { header, value }, { header, value_file } or { login: { url, body, token_field } }';

const auth = dispatch<AuthConfig>((v) => {
  if (v === undefined) return { problem: `required: one of ${AUTH_FORMS}` };
  if (!isPlainObject(v)) return { problem: `expected one of ${AUTH_FORMS}, got ${describeInput(v)}` };
  const forms = new Set<string>();
  for (const key of Object.keys(v)) {
    if (key === 'bearer' || key === 'bearer_file') forms.add('bearer');
    if (key === 'header' || key === 'value' || key === 'value_file') forms.add('header');
    if (key === 'login' || key === 'send_as') forms.add('login');
  }
  if (forms.size > 1) return { problem: `use one form only, not ${[...forms].join(' and ')}: ${AUTH_FORMS}` };
  if (forms.has('bearer')) return { schema: bearerAuth };
  if (forms.has('header')) return { schema: headerAuth };
  if (forms.has('login')) return { schema: loginAuth };
  return { problem: `expected one of ${AUTH_FORMS}` };
});

// Keys every target has.
const targetCommon = {
  // The platform's API root, http or https; a trailing slash is dropped.
  base_url: required(baseUrl),
  auth,
  // Seconds an API call (not a part upload) may take. Default 30.
  request_timeout: required(duration({ positive: true }), 30),
};

type Unnamed<T> = T extends unknown ? Omit<T, 'name'> : never;

const TARGETS: Record<TargetType, z.ZodType<Unnamed<TargetConfig>>> = {
  // ALO VMS incidents API (seeds/000).
  alo: section({
    type: z.literal('alo'),
    ...targetCommon,
    // Files of at least this size use create_multipart_upload/upload_urls/complete; smaller
    // ones one PUT. Default 100MiB, at least 5MiB (S3's smallest part).
    multipart_threshold: required(size({ min: 5 * MiB }), '100MiB'),
  }).transform(
    (v): Unnamed<AloTargetConfig> => ({
      type: 'alo',
      baseUrl: v.base_url,
      auth: v.auth,
      requestTimeout: v.request_timeout,
      multipartThreshold: v.multipart_threshold,
    }),
  ),
  // Aionvision video uploads v2 (seeds/002): the server chooses the chunk layout.
  aionvision: section({
    type: z.literal('aionvision'),
    ...targetCommon,
  }).transform(
    (v): Unnamed<AionvisionTargetConfig> => ({
      type: 'aionvision',
      baseUrl: v.base_url,
      auth: v.auth,
      requestTimeout: v.request_timeout,
    }),
  ),
  // TruVideo Upload V3 (seeds/004).
  truvideo: section({
    type: z.literal('truvideo'),
    ...targetCommon,
    // Endpoint asking for more presigned URLs (the vendor document does not name it).
    more_urls_path: required(moreUrlsPath, '/upload/{uploadId}/presigned-urls'),
    // Seconds between status polls after complete (202 Accepted). Default 5.
    poll_interval: required(duration({ positive: true }), 5),
    // Seconds of polling after complete before the wait is given up and retried (complete again,
    // then the status). Default 3600.
    poll_timeout: required(duration({ positive: true }), 3600),
  }).transform(
    (v): Unnamed<TruvideoTargetConfig> => ({
      type: 'truvideo',
      baseUrl: v.base_url,
      auth: v.auth,
      requestTimeout: v.request_timeout,
      moreUrlsPath: v.more_urls_path,
      pollInterval: v.poll_interval,
      pollTimeout: v.poll_timeout,
    }),
  ),
  // Valt records API v3 (seeds/001); usually auth: { login: …, send_as: { query: access_token } }.
  valt: section({
    type: z.literal('valt'),
    ...targetCommon,
    // Bytes per POST (one Content-Range chunk). Default 8MiB, at least 1MiB.
    chunk_size: required(size({ min: 1 * MiB }), '8MiB'),
    // Optional additional-information template fields: { "1": "Field value", … }.
    template: z.record(z.string(), required(scalarString)).optional(),
    // Optional extra sharing: { users: [1, 2], groups: [4] } (numeric ids).
    share: section({
      users: z.array(z.int().min(1)).optional(),
      groups: z.array(z.int().min(1)).optional(),
    }).optional(),
  }).transform(
    (v): Unnamed<ValtTargetConfig> => ({
      type: 'valt',
      baseUrl: v.base_url,
      auth: v.auth,
      requestTimeout: v.request_timeout,
      chunkSize: v.chunk_size,
      template: v.template ?? null,
      share: v.share ? { users: v.share.users ?? [], groups: v.share.groups ?? [] } : null,
    }),
  ),
};

const target = dispatch<Unnamed<TargetConfig>>((v) => {
  if (!isPlainObject(v)) return { problem: `expected a mapping with a type, got ${describeInput(v)}` };
  const valid = `valid types: ${TARGET_TYPES.join(', ')}`;
  if (v.type === undefined) return { problem: `required (${valid})`, path: ['type'] };
  const schema = typeof v.type === 'string' ? TARGETS[v.type as TargetType] : undefined;
  if (!schema) return { problem: `unknown target type ${JSON.stringify(v.type)} (${valid})`, path: ['type'] };
  return { schema };
});

// A target name shows up in logs, metrics labels and the ledger.
const TARGET_NAME_RE = /^[a-z0-9][a-z0-9_-]*$/i;

/** The configuration schema; relative paths resolve against `options.baseDir`. */
export function createConfigSchema(options: ConfigSchemaOptions = {}) {
  const toAbsolute = absolutePath(options.baseDir);

  // watch: the folder the VMS exports into.
  const watch = section({
    // Required. The root of the export folder; scanned on start, then watched.
    root: required(toAbsolute),
    // Seconds a file's size and mtime must stay still before it is read. Default 10.
    settle_seconds: required(duration(), 10),
    // Seconds to wait for a file a manifest names before it is a failed video; also how long
    // after a file settled a change to it is taken as its exporter going on (the file is uploaded
    // again), and so how long after_upload delete/move waits. Default 3600.
    missing_file_seconds: required(duration({ positive: true }), 3600),
    // true for SMB/NFS mounts, where change events do not arrive. Default false.
    poll: required(bool, false),
    // Seconds between polls when poll is true. Default 2.
    poll_interval: required(duration({ positive: true }), 2),
    // Seconds between full rescans, so a missed event never loses an export. Default 300.
    rescan_interval: required(duration({ positive: true }), 300),
  }).transform(
    (v): WatchConfig => ({
      root: v.root,
      settleSeconds: v.settle_seconds,
      missingFileSeconds: v.missing_file_seconds,
      poll: v.poll,
      pollInterval: v.poll_interval,
      rescanInterval: v.rescan_interval,
    }),
  );

  // ledger: the SQLite database that makes uploads resumable.
  const ledger = section({
    // Default /var/lib/vms-uplink/ledger.db (systemd StateDirectory=vms-uplink).
    path: required(toAbsolute, DEFAULT_LEDGER_PATH),
    // Free space the ledger's filesystem must keep; below it the daemon takes no new work (no
    // new manifests, hashing or uploads) until space returns. 0 turns it off. Default 256MiB.
    min_free: required(size(), '256MiB'),
  }).transform((v): LedgerConfig => ({ path: v.path, minFree: v.min_free }));

  // upload.bandwidth: `unlimited` (default), a rate (`4MiB/s`), or a schedule: a non-empty list
  // of { cron, limit }. Each entry's limit applies from its cron time until the next entry's;
  // cron is node-cron syntax (5 fields, or 6 with seconds first), local time.
  const bandwidthEntry = section({
    cron: required(cronExpression),
    limit: required(rate),
  }).transform((v): BandwidthScheduleEntry => ({ cron: v.cron, bytesPerSecond: v.limit }));
  const bandwidthSchedule = z
    .array(bandwidthEntry)
    .min(1, { error: 'must list at least one { cron, limit } entry' })
    .transform((entries): BandwidthConfig => ({ kind: 'schedule', entries }));
  const bandwidthFixed = required(rate).transform((bytesPerSecond): BandwidthConfig => ({ kind: 'fixed', bytesPerSecond }));
  const bandwidth = dispatch<BandwidthConfig>((v) => {
    if (typeof v === 'string' || typeof v === 'number') return { schema: bandwidthFixed };
    if (Array.isArray(v)) return { schema: bandwidthSchedule };
    return { problem: `expected a rate such as 4MiB/s, unlimited, or a list of { cron, limit }, got ${describeInput(v)}` };
  }).prefault('unlimited');

  const upload = section({
    // Parts in flight across all uploads and targets. 1..64, default 4.
    concurrency: required(integer(1, 64), 4),
    // Preferred part size; each target clamps it to its own limits. Default 16MiB, 5MiB..5GiB.
    part_size: required(size({ min: 5 * MiB, max: 5 * GiB }), '16MiB'),
    bandwidth,
    // Seconds a part may move no byte before it is aborted and retried. Default 60.
    stall_timeout: required(duration({ positive: true }), 60),
    // First retry delay in seconds; doubles (with jitter) after each failure. Default 1.
    retry_initial: required(duration({ positive: true }), 1),
    // Cap of the retry delay in seconds. Default 300; at least retry_initial.
    retry_max: required(duration({ positive: true }), 300),
    // Seconds SIGTERM waits for parts in flight before exiting. Default 10.
    drain_timeout: required(duration(), 10),
  })
    .superRefine((v, ctx) => {
      if (typeof v.retry_initial === 'number' && typeof v.retry_max === 'number' && v.retry_max < v.retry_initial) {
        ctx.addIssue({ code: 'custom', message: `must be at least retry_initial (${v.retry_initial} s)`, path: ['retry_max'] });
      }
    }, ALWAYS)
    .transform(
      (v): UploadConfig => ({
        concurrency: v.concurrency,
        partSize: v.part_size,
        bandwidth: v.bandwidth,
        stallTimeout: v.stall_timeout,
        retryInitial: v.retry_initial,
        retryMax: v.retry_max,
        drainTimeout: v.drain_timeout,
      }),
    );

  // retention: optional; with after_upload: keep, deletes a video's files this long after it is
  // confirmed uploaded to every target (src/after/after-upload.ts).
  const retention = section({
    delete_uploaded_after: required(duration({ positive: true })),
  }).transform((v): RetentionConfig => ({ deleteUploadedAfter: v.delete_uploaded_after }));

  // targets: one or more platforms, name → settings; every incident goes to every target.
  // A name starts with a letter or digit, then letters, digits, _ and -.
  const targets = z
    .record(z.string(), target)
    .superRefine((v, ctx) => {
      const names = Object.keys(v);
      if (names.length === 0) ctx.addIssue({ code: 'custom', message: 'at least one target is required' });
      for (const name of names) {
        if (!TARGET_NAME_RE.test(name)) {
          ctx.addIssue({
            code: 'custom',
            message: 'invalid target name: use letters, digits, _ and -, starting with a letter or digit',
            path: [name],
          });
        }
      }
    }, ALWAYS)
    .transform((v): Record<string, TargetConfig> => {
      const named: Record<string, TargetConfig> = {};
      for (const [name, t] of Object.entries(v)) named[name] = { name, ...t } as TargetConfig;
      return named;
    });

  // routes: which targets an incident goes to, by its folder below watch.root. The first route
  // whose `match` glob fits the folder decides (`*` within a name, `**` across folders, `?` one
  // character); an incident no route matches is not uploaded and its videos show as failed.
  // Without routes every incident goes to every target.
  const route = section({
    match: required(folderGlob),
    targets: required(targetNameList),
  }).transform((v): Route => ({ match: v.match, targets: v.targets }));
  const routes = z.array(route).min(1, { error: 'must list at least one { match, targets } route, or be left out' });

  // api: optional local HTTP API (status, metrics, camera pause/resume).
  const api = section({
    // host:port, [v6]:port, or a bare port (host 127.0.0.1). Without it there is no API.
    listen: optional(listenAddress),
    // Bearer token the API requires (all but /healthz); required when listen is set.
    token: optional(secretLine),
    token_file: optional(secretLine),
    // GET /healthz answers 503 once every target has been failing this long. Default 15m.
    targets_down_after: required(duration({ positive: true }), '15m'),
  })
    .superRefine((v, ctx) => {
      if (v.listen !== undefined) exactlyOne(ctx, v, 'token', 'token_file', 'required when listen is set (or token_file)');
      else if (v.token !== undefined && v.token_file !== undefined) exactlyOne(ctx, v, 'token', 'token_file');
    }, ALWAYS)
    .transform((v): ApiConfig | null =>
      v.listen
        ? { host: v.listen.host, port: v.listen.port, token: (v.token ?? v.token_file) as Secret, targetsDownAfter: v.targets_down_after }
        : null,
    );

  const log = section({
    // trace | debug | info | warn | error | fatal. Default info.
    level: required(oneOf(LOG_LEVELS), 'info'),
  }).transform((v): LogConfig => ({ level: v.level }));

  return section({
    watch,
    ledger: ledger.prefault({} as z.input<typeof ledger>),
    upload: upload.prefault({} as z.input<typeof upload>),
    // What happens to an incident's files once every target has them:
    // keep (default) | delete | move (into after_upload_dir, keeping the folder layout).
    after_upload: required(oneOf(AFTER_UPLOAD_ACTIONS), 'keep'),
    // Required with move, refused otherwise; must be outside watch.root.
    after_upload_dir: optional(toAbsolute),
    retention: retention.optional(),
    targets,
    routes: routes.optional(),
    api: api.optional(),
    log: log.prefault({} as z.input<typeof log>),
  })
    .superRefine((v, ctx) => {
      const configured = isPlainObject(v.targets) ? Object.keys(v.targets) : [];
      // Routes that failed their own checks arrive here half-parsed: look only at valid lists.
      (Array.isArray(v.routes) ? (v.routes as unknown[]) : []).forEach((r, i) =>
        (isPlainObject(r) && Array.isArray(r.targets) ? (r.targets as unknown[]) : []).forEach((name, j) => {
          if (typeof name === 'string' && configured.length && !configured.includes(name)) {
            ctx.addIssue({ code: 'custom', message: `unknown target "${name}" (configured: ${configured.join(', ')})`, path: ['routes', i, 'targets', j] });
          }
        }),
      );
      const dir = v.after_upload_dir;
      if (v.after_upload === 'move' && dir === undefined) {
        ctx.addIssue({ code: 'custom', message: 'required when after_upload is move', path: ['after_upload_dir'] });
      }
      if (typeof v.after_upload === 'string' && v.after_upload !== 'move' && dir !== undefined) {
        ctx.addIssue({ code: 'custom', message: 'only used with after_upload: move', path: ['after_upload_dir'] });
      }
      const root = (v.watch as WatchConfig | undefined)?.root;
      if (typeof dir === 'string' && typeof root === 'string') {
        const rel = path.relative(root, dir);
        if (rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel))) {
          ctx.addIssue({
            code: 'custom',
            message: 'must be outside watch.root (moved incidents would be picked up again)',
            path: ['after_upload_dir'],
          });
        }
      }
    }, ALWAYS)
    .transform(
      (v): Config => ({
        watch: v.watch,
        ledger: v.ledger,
        upload: v.upload,
        afterUpload:
          v.after_upload === 'move' ? { action: 'move', dir: v.after_upload_dir as string } : { action: v.after_upload },
        retention: v.retention ?? null,
        targets: v.targets,
        routes: v.routes ?? null,
        api: v.api ?? null,
        log: v.log,
      }),
    );
}

export const configSchema = createConfigSchema();

// ---------------------------------------------------------------------------------------------
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

function toProblem(issue: z.core.$ZodIssue): ConfigProblem {
  const p = issue.path.map((seg) => (typeof seg === 'number' ? seg : String(seg)));
  const knownKeys = issueParams(issue)?.knownKeys;
  const last = p[p.length - 1];
  if (issue.message === UNKNOWN_KEY && Array.isArray(knownKeys) && typeof last === 'string') {
    return { path: p, message: unknownKeyMessage(last, knownKeys as string[]) };
  }
  return { path: p, message: issue.message };
}

export type ValidationResult = { success: true; config: Config } | { success: false; problems: ConfigProblem[] };

/**
 * Validates an already-substituted configuration object (YAML parsed, `${NAME}` replaced,
 * `*_file` values replaced by the files' contents). Reports every problem, not the first.
 */
export function validateConfig(input: unknown, options: ConfigSchemaOptions = {}): ValidationResult {
  const schema = options.baseDir === undefined ? configSchema : createConfigSchema(options);
  if (!isPlainObject(input)) {
    return { success: false, problems: [{ path: [], message: `the configuration must be a mapping of settings, got ${describeInput(input)}` }] };
  }
  const result = schema.safeParse(input, { error: configErrorMap });
  if (result.success) return { success: true, config: result.data };
  return { success: false, problems: result.error.issues.map(toProblem) };
}
