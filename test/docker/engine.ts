/**
 * The Docker engine as the image test drives it: the `docker` CLI as a child process, and a
 * dockerd started for the run when none answers — Debian's docker.io on vfs storage, with no
 * bridge and no iptables rules, which is what these machines allow — and stopped after it.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';

export interface CommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
  /** Wall time from spawn to exit. */
  ms: number;
}

export interface RunOptions {
  /** Piped into the command's stdin. */
  stdin?: Readable;
  env?: NodeJS.ProcessEnv;
  /** SIGKILLs the command after this long; the result then has code null. Default 10 minutes. */
  timeoutMs?: number;
}

/** Runs a command to its end; a command that cannot be started at all is code null with the reason on stderr. */
export function run(command: string, args: readonly string[], options: RunOptions = {}): Promise<CommandResult> {
  const started = performance.now();
  return new Promise((resolveRun) => {
    const child = spawn(command, args, {
      env: { ...process.env, ...options.env },
      stdio: [options.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    if (options.stdin) {
      // A command that exits before reading all of it closes the pipe: its exit code tells.
      child.stdin!.on('error', () => undefined);
      options.stdin.pipe(child.stdin!);
    }
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 600_000);
    const finish = (code: number | null, extra = ''): void => {
      clearTimeout(timer);
      resolveRun({ code, stdout, stderr: stderr + extra, ms: performance.now() - started });
    };
    child.once('error', (err) => finish(null, `${command}: ${err.message}`));
    child.once('close', (code) => finish(code));
  });
}

/**
 * The legacy builder, whichever CLI is on PATH: the docker 28 client here has no buildx plugin
 * (BuildKit would refuse to start), and Debian's 20.10 client would otherwise pick by version.
 */
const BUILD_ENV = { DOCKER_BUILDKIT: '0' };

export function docker(args: readonly string[], options: RunOptions = {}): Promise<CommandResult> {
  return run('docker', args, { ...options, env: { ...BUILD_ENV, ...options.env } });
}

/** `docker args…`, its stdout trimmed; throws with what docker said when it fails. */
export async function dockerOk(args: readonly string[], options: RunOptions = {}): Promise<string> {
  const r = await docker(args, options);
  if (r.code !== 0) throw new Error(`docker ${args.join(' ')} exited ${r.code}:\n${tail(r.stderr || r.stdout)}`);
  return r.stdout.trim();
}

/** The last lines of a long output, for error messages. */
export function tail(text: string, lines = 40): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

export const DOCKERD_FLAGS = ['--storage-driver=vfs', '--iptables=false', '--ip6tables=false', '--bridge=none'];
/** Where a dockerd started here writes its log. */
export const DOCKERD_LOG = join(tmpdir(), 'vms-uplink-dockerd.log');

export interface Engine {
  /** Whether this run started dockerd (and stop() stops it). */
  readonly started: boolean;
  stop(): Promise<void>;
}

async function engineAnswers(): Promise<boolean> {
  return (await docker(['version', '--format', '{{.Server.Version}}'], { timeoutMs: 30_000 })).code === 0;
}

/** A dockerd to talk to: the one running, else one started here (as root) with its log in DOCKERD_LOG. */
export async function ensureEngine(): Promise<Engine> {
  if (await engineAnswers()) return { started: false, stop: async () => undefined };
  if (process.getuid?.() !== 0) {
    throw new Error('no Docker engine answers, and only root can start one: run the test as root, or start dockerd first');
  }
  const log = openSync(DOCKERD_LOG, 'a');
  const daemon = spawn('dockerd', DOCKERD_FLAGS, { stdio: ['ignore', log, log] });
  closeSync(log);
  const exited = new Promise<string>((resolveExit) => {
    daemon.once('error', (err) => resolveExit(err.message));
    daemon.once('exit', (code, signal) => resolveExit(`exited ${code ?? signal}`));
  });
  let gone: string | undefined;
  void exited.then((why) => (gone = why));
  const deadline = Date.now() + 60_000;
  while (!(await engineAnswers())) {
    if (gone !== undefined || Date.now() > deadline) {
      daemon.kill('SIGKILL');
      const why = gone ?? 'did not answer within 60 s';
      throw new Error(
        `dockerd ${DOCKERD_FLAGS.join(' ')} ${why} (Debian: apt-get install docker.io). Its log (${DOCKERD_LOG}):\n${tail(readLog(DOCKERD_LOG))}`,
      );
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  return {
    started: true,
    async stop() {
      daemon.kill('SIGTERM');
      const timer = setTimeout(() => daemon.kill('SIGKILL'), 60_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

function readLog(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '(no log)';
  }
}
