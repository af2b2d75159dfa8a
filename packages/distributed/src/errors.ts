/**
 * Typed errors of the distributed pipeline. Each names the node (address) and, where it
 * applies, the layers and the message field involved; messages are one line.
 */
export class DistributedError extends Error {
  readonly code: string = 'AIRLLM_DISTRIBUTED';
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/**
 * A message that does not fit the protocol or the assignment (wrong length, a row count above
 * the batch size, a slot or position out of range, an unknown type). The receiver rejects the
 * message and keeps serving.
 */
export class ProtocolError extends DistributedError {
  override readonly code = 'AIRLLM_PROTOCOL';
  constructor(
    /** The field that is wrong (e.g. `payload`, `rows`, `slot`). */
    readonly field: string,
    readonly reason: string,
    readonly expected?: string | number,
    readonly actual?: string | number,
  ) {
    const tail: string[] = [];
    if (expected !== undefined) tail.push(`expected ${expected}`);
    if (actual !== undefined) tail.push(`got ${actual}`);
    super(`malformed message, field ${field}: ${reason}${tail.length > 0 ? ` (${tail.join(', ')})` : ''}`);
  }
}

/** A bad `--workers` list or `--split` specification. */
export class SplitError extends DistributedError {
  override readonly code = 'AIRLLM_SPLIT';
}

/** TLS material that cannot be used (not PEM, a key that does not belong to the certificate, half a pair). */
export class TlsConfigError extends DistributedError {
  override readonly code = 'AIRLLM_TLS_CONFIG';
}

/** A worker refused the root or could not be reached when the pipeline was set up. */
export class WorkerSetupError extends DistributedError {
  override readonly code: string = 'AIRLLM_WORKER_SETUP';
  constructor(
    readonly node: string,
    readonly reason: string,
  ) {
    super(`worker ${node}: ${reason}`);
  }
}

/** The worker's model file is not the root's (different size or header/data hash). */
export class FingerprintMismatchError extends WorkerSetupError {
  override readonly code = 'AIRLLM_FINGERPRINT';
}

/**
 * A worker stopped answering during a generation (connection lost, timed out, engine failure).
 * The root catches it, takes the worker's layers over and continues; it reaches callers only
 * when recovery itself is impossible.
 */
export class WorkerLostError extends DistributedError {
  override readonly code = 'AIRLLM_WORKER_LOST';
  constructor(
    readonly node: string,
    readonly layers: string,
    readonly reason: string,
  ) {
    super(`worker ${node} (layers ${layers}) failed: ${reason}`);
  }
}

/** A worker reported an error the root cannot recover from (e.g. it rejected the root's own message). */
export class RemoteError extends DistributedError {
  override readonly code = 'AIRLLM_REMOTE';
  constructor(
    readonly node: string,
    readonly remoteCode: number,
    readonly remoteMessage: string,
  ) {
    super(`worker ${node} answered with error ${remoteCode}: ${remoteMessage}`);
  }
}
