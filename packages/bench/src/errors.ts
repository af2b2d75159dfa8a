import { AirllmError, type ErrorDetails } from '@airllm/format';

/** Errors of the benchmark harness, `AirllmError`s (see `@airllm/format`): each names what is missing or wrong. */
export { AirllmError };

export class BenchError extends AirllmError {
  static override readonly code: string = 'AIRLLM_BENCH';
}

/** The temp directory's file system cannot hold the model files. */
export class DiskSpaceError extends BenchError {
  static override readonly code = 'AIRLLM_BENCH_DISK_SPACE';
  constructor(
    readonly dir: string,
    readonly neededBytes: number,
    readonly freeBytes: number,
  ) {
    super(
      `${dir} has ${(freeBytes / 1e9).toFixed(1)} GB free, the benchmark needs ${(neededBytes / 1e9).toFixed(1)} GB (set TMPDIR or --dir to a larger disk, or pick a smaller --shape)`,
      { dir, neededBytes, freeBytes },
    );
  }
}

/** Bad command-line arguments. */
export class UsageError extends BenchError {
  static override readonly code = 'AIRLLM_BENCH_USAGE';
}

/** A scenario's child process failed (its stderr tail is in the message). */
export class ScenarioError extends BenchError {
  static override readonly code = 'AIRLLM_BENCH_SCENARIO';
  constructor(
    readonly scenario: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, { scenario }, options);
  }

  protected static override describe(reason: string, d: ErrorDetails): string {
    return `${d.scenario}: ${reason}`;
  }
}

/** The llama.cpp peer (node-llama-cpp) could not be installed or loaded. */
export class PeerUnavailableError extends BenchError {
  static override readonly code = 'AIRLLM_BENCH_PEER';
}
