/**
 * The ledger: the single source of truth for what has been seen, sent and acknowledged. One
 * SQLite database (database.ts), and one narrow interface per stage of the pipeline, each of
 * them making its state changes in single transactions:
 *
 *   watch   manifests read, incidents finished with       (watch-ledger.ts)
 *   plan    videos waiting to settle, uploads planned     (plan-ledger.ts)
 *   uploads parts sent and acknowledged, aborts           (upload-ledger.ts)
 *   reports incidents reported to platforms that keep them (report-ledger.ts)
 *   after   files handled after upload                    (after-ledger.ts)
 *   operator pause, resume, retry                         (operator-ledger.ts)
 *   status, cameras, figures: what status, the API and /metrics read (views/)
 *
 * States:
 *   video:  waiting → ready → (uploads per target)      or → failed (export error, bad file)
 *   upload: queued → done | failed                      (parts: pending → done)
 */
import { AfterUploadLedger } from './after-ledger.js';
import { LedgerDb, type LedgerOptions } from './database.js';
import type { LedgerFault } from './faults.js';
import { OperatorLedger } from './operator-ledger.js';
import { PlanLedger } from './plan-ledger.js';
import { ReportLedger } from './report-ledger.js';
import { Transitions } from './transitions.js';
import { UploadLedger } from './upload-ledger.js';
import { CameraViews } from './views/cameras.js';
import { LedgerFigures } from './views/figures.js';
import { StatusView } from './views/status.js';
import { WatchLedger } from './watch-ledger.js';

export interface OpenOptions extends LedgerOptions {
  /** Targets that receive whole incidents (ALO): their report rows are kept up to date. */
  reportingTargets?: readonly string[];
}

export class Ledger {
  readonly watch: WatchLedger;
  readonly plan: PlanLedger;
  readonly uploads: UploadLedger;
  readonly reports: ReportLedger;
  readonly after: AfterUploadLedger;
  readonly operator: OperatorLedger;
  readonly status: StatusView;
  readonly cameras: CameraViews;
  readonly figures: LedgerFigures;

  private readonly transitions: Transitions;

  private constructor(
    private readonly db: LedgerDb,
    reportingTargets: readonly string[],
  ) {
    const transitions = new Transitions(db, reportingTargets);
    this.transitions = transitions;
    this.watch = new WatchLedger(db, transitions);
    this.plan = new PlanLedger(db, transitions);
    this.uploads = new UploadLedger(db, transitions);
    this.reports = new ReportLedger(db, transitions);
    this.after = new AfterUploadLedger(db, transitions);
    this.operator = new OperatorLedger(db);
    this.status = new StatusView(db);
    this.cameras = new CameraViews(db);
    this.figures = new LedgerFigures(db);
  }

  static open(path: string, options: OpenOptions = {}): Ledger {
    return new Ledger(LedgerDb.open(path, options), options.reportingTargets ?? []);
  }

  /** Targets that receive whole incidents, again after a reload. */
  setReportingTargets(targets: readonly string[]): void {
    this.transitions.setReportingTargets(targets);
  }

  /** The storage fault writes are meeting, or null while they commit. */
  get fault(): LedgerFault | null {
    return this.db.fault;
  }

  /** Told when a write first fails for its storage (the start of a fault episode). */
  set onFault(listener: ((fault: LedgerFault) => void) | null) {
    this.db.onFault = listener;
  }

  /** In the fault state: true, and the fault state ends, once a write commits again. */
  probe(): boolean {
    return this.db.probe();
  }

  /** Whether the schema is this version's (a read-only `status` may meet one a daemon has not upgraded yet). */
  schemaIsCurrent(): boolean {
    return this.db.schemaIsCurrent();
  }

  close(): void {
    this.db.close();
  }
}
