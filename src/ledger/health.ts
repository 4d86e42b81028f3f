/**
 * The daemon's health beside the ledger (`<ledger.path>-health`), for `vms-uplink status`.
 *
 * When the ledger's disk is full the daemon cannot write the ledger, so it cannot say so there.
 * This small file is created at start-up at a fixed size and afterwards only overwritten in
 * place, which needs no new space on the filesystem: it can still be updated when the disk is
 * full. Losing it loses nothing but the status line.
 */
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';

const SIZE = 4096;

export interface DaemonHealth {
  pid: number;
  state: 'running' | 'stopped';
  startedAt: string;
  updatedAt: string;
  /** null while ledger writes commit. */
  ledgerFault: { code: string; message: string; since: string } | null;
  /** null while the ledger's filesystem has more than ledger.min_free free (absent: an older daemon). */
  lowDisk?: { freeBytes: number; minFreeBytes: number; since: string } | null;
  /** The targets the running configuration has (absent: an older daemon). */
  targets?: string[];
  /** The last reload of the configuration file failed (null once one succeeds, or none was asked). */
  reloadFailed?: { at: string; problems: string[] } | null;
  /** Hosts the network settings keep the daemon from (an untrusted certificate, a refusing proxy); absent: an older daemon. */
  network?: Array<{ kind: 'tls' | 'proxy'; host: string; message: string; since: string }>;
  /** null while every folder is watched; else how many the OS refused a watch (ENOSPC) and how often they are rescanned. */
  watchFallback?: { folders: number; rescanSeconds: number; since: string } | null;
}

export function healthPath(ledgerPath: string): string {
  return `${ledgerPath}-health`;
}

export class HealthFile {
  private fd: number | null;

  /** Creates the file at its full size; throws when it cannot (the caller logs and goes on without it). */
  constructor(readonly path: string) {
    this.fd = openSync(path, 'w', 0o644);
    writeSync(this.fd, Buffer.alloc(SIZE, 0x20), 0, SIZE, 0);
  }

  /** Overwrites the file in place; false when that failed. */
  write(health: DaemonHealth): boolean {
    if (this.fd === null) return false;
    const text = Buffer.from(JSON.stringify(health));
    const buf = Buffer.alloc(SIZE, 0x20);
    text.copy(buf, 0, 0, Math.min(text.length, SIZE));
    try {
      writeSync(this.fd, buf, 0, SIZE, 0);
      return true;
    } catch {
      return false;
    }
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}

/** The health the daemon last wrote, or null when there is none (or it cannot be read). */
export function readHealth(ledgerPath: string): DaemonHealth | null {
  for (let attempt = 0; attempt < 3; attempt++) {
    let text: string;
    try {
      text = readFileSync(healthPath(ledgerPath), 'utf8').trim();
    } catch {
      return null;
    }
    try {
      return JSON.parse(text) as DaemonHealth;
    } catch {
      // Read while it was being overwritten: read again.
    }
  }
  return null;
}

/** Whether a process with this id runs (EPERM: it does, as another user). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
