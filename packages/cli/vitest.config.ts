import { defineConfig } from 'vitest/config';

// Most tests here start real processes, servers or a browser and load a model: on a busy 2-core
// CI machine they can take a while, so the 5 s default is too tight.
export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
