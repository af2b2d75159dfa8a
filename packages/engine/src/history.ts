/**
 * Which tokens each KV cache slot holds, position by position: what lets a new sequence (a chat
 * turn) reuse the longest common prefix, and what a pipeline recomputes a lost node's KV cache
 * from. A step that writes positions from `pos` on first truncates the slot to `pos` (until it
 * succeeds, only the positions before it are known to be valid), then appends its tokens.
 */
export class KvHistory {
  readonly #slots: number[][];

  constructor(slots: number) {
    this.#slots = Array.from({ length: slots }, () => []);
  }

  /** The tokens slot `slot` holds, positions 0.. (empty for a slot out of range). */
  tokens(slot: number): readonly number[] {
    return this.#slots[slot] ?? [];
  }

  /** How many leading tokens of `tokens` the slot holds. */
  cachedPrefix(slot: number, tokens: readonly number[]): number {
    const hist = this.tokens(slot);
    let n = 0;
    while (n < hist.length && n < tokens.length && hist[n] === tokens[n]) n++;
    return n;
  }

  /** A step is about to write positions pos.. of the slot. */
  truncate(slot: number, pos: number): void {
    const hist = this.#slots[slot];
    if (hist) hist.length = Math.min(hist.length, pos);
  }

  /** The step succeeded: the slot now also holds `tokens`. */
  append(slot: number, tokens: readonly number[]): void {
    // A loop, not push(...tokens): a long prompt spread into a call overflows the stack.
    const hist = this.#slots[slot]!;
    for (const t of tokens) hist.push(t);
  }
}
