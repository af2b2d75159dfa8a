import { AirllmError } from '@airllm/format';

export { AirllmError };

/**
 * Kernel-level failures, `AirllmError`s with structured details. Argument errors raised inside
 * the native addon are plain TypeError/RangeError objects with `code: 'AIRLLM_KERNELS_ARG'`
 * (N-API cannot construct these classes); everything decided in TypeScript uses the classes
 * below.
 */
export class KernelError extends AirllmError {
  static override readonly code: string = 'AIRLLM_KERNELS';
}

/** The native addon could not be loaded, or a requested CPU path is not available. */
export class NativeUnavailableError extends KernelError {
  static override readonly code = 'AIRLLM_KERNELS_NATIVE';
}
