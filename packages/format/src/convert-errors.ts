import { FormatError } from './errors.js';

/**
 * A model the converters cannot turn into a `.m` file faithfully: an architecture, tensor type,
 * RoPE variant or option the `.m` format (or dllama's graph) has no place for. The message lists
 * what is supported.
 */
export class UnsupportedModelError extends FormatError {
  override readonly code = 'AIRLLM_UNSUPPORTED_MODEL';
}

/** A tensor the architecture needs is absent from the source files. */
export class MissingTensorError extends FormatError {
  override readonly code = 'AIRLLM_MISSING_TENSOR';
}
