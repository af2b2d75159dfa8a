import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FloatType } from '@airllm/format';
import { importHf } from '@airllm/format/convert';
import { tinyHfCheckpoint, writeHfDir } from '@airllm/format/testing';
import { cachedModel, parseHubSpec, pullModel, resolveHubModel, type PullEvent } from '../src/index.js';
import { FakeHub, type FakeHubFile } from '../src/testing/index.js';
import { tempDir } from './helpers.js';

const root = tempDir('hub-convert');
const source = join(root, 'source');

const byteLevel = {
  model: { type: 'BPE', vocab: { a: 0, b: 1, 'Ġ': 2, 'Ġa': 3, ab: 4, 'Ċ': 5, c: 6 } },
  added_tokens: [
    { id: 7, content: '<|endoftext|>', special: true },
    { id: 8, content: '<|im_start|>', special: true },
    { id: 9, content: '<|im_end|>', special: true },
  ],
  decoder: { type: 'ByteLevel' },
};

let hub: FakeHub;
beforeAll(async () => {
  // A sharded qwen3 checkpoint with an index, as a Transformers repository has it (plus files
  // a pull must leave alone).
  writeHfDir(source, tinyHfCheckpoint({ modelType: 'qwen3', vocab: 12, tied: true, dtype: () => 'BF16' }), {
    shards: 3,
    files: { 'tokenizer.json': byteLevel, 'tokenizer_config.json': { eos_token: '<|im_end|>', chat_template: '<|im_start|>' }, 'README.md': '# tiny', 'pytorch_model.bin': 'not used' },
  });
  const files: FakeHubFile[] = readdirSync(source).map((f) => ({ path: f, content: readFileSync(join(source, f)) }));
  hub = await FakeHub.start({ repos: [{ id: 'acme/qwen', files }], cdn: 'separate' });
});
afterAll(() => hub.close());

/** The reference: @airllm/format's importer run on the checkpoint folder itself. */
async function reference(dtype: FloatType, name: string): Promise<{ m: Buffer; t: Buffer }> {
  const model = join(root, `${name}.m`);
  const tok = join(root, `${name}.t`);
  await importHf({ dir: source, model, tokenizerOut: tok }, { dtype });
  return { m: readFileSync(model), t: readFileSync(tok) };
}

describe('pull of a safetensors repository', () => {
  it('downloads config, tokenizer and the indexed shards, converts them to .m + .t as `convert hf` would, and drops the shards', async () => {
    const cache = join(root, 'cache');
    const events: PullEvent[] = [];
    // A dropped connection in the middle of a shard on the way.
    hub.fault({ path: 'model-00002-of-00003.safetensors', kind: 'drop', at: 5000 });
    const r = await pullModel('hf:acme/qwen', { endpoint: hub.url, cacheDir: cache, retryDelayMs: 10, onEvent: (e) => events.push(e) });
    expect(r.modelPath).toBe(join(cache, 'acme', 'qwen.m'));
    expect(r.tokenizerPath).toBe(join(cache, 'acme', 'qwen.t'));
    expect(r.converted).toEqual({ dtype: 'q40' });
    const ref = await reference(FloatType.Q40, 'ref-q40');
    expect(Buffer.compare(readFileSync(r.modelPath), ref.m)).toBe(0);
    expect(Buffer.compare(readFileSync(r.tokenizerPath!), ref.t)).toBe(0);
    expect(r.files.map((f) => f.path).sort()).toEqual([
      'config.json', 'model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors',
      'model.safetensors.index.json', 'tokenizer.json', 'tokenizer_config.json',
    ]);
    expect(events.some((e) => e.type === 'retry' && e.file === 'model-00002-of-00003.safetensors')).toBe(true);
    expect(events.filter((e) => e.type === 'convert').at(-1)).toMatchObject({ done: ref.m.length, total: ref.m.length });
    // Shards gone, small files kept, nothing half-done anywhere.
    expect(readdirSync(join(cache, 'acme', 'qwen')).sort()).toEqual([
      'config.json', 'config.json.pull.json', 'model.safetensors.index.json', 'model.safetensors.index.json.pull.json',
      'tokenizer.json', 'tokenizer.json.pull.json', 'tokenizer_config.json', 'tokenizer_config.json.pull.json',
    ]);
    expect(readdirSync(join(cache, 'acme')).sort()).toEqual(['qwen', 'qwen.m', 'qwen.m.pull.json', 'qwen.t', 'qwen.tokenizer.json']);
    const record = JSON.parse(readFileSync(`${r.modelPath}.pull.json`, 'utf8')) as { commit: string; dtype: string };
    expect(record).toMatchObject({ commit: hub.commit('acme/qwen'), dtype: 'q40' });
    expect(hub.contentRequests('pytorch_model.bin')).toHaveLength(0);
    expect(hub.contentRequests('README.md')).toHaveLength(0);

    // Up to date: the hub is asked for the commit and the listing, no file moves.
    const served = hub.requests.filter((q) => q.file !== undefined).length;
    const again = await pullModel('hf:acme/qwen', { endpoint: hub.url, cacheDir: cache });
    expect(again.files).toEqual([]);
    expect(hub.requests.filter((q) => q.file !== undefined).length).toBe(served);
    expect(await resolveHubModel('hf:acme/qwen', { endpoint: hub.url, cacheDir: cache })).toEqual({ modelPath: r.modelPath, tokenizerPath: r.tokenizerPath, pulled: false });

    // Another weight type converts again from freshly downloaded shards.
    const f16 = await pullModel('hf:acme/qwen', { endpoint: hub.url, cacheDir: cache, dtype: FloatType.F16, keepSource: true });
    const ref16 = await reference(FloatType.F16, 'ref-f16');
    expect(Buffer.compare(readFileSync(f16.modelPath), ref16.m)).toBe(0);
    expect(existsSync(join(cache, 'acme', 'qwen', 'model-00001-of-00003.safetensors'))).toBe(true);
  });

  it('a model the converter cannot take is refused after config.json, before any shard is downloaded', async () => {
    const dir = join(root, 'gemma');
    writeHfDir(dir, tinyHfCheckpoint({ modelType: 'llama', extraConfig: { model_type: 'gemma' } }), { files: { 'tokenizer.json': byteLevel } });
    hub.addRepo({ id: 'acme/gemma', files: readdirSync(dir).map((f) => ({ path: f, content: readFileSync(join(dir, f)) })) });
    const cache = join(root, 'cache-gemma');
    const e = await pullModel('hf:acme/gemma', { endpoint: hub.url, cacheDir: cache }).catch((x: Error) => x);
    expect((e as { code?: string }).code).toBe('AIRLLM_UNSUPPORTED_MODEL');
    expect((e as Error).message).toMatch(/config\.json.*unsupported model_type.*gemma/);
    expect(hub.requests.filter((q) => q.file === 'model.safetensors').length).toBe(0);
    expect(await cachedModel(parseHubSpec('hf:acme/gemma'), cache)).toBeUndefined();
  });
});
