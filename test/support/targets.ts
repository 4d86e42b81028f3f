/**
 * A platform's Target made in the test's process, from a `targets.NAME` block as the YAML has it
 * (so defaults and validation are the configuration's own), with its own HTTP client.
 */
import type { TestContext } from 'vitest';
import { Secrets } from '../../src/log/redact.js';
import { PLATFORMS, type TargetType } from '../../src/targets/registry.js';
import type { Target } from '../../src/targets/target.js';
import { HttpClient } from '../../src/upload/http.js';

export function targetOf(ctx: TestContext, name: string, block: { type: TargetType } & Record<string, unknown>): Target {
  const secrets = new Secrets();
  const http = new HttpClient({ connectionsPerOrigin: 4 }, secrets);
  ctx.onTestFinished(() => http.close());
  const platform = PLATFORMS[block.type];
  const config = platform.config.parse(block) as never;
  return platform.create(name, config, { http, secrets });
}
