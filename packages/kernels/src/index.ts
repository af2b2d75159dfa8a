export type { KernelBackend } from './backend.js';
export { referenceBackend } from './reference.js';
export { dllamaNumerics } from './dllama.js';
export {
  loadBackend,
  nativeBackend,
  nativePaths,
  readSum,
  type NativeBackend,
  type NativePath,
  type BackendPreference,
} from './native.js';
export { AirllmError, KernelError, NativeUnavailableError } from './errors.js';
export { splitRange } from './split.js';
export { ropeFrequencies, ropeForHeader, type RopeScaling } from './rope.js';
