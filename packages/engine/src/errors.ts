import { AirllmError, UnsupportedModelError, type ErrorDetails } from '@airllm/format';

/**
 * Typed errors of the engine: `AirllmError`s (see `@airllm/format`) with a stable `code`,
 * structured `details` and a one-line message naming what and where.
 * `UnsupportedModelError` is format's: the one class for a model that cannot be converted or run.
 */
export { AirllmError, UnsupportedModelError };

export class EngineError extends AirllmError {
  static override readonly code: string = 'AIRLLM_ENGINE';
}

/** The prompt cannot be encoded with this vocabulary. */
export class TokenizerError extends EngineError {
  static override readonly code = 'AIRLLM_TOKENIZER';
}

/** The request does not fit the context (max sequence length). */
export class ContextOverflowError extends EngineError {
  static override readonly code = 'AIRLLM_CONTEXT_OVERFLOW';
  constructor(
    message: string,
    readonly needed: number,
    readonly limit: number,
  ) {
    super(message, { needed, limit });
  }
}

/** An option value is invalid (names the option). */
export class OptionError extends EngineError {
  static override readonly code = 'AIRLLM_OPTION';
  constructor(
    readonly option: string,
    message: string,
  ) {
    super(message, { option });
  }

  protected static override describe(reason: string, d: ErrorDetails): string {
    return `option ${d.option}: ${reason}`;
  }
}

/** The engine was used before initialize() or after cleanup(). */
export class EngineStateError extends EngineError {
  static override readonly code = 'AIRLLM_ENGINE_STATE';
}

/** A generation was cancelled by its caller (AbortSignal). */
export class CancelledError extends EngineError {
  static override readonly code = 'AIRLLM_CANCELLED';
}

/** A draft model cannot propose tokens for the target (speculative decoding): names the draft file and what differs. */
export class DraftModelError extends EngineError {
  static override readonly code = 'AIRLLM_DRAFT_MODEL';
  constructor(path: string, field: string, expected: string | number, actual: string | number, reason: string) {
    super(`the draft model ${reason}`, { path, field, expected, actual });
  }
}
