import { byteSize, FloatType } from '../dtypes.js';
import { parseModelHeader, writeModelHeader } from '../header.js';
import { configFromHeader, layoutFromTensors, type ModelConfig, type TensorInfo, type TensorKind, type WeightsLayout } from '../layout.js';
import { Rng } from '../rng.js';
import { TINY_LLAMA31 } from './tiny-models.js';

/**
 * A layout shaped like what GGUF files hold, not `.m`: tensors in a shuffled file order with
 * gaps between them (so every layer is several extents, interleaved with other layers'),
 * matrices of mixed dtypes in one layer, optional q/k/v biases, F32 vectors at offsets that are
 * not 4-byte aligned, and a tied head (wcls is the embedding's bytes, F32 unless `embedding`
 * says otherwise). Only the layout: write whatever bytes the test checks against, `fileSize` of
 * them.
 */
export function scatteredLayout(options: { seed?: number; dataOffset?: number; embedding?: FloatType } = {}): WeightsLayout {
  const rng = new Rng(options.seed ?? 7, 1);
  const header = parseModelHeader(writeModelHeader(TINY_LLAMA31));
  const config: ModelConfig = { ...configFromHeader(header), qkvBias: true, tiedEmbeddings: true };
  const { dim: D, qDim, kvDim, ffDim: ff, vocabSize: V } = config;
  type Spec = { name: string; kind: TensorKind; layer: number; dtype: FloatType; shape: number[] };
  const specs: Spec[] = [
    { name: 'embedding', kind: 'embedding', layer: -1, dtype: options.embedding ?? FloatType.F32, shape: [V, D] },
    { name: 'final_norm', kind: 'final_norm', layer: -1, dtype: FloatType.F32, shape: [D] },
  ];
  for (let l = 0; l < config.nLayers; l++) {
    const p = `layers.${l}.`;
    const mat = (kind: TensorKind, dtype: FloatType, rows: number, cols: number): Spec => ({ name: p + kind, kind, layer: l, dtype, shape: [rows, cols] });
    const vec = (kind: TensorKind, n: number): Spec => ({ name: p + kind, kind, layer: l, dtype: FloatType.F32, shape: [n] });
    specs.push(
      mat('q', FloatType.Q40, qDim, D),
      mat('k', FloatType.Q40, kvDim, D),
      mat('v', FloatType.Q80, kvDim, D),
      mat('wo', FloatType.Q40, D, qDim),
      mat('w1', FloatType.Q40, ff, D),
      mat('w2', FloatType.F16, D, ff),
      mat('w3', FloatType.Q80, ff, D),
      vec('bq', qDim),
      vec('bk', kvDim),
      vec('bv', kvDim),
      vec('att_norm', D),
      vec('ffn_norm', D),
    );
  }
  // Fisher-Yates with the seeded generator: a file order that interleaves the layers.
  for (let i = specs.length - 1; i > 0; i--) {
    const j = rng.nextU32() % (i + 1);
    [specs[i], specs[j]] = [specs[j]!, specs[i]!];
  }
  const gaps = [0, 2, 6, 32, 4099];
  const tensors: TensorInfo[] = [];
  let offset = options.dataOffset ?? 4096 + 10;
  for (const s of specs) {
    offset += gaps[rng.nextU32() % gaps.length]!;
    const byteLength = byteSize(s.dtype, s.shape.reduce((a, b) => a * b, 1), s.name);
    tensors.push(Object.freeze({ ...s, expert: -1, shape: Object.freeze(s.shape), offset, byteLength }));
    offset += byteLength;
  }
  const embedding = tensors.find((t) => t.kind === 'embedding')!;
  tensors.push(Object.freeze({ ...embedding, name: 'wcls', kind: 'wcls' }));
  return layoutFromTensors(config, tensors, { dataOffset: options.dataOffset ?? 4096 + 10, fileSize: offset + 3 });
}
