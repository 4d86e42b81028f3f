/**
 * What `status` says about the daemon itself, beside the ledger's rows: whether it runs, and
 * problems it cannot write into the ledger (a full disk under the ledger) or that are not about
 * one upload (a TLS certificate it does not trust, a proxy that refuses, folders the OS refused
 * to watch). Read from the health file the daemon keeps next to the ledger (src/ledger/health.ts).
 */
import { freeBytesFor } from '../ledger/filesystem.js';
import { processAlive, readHealth } from '../ledger/health.js';
import { watchFallbackMessage } from '../watch/watch-fallback.js';

export interface DaemonStatus {
  pid: number;
  running: boolean;
  startedAt: string;
  updatedAt: string;
  /** The targets of the configuration it runs with; null when its health file does not say. */
  targets: string[] | null;
}

export interface Problem {
  kind: 'ledger' | 'disk' | 'config' | 'tls' | 'proxy' | 'watch';
  message: string;
  since: string;
}

export interface DaemonReport {
  daemon: DaemonStatus | null;
  /** Bytes free for the ledger on its filesystem; null when it cannot be told. */
  ledgerFreeBytes: number | null;
  problems: Problem[];
}

export function daemonReport(ledgerPath: string): DaemonReport {
  const health = readHealth(ledgerPath);
  const free = freeBytesFor(ledgerPath);
  if (!health) return { daemon: null, ledgerFreeBytes: free, problems: [] };
  const running = health.state === 'running' && processAlive(health.pid);
  const problems: Problem[] = [];
  if (running && health.ledgerFault) {
    const f = health.ledgerFault;
    problems.push({
      kind: 'ledger',
      since: f.since,
      message:
        `${f.message} — the daemon (pid ${health.pid}) keeps running, takes no new work and retries; ` +
        `nothing is marked done that was not recorded${free !== null ? `; ${free} bytes free on the ledger's filesystem` : ''}`,
    });
  }
  if (running && health.lowDisk) {
    const d = health.lowDisk;
    problems.push({
      kind: 'disk',
      since: d.since,
      message:
        `${d.freeBytes} bytes free on the ledger's filesystem, below ledger.min_free (${d.minFreeBytes}): ` +
        `the daemon (pid ${health.pid}) takes no new exports or uploads until space is freed; uploads under way go on`,
    });
  }
  if (running && health.reloadFailed) {
    const r = health.reloadFailed;
    problems.push({
      kind: 'config',
      since: r.at,
      message: `the configuration file could not be reloaded; the daemon (pid ${health.pid}) runs on with the one it had: ${r.problems.join('; ')}`,
    });
  }
  for (const n of running ? (health.network ?? []) : []) {
    problems.push({
      kind: n.kind,
      since: n.since,
      message: `${n.message} — uploads to ${n.host} wait and are tried again (nothing is given up for it)`,
    });
  }
  if (running && health.watchFallback) {
    const w = health.watchFallback;
    problems.push({ kind: 'watch', since: w.since, message: watchFallbackMessage(w.folders, w.rescanSeconds) });
  }
  return {
    daemon: { pid: health.pid, running, startedAt: health.startedAt, updatedAt: health.updatedAt, targets: health.targets ?? null },
    ledgerFreeBytes: free,
    problems,
  };
}
