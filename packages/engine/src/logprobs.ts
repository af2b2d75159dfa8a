import { OptionError } from './errors.js';

/** Most alternatives a token's log-probability may list (OpenAI's limit for top_logprobs). */
export const MAX_TOP_LOGPROBS = 20;

/** A token id and its log-probability. */
export interface IdLogprob {
  token: number;
  logprob: number;
}

/** The log-probability of a generated token, with the most likely alternatives at its position. */
export interface TokenLogprob extends IdLogprob {
  /** The `top` most likely tokens at this position, most likely first (ties: lower id first). */
  top: IdLogprob[];
}

/** Check a requested number of alternatives (0..MAX_TOP_LOGPROBS). */
export function checkTopLogprobs(top: number): void {
  if (!Number.isInteger(top) || top < 0 || top > MAX_TOP_LOGPROBS) throw new OptionError('logprobs', `must be a whole number 0..${MAX_TOP_LOGPROBS}, got ${top}`);
}

/**
 * Log-softmax of `logits[0..n)` at `token`, and the `top` largest entries: log p(i) = l(i) − max −
 * log Σ exp(l(j) − max), in double precision. Entries at −Infinity (tokens masked out by a
 * constraint) have probability 0 and are never listed. O(n·top) with top ≤ 20.
 */
export function tokenLogprob(logits: Float32Array, n: number, token: number, top: number): TokenLogprob {
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (logits[i]! > max) max = logits[i]!;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(logits[i]! - max);
  const norm = max + Math.log(sum);
  // Insertion into a short sorted list: each candidate larger than the smallest kept one.
  const ids: number[] = [];
  for (let i = 0; i < n && top > 0; i++) {
    const v = logits[i]!;
    if (v === -Infinity) continue;
    if (ids.length === top && v <= logits[ids[top - 1]!]!) continue;
    let k = ids.length < top ? ids.length : top - 1;
    while (k > 0 && logits[ids[k - 1]!]! < v) {
      ids[k] = ids[k - 1]!;
      k--;
    }
    ids[k] = i;
  }
  return { token, logprob: logits[token]! - norm, top: ids.map((i) => ({ token: i, logprob: logits[i]! - norm })) };
}
