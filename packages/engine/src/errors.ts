/**
 * Typed errors of the engine. Like every package's errors they carry structured fields and a
 * one-line message naming what and where.
 */
export class EngineError extends Error {
  readonly code: string = 'AIRLLM_ENGINE';
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** The prompt cannot be encoded with this vocabulary. */
export class TokenizerError extends EngineError {
  override readonly code = 'AIRLLM_TOKENIZER';
}

/** The request does not fit the context (max sequence length). */
export class ContextOverflowError extends EngineError {
  override readonly code = 'AIRLLM_CONTEXT_OVERFLOW';
  constructor(
    message: string,
    readonly needed: number,
    readonly limit: number,
  ) {
    super(message);
  }
}

/** An option value is invalid (names the option). */
export class OptionError extends EngineError {
  override readonly code = 'AIRLLM_OPTION';
  constructor(
    readonly option: string,
    message: string,
  ) {
    super(`option ${option}: ${message}`);
  }
}

/** The model's architecture or dtype combination cannot run. */
export class UnsupportedModelError extends EngineError {
  override readonly code = 'AIRLLM_UNSUPPORTED_MODEL';
}

/** The engine was used before initialize() or after cleanup(). */
export class EngineStateError extends EngineError {
  override readonly code = 'AIRLLM_ENGINE_STATE';
}

/** A generation was cancelled by its caller (AbortSignal). */
export class CancelledError extends EngineError {
  override readonly code = 'AIRLLM_CANCELLED';
}
