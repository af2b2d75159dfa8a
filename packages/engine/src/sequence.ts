import type { JsonConstraint } from './grammar/constraint.js';
import type { JsonSchema } from './grammar/schema.js';
import { checkTopLogprobs, tokenLogprob, type TokenLogprob } from './logprobs.js';
import { Sampler, type SamplingOptions } from './sampler.js';
import type { LayerWiseInferenceEngine } from './engine.js';
import { verifyDraft, type Draft, type Drafter } from './speculative.js';
import type { TokenDecoder } from './tokenizer.js';

/**
 * Why a sequence ended; 'bos': the model began a new text (llama2.c-style vocabularies, as run.c
 * stops); 'complete': the text a `jsonSchema` constrains is complete.
 */
export type FinishReason = 'length' | 'eos' | 'bos' | 'stop' | 'context' | 'cancelled' | 'complete';

export interface GeneratedToken {
  token: number;
  /** Text this token completes (may be empty while UTF-8 or a possible stop string is held back). */
  text: string;
  /** Its log-probability, when SequenceOptions.logprobs asked for it. */
  logprob?: TokenLogprob;
}

/** What one sequence needs besides its prompt: sampling, length and stop rules. */
export interface SequenceOptions extends SamplingOptions {
  /** Tokens to generate at most (default 256). */
  maxTokens?: number;
  /** Stop when the text contains one of these (the stop string is not returned). */
  stop?: readonly string[];
  /** Prepend BOS (default: the tokenizer's add_bos). */
  bos?: boolean;
  /** Stop at an end-of-sequence token (default true). */
  stopAtEos?: boolean;
  /**
   * Record each generated token's log-probability with this many most likely alternatives
   * (0..20); absent: none. The values are the log-softmax of the logits the sampler was given,
   * before temperature, top-k and top-p (which change what is drawn, not these numbers).
   */
  logprobs?: number;
  /**
   * Speculative decoding: 'ngram' (prompt lookup over the prompt and the text so far) or a
   * resident draft model with the same vocabulary (an initialized engine). Each decode pass over
   * the model then verifies up to draftMax drafted tokens; greedy output is unchanged and sampled
   * output keeps the model's distribution.
   */
  draft?: 'ngram' | LayerWiseInferenceEngine;
  /** The most tokens drafted per pass (default 8, at most batchSize − 1). */
  draftMax?: number;
  /**
   * Constrain the output to JSON valid against this schema (OpenAI's structured-outputs
   * subset; `{"type": "object"}`: any JSON object): tokens that would leave it are never
   * sampled, and the sequence ends ('complete') when the value is. Needs a tokenizer.
   */
  jsonSchema?: JsonSchema;
}

/** The rows one sequence contributes to a forward step. */
export interface ForwardItem {
  slot: number;
  pos: number;
  tokens: readonly number[];
  /** Return the logits of every row (n × vocab), not just the last: a row of drafted tokens to verify. */
  allLogits?: boolean;
}

/** What the engine hands a new Sequence (see LayerWiseInferenceEngine.beginSequence). */
export interface SequenceInit {
  slot: number;
  promptTokens: number[];
  /** Prompt tokens whose KV rows the slot already holds. */
  cached: number;
  seqLen: number;
  vocabSize: number;
  decoder: TokenDecoder | undefined;
  isEos: (token: number) => boolean;
  /** BOS id when the model emitting it ends the text (Tokenizer.endsOnBos). */
  endsOnBos?: number;
  options: SequenceOptions;
  /** Proposes tokens to verify in each decode pass (speculative decoding); none: one token per pass. */
  drafter?: Drafter;
  /** The most tokens drafted per pass. */
  draftMax?: number;
  /** Width of a logits row (the model's vocabulary). */
  logitsWidth?: number;
  /** The constraint built from options.jsonSchema. */
  constraint?: JsonConstraint;
}

/**
 * One sequence being generated in a KV cache slot: its prompt (processed in one or more chunks),
 * its sampler, the streaming decoder (complete UTF-8 only), stop strings held back until they
 * can no longer start, and why it finished. The engine's generateBatch and a scheduler that
 * lets sequences join and leave (the server) both drive it the same way:
 *
 *   loop: engine.forwardSequences(running) → for each: seq.advance(cancelled) → piece or nothing
 *
 * until `finishReason` is set; `result(stats)` then gives the GenerationResult.
 */
export class Sequence {
  readonly slot: number;
  readonly promptTokens: number[];
  readonly cached: number;
  readonly tokens: number[] = [];
  /** Each generated token's log-probability, when options.logprobs asked for them. */
  readonly logprobs: TokenLogprob[] = [];
  text = '';
  finishReason: FinishReason | undefined;
  /** Prompt tokens whose KV rows are in the cache (cached ones included). */
  #prefilled: number;
  #logits: Float32Array | undefined;
  #held = '';
  /** Drafted tokens the next step verifies. */
  #draft: Draft | undefined;
  /** Tokens a verification pass decided, emitted one by one by advance(). */
  #pending: number[] = [];
  /** The log-probabilities of #pending's tokens (from their verification rows), when asked for. */
  #pendingLogprobs: TokenLogprob[] = [];
  #drafted = 0;
  #accepted = 0;
  readonly #drafter: Drafter | undefined;
  readonly #draftMax: number;
  readonly #logitsWidth: number;
  readonly #sampler: Sampler;
  readonly #decoder: TokenDecoder | undefined;
  readonly #isEos: (token: number) => boolean;
  readonly #endsOnBos: number | undefined;
  readonly #maxTokens: number;
  readonly #stops: readonly string[];
  readonly #stopAtEos: boolean;
  readonly #seqLen: number;
  readonly #topLogprobs: number | undefined;
  readonly #vocabSize: number;
  readonly #constraint: JsonConstraint | undefined;

  constructor(init: SequenceInit, sampler: Sampler) {
    this.slot = init.slot;
    this.promptTokens = init.promptTokens;
    this.cached = init.cached;
    this.#prefilled = init.cached;
    this.#sampler = sampler;
    this.#decoder = init.decoder;
    if (this.#decoder) for (const t of init.promptTokens) this.#decoder.push(t);
    this.#isEos = init.isEos;
    this.#endsOnBos = init.endsOnBos;
    this.#maxTokens = init.options.maxTokens ?? 256;
    this.#stops = (init.options.stop ?? []).filter((s) => s.length > 0);
    this.#stopAtEos = init.options.stopAtEos ?? true;
    this.#seqLen = init.seqLen;
    this.#vocabSize = init.vocabSize;
    this.#constraint = init.constraint;
    this.#topLogprobs = init.options.logprobs;
    if (this.#topLogprobs !== undefined) checkTopLogprobs(this.#topLogprobs);
    this.#drafter = init.drafter;
    this.#draftMax = init.draftMax ?? 0;
    this.#logitsWidth = init.logitsWidth ?? init.vocabSize;
  }

  /** The whole prompt is in the KV cache and the logits of its last token are known. */
  get prefilled(): boolean {
    return this.#prefilled === this.promptTokens.length;
  }

  /** Prompt tokens still to run through the model. */
  get prefillRemaining(): number {
    return this.promptTokens.length - this.#prefilled;
  }

  get finished(): boolean {
    return this.finishReason !== undefined;
  }

  /**
   * Text is held back: the possible start of a stop string, or an unfinished UTF-8 character.
   * It comes out with a later token, or with `takeTail()` once the sequence ends.
   */
  get holding(): boolean {
    return this.#held.length > 0 || (this.#decoder?.pending ?? false);
  }

  /** Draft tokens proposed so far (speculative decoding). */
  get drafted(): number {
    return this.#drafted;
  }

  /** Of those, the tokens the model accepted. */
  get accepted(): number {
    return this.#accepted;
  }

  /** advance() has a token to emit without another forward step (decided by a verification pass). */
  get ready(): boolean {
    return this.finishReason === undefined && this.#pending.length > 0;
  }

  /**
   * With a drafter: propose the tokens the next decode step verifies along with the last sampled
   * token (at most draftMax, and no more than the length limit and the context can use).
   */
  async prepareDraft(): Promise<void> {
    if (!this.#drafter || this.#draft || this.nextItem() === undefined || !this.prefilled) return;
    const n = this.tokens.length;
    const max = Math.min(this.#draftMax, this.#maxTokens - n - 1, this.#seqLen - this.promptTokens.length - n);
    if (max < 1) return;
    const draft = await this.#drafter.propose(this.slot, [...this.promptTokens, ...this.tokens], max, this.#sampler);
    if (draft.tokens.length > 0) this.#draft = { tokens: draft.tokens.slice(0, max), probs: draft.probs?.slice(0, max) };
  }

  /**
   * The rows this sequence runs in the next forward step: (at most `maxRows` of) the rest of
   * its prompt, then the last sampled token; undefined when it has nothing to run (finished,
   * or waiting for advance() to sample from the logits it has).
   */
  nextItem(maxRows = Number.POSITIVE_INFINITY): ForwardItem | undefined {
    if (this.finishReason !== undefined || maxRows < 1) return undefined;
    if (!this.prefilled) {
      const n = Math.min(this.prefillRemaining, maxRows);
      return { slot: this.slot, pos: this.#prefilled, tokens: this.promptTokens.slice(this.#prefilled, this.#prefilled + n) };
    }
    if (this.#logits !== undefined || this.#pending.length > 0 || this.tokens.length === 0) return undefined;
    const pos = this.promptTokens.length + this.tokens.length - 1;
    const last = this.tokens[this.tokens.length - 1]!;
    if (this.#draft) return { slot: this.slot, pos, tokens: [last, ...this.#draft.tokens], allLogits: true };
    return { slot: this.slot, pos, tokens: [last] };
  }

  /**
   * The forward step ran `item` (from nextItem()); `logits` are those of its last row, or of
   * every row for drafted tokens, which are verified here. Returns how many of the item's rows
   * stay valid in the KV cache (rows after a rejected draft token do not).
   */
  accept(item: ForwardItem, logits: Float32Array): number {
    if (!this.prefilled) {
      this.#prefilled += item.tokens.length;
      if (this.prefilled) this.#logits = logits;
      return item.tokens.length;
    }
    const draft = this.#draft;
    this.#draft = undefined;
    if (!draft || !item.allLogits) {
      this.#logits = logits;
      return item.tokens.length;
    }
    const verdict = verifyDraft(this.#sampler, logits, draft, this.#logitsWidth);
    this.#pending = verdict.tokens;
    const top = this.#topLogprobs;
    const width = this.#logitsWidth;
    this.#pendingLogprobs = top === undefined ? [] : verdict.tokens.map((t, i) => tokenLogprob(logits.subarray(i * width, (i + 1) * width), this.#vocabSize, t, top));
    this.#drafted += draft.tokens.length;
    this.#accepted += verdict.accepted;
    return 1 + verdict.accepted;
  }

  /** Finish now with reason "cancelled" (the caller went away). */
  cancel(): void {
    this.finishReason ??= 'cancelled';
    this.#logits = undefined;
    this.#pending = [];
    this.#pendingLogprobs = [];
    this.#draft = undefined;
  }

  /**
   * Sample the next token from the last step's logits. Returns the token with the text it
   * completes, or undefined when there was nothing to sample (still prefilling) or the sequence
   * finished without a new token (cancelled, EOS, max tokens). After a token, the sequence may
   * also have finished (stop string, max tokens, context full); when it ends by max tokens or a
   * full context, the token's text includes whatever was still held back.
   */
  advance(cancelled = false): GeneratedToken | undefined {
    if (this.finishReason !== undefined) return undefined;
    if (cancelled) {
      this.cancel();
      return undefined;
    }
    const logits = this.#logits;
    if (logits === undefined && this.#pending.length === 0) return undefined;
    this.#logits = undefined;
    if (this.tokens.length >= this.#maxTokens) {
      this.finishReason = 'length';
      return undefined;
    }
    let next: number;
    let logprob: TokenLogprob | undefined;
    if (logits === undefined) {
      // A token a verification pass decided (drafts are off under a constraint).
      next = this.#pending.shift()!;
      logprob = this.#pendingLogprobs.shift();
    } else {
      if (this.#constraint) {
        // Tokens left: max tokens, and the context (the token after position seqLen − 1 ends it).
        const budget = Math.min(this.#maxTokens, this.#seqLen - this.promptTokens.length + 1) - this.tokens.length;
        if (this.#constraint.mask(logits, this.#vocabSize, budget) === 0) {
          this.finishReason = 'complete';
          return undefined;
        }
      }
      next = this.#sampler.sample(logits);
      logprob = this.#topLogprobs === undefined ? undefined : tokenLogprob(logits, this.#vocabSize, next, this.#topLogprobs);
    }
    if (this.#stopAtEos && (this.#isEos(next) || next === this.#endsOnBos)) {
      this.finishReason = this.#isEos(next) ? 'eos' : 'bos';
      return undefined;
    }
    this.tokens.push(next);
    this.#constraint?.accept(next);
    if (logprob !== undefined) this.logprobs.push(logprob);
    this.#held += this.#decoder ? this.#decoder.push(next) : '';
    const stopAt = firstStop(this.#held, this.#stops);
    let piece: string;
    if (stopAt >= 0) {
      piece = this.#held.slice(0, stopAt);
      this.#held = '';
      this.finishReason = 'stop';
    } else {
      // Hold back a tail that might be the start of a stop string.
      const safe = this.#held.length - longestStopPrefix(this.#held, this.#stops);
      piece = this.#held.slice(0, safe);
      this.#held = this.#held.slice(safe);
    }
    this.text += piece;
    if (this.finishReason === undefined) {
      if (this.#constraint?.ended) this.finishReason = 'complete';
      else if (this.tokens.length >= this.#maxTokens) this.finishReason = 'length';
      // The new token would sit at position P + n − 1, which must be inside the context.
      else if (this.promptTokens.length + this.tokens.length > this.#seqLen) this.finishReason = 'context';
      if (this.finishReason !== undefined) piece += this.takeTail();
    }
    return logprob ? { token: next, text: piece, logprob } : { token: next, text: piece };
  }

  /**
   * Once the sequence has finished: the text still held back (the start of a stop string that
   * never completed, an unfinished character as U+FFFD), appended to `text` and returned; after
   * a stop string, or a second time, ''. A caller streaming advance()'s pieces emits it after
   * an end without a token (EOS, cancelled) so that the pieces add up to `text`.
   */
  takeTail(): string {
    return this.finishReason === undefined ? '' : this.#tail();
  }

  #tail(): string {
    if (this.finishReason === 'stop' || !this.#decoder) return '';
    const rest = this.#held + this.#decoder.flush();
    this.#held = '';
    this.text += rest;
    return rest;
  }

  #result: GenerationResultBase | undefined;

  /** The finished sequence's tokens and text (the held-back tail flushed), with `stats`. */
  result<S>(stats: S): GenerationResultBase & { stats: S } {
    if (!this.#result) {
      this.#tail();
      this.#result = { promptTokens: this.promptTokens, tokens: this.tokens, text: this.text, finishReason: this.finishReason ?? 'length' };
      if (this.#topLogprobs !== undefined) this.#result.logprobs = this.logprobs;
    }
    return { ...this.#result, stats };
  }
}

interface GenerationResultBase {
  promptTokens: number[];
  tokens: number[];
  text: string;
  finishReason: FinishReason;
  /** Each generated token's log-probability, when SequenceOptions.logprobs asked for them. */
  logprobs?: TokenLogprob[];
}

/** Index of the first complete stop string in s, or -1. */
function firstStop(s: string, stops: readonly string[]): number {
  let best = -1;
  for (const st of stops) {
    const i = s.indexOf(st);
    if (i >= 0 && (best < 0 || i < best)) best = i;
  }
  return best;
}

/** Length of the longest suffix of s that is a proper prefix of a stop string. */
function longestStopPrefix(s: string, stops: readonly string[]): number {
  let best = 0;
  for (const st of stops) {
    for (let n = Math.min(st.length - 1, s.length); n > best; n--) {
      if (s.endsWith(st.slice(0, n))) {
        best = n;
        break;
      }
    }
  }
  return best;
}
