/**
 * `node dist/test/docker/prepare-images.js`: what `npm run test:docker` builds before its tests,
 * and nothing else — on the engine that answers, else on a dockerd started for it and stopped
 * after. `.ci/run` runs it in the background at the lowest CPU priority while the other tiers
 * run: on a fresh machine the base and the first build of the image take minutes on the vfs
 * storage driver, and the test then finds both in Docker's cache and goes on with the image.
 */
import { DOCKERD_LOG, ensureEngine } from './engine.js';
import { prepareImages } from './image-build.js';

const log = (line: string): void => console.log(`${new Date().toISOString()} ${line}`);
const engine = await ensureEngine();
log(engine.started ? `dockerd started (log: ${DOCKERD_LOG})` : 'dockerd already running: used as it is');
try {
  await prepareImages(log);
} finally {
  await engine.stop();
}
