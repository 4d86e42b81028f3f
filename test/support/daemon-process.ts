/**
 * The real daemon as a child process (the built `dist/src/cli.js`), with its JSON log lines
 * collected, so tests can signal it, SIGKILL it and restart it like systemd would.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { stringify } from 'yaml';

/** Tests run from the TypeScript sources, the demo and bench from dist/: the built CLI either way. */
export function repoRoot(): string {
  let dir = import.meta.dirname;
  while (!existsSync(join(dir, 'package.json'))) dir = dirname(dir);
  return dir;
}

export const CLI = join(repoRoot(), 'dist', 'src', 'cli.js');

/** The version package.json gives, which the daemon must announce. */
export const PACKAGE_VERSION = (JSON.parse(readFileSync(join(repoRoot(), 'package.json'), 'utf8')) as { version: string }).version;

/** The User-Agent of every request of a daemon this test starts (it runs on the test's own node). */
export const USER_AGENT = `vms-uplink/${PACKAGE_VERSION} (node/${process.versions.node})`;

export interface LogLine {
  level: string;
  event?: string;
  msg?: string;
  [key: string]: unknown;
}

/**
 * The test runner's environment without proxy variables: the daemon honours HTTPS_PROXY and the
 * like, and the emulators on loopback must not be sent through a developer's proxy. A test that
 * wants one passes it.
 */
function inheritedEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^(https?|all|no)_proxy$/i.test(name)));
}

export class DaemonProcess {
  readonly logs: LogLine[] = [];
  /** stdout exactly as written, for checks that must not depend on re-serialising parsed lines. */
  readonly stdout: string[] = [];
  readonly stderr: string[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly child: ChildProcess;

  /** `launcher`: a command the daemon is started through (it must exec its arguments, so the pid stays the daemon's). */
  constructor(args: string[], env: NodeJS.ProcessEnv = {}, launcher: readonly string[] = []) {
    const [command, ...prefix] = [...launcher, process.execPath];
    this.child = spawn(command, [...prefix, CLI, ...args], { env: { ...inheritedEnv(), ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let buffered = '';
    this.child.stdout!.on('data', (chunk: Buffer) => {
      this.stdout.push(chunk.toString());
      buffered += chunk.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop() ?? '';
      for (const line of lines) {
        if (!line.trim()) continue;
        try {
          this.logs.push(JSON.parse(line) as LogLine);
        } catch {
          this.logs.push({ level: 'raw', msg: line });
        }
      }
    });
    this.child.stderr!.on('data', (chunk: Buffer) => this.stderr.push(chunk.toString()));
    // 'close', not 'exit': only then has everything it printed been read (its last log lines).
    this.exited = new Promise((resolveExit) => this.child.once('close', (code, signal) => resolveExit({ code, signal })));
  }

  static run(configPath: string, env?: NodeJS.ProcessEnv): DaemonProcess {
    return new DaemonProcess(['run', '--config', configPath], env);
  }

  get pid(): number {
    return this.child.pid!;
  }

  kill(signal: NodeJS.Signals): void {
    this.child.kill(signal);
  }

  events(name: string): LogLine[] {
    return this.logs.filter((l) => l.event === name);
  }

  /** Everything it printed so far (log lines, then stderr): what checks that no secret shows read. */
  output(): string {
    return [...this.logs.map((l) => JSON.stringify(l)), ...this.stderr].join('\n');
  }
}

/** Runs a one-shot command (`check-config`, `status`, `retry`) and returns what it printed. */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolveRun) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...inheritedEnv(), ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    // 'close', not 'exit': on a busy machine the output can still be in the pipe when it exits.
    child.once('close', (code) => resolveRun({ code, stdout, stderr }));
  });
}

/** A word for `sh -c`, quoted so spaces and quotes in paths stay one argument. */
const shellWord = (word: string): string => `'${word.replaceAll("'", `'\\''`)}'`;

/**
 * Runs a one-shot command on a pseudo-terminal `columns` wide, as an operator at a shell does
 * (util-linux `script` makes the terminal): stdout is a TTY there. Line ends come back as \n.
 */
export function runCliOnTerminal(args: string[], columns: number): Promise<{ code: number | null; stdout: string }> {
  const command = `stty cols ${columns} rows 50; exec ${[process.execPath, CLI, ...args].map(shellWord).join(' ')}`;
  return new Promise((resolveRun) => {
    const child = spawn('script', ['-qec', command, '/dev/null'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.once('close', (code) => resolveRun({ code, stdout: stdout.replaceAll('\r\n', '\n') }));
  });
}

export async function writeConfig(dir: string, config: Record<string, unknown>): Promise<string> {
  const path = join(dir, 'config.yaml');
  await writeFile(path, stringify(config));
  return path;
}

/** Polls until `check` returns a value other than undefined/false, or fails after `timeoutMs`. */
export async function waitFor<T>(
  check: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 30_000,
  what = 'condition',
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
