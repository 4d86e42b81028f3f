/**
 * inotify as a process sees it: the watches it holds (each `inotify wd:` line of
 * /proc/<pid>/fdinfo/<fd> is one watch), and a launcher that gives a process a watch limit of its
 * own, so that the OS really refuses a watch (ENOSPC) without touching the machine's limit.
 */
import { spawnSync } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';

/** The inotify watches `pid` holds now. */
export async function inotifyWatches(pid: number): Promise<number> {
  const dir = `/proc/${pid}/fdinfo`;
  let count = 0;
  for (const fd of await readdir(dir)) {
    // A descriptor closed between the listing and the read is no watch.
    const info = await readFile(`${dir}/${fd}`, 'utf8').catch(() => '');
    count += info.split('\n').filter((line) => line.startsWith('inotify wd:')).length;
  }
  return count;
}

/**
 * A launcher for DaemonProcess: the daemon runs in a user namespace of its own (util-linux
 * `unshare`, mapped to root inside it) whose inotify limit is `maxWatches`. Since Linux 5.11 the
 * limit (`user.max_inotify_watches`) is counted per user namespace and may be lowered by the
 * namespace's root; the machine's `fs.inotify.max_user_watches` still caps it from above.
 */
export function watchLimitLauncher(maxWatches: number): string[] {
  return ['unshare', '--user', '--map-root-user', 'sh', '-c', `echo ${maxWatches} > /proc/sys/user/max_inotify_watches && exec "$@"`, 'sh'];
}

/** Why watchLimitLauncher cannot work here, or null when it can. */
export function watchLimitUnavailable(): string | null {
  const [command, ...args] = watchLimitLauncher(8);
  const probe = spawnSync(command!, [...args, 'cat', '/proc/sys/user/max_inotify_watches'], { encoding: 'utf8' });
  if (probe.error) return `${command} cannot be run: ${probe.error.message}`;
  if (probe.status !== 0 || probe.stdout.trim() !== '8') {
    return `a user namespace with its own inotify limit cannot be made (unshare exit ${probe.status}): ${probe.stderr.trim()}`;
  }
  return null;
}
