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
import { buildImage, IMAGE, machineCaCertificates } from './image-build.js';

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
    const previous = await imageId(IMAGE);
    const build = await buildImage({ base: base.tag, extraCaCerts: caCerts, tag: IMAGE });
    if (build.code !== 0) {
      throw new Error(`docker build of ${IMAGE} on ${base.tag} exited ${build.code}:\n${tail(build.stdout + build.stderr, 60)}`);
    }
    // The image the tag named before: on vfs every layer is a full copy of the root, so the
    // images of earlier runs would pile up gigabytes.
    if (previous && previous !== (await imageId(IMAGE))) await docker(['image', 'rm', previous]);
    console.log(
      `image ${IMAGE} built in ${seconds(build.ms)} (${caCerts ? 'with' : 'without'} the machine's CA certificates as EXTRA_CA_CERTS)`,
    );
    project.provide('dockerImage', IMAGE);
    project.provide('dockerBase', base.tag);
    project.provide('buildCaCerts', caCerts);
  } catch (err) {
    await engine.stop();
    throw err;
  }
  return () => engine.stop();
}
