/** What a live process has read, from /proc (Linux). */
import { readFile } from 'node:fs/promises';

/**
 * rchar of a live process (all its threads): every byte it passed to read(2) and the like (files,
 * sockets, its own code), or undefined once it is gone.
 */
export async function bytesRead(pid: number): Promise<number | undefined> {
  const text = await readFile(`/proc/${pid}/io`, 'utf8').catch(() => undefined);
  const m = text === undefined ? null : /^rchar:\s+(\d+)/m.exec(text);
  return m ? Number(m[1]) : undefined;
}
