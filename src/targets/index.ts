/**
 * The platform modules, by the `type` a target has in the configuration.
 */
import type { Config, TargetConfig } from '../config/schema.js';
import type { HttpClient } from '../upload/http.js';
import { AloTarget } from './alo/index.js';
import type { Target } from './target.js';

type Factory<C extends TargetConfig> = (name: string, config: C, http: HttpClient) => Target;

const FACTORIES: { [T in TargetConfig['type']]?: Factory<Extract<TargetConfig, { type: T }>> } = {
  alo: (name, config, http) => new AloTarget(name, config, http),
};

/** Configured platforms this version cannot upload to, as configuration problems (exit 2). */
export function unsupportedTargets(config: Config): string[] {
  return Object.entries(config.targets)
    .filter(([, tc]) => !FACTORIES[tc.type])
    .map(([name, tc]) => `targets.${name}.type: "${tc.type}" is not supported by this version of vms-uplink (supported: ${Object.keys(FACTORIES).join(', ')})`);
}

/** Creates every configured target; call `unsupportedTargets` first. */
export function createTargets(config: Config, http: HttpClient): Map<string, Target> {
  const targets = new Map<string, Target>();
  for (const [name, tc] of Object.entries(config.targets)) {
    const factory = FACTORIES[tc.type] as Factory<TargetConfig> | undefined;
    if (!factory) throw new Error(unsupportedTargets(config).join('; '));
    targets.set(name, factory(name, tc, http));
  }
  return targets;
}
