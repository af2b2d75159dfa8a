import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { fileError, FileSizeMismatchError, FormatError, InvalidValueError } from './errors.js';
import { LIMITS, parseModelHeader, type ModelHeader } from './header.js';
import { buildModelLayout, type ModelLayout } from './layout.js';

/** Largest possible header: magic + size + the maximum number of pairs. */
export const MAX_MODEL_HEADER_BYTES = 8 + 8 * LIMITS.maxHeaderPairs;

/** Open a path for reading, turning fs failures into typed errors naming the path. */
export function openForRead(path: string): { fd: number; size: number } {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    throw fileError(e, path);
  }
  const st = fstatSync(fd);
  if (!st.isFile()) {
    closeSync(fd);
    throw fileError({ code: st.isDirectory() ? 'EISDIR' : 'ENOTREG' }, path);
  }
  return { fd, size: st.size };
}

/** Read up to `length` bytes at `position` (fewer at end of file). */
export function readAt(fd: number, position: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, out, done, length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return done === length ? out : out.subarray(0, done);
}

export interface ModelFileInfo {
  readonly path: string;
  /** Actual size of the file on disk. */
  readonly actualSize: number;
  readonly header: ModelHeader;
  readonly layout: ModelLayout;
}

/**
 * Read a model file's header and build its layout. By default the file size must equal the
 * layout's exactly (as dllama requires); `allowSizeMismatch` returns the layout anyway so
 * `inspect` can show what is wrong.
 */
export function readModelFile(path: string, options: { allowSizeMismatch?: boolean } = {}): ModelFileInfo {
  const { fd, size } = openForRead(path);
  try {
    const head = readAt(fd, 0, Math.min(size, MAX_MODEL_HEADER_BYTES));
    let header: ModelHeader;
    let layout: ModelLayout;
    try {
      header = parseModelHeader(head);
      layout = buildModelLayout(header);
    } catch (e) {
      throw e instanceof FormatError ? e.withPath(path) : e;
    }
    if (!options.allowSizeMismatch) checkFileSize(layout, size, path);
    return { path, actualSize: size, header, layout };
  } finally {
    closeSync(fd);
  }
}

export function checkFileSize(layout: ModelLayout, actualSize: number, path?: string): void {
  if (actualSize === layout.fileSize) return;
  throw new FileSizeMismatchError(
    actualSize < layout.fileSize
      ? `file is ${layout.fileSize - actualSize} bytes shorter than its header's layout (truncated?)`
      : `file has ${actualSize - layout.fileSize} bytes after the last tensor`,
    { path, field: 'file size', offset: Math.min(actualSize, layout.fileSize), expected: layout.fileSize, actual: actualSize },
  );
}

/** Explicit dimensions, checked against the file's header (the seed's calculate_offsets). */
export interface OffsetDims {
  nLayers?: number;
  dim?: number;
  hiddenDim?: number;
}

/**
 * The seed's LayerOffsetCalculator: reads a model's header and answers where each layer's bytes
 * are. It is a thin view over the layout table ({@link buildModelLayout}).
 */
export class LayerOffsetCalculator {
  #layout: ModelLayout | undefined;

  constructor(readonly path: string) {}

  /** Read the header and compute every offset; explicit dims must agree with the header. */
  calculateOffsets(dims: OffsetDims = {}): ModelLayout {
    const { layout } = readModelFile(this.path);
    const h = layout.header;
    const check = (name: string, given: number | undefined, actual: number): void => {
      if (given !== undefined && given !== actual) {
        throw new InvalidValueError('explicit dimension disagrees with the model header', {
          path: this.path,
          field: name,
          expected: actual,
          actual: given,
        });
      }
    };
    check('n_layers', dims.nLayers, h.nLayers);
    check('dim', dims.dim, h.dim);
    check('hidden_dim', dims.hiddenDim, h.hiddenDim);
    this.#layout = layout;
    return layout;
  }

  get layout(): ModelLayout {
    return (this.#layout ??= this.calculateOffsets());
  }

  /** A `.m` layer is one contiguous range of the file. */
  getLayerOffset(layerId: number): { offset: number; size: number } {
    const layer = this.layout.layers[layerId];
    if (!Number.isInteger(layerId) || layer === undefined) {
      throw new RangeError(`layer ${layerId} out of range 0..${this.layout.layers.length - 1}`);
    }
    return { offset: layer.extents[0]!.offset, size: layer.size };
  }
}
