/**
 * What every end-to-end site has, whatever the platform: a directory holding the export folder
 * the daemon watches, its ledger and a config file for the real daemon, tuned for test speed.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { writeConfig } from './daemon-process.js';

/** Short settle time and missing-file wait, so tests take seconds, not the daemon's minutes. */
export const TEST_WATCH = { settle_seconds: 0.3, missing_file_seconds: 30 };
/** Small parts so a few MiB make several; quick retries; a stall noticed in seconds. */
export const TEST_UPLOAD = { concurrency: 4, part_size: '5MiB', retry_initial: 0.05, retry_max: 0.5, stall_timeout: 10 };

export interface SiteFiles {
  dir: string;
  exportsRoot: string;
  ledgerPath: string;
  configPath: string;
}

export interface SiteConfig {
  /** The config's `targets` section. */
  targets: Record<string, unknown>;
  /** Keys of `watch`, over the test tuning. */
  watch?: Record<string, unknown>;
  /** Keys of `upload`, over the test tuning. */
  upload?: Record<string, unknown>;
  /** Keys of `ledger`, beside its path. */
  ledger?: Record<string, unknown>;
  /** Keys of `log`, over `level: debug`. */
  log?: Record<string, unknown>;
  /** Further top-level sections (`routes`…). */
  sections?: Record<string, unknown>;
  /** false: leave out TEST_WATCH and TEST_UPLOAD, so the daemon's own defaults apply. Default true. */
  testTuning?: boolean;
}

/** Creates `<dir>/exports` and writes `<dir>/config.yaml`, its ledger at `<dir>/state/ledger.db`. */
export async function writeSiteConfig(dir: string, config: SiteConfig): Promise<SiteFiles> {
  const tuned = config.testTuning ?? true;
  const exportsRoot = join(dir, 'exports');
  await mkdir(exportsRoot, { recursive: true });
  const ledgerPath = join(dir, 'state', 'ledger.db');
  const configPath = await writeConfig(dir, {
    watch: { root: exportsRoot, ...(tuned ? TEST_WATCH : {}), ...config.watch },
    ledger: { path: ledgerPath, ...config.ledger },
    upload: { ...(tuned ? TEST_UPLOAD : {}), ...config.upload },
    targets: config.targets,
    log: { level: 'debug', ...config.log },
    ...config.sections,
  });
  return { dir, exportsRoot, ledgerPath, configPath };
}
