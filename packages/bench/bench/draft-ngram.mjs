/**
 * Tokens per pass with `--draft ngram` (prompt lookup) on stories260K, greedy (measured, not a
 * test): the five prompts llama2.c's run.c was run on (packages/engine/test/fixtures/llama2c),
 * each until the model ends the story, and input-grounded prompts whose text the model is
 * asked to continue or repeat. For each: generated tokens, passes over the model (the prompt's
 * pass included) with and without the draft, tokens drafted and accepted, tokens per pass, and
 * whether the ids equal those of the run without a draft.
 *
 *   node packages/bench/bench/draft-ngram.mjs [--draft-max N]
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { LayerWiseInferenceEngine } from '@airllm/engine';

const repo = fileURLToPath(new URL('../../../', import.meta.url));
const draftMax = process.argv.includes('--draft-max') ? Number(process.argv[process.argv.indexOf('--draft-max') + 1]) : 8;
const cases = JSON.parse(readFileSync(`${repo}packages/engine/test/fixtures/llama2c/stories260k_prompts.json`, 'utf8')).cases;

const story = 'Lily and Tom went to the park. They saw a big dog. The dog was brown and happy. Lily gave the dog a ball.';
const grounded = [
  { name: 'repeat a story', prompt: `${story} ${story} ${story.slice(0, 40)}` },
  { name: 'continue a list', prompt: 'one, two, three, one, two, three, one, two, three, one, two,' },
];

const engine = new LayerWiseInferenceEngine(`${repo}fixtures/dllama_model_stories260k_hidden192_f32.m`, {
  tokenizerPath: `${repo}fixtures/dllama_tokenizer_stories260k.t`,
  maxSeqLen: 512,
  threads: 1,
});
await engine.initialize();

async function run(prompt, draft, maxTokens) {
  const gen = engine.generate(prompt, { temperature: 0, maxTokens, ...(draft ? { draft: 'ngram', draftMax } : {}) });
  let r = await gen.next();
  while (!r.done) r = await gen.next();
  return r.value;
}

const rows = [];
for (const c of [...cases.map((c) => ({ name: JSON.stringify(c.prompt), prompt: c.prompt })), ...grounded]) {
  const plain = await run(c.prompt, false, 512);
  const spec = await run(c.prompt, true, 512);
  const s = spec.stats;
  rows.push({
    prompt: c.name.length > 40 ? `${c.name.slice(0, 37)}...` : c.name,
    tokens: s.generatedTokens,
    end: spec.finishReason,
    passes: s.passes,
    passesWithout: plain.stats.passes,
    drafted: s.draftedTokens,
    accepted: s.acceptedTokens,
    tokensPerPass: +(s.generatedTokens / s.passes).toFixed(2),
    sameIds: JSON.stringify(spec.tokens) === JSON.stringify(plain.tokens),
  });
}
await engine.cleanup();
console.log(`stories260K F32, greedy, --draft ngram --draft-max ${draftMax}`);
console.table(rows);
