import { FormatError, type FormatErrorDetails } from '@airllm/format';

/**
 * Kernel-level failures with structured fields. Argument errors raised inside the native addon
 * are plain TypeError/RangeError objects with `code: 'ERR_AIRLLM_KERNEL_ARG'` (N-API cannot
 * construct these classes); everything decided in TypeScript uses the classes below.
 */
export class KernelError extends FormatError {
  override readonly code: string = 'AIRLLM_KERNELS';
}

/** The native addon could not be loaded, or a requested CPU path is not available. */
export class NativeUnavailableError extends KernelError {
  override readonly code: string = 'AIRLLM_KERNELS_NATIVE';
  constructor(message: string, details: FormatErrorDetails = {}) {
    super(message, details);
  }
}
