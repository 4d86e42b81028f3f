/**
 * Keeps platforms that hold incidents (ALO) up to date: whenever the ledger says the platform
 * has not acknowledged the latest state of an incident, the whole incident is sent again.
 * Reports are retried with backoff until acknowledged; the ledger remembers across restarts.
 */
import type { Logger } from '../log/logger.js';
import { describeError } from '../log/logger.js';
import type { UploadLedger } from '../ledger/upload-ledger.js';
import type { Target } from '../targets/target.js';
import { backoffDelay, type BackoffPolicy } from '../upload/backoff.js';

export class IncidentReporter {
  private readonly retryAt = new Map<string, number>();
  private readonly inFlight = new Set<string>();
  private readonly ctl = new AbortController();

  constructor(
    private readonly ledger: UploadLedger,
    private readonly targets: ReadonlyMap<string, Target>,
    private readonly backoff: BackoffPolicy,
    private readonly log: Logger,
  ) {}

  /** Sends every report that is due; returns when they were all answered. */
  async tick(): Promise<void> {
    const sends: Promise<void>[] = [];
    for (const due of this.ledger.reportsDue()) {
      const key = `${due.target}\u0000${due.incidentId}`;
      const target = this.targets.get(due.target);
      if (!target?.report || this.inFlight.has(key) || (this.retryAt.get(key) ?? 0) > Date.now()) continue;
      this.inFlight.add(key);
      sends.push(this.send(target, due.incidentId, due.wanted, due.attempts, key).finally(() => this.inFlight.delete(key)));
    }
    await Promise.all(sends);
  }

  stop(): void {
    this.ctl.abort();
  }

  private async send(target: Target, incidentId: string, version: number, attempts: number, key: string): Promise<void> {
    const report = this.ledger.buildReport(incidentId, target.name);
    const ids = { incidentId, target: target.name };
    try {
      await target.report!(report, this.ctl.signal);
      this.ledger.reportAcked(incidentId, target.name, version);
      this.retryAt.delete(key);
      // The video ids, so that following one video through the log ends at the report that lists it.
      const uploadedVideoIds = report.videos.filter((v) => v.outcome === 'uploaded').map((v) => v.video.id);
      const failedVideoIds = report.videos.filter((v) => v.outcome === 'failed').map((v) => v.video.id);
      this.log.info(
        { event: 'incident.reported', ...ids, uploaded: uploadedVideoIds.length, failed: failedVideoIds.length, uploadedVideoIds, failedVideoIds },
        'incident reported',
      );
    } catch (err) {
      if (this.ctl.signal.aborted) return;
      this.ledger.reportFailed(incidentId, target.name, describeError(err));
      const delay = backoffDelay(attempts, this.backoff);
      this.retryAt.set(key, Date.now() + delay);
      this.log.warn({ event: 'incident.report.failed', ...ids, err, delayMs: delay }, `incident report failed: ${describeError(err)}`);
    }
  }
}
