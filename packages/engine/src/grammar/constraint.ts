/**
 * Constrained sampling for one sequence: before each token, every token whose bytes would leave
 * the JSON grammar gets logit −∞ (the vocabulary's byte trie walked alongside the grammar
 * state); after it, the grammar consumes the token's bytes. A token budget (what is left of
 * max tokens and the context) steers the text to its end in time: a token is allowed only if
 * the fewest bytes that complete the text after it fit in the tokens that remain (the
 * vocabularies this serves have a token for every byte).
 */
import { JsonGrammar, type Stack } from './json-grammar.js';
import { compileJsonSchema, type JsonSchema } from './schema.js';
import type { ByteTrie, VocabIndex } from './vocab-index.js';

export class JsonConstraint {
  readonly #grammar: JsonGrammar;
  readonly #index: VocabIndex;
  readonly #eos: readonly number[];
  #state: Stack[];
  #allowed: Uint8Array;
  /**
   * The stack `#allowed` was computed for, its count, and the budgets it holds for: text inside
   * a string keeps the very same stack object token after token, so its mask is computed once.
   */
  #cached: { stack: Stack; count: number; lo: number; hi: number } | undefined;

  /** `schema` compiled here (throws JsonSchemaError); `eos`: ids that may end a complete text. */
  constructor(schema: JsonSchema, index: VocabIndex, eos: readonly number[]) {
    this.#grammar = new JsonGrammar(compileJsonSchema(schema));
    this.#index = index;
    this.#eos = eos;
    this.#state = this.#grammar.initial();
    this.#allowed = new Uint8Array(index.pieces.length);
  }

  /** The text is complete and nothing may follow: the sequence ends here. */
  get ended(): boolean {
    return this.#grammar.ended(this.#state);
  }

  /**
   * Set the logits of tokens that may not come next to −∞, with `budget` tokens left (this one
   * included). Returns the number of tokens still allowed (0: nothing can continue).
   */
  mask(logits: Float32Array, n: number, budget: number): number {
    const c = this.#cached;
    const one = this.#state.length === 1 ? this.#state[0] : undefined;
    let count: number;
    if (c && c.stack === one && budget >= c.lo && budget <= c.hi) count = c.count;
    else {
      const span = { lo: 0, hi: Number.POSITIVE_INFINITY };
      count = this.#mark(budget, span);
      this.#cached = one && count > 0 ? { stack: one, count, ...span } : undefined;
      // With too few tokens left to finish anyway, keep to the grammar alone.
      if (count === 0) count = this.#mark(Number.POSITIVE_INFINITY, span);
    }
    const allowed = this.#allowed;
    for (let i = 0; i < n; i++) if (i >= allowed.length || allowed[i] === 0) logits[i] = Number.NEGATIVE_INFINITY;
    return count;
  }

  /** The grammar consumes the bytes of the token that was chosen. */
  accept(token: number): void {
    const piece = this.#index.pieces[token];
    if (piece === undefined) return;
    for (const b of piece) this.#state = this.#grammar.feed(this.#state, b);
  }

  /**
   * Mark the allowed tokens in #allowed; `span` narrows to the budgets that would mark the same
   * ones (every allowed token's completion still fits, no refused one's yet does).
   */
  #mark(budget: number, span: { lo: number; hi: number }): number {
    const g = this.#grammar;
    const allowed = this.#allowed;
    const state = this.#state;
    const fits = (s: readonly Stack[]): boolean => {
      const need = g.minRemaining(s) + 1;
      if (need <= budget) span.lo = Math.max(span.lo, need);
      else span.hi = Math.min(span.hi, need - 1);
      return need <= budget;
    };
    let count = 0;
    // Plain text inside a string leaves the state as it is: those tokens are allowed together.
    const plain = g.inPlainString(state) && fits(state);
    if (plain) {
      allowed.set(this.#index.plainMask);
      count += this.#index.plain.length;
    } else allowed.fill(0);
    if (g.accepting(state)) {
      for (const id of this.#eos) {
        if (id < allowed.length && allowed[id] === 0) {
          allowed[id] = 1;
          count++;
        }
      }
    }
    return count + this.#walk(g.inPlainString(state) ? this.#index.special : this.#index.all, 0, state, fits);
  }

  /** Mark the tokens under `node` of `trie` whose bytes the grammar takes from `state`; returns how many. */
  #walk(trie: ByteTrie, node: number, state: readonly Stack[], fits: (s: readonly Stack[]) => boolean): number {
    const { firstChild, nextSibling, byte, token, sameNext } = trie;
    const g = this.#grammar;
    const allowed = this.#allowed;
    let count = 0;
    for (let c = firstChild[node]!; c !== -1; c = nextSibling[c]!) {
      const next = g.feed(state, byte[c]!);
      if (next.length === 0) continue;
      if (token[c] !== -1 && fits(next)) {
        for (let id = token[c]!; id !== -1; id = sameNext[id]!) {
          allowed[id] = 1;
          count++;
        }
      }
      if (firstChild[c] !== -1) count += this.#walk(trie, c, next, fits);
    }
    return count;
  }
}
