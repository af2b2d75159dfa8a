import { FileAccessError, FileSizeMismatchError, FormatError } from '@airllm/format';

/**
 * Loader errors extend `@airllm/format`'s `FormatError`, so they carry the same structured
 * fields (`path`, `offset`, `field`, `expected`, `actual`) and a stable `code`.
 * File-access failures subclass format's `FileAccessError`: `instanceof FileAccessError` still
 * catches them all.
 */
export { FormatError, FileAccessError, FileSizeMismatchError };

// The subclasses of FileAccessError / FileSizeMismatchError keep their parent's `code` (format
// declares it as a literal type); the class (`name`) tells them apart.

/** The path does not exist. */
export class MissingFileError extends FileAccessError {}
/** The process may not read the path. */
export class PermissionError extends FileAccessError {}
/** The path is a directory, a device, a FIFO…, not a regular file. */
export class NotRegularFileError extends FileAccessError {}
/** The file has no bytes (cannot be mapped; cannot be a model). */
export class EmptyFileError extends FileAccessError {}
/** The file's size changed after it was opened (typically truncated while mapped). */
export class FileChangedError extends FileSizeMismatchError {}
/** A byte range, row range, segment or layer outside what the file or residency holds. */
export class OutOfRangeError extends FormatError {
  override readonly code = 'AIRLLM_OUT_OF_RANGE';
}
/** The object was closed (or never opened) before this call. */
export class ClosedError extends FormatError {
  override readonly code = 'AIRLLM_CLOSED';
}
/** A call made out of protocol, e.g. `release` of a segment that is not acquired. */
export class StateError extends FormatError {
  override readonly code = 'AIRLLM_STATE';
}
/** The memory budget cannot hold the streaming slots (`expected` = the smallest budget that works). */
export class BudgetTooSmallError extends FormatError {
  override readonly code = 'AIRLLM_BUDGET_TOO_SMALL';
}
/** Every streaming slot is in use and a further segment was demanded (more in flight than slots). */
export class SlotsExhaustedError extends FormatError {
  override readonly code = 'AIRLLM_SLOTS_EXHAUSTED';
}
/** The native addon is missing or failed, and the mmap backend was required explicitly. */
export class NativeAddonError extends FormatError {
  override readonly code = 'AIRLLM_NATIVE_ADDON';
}
/** mmap/madvise/pread failed for a reason other than the above (errno in `actual`). */
export class IoError extends FormatError {
  override readonly code = 'AIRLLM_IO';
}

/** Turn an fs or addon error (`code` = errno name) into the typed error naming `path`. */
export function fileError(e: unknown, path: string): FormatError {
  if (e instanceof FormatError) return e.withPath(path);
  const code = (e as NodeJS.ErrnoException | undefined)?.code ?? 'EIO';
  switch (code) {
    case 'ENOENT':
    case 'ENOTDIR':
      return new MissingFileError('no such file', { path });
    case 'EACCES':
    case 'EPERM':
      return new PermissionError('permission denied', { path });
    case 'EISDIR':
      return new NotRegularFileError('is a directory, not a model file', { path });
    case 'ENOTREG':
    case 'ENODEV':
      return new NotRegularFileError('not a regular file', { path });
    case 'EEMPTY':
      return new EmptyFileError('file is empty', { path, expected: '> 0 bytes', actual: 0 });
    case 'ERR_CLOSED':
      return new ClosedError('the mapping was closed', { path });
    case 'ERR_OUT_OF_RANGE':
      return new OutOfRangeError((e as Error).message, { path });
    default:
      return new IoError((e as Error).message ?? 'I/O error', { path, actual: code });
  }
}
