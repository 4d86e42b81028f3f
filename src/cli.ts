#!/usr/bin/env node
/**
 * The `vms-uplink` command (CONTRACT §2). Exit codes: 0 success, 2 bad configuration or usage
 * (nothing started), 1 any other fatal error.
 */
import { existsSync } from 'node:fs';
import { ConfigError, loadConfig, readLedgerPath, resolveConfigPath } from './config/load.js';
import { describeConfig } from './config/mask.js';
import { Daemon } from './daemon.js';
import { LedgerOpenError, openDatabase } from './ledger/database.js';
import { emptyStatus, hasSchema, readStatus } from './ledger/status-snapshot.js';
import { UploadLedger } from './ledger/upload-ledger.js';
import { createLogger, describeError } from './log/logger.js';
import { networkMountOf } from './ledger/filesystem.js';
import { daemonReport } from './status/daemon-status.js';
import { formatStatus } from './status/format-status.js';

const USAGE = `usage:
  vms-uplink run [--config FILE]            run the daemon in the foreground
  vms-uplink check-config [--config FILE]   validate the configuration and print it, secrets masked
  vms-uplink status [--config FILE] [--json] what is queued, uploading, done and failed
  vms-uplink retry ID [--config FILE]       put a failed upload (#number) or incident (id) back in the queue

The configuration is --config FILE, else $VMS_UPLINK_CONFIG, else /etc/vms-uplink/config.yaml.`;

class UsageError extends Error {}

interface Args {
  command: string;
  config?: string;
  json: boolean;
  positional: string[];
}

function parseArgs(argv: string[]): Args {
  const args: Args = { command: '', json: false, positional: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--config' || a === '-c') {
      const value = argv[++i];
      if (!value) throw new UsageError('--config needs a file');
      args.config = value;
    } else if (a.startsWith('--config=')) args.config = a.slice('--config='.length);
    else if (a === '--json') args.json = true;
    else if (a === '--help' || a === '-h') args.command = 'help';
    else if (a.startsWith('-')) throw new UsageError(`unknown option ${a}`);
    else if (!args.command) args.command = a;
    else args.positional.push(a);
  }
  return args;
}

/**
 * SQLite's WAL locking is unsafe on network filesystems: a ledger there is refused like a bad
 * configuration (exit 2), naming ledger.path and the filesystem.
 */
function refuseNetworkLedger(configPath: string, ledgerPath: string): void {
  const mount = networkMountOf(ledgerPath);
  if (!mount) return;
  throw new ConfigError(configPath, [
    `ledger.path: ${ledgerPath} is on a network filesystem (${mount.fsType}, ${mount.source} mounted at ${mount.mountPoint}); ` +
      `SQLite's write-ahead-log locking is not safe there and the ledger could be corrupted: put ledger.path on a local disk`,
  ]);
}

async function run(args: Args): Promise<number> {
  const configPath = resolveConfigPath(args.config);
  const config = loadConfig(configPath);
  refuseNetworkLedger(configPath, config.ledger.path);
  const log = createLogger(config.log.level);
  const daemon = Daemon.open(config, log);
  const onSignal = (signal: string): void => {
    log.info({ event: 'daemon.signal', signal }, `${signal} received`);
    daemon.stop();
  };
  process.once('SIGTERM', () => onSignal('SIGTERM'));
  process.once('SIGINT', () => onSignal('SIGINT'));
  await daemon.run();
  await new Promise<void>((resolve) => log.flush(() => resolve()));
  return 0;
}

function status(args: Args): number {
  const path = readLedgerPath(resolveConfigPath(args.config));
  const db = existsSync(path) ? openDatabase(path, { readonly: true }) : null;
  try {
    // A ledger the daemon is creating right now has no tables yet: nothing to show either.
    const snapshot = db && hasSchema(db) ? readStatus(db) : null;
    const daemon = daemonReport(path);
    if (args.json) console.log(JSON.stringify({ ledger: path, ...daemon, ...(snapshot ?? emptyStatus()) }, null, 2));
    else if (!snapshot) console.log(`no ledger at ${path} yet: the daemon has not run`);
    else console.log(formatStatus(snapshot, daemon, { tty: process.stdout.isTTY === true, columns: process.stdout.columns }));
  } finally {
    db?.close();
  }
  return 0;
}

function retry(args: Args): number {
  const id = args.positional[0];
  if (!id) throw new UsageError('retry needs the id of a failed upload (#number) or of an incident');
  const configPath = resolveConfigPath(args.config);
  const ledgerPath = readLedgerPath(configPath);
  refuseNetworkLedger(configPath, ledgerPath);
  const ledger = UploadLedger.open(ledgerPath);
  try {
    const done = ledger.retry(id.replace(/^#/, ''));
    if (!done) {
      console.error(`nothing to retry for ${id}: no failed upload with that number and no incident with that id`);
      return 1;
    }
    console.log(`requeued ${done.uploads} upload(s) and ${done.videos} video(s)${done.incident ? ` of incident ${done.incident}` : ''}`);
    return 0;
  } finally {
    ledger.close();
  }
}

async function main(argv: string[]): Promise<number> {
  try {
    const args = parseArgs(argv);
    switch (args.command) {
      case 'run':
        return await run(args);
      case 'check-config':
        console.log(describeConfig(loadConfig(resolveConfigPath(args.config))));
        return 0;
      case 'status':
        return status(args);
      case 'retry':
        return retry(args);
      case 'help':
        console.log(USAGE);
        return 0;
      default:
        throw new UsageError(args.command ? `unknown command ${args.command}` : 'no command given');
    }
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`vms-uplink: ${err.message}\n\n${USAGE}`);
      return 2;
    }
    if (err instanceof ConfigError) {
      console.error(err.message);
      return 2;
    }
    if (err instanceof LedgerOpenError) {
      console.error(`vms-uplink: ${err.message}`);
      return 1;
    }
    console.error(`vms-uplink: fatal: ${describeError(err)}`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
