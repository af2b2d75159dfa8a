import { describe, expect, it } from 'vitest';
import {
  ArchType,
  buildModelLayout,
  extentsOf,
  findOptionalTensor,
  findTensor,
  FloatType,
  HeaderKey,
  layerTensor,
  layoutFromTensors,
  parseModelHeader,
  RopeType,
  SizeOverflowError,
  tensorGroup,
  writeModelHeader,
  type HeaderValues,
  type ModelLayout,
  type TensorInfo,
  type WeightsLayout,
} from '../src/index.js';
import { TINY_LLAMA31, TINY_QWEN3, TINY_QWEN3_MOE, withDtype } from '../src/testing/index.js';
import { expectFormatError } from './helpers.js';

const K = HeaderKey;
const layoutOf = (v: HeaderValues): ModelLayout => buildModelLayout(parseModelHeader(writeModelHeader(v)));

/** FORMAT.md §b.3 in BigInt, independent of the layout code. */
function formulaSizes(v: HeaderValues) {
  const n = (k: HeaderKey, d = 0) => BigInt(v[k] ?? d);
  const WT = Number(n(K.WeightsFloatType));
  const B = (t: number, count: bigint): bigint => (t === 0 ? count * 4n : t === 1 ? count * 2n : t === 2 ? (count / 32n) * 18n : (count / 32n) * 34n);
  const D = n(K.Dim);
  const V = n(K.VocabSize);
  const hd = v[K.HeadDim] ? n(K.HeadDim) : D / n(K.NHeads);
  const qDim = hd * n(K.NHeads);
  const kvDim = hd * n(K.NKvHeads);
  const arch = v[K.ArchType];
  const E = n(K.NExperts);
  const ff = arch === ArchType.QWEN3_MOE ? n(K.MoeHiddenDim) : n(K.HiddenDim);
  const header = BigInt(8 + 8 * Object.keys(v).length);
  const eBytes = B(0, V * D);
  const attn = B(WT, qDim * D) + 2n * B(WT, kvDim * D) + B(WT, D * qDim);
  const ffnDense = B(WT, ff * D) * 3n;
  const ffnMoe = B(0, E * D) + E * 3n * B(WT, ff * D);
  const qk = arch === ArchType.QWEN3 || arch === ArchType.QWEN3_MOE ? 2n * B(0, hd) : 0n;
  const layer = attn + (E > 0n ? ffnMoe : ffnDense) + qk + 2n * B(0, D);
  const L = n(K.NLayers);
  const finalNorm = header + eBytes + L * layer;
  const wcls = finalNorm + B(0, D);
  return { header, eBytes, layer, layerStart: (l: number) => header + eBytes + BigInt(l) * layer, finalNorm, wcls, fileSize: wcls + B(WT, V * D), hd, qDim, kvDim, ff };
}

function checkAgainstFormula(v: HeaderValues): ModelLayout {
  const L = layoutOf(v);
  const f = formulaSizes(v);
  expect(BigInt(L.layerBytes)).toBe(f.layer);
  L.layers.forEach((l, i) => {
    expect(l.extents.length).toBe(1);
    expect(BigInt(l.extents[0]!.offset)).toBe(f.layerStart(i));
    expect(BigInt(l.size)).toBe(f.layer);
  });
  expect(BigInt(L.finalNorm.offset)).toBe(f.finalNorm);
  expect(BigInt(L.wcls.offset)).toBe(f.wcls);
  expect(L.head.extents.map((e) => [BigInt(e.offset), BigInt(e.size)])).toEqual([[f.finalNorm, f.fileSize - f.finalNorm]]);
  expect(BigInt(L.fileSize)).toBe(f.fileSize);
  return L;
}

describe('layout table', () => {
  it('qwen3: q_norm and k_norm [head_dim] F32 after the FFN, qDim ≠ dim, FALCON rope forced', () => {
    for (const dt of [FloatType.F32, FloatType.F16, FloatType.Q40, FloatType.Q80]) {
      const v = withDtype(TINY_QWEN3, dt);
      const L = checkAgainstFormula(v);
      expect(L.layers[0]!.tensors.map((t) => t.kind)).toEqual(['q', 'k', 'v', 'wo', 'w1', 'w2', 'w3', 'q_norm', 'k_norm', 'att_norm', 'ffn_norm']);
      const h = L.header;
      expect([h.headDim, h.qDim, h.kvDim, h.dim]).toEqual([32, 128, 64, 64]);
      expect(layerTensor(L, 1, 'q').shape).toEqual([128, 64]);
      expect(layerTensor(L, 1, 'wo').shape).toEqual([64, 128]);
      expect(layerTensor(L, 1, 'q_norm')).toMatchObject({ shape: [32], dtype: FloatType.F32, byteLength: 128 });
      expect(layerTensor(L, 1, 'k_norm')).toMatchObject({ shape: [32], dtype: FloatType.F32 });
      expect(layerTensor(L, 0, 'w2').dtype).toBe(dt);
      expect(h.ropeType).toBe(RopeType.FALCON);
      expect(h.normEpsilon).toBe(1e-6);
    }
    // Whatever the file says, Qwen3 uses the FALCON pairing.
    expect(layoutOf({ ...TINY_QWEN3, [K.RopeType]: RopeType.LLAMA }).header).toMatchObject({ ropeType: RopeType.FALCON, ropeTypeInFile: RopeType.LLAMA });
  });

  it('qwen3_moe: F32 router [E, dim], then E experts of w1/w2/w3 with ff = moe_hidden_dim', () => {
    for (const dt of [FloatType.F32, FloatType.Q40]) {
      const v = withDtype(TINY_QWEN3_MOE, dt);
      const L = checkAgainstFormula(v);
      const kinds = L.layers[0]!.tensors.map((t) => (t.expert >= 0 ? `${t.kind}@${t.expert}` : t.kind));
      expect(kinds).toEqual(['q', 'k', 'v', 'wo', 'moe_gate', 'w1@0', 'w2@0', 'w3@0', 'w1@1', 'w2@1', 'w3@1', 'w1@2', 'w2@2', 'w3@2', 'w1@3', 'w2@3', 'w3@3', 'q_norm', 'k_norm', 'att_norm', 'ffn_norm']);
      expect(layerTensor(L, 1, 'moe_gate')).toMatchObject({ shape: [4, 64], dtype: FloatType.F32 });
      expect(layerTensor(L, 1, 'w1', 3)).toMatchObject({ name: 'layers.1.experts.3.w1', shape: [32, 64], dtype: dt, expert: 3, layer: 1 });
      expect(layerTensor(L, 1, 'w2', 3).shape).toEqual([64, 32]);
      // hidden_dim (96) is written but not used for the experts.
      expect(L.header.hiddenDim).toBe(96);
      expect(L.header.ffDim).toBe(32);
    }
  });

  it('llama with llama3.1 rope scaling: the values parse, the layout is plain llama', () => {
    for (const dt of [FloatType.F32, FloatType.Q80]) {
      const L = checkAgainstFormula(withDtype(TINY_LLAMA31, dt));
      const h = L.header;
      expect([h.ropeType, h.ropeScalingFactor, h.ropeScalingLowFreqFactor, h.ropeScalingHighFreqFactor, h.ropeScalingOrigMaxSeqLen, h.ropeTheta]).toEqual([
        RopeType.LLAMA3_1, 8, 1, 4, 32, 500000,
      ]);
      expect(L.layers[0]!.tensors.map((t) => t.kind)).toEqual(['q', 'k', 'v', 'wo', 'w1', 'w2', 'w3', 'att_norm', 'ffn_norm']);
    }
  });

  it('offsets beyond 4 GiB are exact (Llama-2-70B and Llama-3.1-405B shapes, checked in BigInt)', () => {
    const llama70b: HeaderValues = {
      [K.ArchType]: ArchType.LLAMA,
      [K.Dim]: 8192,
      [K.HiddenDim]: 28672,
      [K.NLayers]: 80,
      [K.NHeads]: 64,
      [K.NKvHeads]: 8,
      [K.VocabSize]: 32000,
      [K.MaxSeqLen]: 4096,
      [K.WeightsFloatType]: FloatType.Q40,
    };
    const L = checkAgainstFormula(llama70b);
    expect(L.fileSize).toBeGreaterThan(2 ** 32 * 9);
    expect(L.layers.filter((l) => l.extents[0]!.offset > 2 ** 32).length).toBeGreaterThan(60);
    const f405: HeaderValues = { ...llama70b, [K.Dim]: 16384, [K.HiddenDim]: 53248, [K.NLayers]: 126, [K.NHeads]: 128, [K.VocabSize]: 128256, [K.WeightsFloatType]: FloatType.F32 };
    const L405 = checkAgainstFormula(f405);
    expect(L405.fileSize).toBeGreaterThan(2 ** 40);
    expect(Number.isSafeInteger(L405.fileSize)).toBe(true);
  });

  it('size arithmetic beyond 2^53 is a typed SizeOverflowError naming the tensor and offset', () => {
    // Every value is inside LIMITS, but 4096 experts × 3 × (2^20 × 2^17 × 4 bytes) per layer is not representable.
    const huge: HeaderValues = {
      [K.ArchType]: ArchType.QWEN3_MOE,
      [K.Dim]: 1 << 17,
      [K.HiddenDim]: 0,
      [K.NLayers]: 4096,
      [K.NHeads]: 4096,
      [K.NKvHeads]: 4096,
      [K.HeadDim]: 32,
      [K.VocabSize]: 1 << 22,
      [K.MaxSeqLen]: 1 << 24,
      [K.NExperts]: 4096,
      [K.NActiveExperts]: 8,
      [K.MoeHiddenDim]: 1 << 20,
      [K.WeightsFloatType]: FloatType.F32,
    };
    const header = parseModelHeader(writeModelHeader(huge));
    const e = expectFormatError(() => buildModelLayout(header), SizeOverflowError);
    expect(e.field).toMatch(/^layers\.\d+\.experts\.\d+\.w[123]$/);
    expect(Number.isSafeInteger(e.offset)).toBe(true);
    expect(e.offset).toBeGreaterThan(2 ** 52);
  });
});

describe('the format-neutral layout', () => {
  it('a .m layout is plain data: a structured clone keeps every tensor, lookups work on it', () => {
    const L = layoutOf(withDtype(TINY_QWEN3, FloatType.Q40));
    const clone = structuredClone(L) as WeightsLayout;
    expect(clone.tensors).toEqual(L.tensors);
    expect(clone.layers).toEqual(L.layers);
    expect(findTensor(clone, 'layers.1.k_norm')).toEqual(L.tensor('layers.1.k_norm'));
    expect(layerTensor(clone, 1, 'wo')).toEqual(layerTensor(L, 1, 'wo'));
    expect(findOptionalTensor(clone, 'layers.1.bq')).toBeUndefined();
    expect(() => findTensor(clone, 'layers.9.q')).toThrow(RangeError);
    // Its config, from the header: what the engine reads instead of the header.
    expect(clone.config).toMatchObject({ archType: ArchType.QWEN3, dim: 64, qDim: 128, kvDim: 64, headDim: 32, qkNorm: true, qkvBias: false, tiedEmbeddings: false });
    expect(clone.config.rope.type).toBe(RopeType.FALCON);
  });

  it('extents: file order, touching ranges merged, gaps up to maxGap read along', () => {
    const t = (name: string, offset: number, byteLength: number): TensorInfo => ({ name, kind: 'q', layer: 0, expert: -1, dtype: FloatType.F32, shape: [byteLength / 4], offset, byteLength });
    const ts = [t('c', 300, 40), t('a', 100, 40), t('b', 140, 20), t('d', 352, 8)];
    expect(extentsOf(ts)).toEqual([{ offset: 100, size: 60 }, { offset: 300, size: 40 }, { offset: 352, size: 8 }]);
    expect(extentsOf(ts, 12)).toEqual([{ offset: 100, size: 60 }, { offset: 300, size: 60 }]);
    expect(tensorGroup(ts).size).toBe(108);
  });

  it('layoutFromTensors groups by layer and takes the head as final_norm + wcls (tied: the embedding bytes)', () => {
    const L = layoutOf(TINY_LLAMA31);
    const tied = layoutFromTensors(
      { ...L.config, tiedEmbeddings: true },
      [...L.tensors.filter((x) => x.kind !== 'wcls'), { ...L.embedding, name: 'wcls', kind: 'wcls' }],
      { dataOffset: L.dataOffset, fileSize: L.wcls.offset },
    );
    expect(tied.layers).toEqual(L.layers);
    expect(tied.wcls.offset).toBe(L.embedding.offset);
    expect(tied.head.extents).toEqual([
      { offset: L.embedding.offset, size: L.embedding.byteLength },
      { offset: L.finalNorm.offset, size: L.finalNorm.byteLength },
    ]);
    expect(() => layoutFromTensors(L.config, L.tensors.filter((x) => x.kind !== 'final_norm'), { dataOffset: 0, fileSize: L.fileSize })).toThrow(RangeError);
  });
});
