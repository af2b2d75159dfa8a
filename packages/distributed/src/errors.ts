import { AirllmError, type ErrorDetails } from '@airllm/format';

/**
 * Typed errors of the distributed pipeline, `AirllmError`s (see `@airllm/format`) with a stable
 * `code` and structured `details`. Each names the node (address) and, where it applies, the
 * layers and the message field involved; messages are one line.
 */
export { AirllmError };

export class DistributedError extends AirllmError {
  static override readonly code: string = 'AIRLLM_DISTRIBUTED';
}

/**
 * A message that does not fit the protocol or the assignment (wrong length, a row count above
 * the batch size, a slot or position out of range, an unknown type). The receiver rejects the
 * message and keeps serving.
 */
export class ProtocolError extends DistributedError {
  static override readonly code = 'AIRLLM_PROTOCOL';
  /** The field that is wrong (e.g. `payload`, `rows`, `slot`). */
  declare readonly field: string;

  constructor(field: string, reason: string, expected?: string | number, actual?: string | number) {
    super(reason, { field, expected, actual });
  }

  protected static override describe(reason: string, d: ErrorDetails): string {
    return `malformed message, field ${d.field}: ${reason}${this.values(d)}`;
  }
}

/** A bad `--workers` list or `--split` specification. */
export class SplitError extends DistributedError {
  static override readonly code = 'AIRLLM_SPLIT';
}

/** TLS material that cannot be used (not PEM, a key that does not belong to the certificate, half a pair). */
export class TlsConfigError extends DistributedError {
  static override readonly code = 'AIRLLM_TLS_CONFIG';
}

/** A worker refused the root or could not be reached when the pipeline was set up. */
export class WorkerSetupError extends DistributedError {
  static override readonly code: string = 'AIRLLM_WORKER_SETUP';
  constructor(
    readonly node: string,
    reason: string,
  ) {
    super(reason, { node });
  }

  protected static override describe(reason: string, d: ErrorDetails): string {
    return `worker ${d.node}: ${reason}`;
  }
}

/** The worker's model file is not the root's (another size, or a region whose CRC-32 differs). */
export class FingerprintMismatchError extends WorkerSetupError {
  static override readonly code = 'AIRLLM_FINGERPRINT';
}

/**
 * A worker stopped answering during a generation (connection lost, timed out, engine failure).
 * The root catches it, takes the worker's layers over and continues; it reaches callers only
 * when recovery itself is impossible.
 */
export class WorkerLostError extends DistributedError {
  static override readonly code = 'AIRLLM_WORKER_LOST';
  constructor(
    readonly node: string,
    readonly layers: string,
    reason: string,
  ) {
    super(reason, { node, layers });
  }

  protected static override describe(reason: string, d: ErrorDetails): string {
    return `worker ${d.node} (layers ${d.layers}) failed: ${reason}`;
  }
}

/** A worker reported an error the root cannot recover from (e.g. it rejected the root's own message). */
export class RemoteError extends DistributedError {
  static override readonly code = 'AIRLLM_REMOTE';
  constructor(
    readonly node: string,
    readonly remoteCode: number,
    readonly remoteMessage: string,
  ) {
    super(remoteMessage, { node, remoteCode });
  }

  protected static override describe(reason: string, d: ErrorDetails): string {
    return `worker ${d.node} answered with error ${d.remoteCode}: ${reason}`;
  }
}
