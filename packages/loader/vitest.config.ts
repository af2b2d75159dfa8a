import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Tests measure this process's RSS: one file at a time, each in its own process.
    pool: 'forks',
    fileParallelism: false,
  },
});
