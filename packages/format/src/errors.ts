/**
 * The error family of every airllm package. Each error is an `AirllmError` with a stable `code`
 * (`AIRLLM_…`, one per class) and structured `details`, so a caller can catch `AirllmError` once
 * and switch on `code`. Messages are one line and name what was wrong and where: the location
 * details (`path`, `field`, byte `offset`) lead the message, the values involved (`expected`,
 * `actual`) end it. It lives here because format is the package every other one depends on.
 */
export type ErrorDetails = {
  /** File path, when the bytes came from a file. */
  path?: string;
  /** Header key, tensor name, option or structure field that is wrong. */
  field?: string;
  /** Byte offset in the file or buffer where the problem was found. */
  offset?: number;
  expected?: string | number;
  actual?: string | number;
  /** Anything else worth a field of its own (numbers, names); not part of the message. */
  [key: string]: string | number | boolean | undefined;
};

export class AirllmError extends Error {
  /** The code of every instance of this class; each subclass declares its own. */
  static readonly code: string = 'AIRLLM_ERROR';
  /** Stable identifier of the kind of failure: `AIRLLM_` + upper-case words, one per class. */
  readonly code: string;
  /** The message's facts as fields (undefined ones left out). */
  readonly details: Readonly<ErrorDetails>;
  /** The message without location and values. */
  readonly reason: string;
  readonly path: string | undefined;
  readonly field: string | undefined;
  readonly offset: number | undefined;
  readonly expected: string | number | undefined;
  readonly actual: string | number | undefined;

  constructor(reason: string, details: ErrorDetails = {}, options?: ErrorOptions) {
    const cls = new.target as typeof AirllmError;
    super(cls.describe(reason, details), options);
    this.name = cls.name;
    this.code = cls.code;
    this.reason = reason;
    this.details = Object.freeze(Object.fromEntries(Object.entries(details).filter(([, v]) => v !== undefined)));
    this.path = details.path;
    this.field = details.field;
    this.offset = details.offset;
    this.expected = details.expected;
    this.actual = details.actual;
  }

  /**
   * The one-line message: `path, field F, byte offset N: reason (expected E, got A)` with the
   * parts that are known. A class whose messages read better another way overrides this.
   */
  protected static describe(reason: string, d: ErrorDetails): string {
    const where: string[] = [];
    if (d.path !== undefined) where.push(d.path);
    if (d.field !== undefined) where.push(`field ${d.field}`);
    if (d.offset !== undefined) where.push(`byte offset ${d.offset}`);
    return (where.length > 0 ? `${where.join(', ')}: ` : '') + reason + this.values(d);
  }

  /** ` (expected E, got A)`, or '' when neither is known. */
  protected static values(d: ErrorDetails): string {
    const tail: string[] = [];
    if (d.expected !== undefined) tail.push(`expected ${d.expected}`);
    if (d.actual !== undefined) tail.push(`got ${d.actual}`);
    return tail.length > 0 ? ` (${tail.join(', ')})` : '';
  }

  /**
   * A copy of this error (same class, fields and cause) that also names the file it came from;
   * itself if it already names one.
   */
  withPath(path: string): this {
    if (this.path !== undefined) return this;
    const details = Object.freeze({ ...this.details, path });
    const message = (this.constructor as typeof AirllmError).describe(this.reason, details);
    const copy = Object.create(Object.getPrototypeOf(this) as object) as this;
    Object.defineProperties(copy, Object.getOwnPropertyDescriptors(this));
    Object.defineProperties(copy, {
      details: { value: details, enumerable: true },
      path: { value: path, enumerable: true },
      message: { value: message, writable: true, configurable: true },
      stack: { value: `${this.name}: ${message}${(this.stack ?? '').replace(/^[^\n]*/, '')}`, writable: true, configurable: true },
    });
    return copy;
  }
}

/** Bytes that are not a valid `.m`, `.t`, GGUF, safetensors or llama2.c file, or a bad value for one. */
export class FormatError extends AirllmError {
  static override readonly code: string = 'AIRLLM_FORMAT';
}

/** The first bytes are not a known magic number. */
export class BadMagicError extends FormatError {
  static override readonly code = 'AIRLLM_BAD_MAGIC';
}
/** A Distributed-Llama file of an older, unsupported format version. */
export class OldFormatError extends FormatError {
  static override readonly code = 'AIRLLM_OLD_FORMAT';
}
/** The bytes end before a structure they promise. */
export class TruncatedError extends FormatError {
  static override readonly code = 'AIRLLM_TRUNCATED';
}
/** A header key id that the format does not define. */
export class UnknownKeyError extends FormatError {
  static override readonly code = 'AIRLLM_UNKNOWN_KEY';
}
/** A header value out of its allowed range or inconsistent with another value. */
export class InvalidValueError extends FormatError {
  static override readonly code = 'AIRLLM_INVALID_VALUE';
}
/** The file is shorter or longer than its header's layout says. */
export class FileSizeMismatchError extends FormatError {
  static override readonly code: string = 'AIRLLM_FILE_SIZE';
}
/** A size computation would exceed 2^53 (not representable exactly). */
export class SizeOverflowError extends FormatError {
  static override readonly code = 'AIRLLM_SIZE_OVERFLOW';
}
/** A tensor was handed to a writer or reader with the wrong shape, type or order. */
export class TensorMismatchError extends FormatError {
  static override readonly code = 'AIRLLM_TENSOR_MISMATCH';
}
/**
 * A model that cannot be converted or run faithfully: an architecture, tensor type, RoPE
 * variant or dtype combination the `.m` format, dllama's graph or the engine has no place for.
 * The message lists what is supported.
 */
export class UnsupportedModelError extends FormatError {
  static override readonly code = 'AIRLLM_UNSUPPORTED_MODEL';
}
/** A tensor the architecture needs is absent from the source files. */
export class MissingTensorError extends FormatError {
  static override readonly code = 'AIRLLM_MISSING_TENSOR';
}

/** The path cannot be read or written (missing, a directory, permission, no space…). */
export class FileAccessError extends AirllmError {
  static override readonly code: string = 'AIRLLM_FILE_ACCESS';
}
/** The path does not exist. */
export class MissingFileError extends FileAccessError {
  static override readonly code = 'AIRLLM_MISSING_FILE';
}
/** The process may not read the path. */
export class PermissionError extends FileAccessError {
  static override readonly code = 'AIRLLM_PERMISSION';
}
/** The path is a directory, a device, a FIFO…, not a regular file. */
export class NotRegularFileError extends FileAccessError {
  static override readonly code = 'AIRLLM_NOT_REGULAR_FILE';
}
/** The file has no bytes (cannot be mapped; cannot be a model). */
export class EmptyFileError extends FileAccessError {
  static override readonly code = 'AIRLLM_EMPTY_FILE';
}
/** A read, write, mmap or madvise failed for a reason other than the above (errno in `actual`). */
export class IoError extends FileAccessError {
  static override readonly code = 'AIRLLM_IO';
}

/**
 * The typed error for a failed file system call (`e.code` = errno name) on `path`: the one
 * mapping from errno to error class. `what` names the operation in the message ("open",
 * "write"…). An AirllmError passes through, gaining the path.
 */
export function fileError(e: unknown, path: string, what?: string): AirllmError {
  if (e instanceof AirllmError) return e.withPath(path);
  const code = (e as NodeJS.ErrnoException | undefined)?.code ?? 'EIO';
  const say = (reason: string): string => (what === undefined ? reason : `cannot ${what}: ${reason}`);
  switch (code) {
    case 'ENOENT':
    case 'ENOTDIR':
      return new MissingFileError(say('no such file'), { path });
    case 'EACCES':
    case 'EPERM':
      return new PermissionError(say('permission denied'), { path });
    case 'EISDIR':
      return new NotRegularFileError(say('is a directory, not a file'), { path });
    case 'ENOTREG':
    case 'ENODEV':
      return new NotRegularFileError(say('not a regular file'), { path });
    case 'EEMPTY':
      return new EmptyFileError(say('file is empty'), { path, expected: '> 0 bytes', actual: 0 });
    case 'ENOSPC':
      return new FileAccessError(say('no space left on device'), { path });
    case 'EEXIST':
      return new FileAccessError(say('file exists'), { path });
    default:
      return new IoError(say((e as Error | undefined)?.message ?? 'I/O error'), { path, actual: code });
  }
}
