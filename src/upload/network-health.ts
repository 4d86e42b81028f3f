/**
 * What stands between the box and a platform's host and is no fault of the platform's: a TLS
 * certificate the box does not trust, a proxy that refuses or cannot be reached. The HttpClient
 * records each where it classifies the error, per host, and clears it as soon as that host
 * answers again; the daemon shows what is recorded in `status`, `/healthz` and its log.
 */
import type { Logger } from '../log/logger.js';

export type NetworkProblemKind = 'tls' | 'proxy';

export interface NetworkProblem {
  kind: NetworkProblemKind;
  /** `host` or `host:port`, as the request URL names it. */
  host: string;
  /** Says what is wrong and what fixes it; never a credential. */
  message: string;
  /** Epoch ms of the first failure of this kind in a row. */
  since: number;
}

export class NetworkHealth {
  private readonly byHost = new Map<string, NetworkProblem>();
  private changes = 0;

  constructor(
    private readonly log: Logger | null,
    private readonly now: () => number = Date.now,
  ) {}

  /** A request to `host` failed this way; logged when it is new or says something new. */
  failed(kind: NetworkProblemKind, host: string, message: string): void {
    const known = this.byHost.get(host);
    if (known?.kind === kind && known.message === message) return;
    const problem = { kind, host, message, since: known?.kind === kind ? known.since : this.now() };
    this.byHost.set(host, problem);
    this.changes++;
    this.log?.error({ event: 'network.problem', kind, host }, message);
  }

  /** `host` answered (any HTTP status): whatever was recorded for it is over. */
  answered(host: string): void {
    const problem = this.byHost.get(host);
    if (!problem) return;
    this.byHost.delete(host);
    this.changes++;
    this.log?.info(
      { event: 'network.recovered', kind: problem.kind, host, problemMs: this.now() - problem.since },
      `${host} answers again (${problem.kind} problem over)`,
    );
  }

  /** What is wrong now, oldest first. */
  get problems(): NetworkProblem[] {
    return [...this.byHost.values()].sort((a, b) => a.since - b.since);
  }

  /** Grows with every change, so a reader can tell when to look again. */
  get revision(): number {
    return this.changes;
  }
}
