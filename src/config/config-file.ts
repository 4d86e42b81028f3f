/**
 * The configuration file itself: where it is, the error that names it, and what `status` and
 * `retry` read of it (only `ledger.path`). Kept apart from the schema so that those commands do not
 * load every platform's module to read one path.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseDocument } from 'yaml';
import { networkMountOf } from '../ledger/filesystem.js';

/** Where the ledger lives unless `ledger.path` says otherwise (systemd StateDirectory=vms-uplink). */
export const DEFAULT_LEDGER_PATH = '/var/lib/vms-uplink/ledger.db';

export const DEFAULT_CONFIG_PATH = '/etc/vms-uplink/config.yaml';
export const CONFIG_PATH_ENV = 'VMS_UPLINK_CONFIG';

export type Env = Record<string, string | undefined>;
/** fs.readFileSync-compatible (memfs's `vol.readFileSync` fits too). */
export type ReadFile = (path: string, encoding: 'utf8') => string | Buffer;

/** A configuration that cannot be used. Exit code 2; nothing is started. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly code = 'ERR_CONFIG';
  /** One line per problem, each starting with its YAML path (`targets.alo.base_url: Invalid URL`). */
  readonly problems: string[];
  /** The configuration file. */
  readonly file: string;

  constructor(file: string, problems: string[]) {
    super(`${file}:\n${problems.map((p) => `  ${p}`).join('\n')}`);
    this.file = file;
    this.problems = problems;
  }
}

/** `--config`, else `$VMS_UPLINK_CONFIG`, else /etc/vms-uplink/config.yaml. */
export function resolveConfigPath(flag: string | undefined, env: Env): string {
  return flag || env[CONFIG_PATH_ENV] || DEFAULT_CONFIG_PATH;
}

/**
 * Only `ledger.path`, for `status` and `retry`: an operator's shell may not have the daemon's
 * secrets (systemd credentials, environment), and these commands need none of them.
 */
export function readLedgerPath(file: string, readFile: ReadFile = fs.readFileSync): string {
  let raw: unknown;
  try {
    raw = parseDocument(readFile(file, 'utf8').toString()).toJS();
  } catch (err) {
    throw new ConfigError(file, [`cannot read the configuration file (${errnoText(err)})`]);
  }
  const ledger = (raw as { ledger?: { path?: unknown } } | null)?.ledger?.path;
  if (ledger !== undefined && typeof ledger !== 'string') throw new ConfigError(file, ['ledger.path: expected a path']);
  return path.resolve(path.dirname(path.resolve(file)), ledger ?? DEFAULT_LEDGER_PATH);
}

/**
 * SQLite's WAL locking is unsafe on network filesystems: a ledger there is refused like a bad
 * configuration (exit 2), naming ledger.path and the filesystem. `mountinfo` reads the mount
 * table (tests pass one of a machine with an NFS mount).
 */
export function refuseNetworkLedger(configPath: string, ledgerPath: string, mountinfo?: () => string): void {
  const mount = networkMountOf(ledgerPath, mountinfo);
  if (!mount) return;
  throw new ConfigError(configPath, [
    `ledger.path: ${ledgerPath} is on a network filesystem (${mount.fsType}, ${mount.source} mounted at ${mount.mountPoint}); ` +
      `SQLite's write-ahead-log locking is not safe there and the ledger could be corrupted: put ledger.path on a local disk`,
  ]);
}

const ERRNO_TEXT: Record<string, string> = {
  ENOENT: 'no such file',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EISDIR: 'is a directory',
  ENOTDIR: 'a parent is not a directory',
};

export function errnoText(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code !== 'string') return (err as Error | undefined)?.message ?? String(err);
  const text = ERRNO_TEXT[code];
  return text ? `${code}: ${text}` : code;
}
