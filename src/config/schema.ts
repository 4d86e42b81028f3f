// The configuration file, key by key. This file (with the blocks of each platform in
// src/targets/<platform>/config.ts) is the reference documentation of
// /etc/vms-uplink/config.yaml: every key, its default, its unit and its limits are written next
// to the code that enforces them.
//
// Conventions that hold everywhere:
// - Unknown keys are errors (`watch.settle_secnds: unknown key (did you mean settle_seconds?)`):
//   a typo in a hand-edited file must never be silently ignored.
// - A key given with no value (`retention:`) is the same as a key left out.
// - Sizes: a number of bytes, or a number with B, KiB, MiB, GiB, TiB (powers of 1024) or
//   KB, MB, GB, TB (powers of 1000); decimals allowed (`1.5GiB`). See units.ts.
// - Durations: seconds (`0.5`), or 500ms, 30s, 15m, 2h, 7d, 1w, combinable (`1h30m`).
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
// The resolved configuration (type `Config`, derived from the schema) keeps the YAML's own keys
// and shape, with every default filled in and every value parsed: bytes for sizes, bytes per
// second for rates (null = unlimited), seconds for durations, absolute paths, and secrets as
// `Secret` objects that print as `***`. `check-config` prints exactly that.

import path from 'node:path';
import { z } from 'zod';
import { PLATFORMS, TARGET_TYPES, type TargetType } from '../targets/registry.js';
import {
  absolutePath,
  ALWAYS,
  bool,
  configErrorMap,
  cronExpression,
  describeInput,
  dispatch,
  duration,
  exactlyOne,
  folderGlob,
  GiB,
  integer,
  isPlainObject,
  listenAddress,
  MiB,
  oneOf,
  optional,
  rate,
  required,
  secretLine,
  section,
  size,
  targetNameList,
  toProblem,
  type ConfigProblem,
} from './fields.js';
import { DEFAULT_LEDGER_PATH, type ReadFile } from './config-file.js';
import { caFile, noProxyEntry, noProxyText, proxyUrl } from './network.js';

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const;

export const AFTER_UPLOAD_ACTIONS = ['keep', 'delete', 'move'] as const;

/** Keys whose value is the path of a file holding a secret; load.ts replaces it by the file's content. */
export const SECRET_FILE_KEYS: ReadonlySet<string> = new Set(['bearer_file', 'value_file', 'body_file', 'token_file']);

const target = dispatch<TargetConfig>((v) => {
  if (!isPlainObject(v)) return { problem: `expected a mapping with a type, got ${describeInput(v)}` };
  const valid = `valid types: ${TARGET_TYPES.join(', ')}`;
  if (v.type === undefined) return { problem: `required (${valid})`, path: ['type'] };
  const platform = typeof v.type === 'string' && Object.hasOwn(PLATFORMS, v.type) ? PLATFORMS[v.type as TargetType] : undefined;
  if (!platform) return { problem: `unknown target type ${JSON.stringify(v.type)} (${valid})`, path: ['type'] };
  return { schema: platform.config as z.ZodType<TargetConfig> };
});

/** A target's block, whichever its platform (see src/targets/registry.ts). */
export type TargetConfig = { [T in TargetType]: z.output<(typeof PLATFORMS)[T]['config']> }[TargetType];

// A target name shows up in logs, metrics labels and the ledger.
const TARGET_NAME_RE = /^[a-z0-9][a-z0-9_-]*$/i;

export interface ConfigSchemaOptions {
  /** Directory relative paths are resolved against: the configuration file's. Default: cwd. */
  baseDir?: string;
  /** How files the configuration names are read (network.ca_file). Default fs.readFileSync. */
  readFile?: ReadFile;
}

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
    // Optional (default off): an incident folder whose manifest is older (by its mtime) than this
    // when the daemon first sees it is recorded as skipped, not uploaded: installing on a
    // recorder that already holds years of exports. `vms-uplink retry INCIDENT-ID` takes one in.
    ignore_older: optional(duration({ positive: true })),
  });

  // ledger: the SQLite database that makes uploads resumable.
  const ledger = section({
    // Default /var/lib/vms-uplink/ledger.db (systemd StateDirectory=vms-uplink).
    path: required(toAbsolute, DEFAULT_LEDGER_PATH),
    // Free space the ledger's filesystem must keep; below it the daemon takes no new work (no
    // new manifests, hashing or uploads) until space returns. 0 turns it off. Default 256MiB.
    min_free: required(size(), '256MiB'),
  });

  // upload.bandwidth: `unlimited` (default, resolved to null), a rate (`4MiB/s`), or a schedule:
  // a non-empty list of { cron, limit }. Each entry's limit applies from its cron time until the
  // next entry's; cron is node-cron syntax (5 fields, or 6 with seconds first), local time.
  const bandwidthEntry = section({
    cron: required(cronExpression),
    limit: required(rate),
  });
  const bandwidthSchedule = z.array(bandwidthEntry).min(1, { error: 'must list at least one { cron, limit } entry' });
  const bandwidth = dispatch<number | null | BandwidthEntry[]>((v) => {
    if (typeof v === 'string' || typeof v === 'number') return { schema: required(rate) };
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
  }).superRefine((v, ctx) => {
    if (typeof v.retry_initial === 'number' && typeof v.retry_max === 'number' && v.retry_max < v.retry_initial) {
      ctx.addIssue({ code: 'custom', message: `must be at least retry_initial (${v.retry_initial} s)`, path: ['retry_max'] });
    }
  }, ALWAYS);

  // retention: optional; with after_upload: keep, deletes a video's files this long after it is
  // confirmed uploaded to every target (src/after/after-upload.ts).
  const retention = section({
    delete_uploaded_after: required(duration({ positive: true })),
  });

  // targets: one or more platforms, name → settings; every incident goes to every target.
  // A name starts with a letter or digit, then letters, digits, _ and -. Each platform's block
  // is described in src/targets/<platform>/config.ts.
  const targets = z.record(z.string(), target).superRefine((v, ctx) => {
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
  }, ALWAYS);

  // routes: which targets an incident goes to, by its folder below watch.root. The first route
  // whose `match` glob fits the folder decides (`*` within a name, `**` across folders, `?` one
  // character); an incident no route matches is not uploaded and its videos show as failed.
  // Without routes every incident goes to every target.
  const route = section({
    match: required(folderGlob),
    targets: required(targetNameList),
  });
  const routes = z.array(route).min(1, { error: 'must list at least one { match, targets } route, or be left out' });

  // api: optional local HTTP API (status, metrics, camera pause/resume).
  const api = section({
    // host:port, [v6]:port, or a bare port (host 127.0.0.1). Without it there is no API.
    listen: optional((v) => formatListen(listenAddress(v))),
    // Bearer token the API requires (all but /healthz); required when listen is set.
    token: optional(secretLine),
    token_file: optional(secretLine),
    // GET /healthz answers 503 once every target has been failing this long. Default 15m.
    targets_down_after: required(duration({ positive: true }), '15m'),
  }).superRefine((v, ctx) => {
    if (v.listen !== undefined) exactlyOne(ctx, v, 'token', 'token_file', 'required when listen is set (or token_file)');
    else if (v.token !== undefined && v.token_file !== undefined) exactlyOne(ctx, v, 'token', 'token_file');
  }, ALWAYS);

  // network: how every outgoing request (platform APIs, logins, presigned PUTs) leaves the box.
  // Left out: straight out, unless the environment names a proxy (see proxy below).
  const noProxy = dispatch<string[]>((v) => {
    if (typeof v === 'string') return { schema: required(noProxyText) };
    if (Array.isArray(v)) return { schema: z.array(required(noProxyEntry)) };
    return { problem: `expected a list of host names, domains and networks, got ${describeInput(v)}` };
  });
  const network = section({
    // A forward proxy for every request: http://proxy.corp:3128, or with credentials
    // http://user:password@proxy.corp:3128 (secrets: shown as ***). https:// URLs go through it
    // with CONNECT, http:// URLs as absolute-form requests. Left out: the environment's
    // https_proxy/HTTPS_PROXY, http_proxy and all_proxy/ALL_PROXY apply, as curl reads them
    // (src/upload/network.ts); given, the environment's proxy variables are ignored.
    proxy: optional(proxyUrl),
    // Hosts reached directly, not through the proxy: host names (matching their subdomains too),
    // .domains, IP addresses, CIDR networks (10.0.0.0/8), each optionally with :port; `*` = all.
    // A list, or one comma-separated string. Given, it replaces no_proxy/NO_PROXY from the environment.
    no_proxy: noProxy.optional(),
    // PEM file of extra CA certificates trusted for every HTTPS connection (a TLS-inspecting proxy's
    // CA, a private platform's CA), besides the system's. Read at start; must hold at least one.
    ca_file: optional(caFile(options.baseDir, options.readFile)),
  });

  const log = section({
    // trace | debug | info | warn | error | fatal. Default info.
    level: required(oneOf(LOG_LEVELS), 'info'),
  });

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
    network: network.prefault({} as z.input<typeof network>),
    log: log.prefault({} as z.input<typeof log>),
  }).superRefine((v, ctx) => {
    const configured = isPlainObject(v.targets) ? Object.keys(v.targets) : [];
    // Routes that failed their own checks arrive here half-parsed: look only at valid lists.
    (Array.isArray(v.routes) ? (v.routes as unknown[]) : []).forEach((r, i) =>
      (isPlainObject(r) && Array.isArray(r.targets) ? (r.targets as unknown[]) : []).forEach((name, j) => {
        if (typeof name === 'string' && configured.length && !configured.includes(name)) {
          ctx.addIssue({
            code: 'custom',
            message: `unknown target "${name}" (configured: ${configured.join(', ')})`,
            path: ['routes', i, 'targets', j],
          });
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
    const root = (v.watch as { root?: unknown } | undefined)?.root;
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
  }, ALWAYS);
}

/** `host:port`, with an IPv6 host in brackets: the form `api.listen` resolves to. */
function formatListen({ host, port }: { host: string; port: number }): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

export const configSchema = createConfigSchema();

/** The resolved configuration (see the top of this file). */
export type Config = z.output<typeof configSchema>;
export type WatchConfig = Config['watch'];
export type UploadConfig = Config['upload'];
export type ApiConfig = NonNullable<Config['api']>;
export type LogLevel = Config['log']['level'];
export type NetworkConfig = Config['network'];
/** `upload.bandwidth` resolved: a rate in bytes per second, null (unlimited), or a schedule. */
export type BandwidthConfig = UploadConfig['bandwidth'];
export interface BandwidthEntry {
  cron: string;
  /** Bytes per second; null = unlimited. */
  limit: number | null;
}

export type ValidationResult = { success: true; config: Config } | { success: false; problems: ConfigProblem[] };

/**
 * Validates an already-substituted configuration object (YAML parsed, `${NAME}` replaced,
 * `*_file` values replaced by the files' contents). Reports every problem, not the first.
 */
export function validateConfig(input: unknown, options: ConfigSchemaOptions = {}): ValidationResult {
  const schema = options.baseDir === undefined && options.readFile === undefined ? configSchema : createConfigSchema(options);
  if (!isPlainObject(input)) {
    return {
      success: false,
      problems: [{ path: [], message: `the configuration must be a mapping of settings, got ${describeInput(input)}` }],
    };
  }
  const result = schema.safeParse(input, { error: configErrorMap });
  if (result.success) return { success: true, config: result.data };
  return { success: false, problems: result.error.issues.map(toProblem) };
}
