import { RopeType, type ModelHeader } from '@airllm/format';

const fround = Math.fround;

export interface RopeScaling {
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  origMaxSeqLen: number;
}

/**
 * RoPE inverse frequencies f_j = 1 / theta^(2j/headDim), j < headDim/2, computed step by step in
 * float32 as llama2.c and dllama do (`1.0f / powf(theta, i / (float)headDim)`), with Llama-3.1
 * scaling applied when `scaling.factor != 1` (FORMAT.md §e.4).
 */
export function ropeFrequencies(headDim: number, theta: number, scaling?: RopeScaling): Float32Array {
  const freqs = new Float32Array(headDim / 2);
  for (let j = 0; j < headDim / 2; j++) {
    let f = fround(1 / fround(Math.pow(theta, fround((2 * j) / headDim))));
    if (scaling !== undefined && scaling.factor !== 1) f = scaleFrequencyLlama3(f, scaling);
    freqs[j] = f;
  }
  return freqs;
}

/**
 * Llama-3.1 frequency scaling in dllama's float32 operation order (its wavelength uses the
 * double-precision 2π, rounded once to float).
 */
function scaleFrequencyLlama3(freq: number, s: RopeScaling): number {
  const waveLen = fround((2 * Math.PI) / freq);
  const highFreqWavelen = fround(s.origMaxSeqLen / s.highFreqFactor);
  if (waveLen < highFreqWavelen) return freq;
  const lowFreqWavelen = fround(s.origMaxSeqLen / s.lowFreqFactor);
  if (waveLen > lowFreqWavelen) return fround(freq / s.factor);
  const smooth = fround(
    fround(fround(s.origMaxSeqLen / waveLen) - s.lowFreqFactor) / fround(s.highFreqFactor - s.lowFreqFactor),
  );
  return fround(fround(fround(fround(1 - smooth) * freq) / s.factor) + fround(smooth * freq));
}

/** Frequencies and pairing for a model header. FALCON rope is never frequency-scaled. */
export function ropeForHeader(h: ModelHeader): { freqs: Float32Array; halfSplit: boolean } {
  const halfSplit = h.ropeType === RopeType.FALCON;
  const scaling = halfSplit
    ? undefined
    : {
        factor: h.ropeScalingFactor,
        lowFreqFactor: h.ropeScalingLowFreqFactor,
        highFreqFactor: h.ropeScalingHighFreqFactor,
        origMaxSeqLen: h.ropeScalingOrigMaxSeqLen,
      };
  return { freqs: ropeFrequencies(h.headDim, h.ropeTheta, scaling), halfSplit };
}
