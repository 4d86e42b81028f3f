/**
 * Wiring and signals: watch → plan → ledger → upload → report, around one ledger.
 */
import type { Config } from './config/schema.js';
import type { Logger } from './log/logger.js';
import { describeError } from './log/logger.js';
import { UploadLedger } from './ledger/upload-ledger.js';
import { VideoPlanner } from './plan/video-planner.js';
import { IncidentReporter } from './report/incident-reporter.js';
import { createTargets } from './targets/index.js';
import { sleep } from './upload/backoff.js';
import { UploadEngine } from './upload/engine.js';
import { HttpClient } from './upload/http.js';
import { FolderWatcher } from './watch/folder-watcher.js';
import { IncidentRouter } from './watch/routes.js';

export class Daemon {
  private readonly stopCtl = new AbortController();
  private wake: (() => void) | null = null;

  private constructor(
    private readonly config: Config,
    private readonly log: Logger,
    private readonly http: HttpClient,
    private readonly ledger: UploadLedger,
    private readonly targets: ReturnType<typeof createTargets>,
  ) {}

  /** Opens everything that can fail on bad input before any work starts. */
  static open(config: Config, log: Logger): Daemon {
    const http = new HttpClient({ connectionsPerOrigin: config.upload.concurrency + 2, timeoutMs: config.upload.stallTimeout * 1000 });
    const targets = createTargets(config, http);
    const reporting = [...targets.values()].filter((t) => t.report).map((t) => t.name);
    const ledger = UploadLedger.open(config.ledger.path, reporting);
    return new Daemon(config, log, http, ledger, targets);
  }

  /** Runs until `stop()`; resolves once everything is closed. */
  async run(): Promise<void> {
    const { config, log, ledger, targets } = this;
    const settleMs = config.watch.settleSeconds * 1000;
    const backoff = { initialMs: config.upload.retryInitial * 1000, maxMs: config.upload.retryMax * 1000 };
    const engine = new UploadEngine({
      ledger,
      targets,
      concurrency: config.upload.concurrency,
      stallTimeoutMs: config.upload.stallTimeout * 1000,
      backoff,
      log,
    });
    const planner = new VideoPlanner({
      ledger,
      targets: [...targets.values()],
      preferredPartSize: config.upload.partSize,
      settleMs,
      missingMs: config.watch.missingFileSeconds * 1000,
      log,
    });
    const reporter = new IncidentReporter(ledger, targets, backoff, log);
    const router = new IncidentRouter(config.watch.root, config.routes, [...targets.keys()]);
    const watcher = new FolderWatcher({
      root: config.watch.root,
      poll: config.watch.poll,
      pollIntervalMs: config.watch.pollInterval * 1000,
      settleMs,
      ledger,
      route: (folder) => router.targetsFor(folder),
      log,
    });
    log.info({ event: 'daemon.started', root: config.watch.root, ledger: config.ledger.path, targets: [...targets.keys()] }, 'vms-uplink started');
    await watcher.start();
    const tickMs = Math.min(1000, Math.max(100, settleMs / 4));
    let lastRescan = Date.now();
    const background = new Set<Promise<unknown>>();
    const spawn = (p: Promise<unknown>, what: string): void => {
      const tracked = p.catch((err) => log.error({ event: 'daemon.error', what, err }, `${what}: ${describeError(err)}`));
      background.add(tracked);
      void tracked.finally(() => background.delete(tracked));
    };
    while (!this.stopCtl.signal.aborted) {
      if (Date.now() - lastRescan >= config.watch.rescanInterval * 1000) {
        lastRescan = Date.now();
        await watcher.rescan();
      }
      await watcher.tick();
      spawn(planner.tick(this.stopCtl.signal).then((changed) => changed && engine.poke()), 'planning');
      engine.poke();
      spawn(reporter.tick(), 'reporting');
      await this.idle(tickMs);
    }
    log.info({ event: 'daemon.stopping', inFlight: engine.activeUploads }, 'stopping: finishing parts in flight');
    await watcher.stop();
    await engine.stop(config.upload.drainTimeout * 1000);
    reporter.stop();
    await Promise.allSettled([...background]);
    for (const t of targets.values()) await t.close();
    await this.http.close().catch(() => undefined);
    ledger.close();
    log.info({ event: 'daemon.stopped' }, 'vms-uplink stopped');
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
