import type { ModelLayout } from '@airllm/format';
import {
  attachResidency,
  LayerResidency,
  MemoryMappedWeights,
  type ResidencyShared,
  type ResidencyStats,
  type SegmentLoadEvent,
  type SegmentLocation,
} from '@airllm/loader';

export type { SegmentLocation };

/**
 * Worker side of the weights: the engine names segments by layer index (0..nLayers−1) and the
 * head (final norm + classifier) by nLayers; the loader numbers the segments of the served
 * range from 0, head last.
 */
export interface WorkerWeightSource {
  acquire(layerOrHead: number): SegmentLocation;
  release(layerOrHead: number): void;
}

/** What compute workers receive to attach to the weights. */
export interface WeightsDescriptor {
  readonly residency: ResidencyShared;
  readonly firstLayer: number;
  readonly nLayers: number;
  readonly headSegment: number;
}

export interface WeightSourceOptions {
  mode: 'resident' | 'stream' | 'sequential';
  /** Bytes for stream / sequential mode. */
  budgetBytes?: number;
  /** Layers [firstLayer, endLayer) served, and whether the head segment is included. */
  firstLayer: number;
  endLayer: number;
  includeHead: boolean;
  onLoad?: (e: SegmentLoadEvent) => void;
}

/** Main side: the mapping, its residency cache and the embedding reader. */
export class WeightSource {
  private constructor(
    readonly weights: MemoryMappedWeights,
    readonly residency: LayerResidency,
    readonly descriptor: WeightsDescriptor,
  ) {}

  static async open(path: string, o: WeightSourceOptions): Promise<WeightSource> {
    const weights = await new MemoryMappedWeights(path).open();
    try {
      const layout = weights.layout;
      let budgetBytes = o.budgetBytes;
      if (o.mode === 'sequential' && budgetBytes === undefined) {
        // Load-then-compute through one slot: the budget is the largest segment.
        budgetBytes = Math.max(layout.layerBytes, o.includeHead ? layout.fileSize - layout.finalNorm.offset : 0);
      }
      const residency = await LayerResidency.create(weights, {
        mode: o.mode,
        budgetBytes,
        firstLayer: o.firstLayer,
        lastLayer: o.endLayer - 1,
        includeHead: o.includeHead,
        onLoad: o.onLoad,
      });
      const descriptor: WeightsDescriptor = {
        residency: residency.shared,
        firstLayer: o.firstLayer,
        nLayers: layout.header.nLayers,
        headSegment: o.includeHead ? o.endLayer - o.firstLayer : -1,
      };
      return new WeightSource(weights, residency, descriptor);
    } catch (e) {
      weights.close();
      throw e;
    }
  }

  get layout(): ModelLayout {
    return this.weights.layout;
  }

  /** Copy embedding row `token` (F32) into dst at dstOffset (read from the file, not kept resident). */
  embeddingRow(token: number, dst: Float32Array, dstOffset: number): void {
    const dim = this.layout.header.dim;
    this.weights.readRows(this.layout.embedding, token, 1, dst.subarray(dstOffset, dstOffset + dim));
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

export function attachWeightSource(d: WeightsDescriptor): WorkerWeightSource {
  const client = attachResidency(d.residency);
  const seg = (l: number): number => {
    if (l === d.nLayers) {
      if (d.headSegment < 0) throw new RangeError('this engine does not serve the head (final norm + classifier)');
      return d.headSegment;
    }
    const s = l - d.firstLayer;
    if (s < 0 || (d.headSegment >= 0 ? s >= d.headSegment : s >= client.segments.length)) {
      throw new RangeError(`layer ${l} is outside the layers this engine serves`);
    }
    return s;
  };
  return {
    acquire: (l) => client.acquire(seg(l)),
    release: (l) => client.release(seg(l)),
  };
}
