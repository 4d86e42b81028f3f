/**
 * `docker build` of the repository's Dockerfile as a site behind a TLS-inspecting proxy runs it:
 * the locally built base as NODE_IMAGE, host networking (no bridge here), and the machine's own
 * CA certificates as the EXTRA_CA_CERTS build argument.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ensureBaseImage } from './base-image.js';
import { docker, tail, type CommandResult } from './engine.js';

export const IMAGE = 'vms-uplink:docker-test';
/** The Dockerfile's build stage: the cache of the slow steps (npm ci, the SQLite compile). */
export const BUILD_STAGE_IMAGE = 'vms-uplink:docker-test-build';

/** The repository: the build context. */
export function repoRoot(): string {
  let dir = import.meta.dirname;
  while (!existsSync(join(dir, 'Dockerfile'))) dir = dirname(dir);
  return dir;
}

/**
 * The CA certificates this machine added to Debian's trust store (update-ca-certificates reads
 * /usr/local/share/ca-certificates/**.crt), concatenated as PEM: what a TLS-inspecting proxy's
 * users install, and what the build must be given. Empty when the machine added none.
 */
export function machineCaCertificates(dir = '/usr/local/share/ca-certificates'): string {
  if (!existsSync(dir)) return '';
  const pems: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) pems.push(machineCaCertificates(path));
    else if (name.endsWith('.crt')) pems.push(readFileSync(path, 'utf8').trim());
  }
  return pems.filter(Boolean).join('\n');
}

export interface BuildOptions {
  base: string;
  /** PEM text for EXTRA_CA_CERTS; none when empty or absent. */
  extraCaCerts?: string;
  tag?: string;
  /** `--target`: a stage of the Dockerfile. */
  target?: string;
}

export function buildImage(options: BuildOptions): Promise<CommandResult> {
  // --force-rm: a failed step's container would otherwise stay, a full copy of the root on vfs.
  const args = ['build', '--force-rm', '--network', 'host', '--build-arg', `NODE_IMAGE=${options.base}`];
  if (options.extraCaCerts) args.push('--build-arg', `EXTRA_CA_CERTS=${options.extraCaCerts}`);
  if (options.target) args.push('--target', options.target);
  if (options.tag) args.push('--tag', options.tag);
  args.push(repoRoot());
  return docker(args, { timeoutMs: 60 * 60_000 });
}

async function imageId(tag: string): Promise<string | undefined> {
  const r = await docker(['image', 'inspect', '--format', '{{.Id}}', tag]);
  return r.code === 0 ? r.stdout.trim() : undefined;
}

const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;

export interface PreparedImages {
  /** The base image's tag: NODE_IMAGE. */
  base: string;
  /** The PEM text passed as EXTRA_CA_CERTS, empty when the machine added no CA. */
  caCerts: string;
}

/**
 * The base image (built once per machine) and the image, built from the repository with the
 * machine's CA certificates as EXTRA_CA_CERTS, on the engine that answers. The figures are
 * printed: the base and the first build are the slow part on a fresh machine.
 */
export async function prepareImages(log: (line: string) => void): Promise<PreparedImages> {
  const base = await ensureBaseImage();
  log(`base image ${base.tag}: ${base.built ? `built in ${seconds(base.ms)}` : 'already built on this machine'}`);
  const caCerts = machineCaCertificates();
  // The build stage under a tag of its own, then the image (its build stage then all cached):
  // so that a later run can remove what an earlier one left. On vfs every layer is a full copy
  // of the root, and each change to the sources would otherwise leave gigabytes behind.
  let ms = 0;
  for (const { tag, target } of [{ tag: BUILD_STAGE_IMAGE, target: 'build' }, { tag: IMAGE }]) {
    const previous = await imageId(tag);
    const build = await buildImage({ base: base.tag, extraCaCerts: caCerts, tag, ...(target ? { target } : {}) });
    if (build.code !== 0) {
      throw new Error(`docker build of ${tag} on ${base.tag} exited ${build.code}:\n${tail(build.stdout + build.stderr, 60)}`);
    }
    if (previous && previous !== (await imageId(tag))) await docker(['image', 'rm', previous]);
    ms += build.ms;
  }
  log(`image ${IMAGE} built in ${seconds(ms)} (${caCerts ? 'with' : 'without'} the machine's CA certificates as EXTRA_CA_CERTS)`);
  return { base: base.tag, caCerts };
}
