/**
 * Continuous batching: one loop owns the engine's KV cache slots and decodes every sequence in
 * flight together, one token each per forward step (each layer's weights are read once for all
 * of them). A new sequence takes a free slot at the next step, where its prompt runs as a chunk
 * beside the tokens being decoded; one that finishes, or whose caller went away, leaves after
 * the step it is in and frees its slot for the next waiting one (first come, first served).
 * It drives only the engine's public sequence API (beginSequence, forwardSequences,
 * Sequence.advance), as any caller could; the server runs every request through one.
 *
 *   const scheduler = new BatchScheduler(engine, engine.maxSequences);
 *   const r = await scheduler.run({ prompt, options, signal, onText: (t) => process.stdout.write(t) });
 */
import type { LayerWiseInferenceEngine } from './engine.js';
import type { TokenLogprob } from './logprobs.js';
import type { Sequence, SequenceOptions } from './sequence.js';

export interface SequenceJob {
  prompt: readonly number[];
  options: SequenceOptions;
  /** Aborted: the sequence leaves (while waiting for a slot: at once; in a slot: after this step). */
  signal: AbortSignal;
  /**
   * Each piece of text as it is decoded (complete UTF-8, never the start of a stop string), with
   * the log-probabilities of the tokens generated since the last call when options.logprobs
   * asked for them (then it is also called for tokens whose text is held back, with text '').
   */
  onText: (text: string, logprobs: readonly TokenLogprob[]) => void;
}

export interface SequenceTimings {
  /** Time from submit to a slot. */
  waitMs: number;
  /** Time from a slot to the prompt's last KV row. */
  prefillMs: number;
  decodeMs: number;
  /** Tokens the draft proposed and the model accepted (speculative decoding; 0 without a draft). */
  draftedTokens: number;
  acceptedTokens: number;
}

export type SequenceResult = ReturnType<Sequence['result']> & { stats: SequenceTimings };

export interface SchedulerStats {
  /** KV cache slots (sequences decoded together at most). */
  slots: number;
  /** Sequences in a slot now. */
  active: number;
  /** Sequences waiting for a slot. */
  queued: number;
  /** Forward steps run. */
  steps: number;
  /** Most sequences that ran in one forward step. */
  maxBatch: number;
}

interface Entry {
  job: SequenceJob;
  resolve: (r: SequenceResult) => void;
  reject: (e: unknown) => void;
  submitted: number;
  admitted: number;
  prefilled: number;
  /** Log-probabilities already handed to onText. */
  sentLogprobs: number;
  seq?: Sequence;
  failure?: { error: unknown };
}

export class BatchScheduler {
  readonly #engine: LayerWiseInferenceEngine;
  readonly #slots: number;
  readonly #waiting: Entry[] = [];
  /** Slot → the sequence in it. */
  readonly #active = new Map<number, Entry>();
  #driving = false;
  #steps = 0;
  #maxBatch = 0;

  /** Drive `slots` KV cache slots (0..slots-1) of `engine`; nothing else may use them meanwhile. */
  constructor(engine: LayerWiseInferenceEngine, slots: number) {
    this.#engine = engine;
    this.#slots = slots;
  }

  get stats(): SchedulerStats {
    return { slots: this.#slots, active: this.#active.size, queued: this.#waiting.length, steps: this.#steps, maxBatch: this.#maxBatch };
  }

  /**
   * Generate for one prompt. Resolves when the sequence finishes (finishReason "cancelled" when
   * its signal aborted); rejects with the engine's error (e.g. ContextOverflowError) or
   * onText's.
   */
  run(job: SequenceJob): Promise<SequenceResult> {
    return new Promise((resolve, reject) => {
      const entry: Entry = { job, resolve, reject, submitted: performance.now(), admitted: 0, prefilled: 0, sentLogprobs: 0 };
      if (job.signal.aborted) {
        resolve(cancelledBeforeStart(job, entry.submitted));
        return;
      }
      const onAbort = (): void => {
        const i = this.#waiting.indexOf(entry);
        if (i < 0) return; // in a slot: it leaves at the next step
        this.#waiting.splice(i, 1);
        resolve(cancelledBeforeStart(job, entry.submitted));
      };
      job.signal.addEventListener('abort', onAbort, { once: true });
      const settle = <T>(f: (v: T) => void) => (v: T): void => {
        job.signal.removeEventListener('abort', onAbort);
        f(v);
      };
      entry.resolve = settle(resolve);
      entry.reject = settle(reject);
      this.#waiting.push(entry);
      if (!this.#driving) {
        this.#driving = true;
        void this.#drive();
      }
    });
  }

  /** Give free slots to waiting sequences, in arrival order. */
  #admit(): void {
    while (this.#waiting.length > 0 && this.#active.size < this.#slots) {
      const e = this.#waiting.shift()!;
      try {
        e.seq = this.#engine.beginSequence(e.job.prompt, { ...e.job.options, slot: this.#pickSlot(e.job.prompt) });
      } catch (error) {
        e.reject(error);
        continue;
      }
      e.admitted = performance.now();
      this.#active.set(e.seq.slot, e);
    }
  }

  /** The free slot whose KV cache already holds the longest prefix of the prompt (chat turns). */
  #pickSlot(prompt: readonly number[]): number {
    let best = -1;
    let bestLen = -1;
    for (let slot = 0; slot < this.#slots; slot++) {
      if (this.#active.has(slot)) continue;
      const n = this.#engine.cachedPrefix(slot, prompt);
      if (n > bestLen) [best, bestLen] = [slot, n];
    }
    return best;
  }

  #finish(e: Entry): void {
    const seq = e.seq!;
    this.#active.delete(seq.slot);
    if (e.failure) {
      e.reject(e.failure.error);
      return;
    }
    const end = performance.now();
    const prefilled = e.prefilled || end;
    const streamed = seq.text.length;
    const r = seq.result({ waitMs: e.admitted - e.submitted, prefillMs: prefilled - e.admitted, decodeMs: end - prefilled, draftedTokens: seq.drafted, acceptedTokens: seq.accepted });
    // The tail held back while it could still start a stop string (or complete a character) is
    // part of the answer once the sequence ends otherwise: stream it too.
    if ((r.text.length > streamed || seq.logprobs.length > e.sentLogprobs) && !e.job.signal.aborted) {
      try {
        e.job.onText(r.text.slice(streamed), newLogprobs(e));
      } catch (error) {
        e.reject(error);
        return;
      }
    }
    e.resolve(r);
  }

  async #drive(): Promise<void> {
    try {
      for (;;) {
        this.#admit();
        for (const e of [...this.#active.values()]) {
          if (e.job.signal.aborted) {
            e.seq!.cancel();
            this.#finish(e);
          }
        }
        // Everything admitted failed to start or left; the loop ends when nothing is left.
        if (this.#active.size === 0) {
          if (this.#waiting.length === 0) return;
          continue;
        }
        const running = [...this.#active.values()];
        try {
          const ran = await this.#engine.forwardSequences(running.map((e) => e.seq!));
          this.#steps++;
          this.#maxBatch = Math.max(this.#maxBatch, ran);
        } catch (error) {
          // A failed step leaves every sequence in it with unknown KV rows: all of them fail.
          for (const e of running) {
            e.failure ??= { error };
            this.#finish(e);
          }
          continue;
        }
        const now = performance.now();
        for (const e of running) {
          const seq = e.seq!;
          if (seq.prefilled && e.prefilled === 0) e.prefilled = now;
          // A verification pass may have decided several tokens: stream them all now.
          do {
            const t = seq.advance(e.job.signal.aborted);
            if (t && (t.text || t.logprob)) {
              try {
                e.job.onText(t.text, newLogprobs(e));
              } catch (error) {
                e.failure = { error };
                seq.cancel();
              }
            }
          } while (seq.ready);
          if (seq.finished) this.#finish(e);
        }
      }
    } catch (error) {
      // Not expected (every step's errors go to their sequences); never leave a caller waiting.
      for (const e of [...this.#active.values(), ...this.#waiting.splice(0)]) e.reject(error);
      this.#active.clear();
    } finally {
      this.#driving = false;
    }
  }
}

/** The log-probabilities of `e`'s sequence not yet handed to onText (marked as handed). */
function newLogprobs(e: Entry): readonly TokenLogprob[] {
  const all = e.seq!.logprobs;
  const fresh = e.sentLogprobs < all.length ? all.slice(e.sentLogprobs) : [];
  e.sentLogprobs = all.length;
  return fresh;
}

function cancelledBeforeStart(job: SequenceJob, submitted: number): SequenceResult {
  return {
    promptTokens: [...job.prompt],
    tokens: [],
    text: '',
    finishReason: 'cancelled',
    stats: { waitMs: performance.now() - submitted, prefillMs: 0, decodeMs: 0, draftedTokens: 0, acceptedTokens: 0 },
  };
}
