/**
 * Wiring and signals: watch → plan → ledger → upload → report → after upload, around one ledger.
 */
import { AfterUpload } from './after/after-upload.js';
import { LocalApi, type Health } from './api/local-api.js';
import type { Config } from './config/schema.js';
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
import { BandwidthSchedule, TokenBucket } from './upload/bandwidth.js';
import { UploadEngine } from './upload/engine.js';
import { HttpClient } from './upload/http.js';
import { Pacer, sleep } from './upload/pacer.js';
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
/** A main loop that has not come round for this long is reported by /healthz. */
const LOOP_STALL_MS = 60_000;

/** The ledger's filesystem below ledger.min_free. */
interface LowDisk {
  freeBytes: number;
  since: number;
}

export interface DaemonOptions {
  /** Runs before every ledger write: tests make it throw a storage fault (a full disk). */
  beforeLedgerWrite?: () => void;
  /** How the watcher watches, and how often it rescans what it could not watch: tests make the OS refuse watches. */
  watch?: Pick<WatcherOptions, 'watchFactory' | 'fallbackRescanMs'>;
}

/** The pipeline's stages as run() wires them. */
interface Stages {
  pacer: Pacer;
  metrics: UploadMetrics;
  engine: UploadEngine;
  changes: ExportChanges;
  /** A fresh watcher (after the ledger recovered from a fault). */
  newWatcher: () => FolderWatcher;
  watcher: FolderWatcher;
  bandwidthSchedule: BandwidthSchedule;
  planner: VideoPlanner;
  reporter: IncidentReporter;
  after: AfterUpload;
  api: LocalApi | null;
  /** Stage runs under way, awaited at shutdown. */
  background: Set<Promise<unknown>>;
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

  private constructor(
    private readonly config: Config,
    private readonly log: Logger,
    private readonly secrets: Secrets,
    private readonly http: HttpClient,
    private readonly ledger: Ledger,
    private readonly targets: Map<string, Target>,
    private readonly options: DaemonOptions,
  ) {}

  /** Opens everything that can fail on bad input before any work starts. */
  static open(config: Config, log: Logger, secrets: Secrets, options: DaemonOptions = {}): Daemon {
    const http = new HttpClient({ connectionsPerOrigin: config.upload.concurrency + 2 }, secrets);
    const targets = createTargets(config.targets, { http, secrets });
    const reportingTargets = [...targets.values()].filter((t) => t.report !== undefined).map((t) => t.name);
    const ledger = Ledger.open(config.ledger.path, { reportingTargets, beforeWrite: options.beforeLedgerWrite });
    return new Daemon(config, log, secrets, http, ledger, targets, options);
  }

  /** Runs until `stop()`; resolves once everything is closed. */
  async run(): Promise<void> {
    const stages = this.stages();
    // First of what can fail at start-up (the port is taken): nothing is running yet to hold the process.
    await stages.api?.listen();
    stages.bandwidthSchedule.start();
    this.log.info(
      { event: 'daemon.started', root: this.config.watch.root, ledger: this.config.ledger.path, targets: [...this.targets.keys()] },
      'vms-uplink started',
    );
    this.openHealth();
    this.ledger.onFault = (fault) => this.ledgerFault(fault);
    await stages.watcher.start();
    stages.after.start();
    await this.loop(stages);
    await this.shutdown(stages);
  }

  /** Every stage of the pipeline, wired to the ledger and to each other. */
  private stages(): Stages {
    const { config, log, ledger, targets } = this;
    const settleMs = config.watch.settle_seconds * 1000;
    const pacer = new Pacer({ initialMs: config.upload.retry_initial * 1000, maxMs: config.upload.retry_max * 1000 });
    // upload.bandwidth: one bucket for every part of every upload and target; the schedule sets its rate.
    const bandwidth = new TokenBucket(null);
    const metrics = new UploadMetrics([...targets.keys()], ledger.figures, bandwidth, Boolean(config.api?.listen));
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
      metrics,
      engine,
      changes,
      newWatcher,
      watcher: newWatcher(),
      bandwidthSchedule: new BandwidthSchedule(config.upload.bandwidth, bandwidth, log),
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
      api: config.api?.listen
        ? new LocalApi({
            config: config.api,
            ledger,
            secrets: this.secrets,
            metrics,
            health: () => this.healthReport(metrics),
            onWork: () => {
              engine.review();
              engine.poke();
            },
            log,
          })
        : null,
      background: new Set(),
    };
  }

  /**
   * The main loop, until stop(). New work (manifests, exports to plan) is taken every turn, and at
   * once again while a backlog remains; what only needs looking at now and then (reports to
   * retry, after-upload, the root folder, finished incidents) every tick.
   */
  private async loop(stages: Stages): Promise<void> {
    const { config, ledger } = this;
    const tickMs = Math.min(1000, Math.max(100, (config.watch.settle_seconds * 1000) / 4));
    const every = periodic();
    while (!this.stopCtl.signal.aborted) {
      this.lastLoopAt = Date.now();
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
      await this.idle(moreManifests || stages.planner.hasMore ? 0 : this.quiet(stages) ? QUIET_MS : tickMs);
    }
  }

  /**
   * Nothing to do and nothing on its way: the loop may sleep longer (a file event, the API or a
   * stop still wake it at once), so that an idle daemon costs the recorder next to nothing.
   */
  private quiet(stages: Stages): boolean {
    return !stages.watcher.busy && stages.engine.activeUploads === 0 && !this.ledger.figures.workPending();
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
    await stages.api?.close();
    await stages.watcher.stop();
    await stages.engine.stop(this.config.upload.drain_timeout * 1000);
    stages.bandwidthSchedule.stop();
    stages.reporter.stop();
    await stages.after.stop();
    await Promise.allSettled([...stages.background]);
    for (const t of this.targets.values()) await t.close();
    await this.http.close().catch(() => undefined);
    this.ledger.close();
    this.writeHealth('stopped');
    this.health?.close();
    this.log.info({ event: 'daemon.stopped' }, 'vms-uplink stopped');
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
    this.health?.write({
      pid: process.pid,
      state,
      startedAt: this.startedAt,
      updatedAt: new Date().toISOString(),
      ledgerFault: fault && { code: fault.code, message: fault.message, since: new Date(fault.since).toISOString() },
      lowDisk: low && { freeBytes: low.freeBytes, minFreeBytes: this.config.ledger.min_free, since: new Date(low.since).toISOString() },
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
   * are work it cannot finish on its own, such as reports a platform refused, or folders it
   * rescans because the OS refused to watch them.
   */
  private healthReport(metrics: UploadMetrics): Health {
    const warnings = [...this.ledger.figures.refusedReportsByTarget()].map(
      ([target, r]) =>
        `${target} refused the latest report of ${r.count} incident(s) (latest: ${r.lastError ?? 'no message'}); vms-uplink retry INCIDENT-ID sends one again`,
    );
    const fallback = this.watchFallback;
    if (fallback) warnings.push(watchFallbackMessage(fallback.folders, fallback.rescanSeconds));
    return { problems: this.healthProblems(metrics), warnings };
  }

  /** Why GET /healthz answers 503; empty while the watcher, ledger and upload loop work. */
  private healthProblems(metrics: UploadMetrics): string[] {
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
    const down = metrics.allTargetsFailingFor();
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
