import {
  BadMagicError,
  InvalidValueError,
  OldFormatError,
  TruncatedError,
  UnknownKeyError,
} from './errors.js';
import { FloatType, dtypeInfo, isModelFileFloatType } from './dtypes.js';

/** `.m` magic, i32 0x0A00ABCD (bytes CD AB 00 0A). */
export const MODEL_MAGIC = 0x0a00abcd;
/** Magics of the older formats dllama rejects as "old model format". */
export const OLD_MODEL_MAGICS: readonly number[] = [0xabcd00, 0xabcd01];

/** Header key ids (FORMAT.md §a.2). */
export enum HeaderKey {
  Version = 0,
  ArchType = 1,
  Dim = 2,
  HiddenDim = 3,
  NLayers = 4,
  NHeads = 5,
  NKvHeads = 6,
  NExperts = 7,
  NActiveExperts = 8,
  VocabSize = 9,
  MaxSeqLen = 10,
  HiddenAct = 11,
  RopeTheta = 12,
  WeightsFloatType = 13,
  RopeScalingFactor = 14,
  RopeScalingLowFreqFactor = 15,
  RopeScalingHighFreqFactor = 16,
  RopeScalingOrigMaxSeqLen = 17,
  RopeType = 18,
  HeadDim = 19,
  NormEpsilon = 20,
  MoeHiddenDim = 21,
}

/** Converter spellings, used in messages and in `inspect --json`. */
export const HEADER_KEY_NAMES: Readonly<Record<HeaderKey, string>> = {
  [HeaderKey.Version]: 'version',
  [HeaderKey.ArchType]: 'arch_type',
  [HeaderKey.Dim]: 'dim',
  [HeaderKey.HiddenDim]: 'hidden_dim',
  [HeaderKey.NLayers]: 'n_layers',
  [HeaderKey.NHeads]: 'n_heads',
  [HeaderKey.NKvHeads]: 'n_kv_heads',
  [HeaderKey.NExperts]: 'n_experts',
  [HeaderKey.NActiveExperts]: 'n_active_experts',
  [HeaderKey.VocabSize]: 'vocab_size',
  [HeaderKey.MaxSeqLen]: 'max_seq_len',
  [HeaderKey.HiddenAct]: 'hidden_act',
  [HeaderKey.RopeTheta]: 'rope_theta',
  [HeaderKey.WeightsFloatType]: 'weights_float_type',
  [HeaderKey.RopeScalingFactor]: 'rope_scaling_factor',
  [HeaderKey.RopeScalingLowFreqFactor]: 'rope_scaling_low_freq_factor',
  [HeaderKey.RopeScalingHighFreqFactor]: 'rope_scaling_high_freq_factory',
  [HeaderKey.RopeScalingOrigMaxSeqLen]: 'rope_scaling_orig_max_seq_len',
  [HeaderKey.RopeType]: 'rope_type',
  [HeaderKey.HeadDim]: 'head_dim',
  [HeaderKey.NormEpsilon]: 'norm_epsilon',
  [HeaderKey.MoeHiddenDim]: 'moe_hidden_dim',
};

export enum ArchType {
  LLAMA = 0xabcd00,
  QWEN3 = 0xabcd01,
  QWEN3_MOE = 0xabcd02,
}

export enum RopeType {
  LLAMA = 0,
  FALCON = 1,
  LLAMA3_1 = 2,
}

export enum HiddenAct {
  GELU = 0,
  SILU = 1,
}

/** `norm_epsilon` codes: 5 → 1e-5, 6 → 1e-6. */
export const NORM_EPSILON_CODES: Readonly<Record<number, number>> = { 5: 1e-5, 6: 1e-6 };

/**
 * Limits on untrusted header values. They are far above any published model (Llama-3.1-405B:
 * dim 16384, 126 layers, vocab 128256; Qwen3-235B-A22B: 128 experts, 94 layers) and keep every
 * single value small enough to multiply safely. Combinations can still describe a layout beyond
 * 2^53 bytes (e.g. thousands of experts at the maximum widths): the layout builder does every
 * size computation with checked arithmetic and reports that as a `SizeOverflowError`, so no
 * inexact offset can ever be produced. The file-size check then rejects anything that does
 * not match the real file.
 */
export const LIMITS = Object.freeze({
  maxHeaderPairs: 64,
  maxDim: 1 << 17,
  maxHiddenDim: 1 << 20,
  maxLayers: 1 << 12,
  maxHeads: 1 << 12,
  maxHeadDim: 1 << 12,
  maxVocab: 1 << 22,
  maxSeqLen: 1 << 24,
  maxExperts: 1 << 12,
});

/** The parsed header: every key with its default applied, plus derived sizes. */
export interface ModelHeader {
  /** Total header length in bytes (magic + size field + pairs); tensor data starts here. */
  readonly headerSize: number;
  /** The pairs exactly as stored, in file order (for byte-exact rewriting and inspection). */
  readonly pairs: readonly (readonly [key: HeaderKey, value: number])[];

  readonly version: number;
  readonly archType: ArchType;
  readonly dim: number;
  readonly hiddenDim: number;
  readonly nLayers: number;
  readonly nHeads: number;
  readonly nKvHeads: number;
  readonly nExperts: number;
  readonly nActiveExperts: number;
  readonly vocabSize: number;
  readonly maxSeqLen: number;
  readonly hiddenAct: HiddenAct;
  readonly ropeTheta: number;
  readonly weightType: FloatType;
  readonly ropeScalingFactor: number;
  readonly ropeScalingLowFreqFactor: number;
  readonly ropeScalingHighFreqFactor: number;
  readonly ropeScalingOrigMaxSeqLen: number;
  /** The rope type the graph uses: FALCON for QWEN3/QWEN3_MOE whatever the file says. */
  readonly ropeType: RopeType;
  /** The rope_type value stored in the file (or its default). */
  readonly ropeTypeInFile: RopeType;
  readonly normEpsilonCode: number;
  readonly normEpsilon: number;
  readonly moeHiddenDim: number;

  // Derived (FORMAT.md §a.2).
  readonly headDim: number;
  readonly qDim: number;
  readonly kvDim: number;
  /** FFN width used by the graph: moe_hidden_dim for QWEN3_MOE, hidden_dim otherwise. */
  readonly ffDim: number;
}

/** Values a caller provides to build a header; absent keys are not written. */
export type HeaderValues = Partial<Record<HeaderKey, number>>;

function readI32(bytes: Uint8Array, offset: number): number {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getInt32(offset, true);
}

export function archName(arch: number): string {
  return ArchType[arch] ?? `unknown(0x${arch.toString(16)})`;
}

/**
 * Parse and validate a `.m` header from the first bytes of a file (at least `headerSize` of
 * them). Nothing is allocated from a claimed size before it is checked against `bytes.length`.
 */
export function parseModelHeader(bytes: Uint8Array): ModelHeader {
  if (bytes.length < 8) {
    throw new TruncatedError('file too short for a model header', {
      field: 'magic',
      offset: 0,
      expected: 'at least 8 bytes',
      actual: bytes.length,
    });
  }
  const magic = readI32(bytes, 0);
  if (OLD_MODEL_MAGICS.includes(magic)) {
    throw new OldFormatError('old Distributed-Llama model format, reconvert the model', {
      field: 'magic',
      offset: 0,
      actual: `0x${magic.toString(16)}`,
    });
  }
  if (magic !== MODEL_MAGIC) {
    throw new BadMagicError('not a Distributed-Llama model file', {
      field: 'magic',
      offset: 0,
      expected: '0x0a00abcd',
      actual: `0x${(magic >>> 0).toString(16)}`,
    });
  }
  const headerSize = readI32(bytes, 4);
  const maxHeader = 8 + 8 * LIMITS.maxHeaderPairs;
  if (headerSize < 8 || headerSize > maxHeader || (headerSize - 8) % 8 !== 0) {
    throw new InvalidValueError('header size must be 8 + 8·pairs', {
      field: 'headerSize',
      offset: 4,
      expected: `8..${maxHeader}, a multiple of 8`,
      actual: headerSize,
    });
  }
  if (bytes.length < headerSize) {
    throw new TruncatedError('header is cut short', {
      field: 'headerSize',
      offset: bytes.length,
      expected: `${headerSize} bytes`,
      actual: bytes.length,
    });
  }
  const pairs: [HeaderKey, number][] = [];
  const values = new Map<HeaderKey, number>();
  const offsets = new Map<HeaderKey, number>();
  for (let o = 8; o < headerSize; o += 8) {
    const key = readI32(bytes, o);
    const value = readI32(bytes, o + 4);
    if (!(key in HEADER_KEY_NAMES)) {
      throw new UnknownKeyError('unsupported header key', { field: `key ${key}`, offset: o });
    }
    if (values.has(key)) {
      throw new InvalidValueError('header key appears twice', {
        field: HEADER_KEY_NAMES[key as HeaderKey],
        offset: o,
      });
    }
    pairs.push([key, value]);
    values.set(key, value);
    offsets.set(key, o + 4);
  }
  return validateHeader(headerSize, pairs, values, offsets);
}

function validateHeader(
  headerSize: number,
  pairs: [HeaderKey, number][],
  values: Map<HeaderKey, number>,
  offsets: Map<HeaderKey, number>,
): ModelHeader {
  const bad = (key: HeaderKey, reason: string, expected: string | number, actual?: number): never => {
    throw new InvalidValueError(reason, {
      field: HEADER_KEY_NAMES[key],
      // The value's own offset; for an absent key, the start of the pair list it is missing from.
      offset: offsets.get(key) ?? 8,
      expected,
      actual: actual ?? values.get(key) ?? 'absent',
    });
  };
  const get = (key: HeaderKey, dflt?: number): number => {
    const v = values.get(key);
    if (v !== undefined) return v;
    if (dflt === undefined) bad(key, 'required header key is missing', 'present');
    return dflt!;
  };
  const ranged = (key: HeaderKey, min: number, max: number, dflt?: number): number => {
    const v = get(key, dflt);
    if (v < min || v > max) bad(key, 'value out of range', `${min}..${max}`);
    return v;
  };

  const archType = get(HeaderKey.ArchType, 0);
  if (!(archType in ArchType)) {
    bad(HeaderKey.ArchType, 'unknown architecture', 'LLAMA 0xabcd00, QWEN3 0xabcd01 or QWEN3_MOE 0xabcd02');
  }
  const weightType = get(HeaderKey.WeightsFloatType);
  // BF16 and the K-quants are FloatType values too, but not ones a .m file may declare.
  if (!isModelFileFloatType(weightType)) bad(HeaderKey.WeightsFloatType, 'unknown float type', '0..3');

  const dim = ranged(HeaderKey.Dim, 1, LIMITS.maxDim);
  const nLayers = ranged(HeaderKey.NLayers, 1, LIMITS.maxLayers);
  const nHeads = ranged(HeaderKey.NHeads, 1, LIMITS.maxHeads);
  const nKvHeads = ranged(HeaderKey.NKvHeads, 1, LIMITS.maxHeads);
  const vocabSize = ranged(HeaderKey.VocabSize, 1, LIMITS.maxVocab);
  const maxSeqLen = ranged(HeaderKey.MaxSeqLen, 1, LIMITS.maxSeqLen);
  const nExperts = ranged(HeaderKey.NExperts, 0, LIMITS.maxExperts, 0);
  const nActiveExperts = ranged(HeaderKey.NActiveExperts, 0, LIMITS.maxExperts, 0);
  const moeHiddenDim = ranged(HeaderKey.MoeHiddenDim, 0, LIMITS.maxHiddenDim, 0);
  const isMoe = archType === ArchType.QWEN3_MOE;
  const hiddenDim = ranged(HeaderKey.HiddenDim, isMoe ? 0 : 1, LIMITS.maxHiddenDim, isMoe ? 0 : undefined);
  const version = get(HeaderKey.Version, 0);
  const hiddenAct = ranged(HeaderKey.HiddenAct, 0, 1, HiddenAct.SILU) as HiddenAct;
  const ropeTheta = ranged(HeaderKey.RopeTheta, 1, 0x7fffffff, 10000);
  const ropeScalingFactor = ranged(HeaderKey.RopeScalingFactor, 0, 0x7fffffff, 1);
  const ropeScalingLowFreqFactor = ranged(HeaderKey.RopeScalingLowFreqFactor, 0, 0x7fffffff, 0);
  const ropeScalingHighFreqFactor = ranged(HeaderKey.RopeScalingHighFreqFactor, 0, 0x7fffffff, 0);
  const ropeScalingOrigMaxSeqLen = ranged(HeaderKey.RopeScalingOrigMaxSeqLen, 0, 0x7fffffff, 0);
  const ropeTypeInFile = ranged(HeaderKey.RopeType, 0, 2, RopeType.LLAMA) as RopeType;
  const normEpsilonCode = get(HeaderKey.NormEpsilon, 5);
  const normEpsilon = NORM_EPSILON_CODES[normEpsilonCode];
  if (normEpsilon === undefined) bad(HeaderKey.NormEpsilon, 'unknown epsilon code', '5 (1e-5) or 6 (1e-6)');

  if (nHeads % nKvHeads !== 0) {
    bad(HeaderKey.NKvHeads, 'n_heads must be a multiple of n_kv_heads', `a divisor of ${nHeads}`);
  }
  let headDim = get(HeaderKey.HeadDim, 0);
  if (headDim === 0) {
    if (dim % nHeads !== 0) {
      bad(HeaderKey.NHeads, 'head_dim is absent and dim is not a multiple of n_heads', `a divisor of ${dim}`);
    }
    headDim = dim / nHeads;
  }
  if (headDim < 0 || headDim > LIMITS.maxHeadDim) bad(HeaderKey.HeadDim, 'value out of range', `1..${LIMITS.maxHeadDim}`, headDim);
  if (headDim % 2 !== 0) bad(HeaderKey.HeadDim, 'head_dim must be even (RoPE rotates pairs)', 'an even number', headDim);

  // The MoE block is present iff n_experts > 0; the MoE graph runs only for QWEN3_MOE.
  if (isMoe) {
    if (nExperts === 0) bad(HeaderKey.NExperts, 'QWEN3_MOE needs experts', '> 0');
    if (nActiveExperts < 1 || nActiveExperts > nExperts) {
      bad(HeaderKey.NActiveExperts, 'active experts must be 1..n_experts', `1..${nExperts}`, nActiveExperts);
    }
    if (moeHiddenDim === 0) bad(HeaderKey.MoeHiddenDim, 'QWEN3_MOE needs moe_hidden_dim', '> 0');
  } else if (nExperts !== 0) {
    bad(HeaderKey.NExperts, 'experts are only supported for QWEN3_MOE', 0);
  }

  const qDim = headDim * nHeads;
  const kvDim = headDim * nKvHeads;
  const ffDim = isMoe ? moeHiddenDim : hiddenDim;
  if (qDim > LIMITS.maxHiddenDim) bad(HeaderKey.NHeads, 'head_dim · n_heads is too large', `≤ ${LIMITS.maxHiddenDim}`, qDim);

  // Quantized rows must be whole blocks: every row length (in-features) is dim, qDim or ff.
  const block = dtypeInfo(weightType as FloatType).blockSize;
  if (block > 1) {
    const rowKeys: [HeaderKey, number, string][] = [
      [HeaderKey.Dim, dim, 'dim'],
      [HeaderKey.HeadDim, qDim, 'head_dim · n_heads'],
      [isMoe ? HeaderKey.MoeHiddenDim : HeaderKey.HiddenDim, ffDim, 'FFN width'],
    ];
    for (const [key, n, what] of rowKeys) {
      if (n % block !== 0) {
        bad(key, `${what} must be a multiple of ${block} for quantized weights (rows are whole blocks)`, `a multiple of ${block}`, n);
      }
    }
  }

  const isQwen = archType === ArchType.QWEN3 || isMoe;
  return Object.freeze({
    headerSize,
    pairs: Object.freeze(pairs.map((p) => Object.freeze([...p] as const))),
    version,
    archType: archType as ArchType,
    dim,
    hiddenDim,
    nLayers,
    nHeads,
    nKvHeads,
    nExperts,
    nActiveExperts,
    vocabSize,
    maxSeqLen,
    hiddenAct,
    ropeTheta,
    weightType: weightType as FloatType,
    ropeScalingFactor,
    ropeScalingLowFreqFactor,
    ropeScalingHighFreqFactor,
    ropeScalingOrigMaxSeqLen,
    ropeType: isQwen ? RopeType.FALCON : ropeTypeInFile,
    ropeTypeInFile,
    normEpsilonCode,
    normEpsilon: normEpsilon!,
    moeHiddenDim,
    headDim,
    qDim,
    kvDim,
    ffDim,
  });
}

/** Key order the official convert-llama.py wrote for stories260K (FORMAT.md §a.2). */
export const CONVERT_LLAMA_KEY_ORDER: readonly HeaderKey[] = [
  HeaderKey.Dim,
  HeaderKey.NLayers,
  HeaderKey.NHeads,
  HeaderKey.NKvHeads,
  HeaderKey.VocabSize,
  HeaderKey.MaxSeqLen,
  HeaderKey.ArchType,
  HeaderKey.NExperts,
  HeaderKey.NActiveExperts,
  HeaderKey.WeightsFloatType,
  HeaderKey.HiddenDim,
];

/**
 * Serialize header pairs: first the keys of `order` that have a value, then any remaining
 * keys in ascending id order (JavaScript orders integer-like object keys ascending, so without
 * `order` the pairs come sorted by key id). The result is validated by parsing it back, so a
 * writer can never emit a header our reader (or dllama's) refuses.
 */
export function writeModelHeader(values: HeaderValues, order?: readonly HeaderKey[]): Uint8Array {
  const given = Object.keys(values)
    .map(Number)
    .filter((k) => values[k as HeaderKey] !== undefined) as HeaderKey[];
  for (const k of given) {
    const v = values[k]!;
    if (!Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) {
      // Every stored value is an i32; refuse instead of letting setInt32 wrap it silently.
      throw new InvalidValueError('header values are 32-bit signed integers', {
        field: HEADER_KEY_NAMES[k] ?? `key ${k}`,
        expected: 'an integer in -2^31..2^31-1',
        actual: v,
      });
    }
  }
  const present = [...new Set(order ?? [])].filter((k) => values[k] !== undefined);
  const all = [...present, ...given.filter((k) => !present.includes(k))];
  const bytes = new Uint8Array(8 + 8 * all.length);
  const v = new DataView(bytes.buffer);
  v.setInt32(0, MODEL_MAGIC, true);
  v.setInt32(4, bytes.length, true);
  all.forEach((k, i) => {
    v.setInt32(8 + 8 * i, k, true);
    v.setInt32(12 + 8 * i, values[k]!, true);
  });
  parseModelHeader(bytes);
  return bytes;
}

/** The header's pairs as a key → value record (inverse of writeModelHeader). */
export function headerValues(header: ModelHeader): HeaderValues {
  const out: HeaderValues = {};
  for (const [k, v] of header.pairs) out[k] = v;
  return out;
}
