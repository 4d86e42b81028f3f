/**
 * The platform modules, by the `type` a target has in the configuration.
 */
import type { Config, TargetConfig } from '../config/schema.js';
import type { HttpClient } from '../upload/http.js';
import { AionvisionTarget } from './aionvision/index.js';
import { AloTarget } from './alo/index.js';
import { TruvideoTarget } from './truvideo/index.js';
import type { Target } from './target.js';
import { ValtTarget } from './valt/index.js';

type Factory<C extends TargetConfig> = (name: string, config: C, http: HttpClient) => Target;

const FACTORIES: { [T in TargetConfig['type']]: Factory<Extract<TargetConfig, { type: T }>> } = {
  alo: (name, config, http) => new AloTarget(name, config, http),
  aionvision: (name, config, http) => new AionvisionTarget(name, config, http),
  truvideo: (name, config, http) => new TruvideoTarget(name, config, http),
  valt: (name, config, http) => new ValtTarget(name, config, http),
};

/** Creates every configured target. */
export function createTargets(config: Config, http: HttpClient): Map<string, Target> {
  const targets = new Map<string, Target>();
  for (const [name, tc] of Object.entries(config.targets)) {
    const factory = FACTORIES[tc.type] as Factory<TargetConfig>;
    targets.set(name, factory(name, tc, http));
  }
  return targets;
}
