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

// Model hub (`hf:` specs, downloads into the model cache). `path` names the local file, `field`
// the remote one (`owner/repo@revision/file`) or the part of a spec that is wrong.

/** An `hf:` model spec that cannot be read (names what is wrong and the accepted form). */
export class HubSpecError extends FormatError {
  override readonly code = 'AIRLLM_HUB_SPEC';
}
/** The hub has no such repository, revision or file (HTTP 404). */
export class HubNotFoundError extends FormatError {
  override readonly code = 'AIRLLM_HUB_NOT_FOUND';
}
/** The hub refused the request: private or gated repository, missing or wrong token (HTTP 401/403). */
export class HubAuthError extends FormatError {
  override readonly code = 'AIRLLM_HUB_AUTH';
}
/**
 * The hub could not be reached or answered in a way this client cannot use: another HTTP
 * status, a dropped or stalled connection after the retries, metadata without a commit, size or
 * checksum. `actual` holds the HTTP status or the network error's code.
 */
export class HubHttpError extends FormatError {
  override readonly code = 'AIRLLM_HUB_HTTP';
}
/** A downloaded file's sha256 (or git blob sha1) differs from the hub's metadata; the bytes were discarded. */
export class ChecksumMismatchError extends FormatError {
  override readonly code = 'AIRLLM_CHECKSUM';
}
/** The server sent more or fewer bytes than the hub's metadata announced; nothing was kept as complete. */
export class DownloadSizeError extends FormatError {
  override readonly code = 'AIRLLM_DOWNLOAD_SIZE';
}
/** Not enough free space for a download (checked before it starts, and ENOSPC while writing). */
export class DiskFullError extends FormatError {
  override readonly code = 'AIRLLM_DISK_FULL';
}
