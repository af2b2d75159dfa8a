import {
  AirllmError,
  EmptyFileError,
  FileAccessError,
  fileError as formatFileError,
  FileSizeMismatchError,
  IoError,
  MissingFileError,
  NotRegularFileError,
  PermissionError,
} from '@airllm/format';

/**
 * Loader errors are `AirllmError`s (from `@airllm/format`) with the same structured details
 * (`path`, `offset`, `field`, `expected`, `actual`) and a stable `code`. A file that cannot be
 * opened is one of format's file-access errors, re-exported here: `instanceof FileAccessError`
 * catches them all.
 */
export { AirllmError, FileAccessError, MissingFileError, PermissionError, NotRegularFileError, EmptyFileError, IoError, FileSizeMismatchError };

/** Something the loader was asked for that it cannot do; every class below extends it. */
export class LoaderError extends AirllmError {
  static override readonly code: string = 'AIRLLM_LOADER';
}
/** The file's size changed after it was opened (typically truncated while mapped). */
export class FileChangedError extends FileSizeMismatchError {
  static override readonly code = 'AIRLLM_FILE_CHANGED';
}
/** A byte range, row range, segment or layer outside what the file or residency holds. */
export class OutOfRangeError extends LoaderError {
  static override readonly code = 'AIRLLM_OUT_OF_RANGE';
}
/** The object was closed (or never opened) before this call. */
export class ClosedError extends LoaderError {
  static override readonly code = 'AIRLLM_CLOSED';
}
/** A call made out of protocol, e.g. `release` of a segment that is not acquired. */
export class StateError extends LoaderError {
  static override readonly code = 'AIRLLM_STATE';
}
/** The memory budget cannot hold the streaming slots (`expected` = the smallest budget that works). */
export class BudgetTooSmallError extends LoaderError {
  static override readonly code = 'AIRLLM_BUDGET_TOO_SMALL';
}
/** Every streaming slot is in use and a further segment was demanded (more in flight than slots). */
export class SlotsExhaustedError extends LoaderError {
  static override readonly code = 'AIRLLM_SLOTS_EXHAUSTED';
}
/** The native addon is missing or failed, and the mmap backend was required explicitly. */
export class NativeAddonError extends LoaderError {
  static override readonly code = 'AIRLLM_NATIVE_ADDON';
}
/**
 * Turn an fs or addon error into the typed error naming `path`: the addon's own codes for a
 * closed mapping and an out-of-range request here, everything else through format's one errno
 * mapping.
 */
export function fileError(e: unknown, path: string): AirllmError {
  switch ((e as NodeJS.ErrnoException | undefined)?.code) {
    case 'ERR_CLOSED':
      return new ClosedError('the mapping was closed', { path });
    case 'ERR_OUT_OF_RANGE':
      return new OutOfRangeError((e as Error).message, { path });
    default:
      return formatFileError(e, path);
  }
}

// Model hub (`hf:` specs, downloads into the model cache). `path` names the local file, `field`
// the remote one (`owner/repo@revision/file`) or the part of a spec that is wrong.

/** An `hf:` model spec that cannot be read (names what is wrong and the accepted form). */
export class HubSpecError extends LoaderError {
  static override readonly code = 'AIRLLM_HUB_SPEC';
}
/** The hub has no such repository, revision or file (HTTP 404). */
export class HubNotFoundError extends LoaderError {
  static override readonly code = 'AIRLLM_HUB_NOT_FOUND';
}
/** The hub refused the request: private or gated repository, missing or wrong token (HTTP 401/403). */
export class HubAuthError extends LoaderError {
  static override readonly code = 'AIRLLM_HUB_AUTH';
}
/**
 * The hub could not be reached or answered in a way this client cannot use: another HTTP
 * status, a dropped or stalled connection after the retries, metadata without a commit, size or
 * checksum. `actual` holds the HTTP status or the network error's code.
 */
export class HubHttpError extends LoaderError {
  static override readonly code = 'AIRLLM_HUB_HTTP';
}
/** A downloaded file's sha256 (or git blob sha1) differs from the hub's metadata; the bytes were discarded. */
export class ChecksumMismatchError extends LoaderError {
  static override readonly code = 'AIRLLM_CHECKSUM';
}
/** The server sent more or fewer bytes than the hub's metadata announced; nothing was kept as complete. */
export class DownloadSizeError extends LoaderError {
  static override readonly code = 'AIRLLM_DOWNLOAD_SIZE';
}
/** Not enough free space for a download (checked before it starts, and ENOSPC while writing). */
export class DiskFullError extends LoaderError {
  static override readonly code = 'AIRLLM_DISK_FULL';
}
