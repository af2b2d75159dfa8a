import { FloatType, Q40_BLOCK_BYTES, Q80_BLOCK_BYTES } from './dtypes.js';
import { f32ToF16 } from './f16.js';
import type { HeaderKey, HeaderValues } from './header.js';
import type { ModelLayout, TensorInfo } from './layout.js';
import { ModelFileWriter, type ProgressCallback } from './model-writer.js';
import { Rng } from './rng.js';

export interface SyntheticModelOptions {
  /** Seed of the pseudo-random weights (default 0). Same seed + header → same bytes. */
  seed?: number;
  onProgress?: ProgressCallback;
  /** Header key order (default: ascending key id). */
  keyOrder?: readonly HeaderKey[];
  /** Replace an existing file (default false). */
  overwrite?: boolean;
  /** fsync before the final rename (default false: synthetic files are scratch data). */
  fsync?: boolean;
}

/** Encoded bytes generated per chunk (rounded down to an even number of blocks). */
const CHUNK_BYTES = 4 << 20;
/** Entries in a per-tensor table of scale codes; a random index picks one per block. */
const SCALE_TABLE = 1024;
/** Scales span 2^-2 … 2^+2 around the tensor's base scale (varied magnitude). */
const SCALE_OCTAVES = 4;
/** Standard deviation of a uniform nibble −8…7 and of a uniform int8 −127…127. */
const NIBBLE_STD = Math.sqrt((16 * 16 - 1) / 12);
const INT8_STD = Math.sqrt((255 * 255 - 1) / 12);

/**
 * Write a valid `.m` file with deterministic pseudo-random weights that look like real ones,
 * for any architecture and weight type the header describes (benchmarks, loader and engine
 * tests). Resolves with the layout once the file is complete and renamed into place.
 *
 * What the weights look like (each tensor has its own random stream, seeded by `seed` and the
 * tensor's index, so the bytes do not depend on buffer or chunk sizes):
 * - Q40 matrices: uniform random nibbles; per-block f16 scales of random sign whose magnitude
 *   varies over four octaves around 1/(4.6·√in), so decoded rows have a standard deviation
 *   near 1/√in (activations stay O(1) through the layers). Constant scales would flatter some
 *   kernels (see DESIGN.md).
 * - Q80 matrices: uniform int8 in −127…127 (never −128, which a real quantizer cannot produce
 *   and some SIMD sign tricks mishandle); positive f16 scales (max|x|/127 is never negative)
 *   varying over four octaves around 1/(73.6·√in).
 * - F32/F16 matrices: uniform floats of standard deviation 1/√in. Embedding: uniform in ±0.05.
 *   MoE router: standard deviation 1/√dim.
 * - Norm weights (att, ffn, q/k, final): uniform in 0.9…1.1.
 *
 * Q40/Q80 blocks are generated directly as bytes (random words, then the scales written over
 * each block's first two bytes), not by quantizing floats, so a Llama-2-7B-shaped Q40 file
 * (3.6 GiB) is written in seconds.
 */
export async function generateSyntheticModel(path: string, values: HeaderValues, options: SyntheticModelOptions = {}): Promise<ModelLayout> {
  const writer = await ModelFileWriter.open(path, values, {
    keyOrder: options.keyOrder,
    overwrite: options.overwrite,
    onProgress: options.onProgress,
    fsync: options.fsync ?? false,
    bufferBytes: 16 << 20,
  });
  try {
    const seed = options.seed ?? 0;
    const scratch = new ArrayBuffer(CHUNK_BYTES + 4);
    for (let i = 0; i < writer.layout.tensors.length; i++) {
      const t = writer.layout.tensors[i]!;
      await writeSyntheticTensor(writer, t, new Rng(seed, i), scratch);
    }
    return await writer.close();
  } catch (e) {
    await writer.abort();
    throw e;
  }
}

async function writeSyntheticTensor(writer: ModelFileWriter, t: TensorInfo, rng: Rng, scratch: ArrayBuffer): Promise<void> {
  if (t.dtype === FloatType.Q40 || t.dtype === FloatType.Q80) {
    await writeQuantized(writer, t, rng, scratch);
    return;
  }
  const n = t.shape.length === 1 ? t.shape[0]! : t.shape[0]! * t.shape[1]!;
  let lo: number;
  let hi: number;
  switch (t.kind) {
    case 'att_norm':
    case 'ffn_norm':
    case 'q_norm':
    case 'k_norm':
    case 'final_norm':
      [lo, hi] = [0.9, 1.1];
      break;
    case 'embedding':
      [lo, hi] = [-0.05, 0.05];
      break;
    default: {
      // Uniform in ±a has standard deviation a/√3.
      const a = Math.sqrt(3 / t.shape[1]!);
      [lo, hi] = [-a, a];
    }
  }
  const floats = new Float32Array(scratch, 0, CHUNK_BYTES / 4);
  const span = hi - lo;
  for (let done = 0; done < n; ) {
    const m = Math.min(floats.length, n - done);
    for (let j = 0; j < m; j++) floats[j] = lo + span * rng.nextFloat();
    await writer.writeTensorChunk(floats.subarray(0, m), t.name);
    done += m;
  }
}

/** Per-tensor table of f16 scale codes (magnitudes only; Q40 adds a random sign per block). */
function scaleTable(base: number): Uint16Array {
  const table = new Uint16Array(SCALE_TABLE);
  for (let i = 0; i < SCALE_TABLE; i++) {
    table[i] = f32ToF16(base * 2 ** ((SCALE_OCTAVES * i) / (SCALE_TABLE - 1) - SCALE_OCTAVES / 2));
  }
  return table;
}

async function writeQuantized(writer: ModelFileWriter, t: TensorInfo, rng: Rng, scratch: ArrayBuffer): Promise<void> {
  const isQ40 = t.dtype === FloatType.Q40;
  const bpb = isQ40 ? Q40_BLOCK_BYTES : Q80_BLOCK_BYTES;
  const totalBlocks = t.byteLength / bpb;
  const inFeatures = t.shape[1]!;
  const table = scaleTable(1 / (Math.sqrt(inFeatures) * (isQ40 ? NIBBLE_STD : INT8_STD)));
  // A second stream for the scales, so the payload stream advances by whole words per chunk.
  const scaleRng = new Rng(rng.nextU32(), 0x5ca1e);
  // Even block counts keep every chunk a multiple of 4 bytes (18·2, 34·2), so the word fill
  // never straddles chunks and the bytes do not depend on the chunk size.
  const chunkBlocks = Math.floor(CHUNK_BYTES / (2 * bpb)) * 2;
  const words = new Uint32Array(scratch);
  const bytes = new Uint8Array(scratch);
  for (let b0 = 0; b0 < totalBlocks; b0 += chunkBlocks) {
    const nb = Math.min(chunkBlocks, totalBlocks - b0);
    const nbytes = nb * bpb;
    rng.fillU32(words.subarray(0, Math.ceil(nbytes / 4)));
    if (isQ40) {
      for (let b = 0, o = 0; b < nb; b++, o += bpb) {
        const r = scaleRng.nextU32();
        const h = table[r & (SCALE_TABLE - 1)]! | ((r >>> 16) & 0x8000);
        bytes[o] = h & 0xff;
        bytes[o + 1] = h >>> 8;
      }
    } else {
      for (let b = 0, o = 0; b < nb; b++, o += bpb) {
        const h = table[scaleRng.nextU32() & (SCALE_TABLE - 1)]!;
        bytes[o] = h & 0xff;
        bytes[o + 1] = h >>> 8;
        for (let k = o + 2; k < o + bpb; k++) if (bytes[k] === 0x80) bytes[k] = 0x81;
      }
    }
    await writer.writeTensorChunk(bytes.subarray(0, nbytes), t.name);
  }
}
