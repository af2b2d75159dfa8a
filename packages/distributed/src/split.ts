/**
 * Which node runs which layers. Node 0 is the root (it also runs the embedding and the head:
 * final norm + classifier), nodes 1… are the workers in pipeline order. Ranges are half-open
 * [start, end) and contiguous; printed and written by people as inclusive "a-b".
 */
import { SplitError } from './errors.js';

export interface LayerRange {
  start: number;
  end: number;
}

export interface SplitModel {
  nLayers: number;
  /** Bytes of one layer's weights (all layers are the same size). */
  layerBytes: number;
  /** Bytes the head reads per step (final norm + classifier); the root's extra load. */
  headBytes: number;
}

/**
 * Split by layer bytes: every node gets a share of the bytes to read per token (layers, and for
 * the root the head) proportional to its weight (default 1; the measured speed with `speeds`).
 * Each worker gets at least one layer; the root may get none.
 */
export function planByBytes(m: SplitModel, nodes: number, speeds?: readonly number[]): LayerRange[] {
  const workers = nodes - 1;
  if (workers < 1) throw new SplitError('need at least one worker');
  if (m.nLayers < workers) throw new SplitError(`the model has ${m.nLayers} layers, fewer than the ${workers} workers (each needs at least one)`);
  const w = Array.from({ length: nodes }, (_, i) => {
    const s = speeds?.[i] ?? 1;
    if (!(s > 0) || !Number.isFinite(s)) throw new SplitError(`node ${i}: speed must be a positive number, got ${s}`);
    return s;
  });
  const total = w.reduce((a, b) => a + b, 0);
  const work = m.nLayers * m.layerBytes + m.headBytes;
  const rootShare = (work * w[0]!) / total;
  const rootLayers = Math.max(0, Math.min(m.nLayers - workers, Math.round((rootShare - m.headBytes) / m.layerBytes)));
  const ranges: LayerRange[] = [{ start: 0, end: rootLayers }];
  const rest = m.nLayers - rootLayers;
  const wTotal = total - w[0]!;
  let cum = 0;
  let start = rootLayers;
  for (let i = 1; i < nodes; i++) {
    cum += w[i]!;
    const left = nodes - 1 - i;
    // At least one layer each, and room for one layer for every worker after this one.
    const end = i === nodes - 1 ? m.nLayers : Math.max(start + 1, Math.min(m.nLayers - left, rootLayers + Math.round((rest * cum) / wTotal)));
    ranges.push({ start, end });
    start = end;
  }
  return ranges;
}

/**
 * "a-b,c-d,…" (inclusive layer numbers, a single "a" for one layer). With one range per worker
 * the root runs the layers before the first; with one more, the first range is the root's and
 * must start at 0. Ranges must be contiguous and end at the last layer.
 */
export function parseSplit(spec: string, nLayers: number, workers: number): LayerRange[] {
  const parts = spec.split(',').map((p) => p.trim());
  const ranges = parts.map((p) => {
    const m = /^(\d+)(?:-(\d+))?$/.exec(p);
    if (!m) throw new SplitError(`--split "${spec}": "${p}" is not a layer range like 4-7`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (b < a) throw new SplitError(`--split "${spec}": range ${p} ends before it starts`);
    return { start: a, end: b + 1 };
  });
  if (ranges.length !== workers && ranges.length !== workers + 1) {
    throw new SplitError(`--split "${spec}": ${ranges.length} ranges for ${workers} workers (give one per worker, or one more for the root first)`);
  }
  if (ranges.length === workers) ranges.unshift({ start: 0, end: ranges[0]!.start });
  if (ranges[0]!.start !== 0) throw new SplitError(`--split "${spec}": the root's range must start at layer 0`);
  for (let i = 1; i < ranges.length; i++) {
    if (ranges[i]!.start !== ranges[i - 1]!.end) {
      throw new SplitError(`--split "${spec}": ranges must be contiguous (layer ${ranges[i - 1]!.end} is followed by ${ranges[i]!.start})`);
    }
  }
  const last = ranges[ranges.length - 1]!;
  if (last.end !== nLayers) throw new SplitError(`--split "${spec}": the last range must end at layer ${nLayers - 1} (the model has ${nLayers} layers)`);
  return ranges;
}
