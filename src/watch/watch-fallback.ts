/**
 * When the OS refuses more watches (inotify's ENOSPC: `fs.inotify.max_user_watches` reached), the
 * folder watcher rescans the folders it could not watch instead. What the log, `status` and
 * `/healthz` say about it is written here once.
 */

/** Folders rescanned in place of a watch, how often, and since when (epoch ms). */
export interface WatchFallback {
  folders: number;
  rescanSeconds: number;
  since: number;
}

/** Why the daemon is degraded, for `/healthz`, `status` and the log. */
export function watchFallbackMessage(folders: number, rescanSeconds: number): string {
  return (
    `the OS refused to watch ${folders} folder(s) below watch.root (ENOSPC: fs.inotify.max_user_watches reached): ` +
    `they are rescanned every ${rescanSeconds} s instead, so no export is missed, only noticed later; ` +
    'raise fs.inotify.max_user_watches (see the README)'
  );
}
