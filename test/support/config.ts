/** Loading a configuration file from an in-memory file system, and the problems a ConfigError names. */
import { Volume } from 'memfs';
import { expect } from 'vitest';
import { ConfigError } from '../../src/config/config-file.js';
import { loadConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';

export const CONFIG_PATH = '/etc/vms-uplink/config.yaml';

/** Loads `yaml` from an in-memory file system holding it and `files`. */
export function loadYaml(yaml: string, options: { env?: Record<string, string>; files?: Record<string, string> } = {}): Config {
  const vol = Volume.fromJSON({ [CONFIG_PATH]: yaml, ...options.files });
  return loadConfig(CONFIG_PATH, options.env ?? {}, vol.readFileSync.bind(vol));
}

/** The problems of the ConfigError `fn` throws; fails when it throws none. */
export function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  throw new Error('expected a ConfigError');
}
