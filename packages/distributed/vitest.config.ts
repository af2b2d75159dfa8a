import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    // Worker processes compete for the machine's two cores: one file at a time.
    fileParallelism: false,
  },
});
