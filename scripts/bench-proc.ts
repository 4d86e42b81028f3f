/**
 * What a process cost, measured from outside it: CPU seconds, peak RSS and bytes read.
 *
 * The daemon keeps running after its work is done, so it is read from /proc while it still runs.
 * A peer (rclone, aws) exits when done, so it runs under GNU time (CPU and max RSS from wait4's
 * rusage) inside a shell that prints its own /proc/PID/io after the peer exited: the kernel adds a
 * reaped child's I/O counters to its parent's, so the shell's rchar is what the peer read.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { access, constants, readFile } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { bytesRead } from '../test/support/proc-io.js';

export const GNU_TIME = '/usr/bin/time';

export interface Cost {
  cpuSeconds: number;
  peakRssBytes: number;
  /** rchar: every byte the process passed to read(2) and the like (the file, sockets, its own code). */
  bytesRead: number;
}

export interface PeerResult extends Cost {
  wallSeconds: number;
  code: number | null;
  stderr: string;
}

const ticks = clockTicks();

function clockTicks(): number {
  try {
    const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    return n > 0 ? n : 100;
  } catch {
    return 100;
  }
}

/** utime + stime of a live process, in seconds (fields 14 and 15 of /proc/PID/stat). */
export async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields[0] is field 3 (state)
  return (Number(fields[11]) + Number(fields[12])) / ticks;
}

/** VmHWM of a live process: the peak of its resident set, in bytes. */
export async function peakRss(pid: number): Promise<number> {
  const text = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/^VmHWM:\s+(\d+)\s+kB/m.exec(text)?.[1] ?? NaN) * 1024;
}

export async function liveCost(pid: number): Promise<Cost> {
  return { cpuSeconds: await cpuSeconds(pid), peakRssBytes: await peakRss(pid), bytesRead: (await bytesRead(pid)) ?? NaN };
}

export function isExecutable(path: string): Promise<boolean> {
  return access(path, constants.X_OK).then(
    () => true,
    () => false,
  );
}

export async function onPath(command: string): Promise<boolean> {
  for (const dir of (process.env['PATH'] ?? '').split(delimiter).filter(Boolean)) {
    if (await isExecutable(join(dir, command))) return true;
  }
  return false;
}

const running = new Set<ChildProcess>();

/** Kills the peers still running (each leads its own process group: GNU time, the shell, the peer). */
export function killPeers(): void {
  for (const child of running) {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
    } catch {
      // Exited meanwhile.
    }
  }
  running.clear();
}

/** Runs `command args` to its end and measures it; `scratch` is a path prefix for the two small result files. */
export async function runMeasured(command: string, args: string[], env: NodeJS.ProcessEnv, scratch: string): Promise<PeerResult> {
  const timeFile = `${scratch}.time`;
  const ioFile = `${scratch}.io`;
  const shell = 'io=$1; shift; "$@"; status=$?; cat /proc/$$/io > "$io"; exit $status';
  const started = performance.now();
  const child = spawn(GNU_TIME, ['-f', '%U %S %M', '-o', timeFile, 'sh', '-c', shell, 'sh', ioFile, command, ...args], {
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
    detached: true,
  });
  running.add(child);
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  running.delete(child);
  const wallSeconds = (performance.now() - started) / 1000;
  // GNU time writes "Command exited with non-zero status N" before its format line.
  const [user, sys, maxRssKiB] = (await readFile(timeFile, 'utf8')).trim().split('\n').pop()!.split(' ').map(Number);
  const io = /^rchar:\s+(\d+)/m.exec(await readFile(ioFile, 'utf8').catch(() => ''));
  return { wallSeconds, code, stderr, cpuSeconds: user! + sys!, peakRssBytes: maxRssKiB! * 1024, bytesRead: io ? Number(io[1]) : NaN };
}
