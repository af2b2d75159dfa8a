import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // The end-to-end test runs the harness, which measures the machine: one file at a time.
    pool: 'forks',
    fileParallelism: false,
  },
});
