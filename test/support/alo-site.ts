/**
 * A site for end-to-end tests: the ALO emulator and its S3 store on loopback, an export folder,
 * a ledger, and a config file pointing the real daemon at them.
 */
import { startAloEmulator, type AloEmulator, type AloEmulatorOptions, type AloIncident } from '../emulators/alo.js';
import { startS3Store, type S3Store, type S3StoreOptions } from '../emulators/s3-store.js';
import { waitFor, type DaemonProcess } from './daemon-process.js';
import { tempDir } from './files.js';
import { writeSiteConfig, type SiteFiles } from './site.js';

export const ALO_TOKEN = 'alo-test-token';

export interface AloSite extends SiteFiles {
  store: S3Store;
  alo: AloEmulator;
  close(): Promise<void>;
}

export interface AloSiteOptions {
  upload?: Record<string, unknown>;
  watch?: Record<string, unknown>;
  alo?: Record<string, unknown>;
  log?: Record<string, unknown>;
  ledger?: Record<string, unknown>;
  /** Further top-level config sections (`api`…). */
  sections?: Record<string, unknown>;
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
  const testTuning = options.testTuning ?? true;
  const store = await startS3Store(options.store);
  const alo = await startAloEmulator({ store, ...options.emulator });
  const files = await writeSiteConfig(tmp.path, {
    watch: options.watch,
    upload: options.upload,
    log: options.log,
    ledger: options.ledger,
    sections: options.sections,
    targets: { alo: { ...aloTargetConfig(alo.baseUrl, { testTuning }), ...options.alo } },
    testTuning,
  });
  return {
    ...files,
    store,
    alo,
    async close() {
      await alo.close();
      await store.close();
      await tmp.cleanup();
    },
  };
}

/** The daemon's `targets.<name>` block for an ALO emulator; tuned, multipart from 5 MiB so small files make several parts. */
export function aloTargetConfig(baseUrl: string, { testTuning = true } = {}): Record<string, unknown> {
  return { type: 'alo', base_url: baseUrl, auth: { bearer: ALO_TOKEN }, ...(testTuning ? { multipart_threshold: '5MiB' } : {}) };
}

/** The daemon's complaints (warnings and worse, stderr), for the message of a wait that timed out. */
export function troubles(d: DaemonProcess): string {
  return d.logs
    .filter((l) => l.level === 'raw' || Number(l.level) >= 40)
    .map((l) => JSON.stringify(l))
    .concat(d.stderr)
    .slice(-20)
    .join('\n');
}

/** Waits until ALO holds the incident in a state `ready` accepts; on timeout says what ALO has and what the daemon complained of. */
export async function waitIncident(
  s: { alo: AloEmulator },
  d: DaemonProcess,
  id: string,
  ready: (i: AloIncident) => boolean,
  what: string,
  timeoutMs = 30_000,
): Promise<AloIncident> {
  try {
    return await waitFor(
      () => {
        const i = s.alo.incident(id);
        return i && ready(i) ? i : undefined;
      },
      timeoutMs,
      what,
    );
  } catch (err) {
    throw new Error(
      `${(err as Error).message}\nALO has: ${JSON.stringify(s.alo.incident(id), null, 2)}\ndaemon warnings:\n${troubles(d)}`,
      { cause: err },
    );
  }
}
