import { defineConfig } from 'vitest/config';

// Some tests run the TypeScript reference over large inputs (or whole models): on a busy 2-core
// machine they can take several times as long as on a quiet one, so the 5 s default is too tight.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
