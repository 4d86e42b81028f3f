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

/** A configured platform this version cannot upload to; reported like a configuration error. */
export class UnsupportedTargetError extends Error {
  override readonly name = 'UnsupportedTargetError';
}

export function createTargets(config: Config, http: HttpClient): Map<string, Target> {
  const targets = new Map<string, Target>();
  for (const [name, tc] of Object.entries(config.targets)) {
    const factory = FACTORIES[tc.type] as Factory<TargetConfig> | undefined;
    if (!factory) {
      throw new UnsupportedTargetError(`targets.${name}.type: "${tc.type}" is not supported by this version of vms-uplink (supported: ${Object.keys(FACTORIES).join(', ')})`);
    }
    targets.set(name, factory(name, tc, http));
  }
  return targets;
}
