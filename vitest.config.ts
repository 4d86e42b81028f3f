import { defineConfig } from 'vitest/config';

/**
 * `npm test`, the fast tier (just under 3 minutes on 2 cores, the build included): unit tests, the
 * emulators' self-tests, the stages in process, the conformance suite (one file per platform, the
 * real daemon as a child process), and smoke runs of the real daemon and CLI.
 * The slow process-level suites are `npm run test:e2e` (vitest.e2e.config.ts).
 */
export default defineConfig({
  test: {
    include: ['test/{unit,emulators,component,conformance,smoke}/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Worker threads start faster than forked processes (2m24s against 2m48s, warm caches); each
    // file still gets a fresh one. The child daemons of the conformance and smoke files leave a
    // core idle part of the time, hence three.
    pool: 'threads',
    maxWorkers: 3,
    minWorkers: 1,
  },
});
