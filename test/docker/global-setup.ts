/**
 * Before the image tests: a Docker engine (started here when none runs, stopped after), the base
 * image (built once per machine), and the image itself (see prepareImages).
 */
import type { TestProject } from 'vitest/node';
import { DOCKERD_LOG, ensureEngine } from './engine.js';
import { IMAGE, prepareImages } from './image-build.js';

declare module 'vitest' {
  export interface ProvidedContext {
    dockerImage: string;
    dockerBase: string;
    buildCaCerts: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const engine = await ensureEngine();
  console.log(engine.started ? `dockerd started for this run (log: ${DOCKERD_LOG})` : 'dockerd already running: used as it is');
  try {
    const { base, caCerts } = await prepareImages((line) => console.log(line));
    project.provide('dockerImage', IMAGE);
    project.provide('dockerBase', base);
    project.provide('buildCaCerts', caCerts);
  } catch (err) {
    await engine.stop();
    throw err;
  }
  return () => engine.stop();
}
