import { ArchType, FloatType, HeaderKey, buildModelLayout, parseModelHeader, writeModelHeader, type HeaderValues, type ModelLayout } from '@airllm/format';

/** A model shape the harness can generate: a name, what it imitates, and its `.m` header. */
export interface ModelShape {
  readonly name: ShapeName;
  readonly description: string;
  readonly header: Readonly<HeaderValues>;
}

export type ShapeName = 'mini' | 'tinyllama' | '7b' | '70b';

const llama = (dim: number, hidden: number, layers: number, heads: number, kvHeads: number, vocab: number, seqLen: number): HeaderValues => ({
  [HeaderKey.Version]: 0,
  [HeaderKey.ArchType]: ArchType.LLAMA,
  [HeaderKey.Dim]: dim,
  [HeaderKey.HiddenDim]: hidden,
  [HeaderKey.NLayers]: layers,
  [HeaderKey.NHeads]: heads,
  [HeaderKey.NKvHeads]: kvHeads,
  [HeaderKey.NExperts]: 0,
  [HeaderKey.NActiveExperts]: 0,
  [HeaderKey.VocabSize]: vocab,
  [HeaderKey.MaxSeqLen]: seqLen,
  [HeaderKey.HiddenAct]: 1,
  [HeaderKey.RopeTheta]: 10000,
  [HeaderKey.WeightsFloatType]: FloatType.Q40,
  [HeaderKey.NormEpsilon]: 5,
});

/**
 * Real vocabulary sizes: the classifier (vocab × dim, Q40) is part of every decode step and the
 * F32 embedding is the format's (FORMAT.md §b.2), so shrinking the vocabulary would flatter both
 * engines' decode and the file's size.
 */
export const SHAPES: Readonly<Record<ShapeName, ModelShape>> = Object.freeze({
  // Small enough for CI (--quick): the TypeScript reference kernels run it in tens of ms per token.
  mini: { name: 'mini', description: 'small Llama (6 layers, dim 768, GQA 12/4, vocab 8000), Q40', header: llama(768, 2048, 6, 12, 4, 8000, 2048) },
  tinyllama: { name: 'tinyllama', description: 'TinyLlama-1.1B-like (22 layers, dim 2048, GQA 32/4, vocab 32000), Q40', header: llama(2048, 5632, 22, 32, 4, 32000, 2048) },
  '7b': { name: '7b', description: 'Llama-2-7B-like (32 layers, dim 4096, 32 heads, vocab 32000), Q40', header: llama(4096, 11008, 32, 32, 32, 32000, 4096) },
  '70b': { name: '70b', description: 'Llama-2-70B-like (80 layers, dim 8192, GQA 64/8, vocab 32000), Q40', header: llama(8192, 28672, 80, 64, 8, 32000, 4096) },
});

export function isShapeName(s: string): s is ShapeName {
  return Object.hasOwn(SHAPES, s);
}

/** The layout (sizes, offsets) a shape's file will have, without writing it. */
export function shapeLayout(shape: ModelShape): ModelLayout {
  return buildModelLayout(parseModelHeader(writeModelHeader(shape.header)));
}

/** The residency's segments: one per layer, then the head (final norm + classifier). */
export function segmentSizes(layout: ModelLayout): number[] {
  return [...layout.layers.map((l) => l.size), layout.fileSize - layout.finalNorm.offset];
}

/**
 * Bytes of weights one forward step reads: every layer and the head. The F32 embedding is read
 * one row per token, so it is not part of a step's weight traffic (nor of a weight budget).
 */
export function bytesPerStep(layout: ModelLayout): number {
  return segmentSizes(layout).reduce((a, b) => a + b, 0);
}

/** KV cache bytes the engine commits for `positions` positions of one sequence (F32 keys and values). */
export function kvBytes(layout: ModelLayout, positions: number): number {
  const h = layout.header;
  return positions * h.kvDim * 2 * 4 * h.nLayers;
}
