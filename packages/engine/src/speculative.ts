import type { Sampler } from './sampler.js';

/**
 * Tokens proposed for the positions after a sequence's last token, verified by the target model
 * in one pass. `probs[i]` is the distribution token i was drawn from (the draft model's, after
 * the sequence's sampling settings); absent for a deterministic proposal (prompt lookup), whose
 * distribution is one-hot at the token.
 */
export interface Draft {
  tokens: number[];
  probs?: Float32Array[];
}

/**
 * Proposes draft tokens for a sequence. `context` is every token the slot's sequence holds
 * (prompt and generated); the drafter proposes at most `max` tokens to follow it, drawing from
 * `sampler` when it samples.
 */
export interface Drafter {
  propose(slot: number, context: readonly number[], max: number, sampler: Sampler): Promise<Draft>;
}

/** Which tokens a verification pass emits: the accepted draft tokens, then one more from the target. */
export interface Verdict {
  tokens: number[];
  /** How many draft tokens were accepted (tokens.length − 1). */
  accepted: number;
}

/**
 * Speculative sampling's acceptance rule (Leviathan et al. 2023, Chen et al. 2023): `logits`
 * holds the target's logits for the rows [last token, draft 1..k] (k+1 rows of `vocab`). Walking
 * the draft, token d at row i is accepted with probability min(1, p(d)/q(d)) (p: the target's
 * distribution at row i, q: the draft's; q(d) = 1 for a deterministic draft); the first rejected
 * one is replaced by a draw from norm(max(0, p − q)); when all k are accepted, one more token is
 * drawn from row k. So each emitted token follows the target's distribution exactly. Greedy
 * (temperature 0) reduces to: accept while the draft equals the target's argmax, then emit the
 * argmax.
 */
export function verifyDraft(sampler: Sampler, logits: Float32Array, draft: Draft, vocab: number): Verdict {
  const tokens: number[] = [];
  const k = draft.tokens.length;
  const p = new Float32Array(sampler.vocabSize);
  for (let i = 0; i <= k; i++) {
    const row = logits.subarray(i * vocab, (i + 1) * vocab);
    if (sampler.temperature === 0) {
      const best = sampler.sample(row);
      tokens.push(best);
      if (i === k || best !== draft.tokens[i]) break;
      continue;
    }
    sampler.distribution(row, p);
    if (i === k) {
      tokens.push(sampler.pick(p));
      break;
    }
    const d = draft.tokens[i]!;
    const q = draft.probs?.[i];
    const qd = q ? q[d]! : 1;
    if (sampler.nextF32() * qd < p[d]!) {
      tokens.push(d);
      continue;
    }
    tokens.push(sampler.pick(...residual(p, q, d)));
    break;
  }
  return { tokens, accepted: tokens.length - 1 };
}

/** max(0, p − q) in place of p and its total (q one-hot at d when absent); p itself if that leaves nothing. */
function residual(p: Float32Array, q: Float32Array | undefined, d: number): [Float32Array, number] {
  const r = Float32Array.from(p);
  if (q) for (let t = 0; t < r.length; t++) r[t] = Math.max(0, r[t]! - q[t]!);
  else r[d] = 0;
  let total = 0;
  for (let t = 0; t < r.length; t++) total += r[t]!;
  return total > 0 ? [r, total] : [p, 1];
}

/** Default of the most tokens drafted per pass (9 rows verified per pass). */
export const DEFAULT_DRAFT_MAX = 8;

/**
 * Prompt lookup (Saxena 2023): find the latest earlier occurrence of the context's last n tokens
 * (n = 3, then 2, then 1) and propose the tokens that followed it. No model: proposals come from
 * the prompt and the text generated so far, so it pays off when the output repeats its input
 * (or itself).
 */
export class NgramDrafter implements Drafter {
  constructor(readonly maxNgram = 3) {}

  async propose(_slot: number, context: readonly number[], max: number): Promise<Draft> {
    return { tokens: lookup(context, max, this.maxNgram) };
  }
}

/** The tokens following the latest earlier match of the context's longest matching tail. */
export function lookup(context: readonly number[], max: number, maxNgram: number): number[] {
  const len = context.length;
  for (let n = Math.min(maxNgram, len - 1); n >= 1; n--) {
    // Latest start s < len − n with context[s..s+n) equal to the tail.
    for (let s = len - n - 1; s >= 0; s--) {
      let j = 0;
      while (j < n && context[s + j] === context[len - n + j]) j++;
      if (j < n) continue;
      const from = s + n;
      return context.slice(from, Math.min(from + max, len));
    }
  }
  return [];
}
