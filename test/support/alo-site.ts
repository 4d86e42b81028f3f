/**
 * A site for end-to-end tests: the ALO emulator and its S3 store on loopback, an export folder,
 * a ledger, and a config file pointing the real daemon at them.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { startAloEmulator, type AloEmulator, type AloEmulatorOptions } from '../emulators/alo.js';
import { startS3Store, type S3Store, type S3StoreOptions } from '../emulators/s3-store.js';
import { writeConfig } from './daemon-process.js';
import { tempDir } from './files.js';

export const ALO_TOKEN = 'alo-test-token';

export interface AloSite {
  dir: string;
  exportsRoot: string;
  ledgerPath: string;
  configPath: string;
  store: S3Store;
  alo: AloEmulator;
  close(): Promise<void>;
}

export interface AloSiteOptions {
  upload?: Record<string, unknown>;
  watch?: Record<string, unknown>;
  alo?: Record<string, unknown>;
  log?: Record<string, unknown>;
  emulator?: Partial<AloEmulatorOptions>;
  store?: S3StoreOptions;
  /**
   * The site's directory (exports/, state/, config.yaml). Default: a fresh temp dir that close() removes.
   * A directory given here is created if needed and left in place by close(): the caller owns it.
   */
  dir?: string;
  /**
   * false: leave out the test-speed settings (small parts and threshold, short retries and settle time),
   * so the daemon runs with its own defaults except for what the options above set. Default true.
   */
  testTuning?: boolean;
}

export async function startAloSite(options: AloSiteOptions = {}): Promise<AloSite> {
  const tmp = options.dir !== undefined ? { path: options.dir, cleanup: async () => undefined } : await tempDir();
  await mkdir(tmp.path, { recursive: true });
  const tuned = options.testTuning ?? true;
  const store = await startS3Store(options.store);
  const alo = await startAloEmulator({ store, ...options.emulator });
  const exportsRoot = join(tmp.path, 'exports');
  await mkdir(exportsRoot, { recursive: true });
  const ledgerPath = join(tmp.path, 'state', 'ledger.db');
  const configPath = await writeConfig(tmp.path, {
    watch: { root: exportsRoot, ...(tuned ? { settle_seconds: 0.3, missing_file_seconds: 30 } : {}), ...options.watch },
    ledger: { path: ledgerPath },
    upload: { ...(tuned ? { concurrency: 4, part_size: '5MiB', retry_initial: 0.05, retry_max: 0.5, stall_timeout: 10 } : {}), ...options.upload },
    targets: {
      alo: { type: 'alo', base_url: alo.baseUrl, auth: { bearer: ALO_TOKEN }, ...(tuned ? { multipart_threshold: '5MiB' } : {}), ...options.alo },
    },
    log: { level: 'debug', ...options.log },
  });
  return {
    dir: tmp.path,
    exportsRoot,
    ledgerPath,
    configPath,
    store,
    alo,
    async close() {
      await alo.close();
      await store.close();
      await tmp.cleanup();
    },
  };
}
