import { defineConfig } from 'vitest/config';

/**
 * `npm run test:e2e`, the slow tier: the real daemon as a child process through soaks, crash
 * loops, outages, bandwidth limits measured on the wire, hostile files and ledger faults. One file
 * at a time: several of them measure rates, memory and timing that a neighbour would disturb.
 */
export default defineConfig({
  test: {
    include: ['test/e2e/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    maxWorkers: 1,
    minWorkers: 1,
  },
});
