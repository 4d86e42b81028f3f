/**
 * Keeps platforms that hold incidents (ALO) up to date: whenever the ledger says the platform
 * has not acknowledged the latest state of an incident, the whole incident is sent again.
 * Temporary failures are tried again when the pacer says (backoff, or the platform's
 * Retry-After); a report the platform refuses for good is recorded as refused and not sent
 * again until the incident changes. The ledger remembers all of it across restarts.
 */
import { systemClock, type Clock } from '../clock.js';
import type { Logger } from '../log/logger.js';
import { describeError } from '../log/logger.js';
import { LedgerFaultError } from '../ledger/faults.js';
import type { ReportDue, ReportLedger } from '../ledger/report-ledger.js';
import type { Target } from '../targets/target.js';
import type { Pacer } from '../upload/pacer.js';

/** Told when a platform refuses a report for good (metrics). */
export interface ReportObserver {
  reportRefused(target: string): void;
}

/** Reports sent at once at most, and looked at per tick. */
const IN_FLIGHT = 8;
const PAGE = 64;

export class IncidentReporter {
  private readonly retryAt = new Map<string, number>();
  private readonly inFlight = new Set<string>();
  private readonly ctl = new AbortController();
  private cursor: ReportDue | null = null;

  constructor(
    private readonly ledger: ReportLedger,
    private readonly targets: ReadonlyMap<string, Target>,
    private readonly pacer: Pacer,
    private readonly log: Logger,
    private readonly observer?: ReportObserver,
    /** When a report that failed may be sent again is measured on it. */
    private readonly clock: Clock = systemClock,
  ) {}

  /**
   * Sends reports that are due, IN_FLIGHT at a time, a page after the last; returns when those
   * were answered. Each acknowledgement recorded makes room for the next due report at once, so a
   * backlog is reported as fast as the platform answers, not a page per tick; a failure waits
   * for its retry time and the next tick.
   */
  async tick(): Promise<void> {
    await Promise.all(this.fill());
  }

  private fill(): Promise<void>[] {
    if (this.ctl.signal.aborted || this.inFlight.size >= IN_FLIGHT) return [];
    const sends: Promise<void>[] = [];
    const page = this.ledger.due(this.cursor, PAGE);
    // A report backing off must not keep those after it waiting: the next fill goes on from here.
    this.cursor = page.length < PAGE ? null : page.at(-1)!;
    for (const due of page) {
      if (this.inFlight.size >= IN_FLIGHT) break;
      const key = `${due.target}\u0000${due.incidentId}`;
      const target = this.targets.get(due.target);
      if (!target?.report || this.inFlight.has(key) || (this.retryAt.get(key) ?? 0) > this.clock.now()) continue;
      this.inFlight.add(key);
      const sent = this.send(target, due.incidentId, due.wanted, due.attempts, key).finally(() => this.inFlight.delete(key));
      sends.push(sent.then((acked) => (acked ? this.tick() : undefined)));
    }
    return sends;
  }

  stop(): void {
    this.ctl.abort();
  }

  /** True once the platform acknowledged the report and the ledger recorded it. */
  private async send(target: Target, incidentId: string, version: number, attempts: number, key: string): Promise<boolean> {
    const report = this.ledger.build(incidentId, target.name);
    const ids = { incidentId, target: target.name };
    try {
      await target.report!(report, this.ctl.signal);
      await this.ledger.acked(incidentId, target.name, version);
      this.retryAt.delete(key);
      // The video ids, so that following one video through the log ends at the report that lists it.
      const uploadedVideoIds = report.videos.filter((v) => v.outcome === 'uploaded').map((v) => v.video.id);
      const failedVideoIds = report.videos.filter((v) => v.outcome === 'failed').map((v) => v.video.id);
      this.log.info(
        {
          event: 'incident.reported',
          ...ids,
          uploaded: uploadedVideoIds.length,
          failed: failedVideoIds.length,
          uploadedVideoIds,
          failedVideoIds,
        },
        'incident reported',
      );
      return true;
    } catch (err) {
      // Stopping, or acknowledged but not recorded (the ledger's disk): it is sent again later.
      if (!this.ctl.signal.aborted && !(err instanceof LedgerFaultError)) this.failed(err, ids, version, attempts, key);
      return false;
    }
  }

  /** A refusal for good is recorded and not resent; anything else is tried again when the pacer says. */
  private failed(err: unknown, ids: { incidentId: string; target: string }, version: number, attempts: number, key: string): void {
    // Errors that are not the platform's answer (a bug) would fail the same way again: refused too.
    const delay = this.pacer.delayAfter(err, attempts);
    if (delay === null) {
      this.ledger.refused(ids.incidentId, ids.target, version, describeError(err));
      this.retryAt.delete(key);
      this.observer?.reportRefused(ids.target);
      this.log.error(
        { event: 'incident.report.refused', ...ids, version, err },
        `incident report refused: ${describeError(err)}; it is sent again when the incident changes, or after vms-uplink retry ${ids.incidentId}`,
      );
      return;
    }
    this.ledger.failed(ids.incidentId, ids.target, describeError(err));
    this.retryAt.set(key, this.clock.now() + delay);
    this.log.warn({ event: 'incident.report.failed', ...ids, err, delayMs: delay }, `incident report failed: ${describeError(err)}`);
  }
}
