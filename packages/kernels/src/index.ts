export type { KernelBackend } from './backend.js';
export { referenceBackend } from './reference.js';
export { splitRange } from './split.js';
export { ropeFrequencies, ropeForHeader, type RopeScaling } from './rope.js';
