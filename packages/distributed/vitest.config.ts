import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    // Worker processes compete for the machine's two cores: one file at a time.
    fileParallelism: false,
    // Model checksums (fingerprint.ts) are cached under $AIRLLM_HOME: not in the user's home.
    env: { AIRLLM_HOME: join(tmpdir(), 'airllm-distributed-tests') },
  },
});
