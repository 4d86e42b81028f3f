/**
 * Sites, daemons and folders of one test, torn down when it finishes (daemons before their
 * site). Per test rather than in afterEach, so tests can run concurrently.
 */
import type { TestContext } from 'vitest';
import { startAloSite, type AloSite, type AloSiteOptions } from './alo-site.js';
import { DaemonProcess } from './daemon-process.js';
import { tempDir } from './files.js';

export interface Harness {
  dir(): Promise<string>;
  site(options?: AloSiteOptions): Promise<AloSite>;
  daemon(s: AloSite): DaemonProcess;
}

export function harness(ctx: TestContext): Harness {
  const cleanups: Array<() => Promise<void>> = [];
  ctx.onTestFinished(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });
  return {
    async dir() {
      const t = await tempDir();
      cleanups.push(t.cleanup);
      return t.path;
    },
    async site(options = {}) {
      const s = await startAloSite(options);
      cleanups.push(() => s.close());
      return s;
    },
    daemon(s) {
      const d = DaemonProcess.run(s.configPath);
      cleanups.push(async () => {
        d.kill('SIGKILL');
        await d.exited;
      });
      return d;
    },
  };
}
