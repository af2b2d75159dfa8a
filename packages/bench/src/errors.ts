/** Errors of the benchmark harness: each names what is missing or wrong. */
export class BenchError extends Error {
  readonly code: string = 'AIRLLM_BENCH';
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The temp directory's file system cannot hold the model files. */
export class DiskSpaceError extends BenchError {
  override readonly code = 'AIRLLM_BENCH_DISK_SPACE';
  constructor(
    readonly dir: string,
    readonly neededBytes: number,
    readonly freeBytes: number,
  ) {
    super(`${dir} has ${(freeBytes / 1e9).toFixed(1)} GB free, the benchmark needs ${(neededBytes / 1e9).toFixed(1)} GB (set TMPDIR or --dir to a larger disk, or pick a smaller --shape)`);
  }
}

/** Bad command-line arguments. */
export class UsageError extends BenchError {
  override readonly code = 'AIRLLM_BENCH_USAGE';
}

/** A scenario's child process failed (its stderr tail is in the message). */
export class ScenarioError extends BenchError {
  override readonly code = 'AIRLLM_BENCH_SCENARIO';
  constructor(
    readonly scenario: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(`${scenario}: ${message}`, options);
  }
}

/** The llama.cpp peer (node-llama-cpp) could not be installed or loaded. */
export class PeerUnavailableError extends BenchError {
  override readonly code = 'AIRLLM_BENCH_PEER';
}
