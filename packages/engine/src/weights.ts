import { DTYPES, FloatType, findOptionalTensor, findTensor, type LayerRange, type TensorInfo, type WeightsLayout } from '@airllm/format';
import {
  attachResidency,
  backendForMode,
  LayerResidency,
  MemoryMappedWeights,
  tensorBytesAt,
  tensorOffsetIn,
  tensorViewAt,
  type ResidencyClient,
  type ResidencyShared,
  type ResidencyStats,
  type SegmentInfo,
  type SegmentLoadEvent,
  type SegmentLocation,
} from '@airllm/loader';
import { UnsupportedModelError } from './errors.js';

/**
 * A weight matrix as the kernels take it: its bytes in its own dtype (a GGUF layer mixes
 * dtypes, so every matmul goes by its matrix's), row-major, `rows` outputs of `cols` inputs.
 */
export interface Matrix {
  readonly dtype: FloatType;
  readonly bytes: Uint8Array;
  readonly rows: number;
  readonly cols: number;
}

/** One layer's weights: read-only views into the mapped file (or a slot), owning nothing. */
export interface LayerWeights {
  readonly q: Matrix; // (qDim, dim)
  readonly k: Matrix; // (kvDim, dim)
  readonly v: Matrix; // (kvDim, dim)
  readonly wo: Matrix; // (dim, qDim)
  /** q/k/v biases (qwen2), when the model has them. */
  readonly bq: Float32Array | undefined; // (qDim)
  readonly bk: Float32Array | undefined; // (kvDim)
  readonly bv: Float32Array | undefined; // (kvDim)
  /** Dense FFN (absent in MoE layers). */
  readonly w1: Matrix | undefined; // (ff, dim) gate
  readonly w2: Matrix | undefined; // (dim, ff) down
  readonly w3: Matrix | undefined; // (ff, dim) up
  /** MoE: the router and the experts (absent in dense layers). */
  readonly router: Matrix | undefined; // (nExperts, dim)
  readonly experts: readonly { readonly w1: Matrix; readonly w2: Matrix; readonly w3: Matrix }[];
  readonly qNorm: Float32Array | undefined; // (headDim) qwen3
  readonly kNorm: Float32Array | undefined; // (headDim) qwen3
  readonly attNorm: Float32Array; // (dim)
  readonly ffnNorm: Float32Array; // (dim)
}

export interface HeadWeights {
  readonly finalNorm: Float32Array; // (dim)
  readonly wcls: Matrix; // (vocab, dim); with tied embeddings, the embedding's bytes
}

/** Where a segment's tensors are, while it is acquired: the loader's answer for one segment. */
interface Resident {
  readonly segment: SegmentInfo;
  readonly location: SegmentLocation;
}

/** Views of `t`'s bytes in a resident segment; `copied` says a vector had to be copied. */
class Views {
  copied = false;
  constructor(readonly r: Resident) {}

  #offset(t: TensorInfo): number {
    return tensorOffsetIn(this.r.segment.extents, this.r.location.extentOffsets, t);
  }

  matrix(t: TensorInfo): Matrix {
    if (t.shape.length !== 2) throw new UnsupportedModelError(`${t.name} should be a matrix, its shape is [${t.shape.join(', ')}]`);
    return { dtype: t.dtype, bytes: tensorBytesAt(this.r.location.buffer, this.#offset(t), t), rows: t.shape[0]!, cols: t.shape[1]! };
  }

  vector(t: TensorInfo): Float32Array {
    if (t.dtype !== FloatType.F32) throw new UnsupportedModelError(`${t.name} is ${DTYPES[t.dtype]?.name ?? t.dtype}; vectors must be F32`);
    const v = tensorViewAt(this.r.location.buffer, this.#offset(t), t) as Float32Array;
    if (v.buffer !== this.r.location.buffer) this.copied = true;
    return v;
  }
}

/**
 * The one place a layer's named views are built from the layout: which tensors the model has
 * (dense or MoE FFN, qk-norm, biases) comes from its config.
 */
export function layerWeights(layout: WeightsLayout, layer: number, r: Resident): { w: LayerWeights; copied: boolean } {
  const c = layout.config;
  const views = new Views(r);
  const p = `layers.${layer}.`;
  const t = (name: string): TensorInfo => findTensor(layout, p + name);
  const opt = (name: string): Float32Array | undefined => {
    const info = findOptionalTensor(layout, p + name);
    return info === undefined ? undefined : views.vector(info);
  };
  const moe = c.nExperts > 0;
  const w: LayerWeights = {
    q: views.matrix(t('q')),
    k: views.matrix(t('k')),
    v: views.matrix(t('v')),
    wo: views.matrix(t('wo')),
    bq: opt('bq'),
    bk: opt('bk'),
    bv: opt('bv'),
    w1: moe ? undefined : views.matrix(t('w1')),
    w2: moe ? undefined : views.matrix(t('w2')),
    w3: moe ? undefined : views.matrix(t('w3')),
    router: moe ? views.matrix(t('moe_gate')) : undefined,
    experts: moe
      ? Array.from({ length: c.nExperts }, (_, e) => ({
          w1: views.matrix(t(`experts.${e}.w1`)),
          w2: views.matrix(t(`experts.${e}.w2`)),
          w3: views.matrix(t(`experts.${e}.w3`)),
        }))
      : [],
    qNorm: c.qkNorm ? views.vector(t('q_norm')) : undefined,
    kNorm: c.qkNorm ? views.vector(t('k_norm')) : undefined,
    attNorm: views.vector(t('att_norm')),
    ffnNorm: views.vector(t('ffn_norm')),
  };
  return { w, copied: views.copied };
}

export function headWeights(layout: WeightsLayout, r: Resident): { w: HeadWeights; copied: boolean } {
  const views = new Views(r);
  const w: HeadWeights = { finalNorm: views.vector(layout.finalNorm), wcls: views.matrix(layout.wcls) };
  return { w, copied: views.copied };
}

/** What compute workers receive to attach to the weights (plain data: posted as workerData). */
export interface WeightsDescriptor {
  readonly residency: ResidencyShared;
  readonly layout: WeightsLayout;
}

export interface WeightSourceOptions {
  mode: 'resident' | 'stream' | 'sequential';
  /** Bytes for stream / sequential mode. */
  budgetBytes?: number;
  /** Layers served, and whether the head is. */
  layers: LayerRange;
  head: boolean;
  onLoad?: (e: SegmentLoadEvent) => void;
  /** Where the tensors are when the file is not `.m` (default: the `.m` header's layout). */
  layout?: WeightsLayout;
}

/** Main side of the weights: the mapping, its residency cache and the embedding reader. */
export class WeightSource {
  readonly #rowBytes: Uint8Array;

  private constructor(
    readonly weights: MemoryMappedWeights,
    readonly residency: LayerResidency,
    readonly descriptor: WeightsDescriptor,
  ) {
    const e = weights.layout.embedding;
    this.#rowBytes = e.dtype === FloatType.F32 ? new Uint8Array(0) : new Uint8Array(e.byteLength / e.shape[0]!);
  }

  static async open(path: string, o: WeightSourceOptions): Promise<WeightSource> {
    const weights = await new MemoryMappedWeights(path, { backend: backendForMode(o.mode), ...(o.layout ? { layout: o.layout } : {}) }).open();
    try {
      const layout = weights.layout;
      let budgetBytes = o.budgetBytes;
      if (o.mode === 'sequential' && budgetBytes === undefined) {
        // Load-then-compute through one slot: the budget is the largest segment.
        budgetBytes = Math.max(layout.layerBytes, o.head ? layout.head.size : 0);
      }
      const residency = await LayerResidency.create(weights, { mode: o.mode, budgetBytes, layers: o.layers, head: o.head, onLoad: o.onLoad });
      return new WeightSource(weights, residency, { residency: residency.shared, layout });
    } catch (e) {
      weights.close();
      throw e;
    }
  }

  get layout(): WeightsLayout {
    return this.weights.layout;
  }

  /**
   * Embedding row `token` as floats into dst at dstOffset, read from the file (not kept
   * resident). F32 rows are read straight into dst; other dtypes go through the dtype table's
   * reference dequantize.
   */
  embeddingRow(token: number, dst: Float32Array, dstOffset: number): void {
    const e = this.layout.embedding;
    const dim = e.shape[1]!;
    const out = dst.subarray(dstOffset, dstOffset + dim);
    if (e.dtype === FloatType.F32) return this.weights.readRows(e, token, 1, out);
    this.weights.readRows(e, token, 1, this.#rowBytes);
    DTYPES[e.dtype].dequantize(this.#rowBytes, out);
  }

  /** Load every pinned segment now (all of them in resident mode). */
  warmup(onProgress?: (loadedBytes: number, totalBytes: number) => void): Promise<void> {
    return this.residency.warmup(onProgress);
  }

  stats(): ResidencyStats {
    return this.residency.stats();
  }

  async close(): Promise<void> {
    try {
      await this.residency.close();
    } finally {
      this.weights.close();
    }
  }
}

/**
 * A compute worker's weights: `layer(l)` / `head()` wait until the segment is resident and
 * return its named views, `releaseLayer(l)` / `releaseHead()` give it back (one thread, after
 * every thread is done with it). Views are kept while the loader keeps the segment in the same
 * buffer; views that had to copy a vector are not kept, since a reused slot would make the copy
 * stale.
 */
export class ThreadWeights {
  readonly layout: WeightsLayout;
  readonly #client: ResidencyClient;
  readonly #layers = new Map<number, { location: SegmentLocation; w: LayerWeights }>();
  #head: { location: SegmentLocation; w: HeadWeights } | undefined;

  constructor(d: WeightsDescriptor) {
    this.layout = d.layout;
    this.#client = attachResidency(d.residency);
  }

  layer(l: number): LayerWeights {
    const location = this.#client.acquireLayer(l);
    const cached = this.#layers.get(l);
    if (cached && sameLocation(cached.location, location)) return cached.w;
    const segment = this.#client.segments[this.#client.segmentOfLayer(l)]!;
    const { w, copied } = layerWeights(this.layout, l, { segment, location });
    if (!copied) this.#layers.set(l, { location, w });
    return w;
  }

  releaseLayer(l: number): void {
    this.#client.releaseLayer(l);
  }

  head(): HeadWeights {
    const location = this.#client.acquireHead();
    const cached = this.#head;
    if (cached && sameLocation(cached.location, location)) return cached.w;
    const segment = this.#client.segments[this.#client.headSegment]!;
    const { w, copied } = headWeights(this.layout, { segment, location });
    if (!copied) this.#head = { location, w };
    return w;
  }

  releaseHead(): void {
    this.#client.releaseHead();
  }
}

/** The loader hands out one offsets array per segment and buffer, so identity is enough. */
function sameLocation(a: SegmentLocation, b: SegmentLocation): boolean {
  return a.buffer === b.buffer && a.extentOffsets === b.extentOffsets;
}
