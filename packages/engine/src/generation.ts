import type { EngineConfig } from './config.js';
import { ContextOverflowError, OptionError } from './errors.js';
import { JsonConstraint } from './grammar/constraint.js';
import { VocabIndex } from './grammar/vocab-index.js';
import type { KvHistory } from './history.js';
import type { TokenLogprob } from './logprobs.js';
import { Sampler } from './sampler.js';
import { Sequence, type FinishReason, type ForwardItem, type GeneratedToken, type SequenceOptions } from './sequence.js';
import { DEFAULT_DRAFT_MAX, type Drafter } from './speculative.js';
import type { Tokenizer } from './tokenizer.js';

export interface GenerateOptions extends SequenceOptions {
  /** Cancel between tokens. */
  signal?: AbortSignal;
}

/** Options of beginSequence: a sequence's own sampling, length and stop rules, and its slot. */
export interface BeginSequenceOptions extends SequenceOptions {
  /** KV cache slot, 0..maxSequences-1 (default 0). */
  slot?: number;
}

export interface GenerationStats {
  promptTokens: number;
  /** Prompt tokens whose KV cache was reused from the previous generation. */
  cachedPromptTokens: number;
  generatedTokens: number;
  prefillMs: number;
  decodeMs: number;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
  /** Time compute threads waited for layers to become resident. */
  loadWaitMs: number;
  computeMs: number;
  /** Bytes the process read from disk during the generation (/proc/self/io). */
  diskBytesRead: number;
  peakRssBytes: number;
  /** Passes over the model's layers (forward steps) during the generation. */
  passes: number;
  /** Tokens proposed by the draft (speculative decoding; 0 without one). */
  draftedTokens: number;
  /** Of those, the tokens the model accepted. */
  acceptedTokens: number;
}

export interface GenerationResult {
  promptTokens: number[];
  tokens: number[];
  text: string;
  finishReason: FinishReason;
  /** Each generated token's log-probability, when GenerateOptions.logprobs asked for them. */
  logprobs?: TokenLogprob[];
  stats: GenerationStats;
}

/** What starting a sequence needs from the engine. */
export interface SequenceContext {
  readonly config: EngineConfig;
  readonly tokenizer: Tokenizer | undefined;
  readonly history: KvHistory;
  encode(prompt: string | readonly number[], bos?: boolean): number[];
  checkTokens(tokens: readonly number[]): void;
  /** The drafter for options.draft (undefined for none); throws when the draft cannot be used. */
  drafter(draft: SequenceOptions['draft']): Drafter | undefined;
}

/**
 * A sequence in a KV cache slot: the prompt encoded and checked against the context, the slot's
 * cached KV rows reused for the longest common prefix (the last prompt token is always
 * recomputed for its logits).
 */
export function beginSequence(ctx: SequenceContext, prompt: string | readonly number[], options: BeginSequenceOptions, what: string): Sequence {
  const c = ctx.config;
  const slot = options.slot ?? 0;
  if (!Number.isInteger(slot) || slot < 0 || slot >= c.maxSequences) throw new OptionError('slot', `must be 0..${c.maxSequences - 1}, got ${options.slot}`);
  const maxTokens = options.maxTokens ?? 256;
  if (!Number.isInteger(maxTokens) || maxTokens < 0) throw new OptionError('maxTokens', `must be a whole number ≥ 0, got ${options.maxTokens}`);
  const promptTokens = ctx.encode(prompt, options.bos);
  if (promptTokens.length === 0) throw new OptionError('prompt', `${what} encodes to no tokens (empty prompt without BOS)`);
  if (promptTokens.length >= c.seqLen) {
    throw new ContextOverflowError(
      `${what} has ${promptTokens.length} tokens but the context holds ${c.seqLen} (one more is needed to generate)`,
      promptTokens.length + 1,
      c.seqLen,
    );
  }
  ctx.checkTokens(promptTokens);
  const drafter = ctx.drafter(options.draft);
  const draftMax = options.draftMax ?? Math.min(DEFAULT_DRAFT_MAX, c.batchSize - 1);
  if (!Number.isInteger(draftMax) || draftMax < 0 || draftMax > c.batchSize - 1) {
    throw new OptionError('draftMax', `must be a whole number 0..${c.batchSize - 1} (batchSize − 1: one pass verifies them), got ${options.draftMax}`);
  }
  const tokenizer = ctx.tokenizer;
  const vocabSize = tokenizer?.vocabSize ?? c.model.vocabSize;
  let constraint: JsonConstraint | undefined;
  if (options.jsonSchema !== undefined) {
    if (!tokenizer) throw new OptionError('jsonSchema', 'constrained output needs the model\'s tokenizer');
    constraint = new JsonConstraint(options.jsonSchema, VocabIndex.of(tokenizer), tokenizer.eosIds);
  }
  return new Sequence(
    {
      slot,
      promptTokens,
      cached: Math.min(ctx.history.cachedPrefix(slot, promptTokens), promptTokens.length - 1),
      seqLen: c.seqLen,
      vocabSize,
      decoder: tokenizer?.decoder(),
      isEos: (t) => tokenizer?.isEos(t) ?? false,
      endsOnBos: tokenizer?.endsOnBos === true ? tokenizer.bosId : undefined,
      options,
      // Drafted tokens are verified by the plain sampler, so constrained output decodes one token per pass.
      drafter: constraint ? undefined : drafter,
      draftMax,
      logitsWidth: c.model.vocabSize,
      constraint,
    },
    new Sampler(vocabSize, options),
  );
}

/**
 * The rows each sequence runs in the next step: tokens to decode first, then prompt chunks
 * sharing what is left of `maxRows` (a prompt that gets no room waits a step).
 */
export function packStep(seqs: readonly Sequence[], maxRows: number): { s: Sequence; item: ForwardItem }[] {
  const run: { s: Sequence; item: ForwardItem }[] = [];
  let rows = 0;
  for (const s of seqs) {
    const item = s.prefilled ? s.nextItem() : undefined;
    if (item) {
      run.push({ s, item });
      rows += item.tokens.length;
    }
  }
  for (const s of seqs) {
    const item = s.prefilled ? undefined : s.nextItem(maxRows - rows);
    if (item) {
      run.push({ s, item });
      rows += item.tokens.length;
    }
  }
  return run;
}

/** Figures counted across steps, read before and after a generation. */
export interface Counters {
  waitMs: number;
  computeMs: number;
  diskBytes: number;
  passes: number;
}

/**
 * Decode sequences together until each finishes: `step` runs one forward step for all of them.
 * Yields each token with the text it completes (the texts add up to each result's text); returns
 * the results.
 */
export async function* generateSequences(
  seqs: readonly Sequence[],
  step: (seqs: readonly Sequence[]) => Promise<number>,
  counters: () => Counters,
  signal: AbortSignal | undefined,
): AsyncGenerator<GeneratedToken & { index: number }, GenerationResult[]> {
  const before = counters();
  const t0 = performance.now();
  await step(seqs);
  const t1 = performance.now();

  // A token after which text is held back (the possible start of a stop string, half a
  // character) is yielded once the next token arrives, or with that text if the sequence ends
  // without another token (EOS, cancelled): the yielded texts always add up to result.text.
  const waiting = new Map<number, GeneratedToken>();
  for (;;) {
    for (const s of seqs) {
      // A verification pass may have decided several tokens: emit them all before the next step.
      do {
        const t = s.advance(signal?.aborted ?? false);
        const w = waiting.get(s.slot);
        if (w && (t || s.finished)) {
          waiting.delete(s.slot);
          yield { ...w, index: s.slot, text: t ? w.text : w.text + s.takeTail() };
        }
        if (!t) continue;
        if (!s.finished && s.holding) waiting.set(s.slot, t);
        else yield { ...t, index: s.slot };
      } while (s.ready);
    }
    if (seqs.every((s) => s.finished)) break;
    await step(seqs);
  }
  const t2 = performance.now();
  const after = counters();
  const generated = seqs.reduce((n, s) => n + s.tokens.length, 0);
  return seqs.map((s): GenerationResult =>
    s.result({
      promptTokens: s.promptTokens.length,
      cachedPromptTokens: s.cached,
      generatedTokens: s.tokens.length,
      prefillMs: t1 - t0,
      decodeMs: t2 - t1,
      prefillTokensPerSecond: seqs.reduce((n, q) => n + q.promptTokens.length - q.cached, 0) / ((t1 - t0) / 1000),
      // Tokens after each sequence's first, over the decode time (several per step with a draft).
      decodeTokensPerSecond: generated > seqs.length ? (generated - seqs.length) / ((t2 - t1) / 1000) : 0,
      loadWaitMs: after.waitMs - before.waitMs,
      computeMs: after.computeMs - before.computeMs,
      diskBytesRead: after.diskBytes - before.diskBytes,
      peakRssBytes: process.resourceUsage().maxRSS * 1024,
      passes: after.passes - before.passes,
      draftedTokens: s.drafted,
      acceptedTokens: s.accepted,
    }),
  );
}
