import { byteSize, checkedAdd, checkedMul, FloatType } from './dtypes.js';
import { FormatError, type ErrorDetails } from './errors.js';
import { ArchType, RopeType, type HiddenAct, type ModelHeader } from './header.js';

/**
 * What a tensor is, independent of its layer. `bq`, `bk`, `bv` (qwen2's q/k/v biases) are
 * optional tensors some formats carry; a `.m` file never has them.
 */
export type TensorKind =
  | 'embedding'
  | 'q'
  | 'k'
  | 'v'
  | 'bq'
  | 'bk'
  | 'bv'
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
  /** How this tensor's bytes encode numbers: what every reader of the tensor goes by. */
  readonly dtype: FloatType;
  /** [out, in] for matrices (row-major, rows are output features); [n] for vectors. */
  readonly shape: readonly number[];
  /** Absolute byte offset in the model file. */
  readonly offset: number;
  readonly byteLength: number;
}

/** A byte range of the model file: [offset, offset + size). */
export interface Extent {
  readonly offset: number;
  readonly size: number;
}

/**
 * The tensors read together, and where their bytes are: a layer, or the head. `extents` are
 * the file ranges that hold them, in file order, adjacent ranges merged (a `.m` layer is one
 * range; a GGUF layer can be several, and a tied head includes the embedding's range).
 */
export interface TensorGroup {
  readonly extents: readonly Extent[];
  /** Bytes of all the extents. */
  readonly size: number;
  readonly tensors: readonly TensorInfo[];
}

export interface LayerInfo extends TensorGroup {
  readonly layer: number;
}

/** Layers [start, end): how every package names a run of layers. */
export interface LayerRange {
  readonly start: number;
  readonly end: number;
}

/**
 * A model's hyper-parameters, whatever the file format: what the engine reads to size its
 * buffers and pick its forward pass. `configFromHeader` builds it for a `.m` file.
 */
export interface ModelConfig {
  readonly archType: ArchType;
  readonly dim: number;
  /** hidden_dim as stored (for MoE models not the experts' width; see ffDim). */
  readonly hiddenDim: number;
  /** FFN width the graph uses: the experts' width for MoE models. */
  readonly ffDim: number;
  readonly nLayers: number;
  readonly nHeads: number;
  readonly nKvHeads: number;
  readonly headDim: number;
  readonly qDim: number;
  readonly kvDim: number;
  readonly nExperts: number;
  readonly nActiveExperts: number;
  readonly vocabSize: number;
  readonly maxSeqLen: number;
  readonly hiddenAct: HiddenAct;
  readonly normEpsilon: number;
  readonly rope: {
    /** The pairing the graph uses (FALCON for qwen3 whatever a file says). */
    readonly type: RopeType;
    readonly theta: number;
    /** Llama-3.1 frequency scaling (factor 1: none). */
    readonly scaling: { readonly factor: number; readonly lowFreqFactor: number; readonly highFreqFactor: number; readonly origMaxSeqLen: number };
  };
  /** Per-head RMSNorm of q and k before rope (q_norm, k_norm tensors: qwen3). */
  readonly qkNorm: boolean;
  /** q/k/v carry biases (bq, bk, bv tensors: qwen2). */
  readonly qkvBias: boolean;
  /** The classifier is the embedding matrix (the head's wcls points at the embedding's bytes). */
  readonly tiedEmbeddings: boolean;
}

/**
 * Where every tensor of a model file is, for any file format: the single source of tensor
 * offsets. Plain data (no functions, no class instances), so it can be posted to worker threads
 * as it is; look tensors up with `findTensor` / `layerTensor`.
 */
export interface WeightsLayout {
  readonly config: ModelConfig;
  readonly tensors: readonly TensorInfo[];
  readonly layers: readonly LayerInfo[];
  /** final_norm + wcls: the tensors that turn the last hidden state into logits. */
  readonly head: TensorGroup;
  readonly embedding: TensorInfo;
  readonly finalNorm: TensorInfo;
  /** The classifier (with tied embeddings: the embedding's bytes under the name wcls). */
  readonly wcls: TensorInfo;
  /** Bytes of the largest layer (every `.m` layer has the same size). */
  readonly layerBytes: number;
  /** Offset of the first tensor byte. */
  readonly dataOffset: number;
  /** Bytes the tensors need: the file is at least this long. */
  readonly fileSize: number;
}

/**
 * A `.m` file's layout (FORMAT.md §b): every tensor in file order with its byte range, the
 * per-layer ranges, and the exact file size the header implies; plus the header it comes from.
 */
export interface ModelLayout extends WeightsLayout {
  readonly header: ModelHeader;
  /** The tensor called `name` (a non-enumerable method: posting the layout leaves it behind). */
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

/** The format-neutral hyper-parameters of a `.m` header. */
export function configFromHeader(h: ModelHeader): ModelConfig {
  return Object.freeze({
    archType: h.archType,
    dim: h.dim,
    hiddenDim: h.hiddenDim,
    ffDim: h.ffDim,
    nLayers: h.nLayers,
    nHeads: h.nHeads,
    nKvHeads: h.nKvHeads,
    headDim: h.headDim,
    qDim: h.qDim,
    kvDim: h.kvDim,
    nExperts: h.nExperts,
    nActiveExperts: h.nActiveExperts,
    vocabSize: h.vocabSize,
    maxSeqLen: h.maxSeqLen,
    hiddenAct: h.hiddenAct,
    normEpsilon: h.normEpsilon,
    rope: Object.freeze({
      type: h.ropeType,
      theta: h.ropeTheta,
      scaling: Object.freeze({
        factor: h.ropeScalingFactor,
        lowFreqFactor: h.ropeScalingLowFreqFactor,
        highFreqFactor: h.ropeScalingHighFreqFactor,
        origMaxSeqLen: h.ropeScalingOrigMaxSeqLen,
      }),
    }),
    qkNorm: h.archType === ArchType.QWEN3 || h.archType === ArchType.QWEN3_MOE,
    qkvBias: false,
    tiedEmbeddings: false,
  });
}

/**
 * The file ranges holding `tensors`, in file order; ranges that touch or overlap are merged,
 * and so are ranges at most `maxGap` bytes apart (alignment padding between tensors, read
 * along with them rather than splitting a layer into one extent per tensor).
 */
export function extentsOf(tensors: readonly TensorInfo[], maxGap = 0): Extent[] {
  const sorted = tensors.filter((t) => t.byteLength > 0).sort((a, b) => a.offset - b.offset);
  const out: { offset: number; size: number }[] = [];
  for (const t of sorted) {
    const last = out[out.length - 1];
    const end = t.offset + t.byteLength;
    if (last !== undefined && t.offset <= last.offset + last.size + maxGap) last.size = Math.max(last.size, end - last.offset);
    else out.push({ offset: t.offset, size: t.byteLength });
  }
  return out.map((e) => Object.freeze(e));
}

/** A layer or head record: its tensors with their extents. */
export function tensorGroup(tensors: readonly TensorInfo[], maxGap = 0): TensorGroup {
  const extents = Object.freeze(extentsOf(tensors, maxGap));
  return Object.freeze({ extents, size: extents.reduce((a, e) => a + e.size, 0), tensors: Object.freeze(tensors.slice()) });
}

/**
 * A layout from a list of tensors, for any format: layers are grouped by `tensor.layer`, the
 * head is final_norm + wcls (with tied embeddings, give a `wcls` entry that has the
 * embedding's offset and length). `maxGap` as in `extentsOf`.
 */
export function layoutFromTensors(
  config: ModelConfig,
  tensors: readonly TensorInfo[],
  options: { dataOffset: number; fileSize: number; maxGap?: number },
): WeightsLayout {
  const gap = options.maxGap ?? 0;
  const byLayer: TensorInfo[][] = Array.from({ length: config.nLayers }, () => []);
  const find = (kind: TensorKind): TensorInfo => {
    const t = tensors.find((x) => x.kind === kind && x.layer < 0);
    if (t === undefined) throw new RangeError(`the layout has no ${kind} tensor`);
    return t;
  };
  for (const t of tensors) {
    if (t.layer < 0) continue;
    const list = byLayer[t.layer];
    if (list === undefined) throw new RangeError(`tensor ${t.name} is in layer ${t.layer}, outside 0..${config.nLayers - 1}`);
    list.push(t);
  }
  const layers = byLayer.map((list, layer): LayerInfo => Object.freeze({ layer, ...tensorGroup(list, gap) }));
  const finalNorm = find('final_norm');
  const wcls = find('wcls');
  return Object.freeze({
    config,
    tensors: Object.freeze(tensors.slice()),
    layers: Object.freeze(layers),
    head: tensorGroup([finalNorm, wcls], gap),
    embedding: find('embedding'),
    finalNorm,
    wcls,
    layerBytes: layers.reduce((m, l) => Math.max(m, l.size), 0),
    dataOffset: options.dataOffset,
    fileSize: options.fileSize,
  });
}

/** Build the frozen layout table for a parsed header. */
export function buildModelLayout(header: ModelHeader): ModelLayout {
  const { dim: D, vocabSize: V, qDim, kvDim, ffDim: ff, headDim: hd, nExperts: E, weightType: WT } = header;
  const F32 = FloatType.F32;
  const config = configFromHeader(header);
  const b = new LayoutBuilder(header.headerSize);
  b.add('embedding', 'embedding', -1, -1, F32, [V, D]);
  for (let l = 0; l < header.nLayers; l++) {
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
    if (config.qkNorm) {
      b.add(p + 'q_norm', 'q_norm', l, -1, F32, [hd]);
      b.add(p + 'k_norm', 'k_norm', l, -1, F32, [hd]);
    }
    b.add(p + 'att_norm', 'att_norm', l, -1, F32, [D]);
    b.add(p + 'ffn_norm', 'ffn_norm', l, -1, F32, [D]);
  }
  b.add('final_norm', 'final_norm', -1, -1, F32, [D]);
  b.add('wcls', 'wcls', -1, -1, WT, [V, D]);
  const layout = layoutFromTensors(config, b.tensors, { dataOffset: header.headerSize, fileSize: b.offset });
  const byName = new Map(layout.tensors.map((t) => [t.name, t]));
  const tensor = (name: string): TensorInfo => {
    const t = byName.get(name);
    if (t === undefined) throw new RangeError(`no tensor named ${name}`);
    return t;
  };
  // Non-enumerable: structured clone (postMessage to a worker) skips it instead of failing.
  return Object.freeze(Object.defineProperty({ ...layout, header }, 'tensor', { value: tensor, enumerable: false })) as ModelLayout;
}

const indexes = new WeakMap<WeightsLayout, Map<string, TensorInfo>>();

/** Tensors by name: one index per layout object, built on first use in each thread. */
function indexOf(layout: WeightsLayout): Map<string, TensorInfo> {
  let index = indexes.get(layout);
  if (index === undefined) {
    index = new Map(layout.tensors.map((t) => [t.name, t]));
    indexes.set(layout, index);
  }
  return index;
}

/** The tensor called `name`. */
export function findTensor(layout: WeightsLayout, name: string): TensorInfo {
  const t = indexOf(layout).get(name);
  if (t === undefined) throw new RangeError(`no tensor named ${name}`);
  return t;
}

/** The tensor called `name`, or undefined (optional tensors such as q/k/v biases). */
export function findOptionalTensor(layout: WeightsLayout, name: string): TensorInfo | undefined {
  return indexOf(layout).get(name);
}

/** The named tensor of one layer, e.g. `layerTensor(layout, 3, 'wo')`. */
export function layerTensor(layout: WeightsLayout, layer: number, kind: TensorKind, expert = -1): TensorInfo {
  return findTensor(layout, expert >= 0 ? `layers.${layer}.experts.${expert}.${kind}` : `layers.${layer}.${kind}`);
}
