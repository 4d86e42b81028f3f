/**
 * Wiring and signals: watch → plan → ledger → upload → report → after upload, around one ledger.
 */
import { dirname } from 'node:path';
import { AfterUpload } from './after/after-upload.js';
import { LocalApi, type Health } from './api/local-api.js';
import { ConfigError } from './config/config-file.js';
import type { ApiConfig, Config } from './config/schema.js';
import { Secret } from './config/secret.js';
import type { LedgerFault } from './ledger/faults.js';
import { freeBytesFor } from './ledger/filesystem.js';
import { HealthFile, healthPath, type DaemonHealth } from './ledger/health.js';
import { Ledger } from './ledger/ledger.js';
import type { Logger } from './log/logger.js';
import { describeError } from './log/logger.js';
import type { Secrets } from './log/redact.js';
import { UploadMetrics } from './metrics/upload-metrics.js';
import { FileIdentities } from './plan/identity.js';
import { VideoPlanner } from './plan/video-planner.js';
import { IncidentReporter } from './report/incident-reporter.js';
import { createTargets } from './targets/registry.js';
import type { Target } from './targets/target.js';
import { BandwidthSchedule, TokenBucket, type BandwidthState } from './upload/bandwidth.js';
import { UploadEngine } from './upload/engine.js';
import { HttpClient } from './upload/http.js';
import { NetworkHealth } from './upload/network-health.js';
import { NetworkSettings } from './upload/network.js';
import { Pacer, sleep } from './upload/pacer.js';
import { BUILD } from './version.js';
import { ExportChanges } from './watch/export-changes.js';
import { FolderWatcher, UNWATCH_PAGE, type WatcherOptions } from './watch/folder-watcher.js';
import { IncidentRouter } from './watch/routes.js';
import { watchFallbackMessage, type WatchFallback } from './watch/watch-fallback.js';

/** The longest wait between two tries of a ledger that refuses writes (a full disk). */
const LEDGER_PROBE_MAX_MS = 30_000;
/** How often watch.root is checked for /healthz (a full rescan is rarer). */
const ROOT_CHECK_MS = 2_000;
/** How often incidents every target finished with are looked for (their folders are then unwatched). */
const FINISH_CHECK_MS = 10_000;
/** Their folders are let go of at once: at most a page the watcher takes. */
const FINISH_PAGE = UNWATCH_PAGE;
/** How long the main loop sleeps while there is nothing to do. */
const QUIET_MS = 5_000;
/** What the status page shows as the limit before the stages are first wired. */
const UNLIMITED: BandwidthState = { bytesPerSecond: null, entry: null, since: null, schedule: null };
/** A main loop that has not come round for this long is reported by /healthz. */
const LOOP_STALL_MS = 60_000;
/** Network problems kept in the health file (it has a fixed size), and the length of each message. */
const HEALTH_NETWORK_PROBLEMS = 3;
const HEALTH_MESSAGE_CHARS = 400;

/** The ledger's filesystem below ledger.min_free. */
interface LowDisk {
  freeBytes: number;
  since: number;
}

export interface DaemonOptions {
  /** Runs before every ledger write: tests make it throw a storage fault (a full disk). */
  beforeLedgerWrite?: () => void;
  /** Reads the configuration file again (SIGHUP); throws a ConfigError when it cannot be used. */
  readConfig?: () => Config;
  /**
   * Proxies and trusted CAs for a configuration's `network` section and the environment (the
   * entry point builds them: upload/network.ts). Default: straight out, Node's trusted CAs.
   */
  networkFor?: (config: Config) => NetworkSettings;
  /** How the watcher watches, and how often it rescans what it could not watch: tests make the OS refuse watches. */
  watch?: Pick<WatcherOptions, 'watchFactory' | 'fallbackRescanMs'>;
}

/** What lives as long as the process: the local API, the metrics and the one bandwidth bucket. */
interface Lasting {
  metrics: UploadMetrics;
  bandwidth: TokenBucket;
  api: LocalApi | null;
}

/** The pipeline's stages as run() wires them from the configuration; a reload wires them anew. */
interface Stages {
  pacer: Pacer;
  engine: UploadEngine;
  changes: ExportChanges;
  /** A fresh watcher (after the ledger recovered from a fault). */
  newWatcher: () => FolderWatcher;
  watcher: FolderWatcher;
  bandwidthSchedule: BandwidthSchedule;
  planner: VideoPlanner;
  reporter: IncidentReporter;
  after: AfterUpload;
  /** Stage runs under way, awaited at shutdown. */
  background: Set<Promise<unknown>>;
}

/** A reload that could not be used: when, and every problem by YAML path. */
interface ReloadFailure {
  at: string;
  problems: string[];
}

/** The HTTP client and the targets built on it: what network and target settings make. */
interface Network {
  settings: NetworkSettings;
  http: HttpClient;
  targets: Map<string, Target>;
}

function openNetwork(config: Config, secrets: Secrets, settings: NetworkSettings, health: NetworkHealth): Network {
  const http = new HttpClient({ connectionsPerOrigin: config.upload.concurrency + 2, network: settings, health }, secrets);
  return { settings, http, targets: createTargets(config.targets, { http, secrets }) };
}

async function closeNetwork(network: Network): Promise<void> {
  for (const t of network.targets.values()) await t.close();
  await network.http.close().catch(() => undefined);
}

const reportingTargets = (targets: Map<string, Target>): string[] =>
  [...targets.values()].filter((t) => t.report !== undefined).map((t) => t.name);

/** Settings a reload cannot change: the ledger is open, the API's port is bound. */
function restartOnly(running: Config, next: Config): string[] {
  const kept: string[] = [];
  if (next.ledger.path !== running.ledger.path) kept.push('ledger.path');
  if (next.api?.listen !== running.api?.listen) kept.push('api.listen');
  return kept;
}

/** What a reload changes, for its log line: targets by name, and the other sections that differ. */
function describeChanges(
  running: Config,
  next: Config,
): { targetsAdded: string[]; targetsRemoved: string[]; targetsChanged: string[]; sections: string[] } {
  const before = running.targets as Record<string, unknown>;
  const after = next.targets as Record<string, unknown>;
  // A credential's JSON is its mask: compare what it holds, so a new token counts as a change.
  const text = (v: unknown): string =>
    JSON.stringify(v, function (this: Record<string, unknown>, key: string, x: unknown) {
      const raw = this[key];
      return raw instanceof Secret ? `secret:${raw.reveal()}` : x;
    });
  const same = (a: unknown, b: unknown): boolean => text(a) === text(b);
  const sections = (['watch', 'routes', 'upload', 'after_upload', 'log', 'api'] as const).filter((k) => !same(running[k], next[k]));
  return {
    targetsAdded: Object.keys(after).filter((t) => !(t in before)),
    targetsRemoved: Object.keys(before).filter((t) => !(t in after)),
    targetsChanged: Object.keys(after).filter((t) => t in before && !same(before[t], after[t])),
    sections,
  };
}

/** `every(name, ms)` is true when `ms` passed since it last was for that name (and the first time). */
function periodic(): (name: string, ms: number) => boolean {
  const last = new Map<string, number>();
  return (name, ms) => {
    const now = Date.now();
    if (now - (last.get(name) ?? -Infinity) < ms) return false;
    last.set(name, now);
    return true;
  };
}

export class Daemon {
  private readonly stopCtl = new AbortController();
  private wake: (() => void) | null = null;
  private health: HealthFile | null = null;
  private readonly startedAt = new Date().toISOString();
  private lowDisk: LowDisk | null = null;
  private rootProblem: string | null = null;
  /** Folders the OS refused to watch (rescanned instead), or null while every one is watched. */
  private watchFallback: WatchFallback | null = null;
  private lastLoopAt = Date.now();
  private reloadWanted = false;
  private reloadFailure: ReloadFailure | null = null;
  private readonly lasting: Lasting;
  /** The stages last wired (null until the first start; while a reload replaces them, their engine takes no work). */
  private current: Stages | null = null;
  /** The NetworkHealth revision the health file shows. */
  private networkRevision = 0;

  private constructor(
    private config: Config,
    private readonly log: Logger,
    private readonly secrets: Secrets,
    private network: Network,
    private readonly ledger: Ledger,
    private readonly options: DaemonOptions,
    /** Hosts the network settings keep the daemon from; lives across reloads. */
    private readonly networkHealth: NetworkHealth,
  ) {
    // upload.bandwidth: one bucket for every part of every upload and target; the schedule sets its rate.
    const bandwidth = new TokenBucket(null);
    const metrics = new UploadMetrics({
      targets: [...network.targets.keys()],
      figures: ledger.figures,
      bandwidth,
      filesystems: { ledger: dirname(config.ledger.path), exports: config.watch.root },
      minFreeBytes: config.ledger.min_free,
      build: BUILD,
      processMetrics: Boolean(config.api?.listen),
    });
    this.lasting = { metrics, bandwidth, api: config.api?.listen ? this.localApi(config.api, metrics) : null };
  }

  /** Opens everything that can fail on bad input before any work starts. */
  static open(config: Config, log: Logger, secrets: Secrets, options: DaemonOptions = {}): Daemon {
    const networkHealth = new NetworkHealth(log);
    const network = openNetwork(config, secrets, options.networkFor?.(config) ?? NetworkSettings.direct, networkHealth);
    const ledger = Ledger.open(config.ledger.path, {
      reportingTargets: reportingTargets(network.targets),
      beforeWrite: options.beforeLedgerWrite,
    });
    return new Daemon(config, log, secrets, network, ledger, options, networkHealth);
  }

  /** Runs until `stop()`; resolves once everything is closed. */
  async run(): Promise<void> {
    // First of what can fail at start-up (the port is taken): nothing is running yet to hold the process.
    await this.lasting.api?.listen();
    this.log.info(
      {
        event: 'daemon.started',
        root: this.config.watch.root,
        ledger: this.config.ledger.path,
        targets: [...this.network.targets.keys()],
      },
      'vms-uplink started',
    );
    this.log.info({ event: 'network.settings' }, `network: ${this.network.settings.describe()}`);
    for (const note of this.network.settings.notes) this.log.warn({ event: 'network.note' }, note);
    this.openHealth();
    this.ledger.onFault = (fault) => this.ledgerFault(fault);
    let stages = await this.start();
    for (;;) {
      await this.loop(stages);
      if (this.stopCtl.signal.aborted) break;
      stages = await this.reload(stages);
    }
    await this.shutdown(stages);
  }

  /**
   * Reads the configuration file again (SIGHUP) at the main loop's next turn. A valid one
   * replaces the stages once their parts in flight are done; an invalid one changes nothing.
   */
  requestReload(): void {
    this.reloadWanted = true;
    this.wake?.();
  }

  /** The stages wired from the configuration, started. */
  private async start(): Promise<Stages> {
    const stages = this.stages();
    stages.bandwidthSchedule.start();
    await stages.watcher.start();
    stages.after.start();
    this.current = stages;
    return stages;
  }

  /** Every stage of the pipeline, wired to the ledger and to each other. */
  private stages(): Stages {
    const { config, log, ledger } = this;
    const { targets } = this.network;
    const { metrics, bandwidth } = this.lasting;
    const settleMs = config.watch.settle_seconds * 1000;
    const pacer = new Pacer({ initialMs: config.upload.retry_initial * 1000, maxMs: config.upload.retry_max * 1000 });
    const identities = new FileIdentities(ledger.plan);
    const engine = new UploadEngine({
      ledger: ledger.uploads,
      identities,
      targets,
      concurrency: config.upload.concurrency,
      stallTimeoutMs: config.upload.stall_timeout * 1000,
      pacer,
      log,
      bandwidth,
      observer: metrics,
    });
    const changes = new ExportChanges({
      ledger: ledger.plan,
      windowMs: config.watch.missing_file_seconds * 1000,
      sweepMs: config.watch.rescan_interval * 1000,
      log,
      observer: metrics,
    });
    const bandwidthSchedule = new BandwidthSchedule(config.upload.bandwidth, bandwidth, log);
    const router = new IncidentRouter(config.watch.root, config.routes, [...targets.keys()]);
    const newWatcher = (): FolderWatcher =>
      new FolderWatcher({
        root: config.watch.root,
        poll: config.watch.poll,
        pollIntervalMs: config.watch.poll_interval * 1000,
        settleMs,
        ledger: ledger.watch,
        route: (folder) => router.targetsFor(folder),
        onFileEvent: (path) => changes.fileEvent(path),
        onActivity: () => this.wake?.(),
        log,
        ignoreOlderSeconds: config.watch.ignore_older,
        onFallback: (fallback) => {
          this.watchFallback = fallback;
          this.writeHealth('running');
        },
        ...this.options.watch,
      });
    return {
      pacer,
      engine,
      changes,
      newWatcher,
      watcher: newWatcher(),
      bandwidthSchedule,
      planner: new VideoPlanner({
        ledger: ledger.plan,
        identities,
        targets: [...targets.values()],
        preferredPartSize: config.upload.part_size,
        settleMs,
        missingMs: config.watch.missing_file_seconds * 1000,
        trustMtime: !config.watch.poll,
        log,
      }),
      reporter: new IncidentReporter(ledger.reports, targets, pacer, log, metrics),
      after: new AfterUpload({ config, ledger: ledger.after, targets: [...targets.keys()], changes, log }),
      background: new Set(),
    };
  }

  private localApi(config: ApiConfig, metrics: UploadMetrics): LocalApi {
    return new LocalApi({
      config,
      ledger: this.ledger,
      secrets: this.secrets,
      metrics,
      health: () => this.healthReport(),
      facts: () => ({
        version: BUILD.version,
        startedAt: this.startedAt,
        disk: { freeBytes: freeBytesFor(this.config.ledger.path), minFreeBytes: this.config.ledger.min_free },
        bandwidth: this.current?.bandwidthSchedule.state() ?? UNLIMITED,
      }),
      onWork: () => {
        this.current?.engine.review();
        this.current?.engine.poke();
      },
      log: this.log,
    });
  }

  /**
   * The main loop, until stop(). New work (manifests, exports to plan) is taken every turn, and at
   * once again while a backlog remains; what only needs looking at now and then (reports to
   * retry, after-upload, the root folder, finished incidents) every tick.
   */
  private async loop(stages: Stages): Promise<void> {
    const { config, ledger } = this;
    const tickMs = Math.min(1000, Math.max(100, (config.watch.settle_seconds * 1000) / 4));
    // Idle, the loop still comes round for each rescan that is due.
    const quietMs = Math.max(tickMs, Math.min(QUIET_MS, config.watch.rescan_interval * 1000));
    const every = periodic();
    while (!this.stopCtl.signal.aborted && !this.reloadWanted) {
      this.lastLoopAt = Date.now();
      if (this.networkHealth.revision !== this.networkRevision) this.writeHealth('running');
      if (every('root', ROOT_CHECK_MS)) this.rootProblem = await stages.watcher.checkRoot();
      if (ledger.fault) {
        await this.recoverLedger(stages);
        continue;
      }
      stages.engine.hold(this.belowFloor());
      const due = every('tick', tickMs);
      if (due) {
        stages.engine.review();
        this.spawn(stages, stages.reporter.tick(), 'reporting');
        this.spawn(stages, stages.after.tick(), 'after upload');
      }
      if (this.lowDisk) {
        // No new exports, hashing or uploads; reports and after-upload handling may free space.
        await this.idle(tickMs);
        continue;
      }
      if (every('rescan', config.watch.rescan_interval * 1000)) stages.watcher.rescan();
      if (every('finish', FINISH_CHECK_MS)) {
        const changeWindowStart = Date.now() - config.watch.missing_file_seconds * 1000;
        stages.watcher.unwatch(ledger.watch.finishIncidents(changeWindowStart, config.after_upload !== 'keep', FINISH_PAGE));
      }
      const moreManifests = await stages.watcher.tick();
      if (due) await stages.changes.tick();
      this.spawn(stages, this.plan(stages), 'planning');
      stages.engine.poke();
      await this.idle(moreManifests || stages.planner.hasMore ? 0 : this.quiet(stages) ? quietMs : tickMs);
    }
  }

  /**
   * Nothing to do and nothing on its way: the loop may sleep longer (a file event, the API or a
   * stop still wake it at once), so that an idle daemon costs the recorder next to nothing.
   */
  private quiet(stages: Stages): boolean {
    return !stages.watcher.busy && stages.engine.activeUploads === 0 && !this.ledger.figures.workPending([...this.network.targets.keys()]);
  }

  /** A page of waiting exports planned; the loop comes round at once while more wait. */
  private async plan(stages: Stages): Promise<void> {
    const changed = await stages.planner.tick(this.stopCtl.signal);
    if (changed) stages.engine.poke();
    if (stages.planner.hasMore) this.wake?.();
  }

  /**
   * While the ledger refuses writes nothing new is taken, and work under way stops at its next
   * write. Once it commits again, a fresh watcher reads every manifest again: one read while
   * writes failed was marked as seen without being applied (applying one twice changes nothing).
   */
  private async recoverLedger(stages: Stages): Promise<void> {
    if (!(await this.waitForLedger(stages.pacer))) return;
    await stages.watcher.stop();
    stages.watcher = stages.newWatcher();
    await stages.watcher.start();
    stages.engine.poke();
  }

  private spawn(stages: Stages, work: Promise<unknown>, what: string): void {
    const tracked = work.catch((err) => this.log.error({ event: 'daemon.error', what, err }, `${what}: ${describeError(err)}`));
    stages.background.add(tracked);
    void tracked.finally(() => stages.background.delete(tracked));
  }

  private async shutdown(stages: Stages): Promise<void> {
    this.log.info({ event: 'daemon.stopping', inFlight: stages.engine.activeUploads }, 'stopping: finishing parts in flight');
    await this.lasting.api?.close();
    await this.stopStages(stages, this.config.upload.drain_timeout * 1000);
    await closeNetwork(this.network);
    this.ledger.close();
    this.writeHealth('stopped');
    this.health?.close();
    this.log.info({ event: 'daemon.stopped' }, 'vms-uplink stopped');
  }

  /**
   * Stops taking work, lets the parts in flight finish (for up to `drainMs`), and waits for every
   * stage to end: what was not acknowledged stays pending in the ledger.
   */
  private async stopStages(stages: Stages, drainMs: number): Promise<void> {
    await stages.watcher.stop();
    await stages.engine.stop(drainMs);
    stages.bandwidthSchedule.stop();
    stages.reporter.stop();
    await stages.after.stop();
    await Promise.allSettled([...stages.background]);
  }

  /**
   * SIGHUP: the configuration file read again. A valid one is applied: the stages in use finish
   * their parts in flight and stop, and new ones wired from it take over where the ledger says;
   * targets, routes, bandwidth, watch, log level and network settings all change with them.
   * An invalid one changes nothing and is shown in the log and in status.
   */
  private async reload(stages: Stages): Promise<Stages> {
    this.reloadWanted = false;
    const next = this.readNewConfig();
    if (!next) return stages;
    const changes = describeChanges(this.config, next);
    // No deadline: a part cut off could reach the platform unacknowledged and go out again (ALO
    // cannot say which parts it holds). Each part in flight ends on its own or by its stall timeout.
    this.log.info({ event: 'config.reload.draining', inFlight: stages.engine.activeUploads }, 'reloading: finishing parts in flight first');
    await this.stopStages(stages, Infinity);
    // The new watcher says again what the OS refuses it.
    this.watchFallback = null;
    const old = this.network;
    this.network = openNetwork(next, this.secrets, this.options.networkFor?.(next) ?? NetworkSettings.direct, this.networkHealth);
    this.config = next;
    this.log.level = next.log.level;
    this.ledger.setReportingTargets(reportingTargets(this.network.targets));
    this.lasting.metrics.setTargets([...this.network.targets.keys()]);
    if (next.api) this.lasting.api?.reconfigure(next.api);
    this.reloadFailure = null;
    this.writeHealth('running');
    const started = await this.start();
    await closeNetwork(old);
    this.log.info(
      { event: 'config.reloaded', ...changes },
      `configuration reloaded${changes.targetsRemoved.length ? `; uploads to ${changes.targetsRemoved.join(', ')} stopped until a target of that name returns` : ''}`,
    );
    return started;
  }

  /** The configuration file again, with what needs a restart left as it was; null when it cannot be used. */
  private readNewConfig(): Config | null {
    let next: Config;
    try {
      if (!this.options.readConfig) throw new Error('this daemon was started without a configuration file to read again');
      next = this.options.readConfig();
    } catch (err) {
      const problems = err instanceof ConfigError ? err.problems : [describeError(err)];
      this.reloadFailure = { at: new Date().toISOString(), problems };
      this.writeHealth('running');
      this.log.error(
        { event: 'config.reload.failed', problems },
        `configuration not reloaded, the running one stays:\n${problems.map((p) => `  ${p}`).join('\n')}`,
      );
      return null;
    }
    const kept = restartOnly(this.config, next);
    if (kept.length > 0) {
      this.log.warn(
        { event: 'config.reload.restart_needed', settings: kept },
        `${kept.join(' and ')} changed: applied at the next restart, the running value stays until then`,
      );
    }
    return {
      ...next,
      ledger: { ...next.ledger, path: this.config.ledger.path },
      api: kept.includes('api.listen') ? this.config.api : next.api,
    };
  }

  /** The health file `vms-uplink status` reads; the daemon runs without it when it cannot be made. */
  private openHealth(): void {
    const path = healthPath(this.config.ledger.path);
    try {
      this.health = new HealthFile(path);
    } catch (err) {
      this.log.warn(
        { event: 'daemon.health.unavailable', path, err },
        `cannot create ${path}: ${describeError(err)}; status will not show the daemon's state`,
      );
    }
    this.writeHealth('running');
  }

  private writeHealth(state: DaemonHealth['state']): void {
    const fault = this.ledger.fault;
    const low = this.lowDisk;
    this.networkRevision = this.networkHealth.revision;
    this.health?.write({
      pid: process.pid,
      state,
      startedAt: this.startedAt,
      updatedAt: new Date().toISOString(),
      ledgerFault: fault && { code: fault.code, message: fault.message, since: new Date(fault.since).toISOString() },
      lowDisk: low && { freeBytes: low.freeBytes, minFreeBytes: this.config.ledger.min_free, since: new Date(low.since).toISOString() },
      targets: [...this.network.targets.keys()],
      reloadFailed: this.reloadFailure && {
        at: this.reloadFailure.at,
        // The file has a fixed size: the log has every problem.
        problems: this.reloadFailure.problems.slice(0, 3).map((p) => p.slice(0, 300)),
      },
      network: this.networkHealth.problems.slice(0, HEALTH_NETWORK_PROBLEMS).map((p) => ({
        kind: p.kind,
        host: p.host,
        message: p.message.slice(0, HEALTH_MESSAGE_CHARS),
        since: new Date(p.since).toISOString(),
      })),
      watchFallback: this.watchFallback && { ...this.watchFallback, since: new Date(this.watchFallback.since).toISOString() },
    });
  }

  /**
   * Whether the ledger's filesystem is below ledger.min_free; logs and records in the health
   * file when that starts and ends.
   */
  private belowFloor(): boolean {
    const floor = this.config.ledger.min_free;
    const free = floor > 0 ? freeBytesFor(this.config.ledger.path) : null;
    const low = free !== null && free < floor;
    if (low && !this.lowDisk) {
      this.log.warn(
        { event: 'disk.low', ledger: this.config.ledger.path, freeBytes: free, minFreeBytes: floor },
        `only ${free} bytes free on the ledger's filesystem, below ledger.min_free (${floor}): no new exports or uploads are taken until space is freed`,
      );
    } else if (!low && this.lowDisk) {
      this.log.info(
        { event: 'disk.ok', freeBytes: free, minFreeBytes: floor, lowMs: Date.now() - this.lowDisk.since },
        'free space is back above ledger.min_free: resuming',
      );
    }
    const changed = low !== (this.lowDisk !== null);
    this.lowDisk = low ? { freeBytes: free, since: this.lowDisk?.since ?? Date.now() } : null;
    if (changed) this.writeHealth('running');
    return low;
  }

  /**
   * What GET /healthz says: `problems` (503) stop the daemon's work; `warnings` (200, degraded)
   * are work it cannot finish on its own, such as reports a platform refused, folders it rescans
   * because the OS refused to watch them, or a host it cannot reach because of the box's network
   * settings (an untrusted TLS certificate, a refusing proxy): uploads to other hosts go on, and
   * restarting the daemon would not help. Once every target has been failing for
   * api.targets_down_after, that is a problem (503) too.
   */
  private healthReport(): Health {
    const warnings = [
      ...this.networkHealth.problems.map((p) => `${p.message} (since ${new Date(p.since).toISOString()})`),
      ...[...this.ledger.figures.refusedReportsByTarget()].map(
        ([target, r]) =>
          `${target} refused the latest report of ${r.count} incident(s) (latest: ${r.lastError ?? 'no message'}); vms-uplink retry INCIDENT-ID sends one again`,
      ),
    ];
    const fallback = this.watchFallback;
    if (fallback) warnings.push(watchFallbackMessage(fallback.folders, fallback.rescanSeconds));
    if (this.reloadFailure)
      warnings.push(
        `the configuration file could not be reloaded at ${this.reloadFailure.at} (the running one stays): ${this.reloadFailure.problems.join('; ')}`,
      );
    return { problems: this.healthProblems(), warnings };
  }

  /** Why GET /healthz answers 503; empty while the watcher, ledger and upload loop work. */
  private healthProblems(): string[] {
    const problems: string[] = [];
    const fault = this.ledger.fault;
    if (fault)
      problems.push(
        `the ledger ${this.config.ledger.path} cannot be written since ${new Date(fault.since).toISOString()}: ${fault.message}`,
      );
    if (this.rootProblem) problems.push(this.rootProblem);
    if (this.lowDisk) {
      problems.push(
        `${this.lowDisk.freeBytes} bytes free on the ledger's filesystem, below ledger.min_free (${this.config.ledger.min_free}): no new work is taken`,
      );
    }
    const down = this.lasting.metrics.allTargetsFailingFor();
    const downLimit = this.config.api?.targets_down_after ?? Infinity;
    if (down > downLimit)
      problems.push(`every target has been failing for ${Math.round(down)} s (api.targets_down_after is ${downLimit} s)`);
    const loopAge = Date.now() - this.lastLoopAt;
    if (loopAge > LOOP_STALL_MS && !fault) problems.push(`the main loop has not come round for ${Math.round(loopAge / 1000)} s`);
    return problems;
  }

  private ledgerFault(fault: LedgerFault): void {
    this.log.error(
      { event: 'ledger.fault', code: fault.code, ledger: this.config.ledger.path },
      `${fault.message}: the ledger ${this.config.ledger.path} cannot record progress; new work is paused and the write is retried`,
    );
    this.writeHealth('running');
    this.wake?.();
  }

  /**
   * Waits (as the pacer says, at most LEDGER_PROBE_MAX_MS apart) until a ledger write commits
   * again; true once it does, false when a stop came first.
   */
  private async waitForLedger(pacer: Pacer): Promise<boolean> {
    const since = this.ledger.fault?.since ?? Date.now();
    for (let attempt = 0; !this.stopCtl.signal.aborted; attempt++) {
      await this.idle(Math.min(LEDGER_PROBE_MAX_MS, Math.max(50, pacer.backoff(attempt))));
      if (this.stopCtl.signal.aborted) return false;
      const recovered = this.ledger.probe();
      this.writeHealth('running');
      if (recovered) {
        this.log.info(
          { event: 'ledger.recovered', ledger: this.config.ledger.path, faultMs: Date.now() - since },
          'ledger writes commit again: resuming',
        );
        return true;
      }
    }
    return false;
  }

  stop(): void {
    this.stopCtl.abort();
    this.wake?.();
  }

  /** Waits for the next tick, or less when a stop comes. */
  private async idle(ms: number): Promise<void> {
    await Promise.race([sleep(ms), new Promise<void>((resolve) => (this.wake = resolve))]);
    this.wake = null;
  }
}
