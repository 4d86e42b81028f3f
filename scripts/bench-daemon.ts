/**
 * One run of the real daemon (the built CLI, `run --config`) with a fresh ledger, reporting to a
 * fresh ALO emulator whose presigned URLs point at the null sink.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { startAloEmulator, type AloEmulator } from '../test/emulators/alo.js';
import type { S3Store } from '../test/emulators/s3-store.js';
import { aloTargetConfig } from '../test/support/alo-site.js';
import { DaemonProcess, writeConfig } from '../test/support/daemon-process.js';
import { BenchFailure, sleep } from './bench-util.js';
import type { AloStore, NullSink } from './null-sink.js';

const STOP_TIMEOUT_MS = 30_000;
const live = new Set<DaemonRun>();

export class DaemonRun {
  private exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  /** How many log lines check() has already looked at. */
  private checked = 0;

  private constructor(
    readonly alo: AloEmulator,
    readonly daemon: DaemonProcess,
    readonly configPath: string,
    /** Epoch ms just before the process was spawned. */
    readonly spawnedAt: number,
  ) {
    void daemon.exited.then((exit) => (this.exit = exit));
  }

  /** The daemon's default settings except settle_seconds 1: the bench's files are complete before it starts. */
  static async start(sink: NullSink, exportsRoot: string, dir: string): Promise<DaemonRun> {
    // The emulator calls no method of its store but those of AloStore, which the sink has.
    const alo = await startAloEmulator({ store: sink as AloStore as S3Store });
    await mkdir(dir, { recursive: true });
    const configPath = await writeConfig(dir, {
      watch: { root: exportsRoot, settle_seconds: 1 },
      ledger: { path: join(dir, 'ledger.db') },
      targets: { alo: aloTargetConfig(alo.baseUrl, { testTuning: false }) },
      log: { level: 'info' },
    });
    const spawnedAt = Date.now();
    const run = new DaemonRun(alo, DaemonProcess.run(configPath), configPath, spawnedAt);
    live.add(run);
    return run;
  }

  /** For an interrupted bench: kills every daemon still running, at once. */
  static killAll(): void {
    for (const run of live) run.daemon.kill('SIGKILL');
  }

  get pid(): number {
    return this.daemon.pid;
  }

  /** Throws when the daemon exited or logged a failure: a failing daemon's figures mean nothing. */
  check(): void {
    if (this.exit) throw this.failure(`the daemon exited early: ${JSON.stringify(this.exit)}`);
    const logs = this.daemon.logs;
    for (; this.checked < logs.length; this.checked++) {
      const line = logs[this.checked]!;
      if (line.event === 'upload.failed' || line.event === 'export.failed' || line.level === 'fatal') {
        throw this.failure(`the daemon reported a failure: ${JSON.stringify(line)}`);
      }
    }
  }

  /** A BenchFailure carrying what the daemon said last. */
  failure(message: string): BenchFailure {
    const stderr = this.daemon.stderr.join('').trim();
    const last = this.daemon.logs.slice(-15).map((l) => `  ${JSON.stringify(l)}`);
    return new BenchFailure(`${message}\n--- daemon stderr ---\n${stderr || '(empty)'}\n--- last daemon log lines ---\n${last.join('\n')}`);
  }

  /** SIGTERM, as systemd stops it; the daemon must exit 0 within 30 s. */
  async stop(): Promise<void> {
    this.daemon.kill('SIGTERM');
    const exit = await Promise.race([this.daemon.exited, sleep(STOP_TIMEOUT_MS).then(() => 'timeout' as const)]);
    if (exit === 'timeout' || exit.code !== 0) throw this.failure(`the daemon did not stop cleanly after SIGTERM: ${JSON.stringify(exit)}`);
    await this.close();
  }

  /** Kills the daemon if it still runs and closes the emulator; safe to call more than once. */
  async close(): Promise<void> {
    if (!live.delete(this)) return;
    if (!this.exit) {
      this.daemon.kill('SIGKILL');
      await this.daemon.exited;
    }
    await this.alo.close();
  }
}
