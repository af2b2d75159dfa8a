import type { LayerWiseInferenceEngine } from './engine.js';
import { DraftModelError } from './errors.js';
import type { Sampler } from './sampler.js';
import type { Draft, Drafter } from './speculative.js';

/**
 * A small resident model with the target's vocabulary proposes the draft: k tokens, one forward
 * pass of the draft model each, drawn with the sequence's sampler (argmax when greedy). It keeps
 * a KV cache slot per target slot and reuses the longest prefix it already holds, so after a
 * verification it recomputes only from the first token it had wrong.
 */
export class ModelDrafter implements Drafter {
  constructor(readonly engine: LayerWiseInferenceEngine) {}

  async propose(slot: number, context: readonly number[], max: number, sampler: Sampler): Promise<Draft> {
    const e = this.engine;
    // The last drafted token is not run through the draft model, so it may sit at seqLen.
    const k = Math.min(max, e.maxSeqLen - context.length + 1);
    if (k < 1) return { tokens: [] };
    const cached = Math.min(e.cachedPrefix(slot, context), context.length - 1);
    let logits = await e.forward(context.slice(cached), cached, slot);
    const greedy = sampler.temperature === 0;
    const tokens: number[] = [];
    const probs: Float32Array[] = [];
    for (let i = 0; i < k; i++) {
      let t: number;
      if (greedy) t = sampler.sample(logits);
      else {
        const q = sampler.distribution(logits);
        t = sampler.pick(q);
        probs.push(q);
      }
      tokens.push(t);
      if (i + 1 < k) logits = await e.forward([t], context.length + i, slot);
    }
    return greedy ? { tokens } : { tokens, probs };
  }
}

/**
 * Check that `draft` can propose tokens for `target`: the same vocabulary (size, and each
 * token's bytes when both have a tokenizer), a KV cache slot for each of the target's.
 */
export function checkDraftModel(target: LayerWiseInferenceEngine, draft: LayerWiseInferenceEngine): void {
  const path = draft.modelPath;
  const tv = target.config.vocabSize;
  const dv = draft.config.vocabSize;
  if (tv !== dv) throw new DraftModelError(path, 'vocabSize', tv, dv, 'has a different vocabulary size');
  if (target.hasTokenizer && draft.hasTokenizer) {
    const a = target.tokenizer.pieces;
    const b = draft.tokenizer.pieces;
    if (a.length !== b.length) throw new DraftModelError(path, 'tokenizer', a.length, b.length, 'has a tokenizer of a different size');
    for (let id = 0; id < a.length; id++) {
      if (!sameBytes(a[id]!, b[id]!)) {
        throw new DraftModelError(path, `token ${id}`, JSON.stringify(target.tokenizer.tokenText(id)), JSON.stringify(draft.tokenizer.tokenText(id)), 'has a different vocabulary');
      }
    }
  }
  if (draft.maxSequences < target.maxSequences) {
    throw new DraftModelError(path, 'maxSequences', target.maxSequences, draft.maxSequences, 'has fewer KV cache slots than the target');
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
