/**
 * Sites, emulators, daemons and folders of one test, torn down when it finishes, the last started
 * first (so daemons go before their site). Per test rather than in afterEach, so tests can run
 * concurrently.
 */
import type { TestContext } from 'vitest';
import { startAionSite, type AionSite, type AionSiteOptions } from './aionvision-site.js';
import { startAloSite, type AloSite, type AloSiteOptions } from './alo-site.js';
import { DaemonProcess } from './daemon-process.js';
import { tempDir } from './files.js';

export interface Harness {
  dir(): Promise<string>;
  /** Closes `resource` (an emulator, a store…) when the test finishes. */
  closeAtEnd<T extends { close(): Promise<void> }>(resource: T): T;
  site(options?: AloSiteOptions): Promise<AloSite>;
  aionSite(options?: AionSiteOptions): Promise<AionSite>;
  /** The real daemon on the site's config (with `env` over the test runner's), SIGKILLed when the test finishes. */
  daemon(s: { configPath: string }, env?: NodeJS.ProcessEnv): DaemonProcess;
}

export function harness(ctx: TestContext): Harness {
  const cleanups: Array<() => Promise<void>> = [];
  ctx.onTestFinished(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });
  const closeAtEnd = <T extends { close(): Promise<void> }>(resource: T): T => {
    cleanups.push(() => resource.close());
    return resource;
  };
  return {
    async dir() {
      const t = await tempDir();
      cleanups.push(t.cleanup);
      return t.path;
    },
    closeAtEnd,
    site: async (options = {}) => closeAtEnd(await startAloSite(options)),
    aionSite: async (options = {}) => closeAtEnd(await startAionSite(options)),
    daemon(s, env) {
      const d = DaemonProcess.run(s.configPath, env);
      // A failure in a test of the real daemon is read from what the daemon said last.
      ctx.onTestFailed(() => {
        const last = d.logs.slice(-40).map((l) => JSON.stringify(l));
        console.error(`daemon ${d.pid} (${s.configPath}), its last log lines:\n${last.join('\n')}\n${d.stderr.join('')}`);
      });
      cleanups.push(async () => {
        d.kill('SIGKILL');
        await d.exited;
      });
      return d;
    },
  };
}
