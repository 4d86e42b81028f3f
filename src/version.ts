/**
 * Which build this is: the version in package.json and the Node.js that runs it. Platforms see
 * both in the User-Agent of every request, operators in `vms-uplink --version` and in the
 * `vms_uplink_build_info` metric, so a fleet's versions can be told apart from either side.
 *
 * Read once, when the module is first loaded at start-up, and frozen.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

export interface BuildInfo {
  readonly version: string;
  /** The Node.js version without its leading `v` (`20.18.1`), as product tokens write versions. */
  readonly node: string;
  /** `vms-uplink/0.1.0 (node/20.18.1)`: a product token and a comment, as RFC 9110 shapes a User-Agent. */
  readonly userAgent: string;
}

/**
 * The version of the package this file belongs to. The nearest package.json above it is ours
 * whether the sources run (src/) or the build (dist/src/), installed anywhere.
 */
function packageVersion(): string {
  let dir = import.meta.dirname;
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`no package.json above ${import.meta.dirname}`);
    dir = parent;
  }
  const path = join(dir, 'package.json');
  const pkg = JSON.parse(readFileSync(path, 'utf8')) as { name?: unknown; version?: unknown };
  if (pkg.name !== 'vms-uplink' || typeof pkg.version !== 'string') throw new Error(`${path} is not vms-uplink's package.json`);
  return pkg.version;
}

function buildInfo(): BuildInfo {
  const version = packageVersion();
  const node = process.versions.node;
  return Object.freeze({ version, node, userAgent: `vms-uplink/${version} (node/${node})` });
}

export const BUILD: BuildInfo = buildInfo();
