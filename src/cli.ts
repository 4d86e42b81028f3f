#!/usr/bin/env node
/**
 * The `vms-uplink` command. Exit codes: 0 success, 2 bad configuration or usage (nothing
 * started), 1 any other fatal error.
 */
import { existsSync } from 'node:fs';
import { once } from 'node:events';
import { ConfigError, readLedgerPath, refuseNetworkLedger, resolveConfigPath, type Env } from './config/config-file.js';
import { LedgerOpenError } from './ledger/database.js';
import { Ledger } from './ledger/ledger.js';
import { emptyOverview } from './ledger/views/status.js';
import { createLogger, describeError } from './log/logger.js';
import { Secrets } from './log/redact.js';
import { daemonReport, type DaemonReport } from './status/daemon-status.js';
import { footerLines, formatSummary, incidentLines, overviewLines } from './status/format-status.js';
import { BUILD } from './version.js';

const USAGE = `usage:
  vms-uplink run [--config FILE]            run the daemon in the foreground
  vms-uplink check-config [--config FILE]   validate the configuration and print it, secrets masked
  vms-uplink status [--config FILE] [--all] [--json]
                                            a summary of what is queued, uploading, done and failed;
                                            --all lists every incident, --json everything for scripts
  vms-uplink retry ID [--config FILE]       put a failed upload (#number) or incident (id) back in the queue;
                                            an incident skipped by watch.ignore_older is taken in
  vms-uplink --version                      print the version and the Node.js it runs on

The configuration is --config FILE, else $VMS_UPLINK_CONFIG, else /etc/vms-uplink/config.yaml.`;

class UsageError extends Error {}

interface Args {
  command: string;
  config?: string;
  json: boolean;
  all: boolean;
  positional: string[];
}

function parseArgs(argv: string[]): Args {
  const args: Args = { command: '', json: false, all: false, positional: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--config' || a === '-c') {
      const value = argv[++i];
      if (!value) throw new UsageError('--config needs a file');
      args.config = value;
    } else if (a.startsWith('--config=')) args.config = a.slice('--config='.length);
    else if (a === '--json') args.json = true;
    else if (a === '--all') args.all = true;
    else if (a === '--help' || a === '-h') args.command = 'help';
    else if (a === '--version') args.command = 'version';
    else if (a.startsWith('-')) throw new UsageError(`unknown option ${a}`);
    else if (!args.command) args.command = a;
    else args.positional.push(a);
  }
  return args;
}

// The daemon's and the whole configuration's modules (every platform's, the HTTP client) are
// imported only by the commands that use them: without them `status` on a 10,000-incident ledger
// answers in 0.57 s rather than 0.77 s.

async function run(args: Args, env: Env): Promise<number> {
  const [{ loadConfig }, { Daemon }, { networkSettings }] = await Promise.all([
    import('./config/load.js'),
    import('./daemon.js'),
    import('./upload/network.js'),
  ]);
  const configPath = resolveConfigPath(args.config, env);
  const config = loadConfig(configPath, env);
  refuseNetworkLedger(configPath, config.ledger.path);
  const secrets = new Secrets();
  const log = createLogger(config.log.level, secrets);
  const daemon = Daemon.open(config, log, secrets, {
    readConfig: () => loadConfig(configPath, env),
    networkFor: (c) => networkSettings(c.network, env, { source: configPath }),
  });
  const onSignal = (signal: string): void => {
    log.info({ event: 'daemon.signal', signal }, `${signal} received`);
    daemon.stop();
  };
  process.once('SIGTERM', () => onSignal('SIGTERM'));
  process.once('SIGINT', () => onSignal('SIGINT'));
  const onHangup = (): void => {
    log.info({ event: 'daemon.signal', signal: 'SIGHUP' }, 'SIGHUP received: reading the configuration file again');
    daemon.requestReload();
  };
  process.on('SIGHUP', onHangup);
  await daemon.run();
  process.off('SIGHUP', onHangup);
  await new Promise<void>((resolve) => log.flush(() => resolve()));
  return 0;
}

/** Writes to stdout, waiting while the reader is behind: a listing of any size in bounded memory. */
async function emit(text: string): Promise<void> {
  if (!process.stdout.write(text)) await once(process.stdout, 'drain');
}

/** Incidents listed per page of `status --all` and `--json`. */
const STATUS_PAGE = 200;

/** The resolved configuration with every secret masked, and where requests will go (the environment's proxy included). */
async function checkConfig(args: Args, env: Env): Promise<number> {
  const [{ loadConfig }, { describeConfig }, { networkSettings }] = await Promise.all([
    import('./config/load.js'),
    import('./config/mask.js'),
    import('./upload/network.js'),
  ]);
  const configPath = resolveConfigPath(args.config, env);
  const config = loadConfig(configPath, env);
  const network = networkSettings(config.network, env, { source: configPath });
  console.log(describeConfig(config));
  console.log(`# network: ${network.describe()}`);
  for (const note of network.notes) console.log(`# note: ${note}`);
  return 0;
}

async function status(args: Args, env: Env): Promise<number> {
  const path = readLedgerPath(resolveConfigPath(args.config, env));
  const daemon = daemonReport(path);
  const ledger = existsSync(path) ? Ledger.open(path, { readonly: true }) : null;
  try {
    if (ledger && !ledger.schemaIsCurrent()) {
      // A ledger being created right now, or one an older version wrote: the daemon migrates it at its start.
      if (args.json) await emit(`${JSON.stringify({ ledger: path, ...daemon, ...emptyOverview(), incidents: [] }, null, 2)}\n`);
      else await emit(`the ledger ${path} is not in this version's form yet: the daemon brings it up to date when it starts\n`);
      return 0;
    }
    if (!ledger) {
      if (args.json) await emit(`${JSON.stringify({ ledger: path, ...daemon, ...emptyOverview(), incidents: [] }, null, 2)}\n`);
      else await emit(`no ledger at ${path} yet: the daemon has not run\n`);
      return 0;
    }
    if (args.json) await statusJson(ledger, path, daemon);
    else if (args.all) await statusAll(ledger, daemon);
    else
      await emit(
        `${formatSummary(ledger.status.summary(), daemon, { tty: process.stdout.isTTY === true, columns: process.stdout.columns })}\n`,
      );
    return 0;
  } finally {
    ledger?.close();
  }
}

/** Everything, as one JSON document streamed a page of incidents at a time (incidents last). */
async function statusJson(ledger: Ledger, path: string, daemon: DaemonReport): Promise<void> {
  const head = JSON.stringify({ ledger: path, ...daemon, ...ledger.status.overview(null) }, null, 2);
  await emit(`${head.slice(0, -2)},\n  "incidents": [`);
  let first = true;
  for (const page of ledger.status.incidentPages(STATUS_PAGE)) {
    for (const incident of page) {
      await emit(`${first ? '' : ','}\n    ${JSON.stringify(incident)}`);
      first = false;
    }
  }
  await emit(`${first ? '' : '\n  '}]\n}\n`);
}

/** Every incident: bars on a terminal, a table elsewhere, a page at a time. */
async function statusAll(ledger: Ledger, daemon: DaemonReport): Promise<void> {
  const overview = ledger.status.overview(null);
  const format = { tty: process.stdout.isTTY === true, columns: process.stdout.columns };
  await emit(`${overviewLines(overview, daemon).join('\n')}\n`);
  for (const page of ledger.status.incidentPages(STATUS_PAGE)) await emit(`${incidentLines(page, format).join('\n')}\n`);
  const footer = footerLines(overview);
  if (footer.length > 0) await emit(`${footer.join('\n')}\n`);
}

function retry(args: Args, env: Env): number {
  const id = args.positional[0];
  if (!id) throw new UsageError('retry needs the id of a failed upload (#number) or of an incident');
  const configPath = resolveConfigPath(args.config, env);
  const ledgerPath = readLedgerPath(configPath);
  refuseNetworkLedger(configPath, ledgerPath);
  const ledger = Ledger.open(ledgerPath);
  try {
    const done = ledger.operator.retry(id.replace(/^#/, ''));
    if (!done) {
      console.error(`nothing to retry for ${id}: no failed upload with that number and no incident (or skipped one) with that id`);
      return 1;
    }
    if (done.takenIn)
      console.log(
        `took in incident ${done.incident}, skipped as older than watch.ignore_older: the daemon reads its manifest and uploads it`,
      );
    else
      console.log(
        `requeued ${done.uploads} upload(s) and ${done.videos} video(s)${done.incident ? ` of incident ${done.incident}; its report is sent again` : ''}`,
      );
    return 0;
  } finally {
    ledger.close();
  }
}

/** `env`: the environment, read here and nowhere else in the daemon (the config's ${NAME}, proxies). */
async function main(argv: string[], env: Env): Promise<number> {
  try {
    const args = parseArgs(argv);
    switch (args.command) {
      case 'run':
        return await run(args, env);
      case 'check-config':
        return await checkConfig(args, env);
      case 'status':
        return await status(args, env);
      case 'retry':
        return retry(args, env);
      case 'help':
        console.log(USAGE);
        return 0;
      case 'version':
        console.log(`vms-uplink ${BUILD.version} (node ${BUILD.node})`);
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

process.exitCode = await main(process.argv.slice(2), process.env);
