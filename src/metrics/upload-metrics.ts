/**
 * The daemon's Prometheus metrics (GET /metrics) and how long each target has been failing
 * (GET /healthz). Counters count since the daemon started, as Prometheus expects; queue
 * figures are read from the ledger at each scrape, so they are right after a restart too.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { LedgerFigures } from '../ledger/views/figures.js';
import type { ReportObserver } from '../report/incident-reporter.js';
import type { TokenBucket } from '../upload/bandwidth.js';
import type { UploadObserver } from '../upload/engine.js';
import type { ExportChangeObserver } from '../watch/export-changes.js';

const PART_SECONDS_BUCKETS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

export class UploadMetrics implements UploadObserver, ReportObserver, ExportChangeObserver {
  readonly registry = new Registry();
  /** Since when each target's calls have been failing (no success since); absent: it answers. */
  private readonly failingSince = new Map<string, number>();
  private readonly bytes: Counter<'target'>;
  private readonly parts: Counter<'target'>;
  private readonly completed: Counter<'target'>;
  private readonly failed: Counter<'target'>;
  private readonly retries: Counter<'target' | 'reason'>;
  private readonly partSeconds: Histogram<'target'>;
  private readonly reportsRefused: Counter<'target'>;
  private readonly changedAfterUpload: Counter;

  constructor(
    private readonly targets: readonly string[],
    figures: LedgerFigures,
    bandwidth: TokenBucket,
    /** The process's own figures (CPU, memory, event-loop lag, GC), for a daemon that serves /metrics. */
    processMetrics = true,
  ) {
    const registers = [this.registry];
    const counter = (name: string, help: string): Counter<'target'> => new Counter({ name, help, labelNames: ['target'], registers });
    this.bytes = counter('vms_uplink_uploaded_bytes_total', 'Bytes of parts the platform acknowledged.');
    this.parts = counter('vms_uplink_uploaded_parts_total', 'Parts the platform acknowledged.');
    this.completed = counter('vms_uplink_uploads_completed_total', 'Uploads the platform completed.');
    this.failed = counter('vms_uplink_uploads_failed_total', 'Uploads given up with a permanent error.');
    this.retries = new Counter({
      name: 'vms_uplink_retries_total',
      help: 'Calls retried, by reason (http_503, econnreset, stall, url_refused, token_expired, …).',
      labelNames: ['target', 'reason'],
      registers,
    });
    this.partSeconds = new Histogram({
      name: 'vms_uplink_part_duration_seconds',
      help: 'Time from sending a part to its acknowledgement (bandwidth waits included).',
      labelNames: ['target'],
      buckets: PART_SECONDS_BUCKETS,
      registers,
    });
    this.reportsRefused = counter(
      'vms_uplink_reports_refused_total',
      'Incident reports the platform refused for good (4xx other than 401/408/429).',
    );
    this.changedAfterUpload = new Counter({
      name: 'vms_uplink_exports_changed_after_upload_total',
      help: 'Export files that changed after their upload completed (an exporter paused longer than settle_seconds) and were uploaded again.',
      registers,
    });
    for (const target of targets)
      for (const c of [this.bytes, this.parts, this.completed, this.failed, this.reportsRefused]) c.inc({ target }, 0);
    // Gauges read at scrape time: the ledger and the token bucket are the truth.
    new Gauge({
      name: 'vms_uplink_queue_depth',
      help: 'Uploads not yet done or failed, per target.',
      labelNames: ['target'],
      registers,
      collect() {
        const queued = figures.queuedByTarget();
        for (const target of targets) this.set({ target }, queued.get(target) ?? 0);
      },
    });
    new Gauge({
      name: 'vms_uplink_reports_refused',
      help: 'Incidents whose latest report the platform refused for good; sent again when the incident changes or on retry.',
      labelNames: ['target'],
      registers,
      collect() {
        const refused = figures.refusedReportsByTarget();
        for (const target of targets) this.set({ target }, refused.get(target)?.count ?? 0);
      },
    });
    new Gauge({
      name: 'vms_uplink_oldest_queued_export_age_seconds',
      help: 'Age of the oldest export not yet uploaded (waiting for its file or queued); 0 when none.',
      registers,
      collect() {
        this.set(figures.oldestQueuedSeconds());
      },
    });
    new Gauge({
      name: 'vms_uplink_bandwidth_limit_bytes_per_second',
      help: 'The upload.bandwidth limit in force; +Inf when unlimited.',
      registers,
      collect() {
        this.set(bandwidth.rate ?? Infinity);
      },
    });
    const failing = this.failingSince;
    new Gauge({
      name: 'vms_uplink_target_failing_seconds',
      help: 'How long every call to the target has been failing; 0 while it answers.',
      labelNames: ['target'],
      registers,
      collect() {
        for (const target of targets) this.set({ target }, failingFor(failing.get(target)));
      },
    });
    // Nobody reads them without the local API, and watching GCs and the event loop costs an idle
    // daemon. The event-loop lag is sampled once a second: prom-client's default (every 10 ms)
    // alone costs an idle daemon about 1 % of a core, and a recorder's uploader should cost next to nothing.
    if (processMetrics) collectDefaultMetrics({ register: this.registry, prefix: 'vms_uplink_', eventLoopMonitoringPrecision: 1000 });
  }

  partSent(target: string, bytes: number, seconds: number): void {
    this.bytes.inc({ target }, bytes);
    this.parts.inc({ target });
    this.partSeconds.observe({ target }, seconds);
  }

  uploadCompleted(target: string): void {
    this.completed.inc({ target });
  }

  uploadFailed(target: string): void {
    this.failed.inc({ target });
  }

  reportRefused(target: string): void {
    this.reportsRefused.inc({ target });
  }

  exportChangedAfterUpload(): void {
    this.changedAfterUpload.inc();
  }

  retried(target: string, reason: string): void {
    this.retries.inc({ target, reason });
    if (!this.failingSince.has(target)) this.failingSince.set(target, Date.now());
  }

  answered(target: string): void {
    this.failingSince.delete(target);
  }

  /** Seconds every target has been failing (the shortest of them); 0 when one answers. */
  allTargetsFailingFor(): number {
    return Math.min(...this.targets.map((t) => failingFor(this.failingSince.get(t))));
  }
}

function failingFor(since: number | undefined): number {
  return since === undefined ? 0 : (Date.now() - since) / 1000;
}
