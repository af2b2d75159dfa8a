/**
 * Log-probabilities in OpenAI's two shapes: chat (`{content: [{token, logprob, bytes,
 * top_logprobs}]}`) and legacy completions (`{tokens, token_logprobs, top_logprobs,
 * text_offset}`). A token's text is its bytes as UTF-8 (a piece of a character shows as U+FFFD;
 * `bytes` has the exact bytes); a control token's is its written form (`<|im_end|>`).
 */
import type { IdLogprob, TokenLogprob, Tokenizer } from '@airllm/engine';

/** A token's text and bytes as the API shows them. */
export interface TokenName {
  token: string;
  bytes: number[];
}

/** Names tokens for the API (cached per id). */
export class TokenNames {
  readonly #tokenizer: Tokenizer;
  readonly #cache = new Map<number, TokenName>();
  readonly #utf8 = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

  constructor(tokenizer: Tokenizer) {
    this.#tokenizer = tokenizer;
  }

  name(id: number): TokenName {
    let n = this.#cache.get(id);
    if (!n) {
      const piece = this.#tokenizer.pieces[id];
      const bytes = piece && piece.length > 0 ? piece : new TextEncoder().encode(this.#tokenizer.tokenText(id) ?? '');
      n = { token: this.#utf8.decode(bytes), bytes: Array.from(bytes) };
      this.#cache.set(id, n);
    }
    return n;
  }
}

export interface ChatLogprobs {
  content: { token: string; logprob: number; bytes: number[]; top_logprobs: { token: string; logprob: number; bytes: number[] }[] }[];
  refusal: null;
}

/** Chat's `logprobs` of a choice or chunk. */
export function chatLogprobs(names: TokenNames, lps: readonly TokenLogprob[]): ChatLogprobs {
  const entry = (l: IdLogprob): { token: string; logprob: number; bytes: number[] } => ({ ...names.name(l.token), logprob: l.logprob });
  return { content: lps.map((l) => ({ ...entry(l), top_logprobs: l.top.map(entry) })), refusal: null };
}

export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: number[];
  top_logprobs: Record<string, number>[];
  text_offset: number[];
}

/**
 * Legacy completions' `logprobs`; `offset` is where the first token's text starts in the
 * choice's text (the running offset of a stream). Alternatives with the same text keep the
 * larger value (a JSON object cannot hold both).
 */
export function completionLogprobs(names: TokenNames, lps: readonly TokenLogprob[], offset: number): CompletionLogprobs {
  const out: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  for (const l of lps) {
    const token = names.name(l.token).token;
    out.tokens.push(token);
    out.token_logprobs.push(l.logprob);
    const top: Record<string, number> = {};
    for (const t of l.top) {
      const k = names.name(t.token).token;
      if (!(k in top)) top[k] = t.logprob;
    }
    out.top_logprobs.push(top);
    out.text_offset.push(offset);
    offset += token.length;
  }
  return out;
}
