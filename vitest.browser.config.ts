import { defineConfig } from 'vitest/config';

/**
 * `npm run test:browser`: the status page in headless Chromium (Debian's /usr/bin/chromium, driven
 * by playwright-core; no browser is downloaded) against the real daemon and the emulators. One
 * file at a time: a browser and a daemon per file on two cores, and one test measures load time.
 */
export default defineConfig({
  test: {
    include: ['test/browser/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    pool: 'forks',
    maxWorkers: 1,
    minWorkers: 1,
  },
});
