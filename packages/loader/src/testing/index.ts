/**
 * Test-only helpers other packages' tests use (not part of the public API in `index.ts`):
 * `import { FakeHub } from '@airllm/loader/testing'`.
 */
export { FakeHub, sha256Hex, gitBlobSha1, type FakeHubFile, type FakeHubRepoSpec, type FakeHubFault, type FakeHubRequest } from './fake-hub.js';
