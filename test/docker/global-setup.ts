/**
 * Before the image tests: a Docker engine (started here when none runs, stopped after), the base
 * image (built once per machine), and the image itself, built from the repository with the
 * machine's CA certificates passed as the Dockerfile's EXTRA_CA_CERTS argument. The figures are
 * printed: the base build is the slow part on a fresh machine.
 */
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { ensureBaseImage } from './base-image.js';
import { docker, ensureEngine, tail } from './engine.js';
import { BUILD_STAGE_IMAGE, buildImage, IMAGE, machineCaCertificates } from './image-build.js';

declare module 'vitest' {
  export interface ProvidedContext {
    dockerImage: string;
    dockerBase: string;
    buildCaCerts: string;
  }
}

async function imageId(tag: string): Promise<string | undefined> {
  const r = await docker(['image', 'inspect', '--format', '{{.Id}}', tag]);
  return r.code === 0 ? r.stdout.trim() : undefined;
}

const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const logPath = join(tmpdir(), 'vms-uplink-dockerd.log');
  const engine = await ensureEngine(logPath);
  console.log(engine.started ? `dockerd started for this run (log: ${logPath})` : 'dockerd already running: used as it is');
  try {
    const base = await ensureBaseImage();
    console.log(`base image ${base.tag}: ${base.built ? `built in ${seconds(base.ms)}` : 'already built on this machine'}`);
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
    console.log(`image ${IMAGE} built in ${seconds(ms)} (${caCerts ? 'with' : 'without'} the machine's CA certificates as EXTRA_CA_CERTS)`);
    project.provide('dockerImage', IMAGE);
    project.provide('dockerBase', base.tag);
    project.provide('buildCaCerts', caCerts);
  } catch (err) {
    await engine.stop();
    throw err;
  }
  return () => engine.stop();
}
