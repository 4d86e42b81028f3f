/**
 * The report stage's part of the ledger. For each incident and reporting target (ALO):
 * wanted > acked means the platform has not seen the latest state of the incident; refused =
 * wanted means it refused that state for good (sent again once the incident changes).
 */
import type { IncidentReport, ReportedVideo } from '../targets/target.js';
import type { LedgerDb } from './database.js';
import { incidentInfo, num, orNull, str, strings, videoInfo } from './rows.js';
import type { Transitions } from './transitions.js';

export interface ReportDue {
  incidentId: string;
  target: string;
  wanted: number;
  attempts: number;
}

export class ReportLedger {
  constructor(
    private readonly db: LedgerDb,
    private readonly transitions: Transitions,
  ) {}

  /**
   * Reports the platform has not acknowledged, except those it refused in their current version:
   * a page after `after` (from the first when null), in incident order.
   */
  due(after: ReportDue | null, limit: number): ReportDue[] {
    if (this.db.fault) return [];
    return this.db.all(
      `SELECT incident_id, target, wanted, attempts FROM reports
       WHERE wanted > acked AND wanted > refused AND (incident_id, target) > (?, ?) ORDER BY incident_id, target LIMIT ?`,
      (r) => ({ incidentId: str(r.incident_id), target: str(r.target), wanted: num(r.wanted), attempts: num(r.attempts) }),
      after?.incidentId ?? '',
      after?.target ?? '',
      limit,
    );
  }

  /** The incident as the target should see it now: every video in a final state for it. */
  build(incidentId: string, target: string): IncidentReport {
    const incident = this.db.get('SELECT info FROM incidents WHERE id = ?', (r) => incidentInfo(r.info), incidentId);
    if (!incident) throw new Error(`the ledger has no incident ${incidentId}`);
    const videos = this.db.all(
      'SELECT id, info, state, errors FROM videos WHERE incident_id = ? ORDER BY position, id',
      (r) => ({ id: str(r.id), info: videoInfo(r.info), state: str(r.state), errors: orNull(strings)(r.errors) }),
      incidentId,
    );
    const reported = videos.map((v) => this.transitions.reportedVideo(incidentId, v, target)).filter((v): v is ReportedVideo => v !== null);
    return { incident, videos: reported };
  }

  acked(incidentId: string, target: string, version: number): Promise<void> {
    return this.db.writeSoon(() => {
      this.db.run(
        'UPDATE reports SET acked = MAX(acked, ?), attempts = 0, last_error = NULL, acked_at = ? WHERE incident_id = ? AND target = ?',
        version,
        Date.now(),
        incidentId,
        target,
      );
    });
  }

  /** A temporary failure: the report is sent again after a backoff. */
  failed(incidentId: string, target: string, error: string): void {
    this.db.note(() =>
      this.db.run(
        'UPDATE reports SET attempts = attempts + 1, last_error = ? WHERE incident_id = ? AND target = ?',
        error,
        incidentId,
        target,
      ),
    );
  }

  /**
   * The platform refused this version of the report for good: it is not sent again until the
   * incident changes (a video reaches a final state, the manifest is rewritten) or is retried.
   */
  refused(incidentId: string, target: string, version: number, error: string): void {
    this.db.note(() =>
      this.db.run(
        'UPDATE reports SET refused = MAX(refused, ?), attempts = attempts + 1, last_error = ?, refused_at = ? WHERE incident_id = ? AND target = ?',
        version,
        error,
        Date.now(),
        incidentId,
        target,
      ),
    );
  }
}
