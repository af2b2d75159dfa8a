import { byteSize, checkedAdd, checkedMul, FloatType } from './dtypes.js';
import { FormatError, type ErrorDetails } from './errors.js';
import { ArchType, type ModelHeader } from './header.js';

/** What a tensor is, independent of its layer. */
export type TensorKind =
  | 'embedding'
  | 'q'
  | 'k'
  | 'v'
  | 'wo'
  | 'w1'
  | 'w2'
  | 'w3'
  | 'moe_gate'
  | 'q_norm'
  | 'k_norm'
  | 'att_norm'
  | 'ffn_norm'
  | 'final_norm'
  | 'wcls';

export interface TensorInfo {
  /** Unique name: `embedding`, `layers.3.q`, `layers.3.experts.7.w1`, `final_norm`, `wcls`. */
  readonly name: string;
  readonly kind: TensorKind;
  /** Layer index, or -1 for tensors outside the layers. */
  readonly layer: number;
  /** Expert index for MoE expert weights, or -1. */
  readonly expert: number;
  readonly dtype: FloatType;
  /** [out, in] for matrices (row-major, rows are output features); [n] for vectors. */
  readonly shape: readonly number[];
  /** Absolute byte offset in the `.m` file. */
  readonly offset: number;
  readonly byteLength: number;
}

export interface LayerInfo {
  readonly layer: number;
  /** Absolute byte offset of the layer's first tensor. */
  readonly offset: number;
  /** Bytes of all the layer's tensors (contiguous). */
  readonly size: number;
  readonly tensors: readonly TensorInfo[];
}

/**
 * The single source of tensor offsets (FORMAT.md §b): every tensor in file order with its byte
 * range, the per-layer ranges, and the exact file size the header implies.
 */
export interface ModelLayout {
  readonly header: ModelHeader;
  readonly tensors: readonly TensorInfo[];
  readonly layers: readonly LayerInfo[];
  readonly embedding: TensorInfo;
  readonly finalNorm: TensorInfo;
  readonly wcls: TensorInfo;
  /** Bytes of one layer (all layers are the same size). */
  readonly layerBytes: number;
  /** Offset of the first tensor (= header size). */
  readonly dataOffset: number;
  readonly fileSize: number;
  tensor(name: string): TensorInfo;
}

class LayoutBuilder {
  readonly tensors: TensorInfo[] = [];
  constructor(public offset: number) {}

  add(name: string, kind: TensorKind, layer: number, expert: number, dtype: FloatType, shape: number[]): TensorInfo {
    let byteLength: number;
    let end: number;
    try {
      const n = shape.length === 1 ? shape[0]! : checkedMul(shape[0]!, shape[1]!, name);
      byteLength = byteSize(dtype, n, name);
      end = checkedAdd(this.offset, byteLength, name);
    } catch (e) {
      // Name where in the (hypothetical) file the arithmetic gave up.
      if (e instanceof FormatError && e.offset === undefined) {
        const Ctor = e.constructor as new (m: string, d: ErrorDetails) => FormatError;
        throw new Ctor(e.reason, { ...e.details, offset: this.offset });
      }
      throw e;
    }
    const t: TensorInfo = Object.freeze({
      name,
      kind,
      layer,
      expert,
      dtype,
      shape: Object.freeze(shape),
      offset: this.offset,
      byteLength,
    });
    this.offset = end;
    this.tensors.push(t);
    return t;
  }
}

/** Build the frozen layout table for a parsed header. */
export function buildModelLayout(header: ModelHeader): ModelLayout {
  const { dim: D, vocabSize: V, qDim, kvDim, ffDim: ff, headDim: hd, nExperts: E, weightType: WT } = header;
  const F32 = FloatType.F32;
  const b = new LayoutBuilder(header.headerSize);
  const embedding = b.add('embedding', 'embedding', -1, -1, F32, [V, D]);
  const layers: LayerInfo[] = [];
  const hasQkNorm = header.archType === ArchType.QWEN3 || header.archType === ArchType.QWEN3_MOE;
  for (let l = 0; l < header.nLayers; l++) {
    const start = b.offset;
    const first = b.tensors.length;
    const p = `layers.${l}.`;
    b.add(p + 'q', 'q', l, -1, WT, [qDim, D]);
    b.add(p + 'k', 'k', l, -1, WT, [kvDim, D]);
    b.add(p + 'v', 'v', l, -1, WT, [kvDim, D]);
    b.add(p + 'wo', 'wo', l, -1, WT, [D, qDim]);
    if (E > 0) {
      b.add(p + 'moe_gate', 'moe_gate', l, -1, F32, [E, D]);
      for (let e = 0; e < E; e++) {
        const pe = `${p}experts.${e}.`;
        b.add(pe + 'w1', 'w1', l, e, WT, [ff, D]);
        b.add(pe + 'w2', 'w2', l, e, WT, [D, ff]);
        b.add(pe + 'w3', 'w3', l, e, WT, [ff, D]);
      }
    } else {
      b.add(p + 'w1', 'w1', l, -1, WT, [ff, D]);
      b.add(p + 'w2', 'w2', l, -1, WT, [D, ff]);
      b.add(p + 'w3', 'w3', l, -1, WT, [ff, D]);
    }
    if (hasQkNorm) {
      b.add(p + 'q_norm', 'q_norm', l, -1, F32, [hd]);
      b.add(p + 'k_norm', 'k_norm', l, -1, F32, [hd]);
    }
    b.add(p + 'att_norm', 'att_norm', l, -1, F32, [D]);
    b.add(p + 'ffn_norm', 'ffn_norm', l, -1, F32, [D]);
    layers.push(
      Object.freeze({
        layer: l,
        offset: start,
        size: b.offset - start,
        tensors: Object.freeze(b.tensors.slice(first)),
      }),
    );
  }
  const finalNorm = b.add('final_norm', 'final_norm', -1, -1, F32, [D]);
  const wcls = b.add('wcls', 'wcls', -1, -1, WT, [V, D]);
  const byName = new Map(b.tensors.map((t) => [t.name, t]));
  return Object.freeze({
    header,
    tensors: Object.freeze(b.tensors),
    layers: Object.freeze(layers),
    embedding,
    finalNorm,
    wcls,
    layerBytes: layers[0]!.size,
    dataOffset: header.headerSize,
    fileSize: b.offset,
    tensor(name: string): TensorInfo {
      const t = byName.get(name);
      if (t === undefined) throw new RangeError(`no tensor named ${name}`);
      return t;
    },
  });
}

/** The named tensor of one layer, e.g. `layerTensor(layout, 3, 'wo')`. */
export function layerTensor(layout: ModelLayout, layer: number, kind: TensorKind, expert = -1): TensorInfo {
  return layout.tensor(expert >= 0 ? `layers.${layer}.experts.${expert}.${kind}` : `layers.${layer}.${kind}`);
}
