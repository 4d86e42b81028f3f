import { defineConfig } from 'vitest/config';

/**
 * `npm run test:docker`: the Docker image built from this repository and run for real. The global
 * setup starts dockerd when none runs (and stops it after), builds the base image once per machine
 * and the image on every run (Docker's layer cache keeps that short when little changed). Needs
 * root, Debian's docker.io and debootstrap.
 */
export default defineConfig({
  test: {
    include: ['test/docker/**/*.test.ts'],
    globalSetup: ['test/docker/global-setup.ts'],
    testTimeout: 5 * 60_000,
    hookTimeout: 5 * 60_000,
    pool: 'forks',
    maxWorkers: 1,
    minWorkers: 1,
  },
});
