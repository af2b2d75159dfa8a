import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ChatFormatter, LayerWiseInferenceEngine, type ChatMessage, type EngineOptions, type GenerateOptions, type InitializeOptions } from '@airllm/engine';

const here = dirname(fileURLToPath(import.meta.url));
export const BIN = resolve(here, '../bin/airllm.js');
export const MODEL = resolve(here, '../models/stories260K.m');
export const TOKENIZER = resolve(here, '../models/stories260K.t');
export const FIXTURES = resolve(here, '../../../fixtures');

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * The bundled model with an adjustable pause before every forward step, so tests can hold a
 * generation open long enough to queue, disconnect or shut down during it, whatever the speed
 * of the kernels. The numbers it computes are the engine's own.
 */
export class SlowEngine extends LayerWiseInferenceEngine {
  delayMs = 0;
  #slowed = false;
  constructor(options: EngineOptions = {}) {
    super(MODEL, { threads: 1, ...options });
  }
  override async initialize(init?: InitializeOptions): Promise<void> {
    await super.initialize(init);
    if (this.#slowed) return;
    this.#slowed = true;
    const model = this.model;
    this.model = {
      forward: async (items) => {
        if (this.delayMs > 0) await sleep(this.delayMs);
        return model.forward(items);
      },
    };
  }
}

/** Poll until `check` holds (or fail after `ms`). */
export async function until(check: () => boolean, ms = 10_000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/**
 * Single-request reference runs on a separate engine: what one client alone gets for a prompt
 * (greedy), computed without the server.
 */
export class Reference {
  readonly engine: LayerWiseInferenceEngine;
  #chat: ChatFormatter | undefined;

  /** Use the same kernels and thread count as the run it is compared with (sums in the same order). */
  constructor(options: EngineOptions = {}) {
    this.engine = new LayerWiseInferenceEngine(MODEL, { threads: 1, ...options });
  }

  async init(): Promise<void> {
    await this.engine.initialize();
    this.#chat = new ChatFormatter(this.engine.tokenizer);
  }

  async #run(prompt: string | number[], options: GenerateOptions): Promise<{ text: string; promptTokens: number; tokens: number; finishReason: string }> {
    const gen = this.engine.generate(prompt, { temperature: 0, ...options });
    let r = await gen.next();
    while (!r.done) r = await gen.next();
    return { text: r.value.text, promptTokens: r.value.promptTokens.length, tokens: r.value.tokens.length, finishReason: r.value.finishReason };
  }

  chat(messages: ChatMessage[], maxTokens: number): ReturnType<Reference['completion']> {
    const f = this.#chat!;
    return this.#run(f.encode(messages), { maxTokens, stop: f.stop });
  }

  completion(prompt: string, maxTokens: number, stop: string[] = []): Promise<{ text: string; promptTokens: number; tokens: number; finishReason: string }> {
    return this.#run(prompt, { maxTokens, stop });
  }

  cleanup(): Promise<void> {
    return this.engine.cleanup();
  }
}
