import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseTokenizer, writeTokenizer } from '@airllm/format';
import { LayerWiseInferenceEngine, type GenerateOptions, type GenerationResult } from '@airllm/engine';
import { F32_MODEL, FIXTURE_TOKENIZER, FIXTURES, tempDir } from './helpers.js';

// Text held back while it may still start a stop string reaches a streaming caller of
// generate() too, when the answer ends otherwise: the yielded pieces add up to result.text.
const reference = JSON.parse(readFileSync(join(FIXTURES, 'reference_llama2c_stories260k.json'), 'utf8')) as {
  bos_only: { generated_tokens: number[]; text: string };
};
const EXPECTED = reference.bos_only.generated_tokens;
// run.c prints a final newline after the story.
const TEXT = reference.bos_only.text.replace(/\n$/, '');

async function stream(engine: LayerWiseInferenceEngine, options: GenerateOptions): Promise<{ pieces: string[]; tokens: number[]; result: GenerationResult }> {
  const pieces: string[] = [];
  const tokens: number[] = [];
  const gen = engine.generate([1], { temperature: 0, ...options });
  for (let r = await gen.next(); ; r = await gen.next()) {
    if (r.done) return { pieces, tokens, result: r.value };
    pieces.push(r.value.text);
    tokens.push(r.value.token);
  }
}

const tmp = tempDir();
afterAll(() => tmp.cleanup());

describe('the held-back tail is streamed when a generation ends without its stop string', () => {
  it('at max tokens: the last token carries it (stories260K against llama2.c)', async () => {
    const held = TEXT.slice(-4);
    const engine = new LayerWiseInferenceEngine(F32_MODEL, { tokenizerPath: FIXTURE_TOKENIZER, threads: 1 });
    await engine.initialize();
    try {
      // A stop string that starts with the story's last characters but never completes.
      const { pieces, tokens, result } = await stream(engine, { maxTokens: EXPECTED.length, stopAtEos: false, stop: [`${held}\u0001`] });
      expect(tokens).toEqual(EXPECTED);
      expect(result.finishReason).toBe('length');
      expect(result.text).toBe(TEXT);
      expect(pieces.join('')).toBe(TEXT);
      expect(pieces.at(-1)!.endsWith(held)).toBe(true);
    } finally {
      await engine.cleanup();
    }
  });

  describe('at an end-of-sequence token', () => {
    // The fixture's tokenizer with its EOS id moved to a token greedy decoding first emits at
    // step k, so the story ends there with an EOS (stories260K never samples its own EOS).
    const k = EXPECTED.findIndex((t, i) => i >= 40 && !EXPECTED.slice(0, i).includes(t));
    const tokenizerPath = join(tmp.dir, 'eos-moved.t');
    beforeAll(() => {
      const data = parseTokenizer(readFileSync(FIXTURE_TOKENIZER));
      writeFileSync(tokenizerPath, writeTokenizer({ ...data, eosIds: [EXPECTED[k]!] }));
    });

    it('the token before it is yielded with the tail', async () => {
      const engine = new LayerWiseInferenceEngine(F32_MODEL, { tokenizerPath, threads: 1 });
      await engine.initialize();
      try {
        const plain = await stream(engine, { maxTokens: k, stopAtEos: false });
        expect(plain.tokens).toEqual(EXPECTED.slice(0, k));
        const before = plain.result.text;
        expect(TEXT.startsWith(before)).toBe(true);
        const held = before.slice(-3);

        const { pieces, tokens, result } = await stream(engine, { maxTokens: EXPECTED.length, stop: [`${held}\u0001`] });
        expect(result.finishReason).toBe('eos');
        expect(tokens).toEqual(EXPECTED.slice(0, k));
        expect(result.text).toBe(before);
        expect(pieces.join('')).toBe(before);
        expect(pieces.at(-1)!.endsWith(held)).toBe(true);
      } finally {
        await engine.cleanup();
      }
    });
  });
});
