/**
 * The platforms, by the `type` a target has in the configuration. Each brings the schema of its
 * `targets.NAME` block and makes its Target from it; adding a platform is one line here (and its
 * folder, and its conformance fixture).
 */
import type { z } from 'zod';
import { AionvisionTarget } from './aionvision/index.js';
import { aionvisionConfig } from './aionvision/config.js';
import { AloTarget } from './alo/index.js';
import { aloConfig } from './alo/config.js';
import type { Target, TargetDeps } from './target.js';
import { TruvideoTarget } from './truvideo/index.js';
import { truvideoConfig } from './truvideo/config.js';
import { ValtTarget } from './valt/index.js';
import { valtConfig } from './valt/config.js';

interface Platform<S extends z.ZodType> {
  config: S;
  create(name: string, config: z.output<S>, deps: TargetDeps): Target;
}

function platform<S extends z.ZodType>(config: S, create: Platform<S>['create']): Platform<S> {
  return { config, create };
}

export const PLATFORMS = {
  alo: platform(aloConfig, (name, config, deps) => new AloTarget(name, config, deps)),
  aionvision: platform(aionvisionConfig, (name, config, deps) => new AionvisionTarget(name, config, deps)),
  truvideo: platform(truvideoConfig, (name, config, deps) => new TruvideoTarget(name, config, deps)),
  valt: platform(valtConfig, (name, config, deps) => new ValtTarget(name, config, deps)),
};

export type TargetType = keyof typeof PLATFORMS;
export const TARGET_TYPES = Object.keys(PLATFORMS) as TargetType[];

/** Makes every configured target, by name, in the order of the configuration. */
export function createTargets(targets: Record<string, { type: string }>, deps: TargetDeps): Map<string, Target> {
  const made = new Map<string, Target>();
  for (const [name, config] of Object.entries(targets)) {
    const platform = PLATFORMS[config.type as TargetType] as Platform<z.ZodType>;
    made.set(name, platform.create(name, config, deps));
  }
  return made;
}
