/**
 * The figures `/metrics` and `/healthz` read from the ledger at each scrape: so they are right
 * after a restart, and cost one aggregate query each whatever the ledger holds.
 */
import type { LedgerDb } from '../database.js';
import { num, str, strOrNull } from '../rows.js';

export class LedgerFigures {
  constructor(private readonly db: LedgerDb) {}

  /** Uploads not done and not failed, per target (those of paused cameras included). */
  queuedByTarget(): Map<string, number> {
    return new Map(
      this.db.all(
        `SELECT target, COUNT(*) AS n FROM uploads WHERE state = 'queued' GROUP BY target`,
        (r) => [str(r.target), num(r.n)] as const,
      ),
    );
  }

  /** Whether anything is left to do: a file to settle, an upload, a report or an abort to send. */
  workPending(): boolean {
    return (
      this.db.get(
        `SELECT EXISTS (SELECT 1 FROM videos WHERE state = 'waiting')
             OR EXISTS (SELECT 1 FROM uploads WHERE state = 'queued')
             OR EXISTS (SELECT 1 FROM reports WHERE wanted > acked AND wanted > refused)
             OR EXISTS (SELECT 1 FROM pending_aborts) AS pending`,
        (r) => num(r.pending) === 1,
      ) ?? false
    );
  }

  /** Age in seconds of the oldest export still waiting for a file or with a queued upload; 0 when none. */
  oldestQueuedSeconds(nowMs = Date.now()): number {
    const oldest = this.db.get(
      `SELECT MIN(at) AS at FROM (
         SELECT MIN(first_seen_at) AS at FROM videos WHERE state = 'waiting'
         UNION ALL
         SELECT MIN(v.first_seen_at) FROM uploads u JOIN videos v ON v.incident_id = u.incident_id AND v.id = u.video_id
         WHERE u.state = 'queued' AND v.state = 'ready')`,
      (r) => (r.at === null ? null : num(r.at)),
    );
    return oldest === undefined || oldest === null ? 0 : Math.max(0, (nowMs - oldest) / 1000);
  }

  /** Incident reports a platform refused for good in their latest version, per target, with the latest refusal. */
  refusedReportsByTarget(): Map<string, { count: number; lastError: string | null }> {
    return new Map(
      this.db.all(
        `SELECT target, COUNT(*) AS n, (SELECT last_error FROM reports l WHERE l.target = r.target AND l.refused >= l.wanted AND l.acked < l.wanted
                                        ORDER BY l.rowid DESC LIMIT 1) AS last_error
         FROM reports r WHERE refused >= wanted AND acked < wanted GROUP BY target`,
        (r) => [str(r.target), { count: num(r.n), lastError: strOrNull(r.last_error) }] as const,
      ),
    );
  }
}
