/**
 * Every failure this package reports is a `FormatError` subclass carrying structured fields:
 * what was wrong (`field`), where (`offset` in bytes, `path` when a file is involved), and the
 * values involved. Messages are one line and name all of them.
 */
export interface FormatErrorDetails {
  /** Header key, tensor name or structure field that is wrong. */
  field?: string;
  /** Byte offset in the file or buffer where the problem was found. */
  offset?: number;
  /** File path, when the bytes came from a file. */
  path?: string;
  expected?: string | number;
  actual?: string | number;
}

export class FormatError extends Error {
  readonly code: string = 'AIRLLM_FORMAT';
  readonly field: string | undefined;
  readonly offset: number | undefined;
  readonly path: string | undefined;
  readonly expected: string | number | undefined;
  readonly actual: string | number | undefined;
  /** The message without location and values. */
  readonly reason: string;

  constructor(message: string, details: FormatErrorDetails = {}) {
    super(FormatError.compose(message, details));
    this.name = new.target.name;
    this.reason = message;
    this.field = details.field;
    this.offset = details.offset;
    this.path = details.path;
    this.expected = details.expected;
    this.actual = details.actual;
  }

  private static compose(message: string, d: FormatErrorDetails): string {
    const where: string[] = [];
    if (d.path !== undefined) where.push(d.path);
    if (d.field !== undefined) where.push(`field ${d.field}`);
    if (d.offset !== undefined) where.push(`byte offset ${d.offset}`);
    const tail: string[] = [];
    if (d.expected !== undefined) tail.push(`expected ${d.expected}`);
    if (d.actual !== undefined) tail.push(`got ${d.actual}`);
    return (
      (where.length > 0 ? `${where.join(', ')}: ` : '') +
      message +
      (tail.length > 0 ? ` (${tail.join(', ')})` : '')
    );
  }

  /** A copy of this error that also names the file it came from. */
  withPath(path: string): FormatError {
    if (this.path !== undefined) return this;
    const Ctor = this.constructor as new (m: string, d: FormatErrorDetails) => FormatError;
    return new Ctor(this.reason, { ...this.details(), path });
  }

  details(): FormatErrorDetails {
    return {
      field: this.field,
      offset: this.offset,
      path: this.path,
      expected: this.expected,
      actual: this.actual,
    };
  }
}

/** The first bytes are not a known magic number. */
export class BadMagicError extends FormatError {
  override readonly code = 'AIRLLM_BAD_MAGIC';
}
/** A Distributed-Llama file of an older, unsupported format version. */
export class OldFormatError extends FormatError {
  override readonly code = 'AIRLLM_OLD_FORMAT';
}
/** The bytes end before a structure they promise. */
export class TruncatedError extends FormatError {
  override readonly code = 'AIRLLM_TRUNCATED';
}
/** A header key id that the format does not define. */
export class UnknownKeyError extends FormatError {
  override readonly code = 'AIRLLM_UNKNOWN_KEY';
}
/** A header value out of its allowed range or inconsistent with another value. */
export class InvalidValueError extends FormatError {
  override readonly code = 'AIRLLM_INVALID_VALUE';
}
/** The file is shorter or longer than its header's layout says. */
export class FileSizeMismatchError extends FormatError {
  override readonly code = 'AIRLLM_FILE_SIZE';
}
/** A size computation would exceed 2^53 (not representable exactly). */
export class SizeOverflowError extends FormatError {
  override readonly code = 'AIRLLM_SIZE_OVERFLOW';
}
/** A tensor was handed to a writer or reader with the wrong shape, type or order. */
export class TensorMismatchError extends FormatError {
  override readonly code = 'AIRLLM_TENSOR_MISMATCH';
}
/** The path cannot be read as a model (missing, a directory, permission). */
export class FileAccessError extends FormatError {
  override readonly code = 'AIRLLM_FILE_ACCESS';
}
