import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { HEADROOM_MIN_BYTES, LayerWiseInferenceEngine, planMemory, type EngineOptions, type MemoryPlan } from '@airllm/engine';
import { readModelFile } from '@airllm/format';
import { F32_MODEL, FIXTURE_TOKENIZER, FIXTURES } from './helpers.js';

const GB = 1e9;
const GiB = 2 ** 30;

describe('the automatic memory plan (pure)', () => {
  const sizes = { weightBytes: 39.7 * GB, kvBytes: 0.3 * GB, workingBytes: 0.4 * GB };

  it('resident when model + KV + working + headroom fit, with the sum in the reason', () => {
    const p = planMemory({ weightBytes: 3.8 * GB, kvBytes: 1 * GB, workingBytes: 0.5 * GB, available: { bytes: 22 * GiB, source: 'MemAvailable' } });
    expect(p.mode).toBe('resident');
    expect(p.budgetBytes).toBeUndefined();
    expect(p.headroomBytes).toBe(Math.floor(22 * GiB * 0.1));
    expect(p.reason).toContain('model 3.80 GB + KV cache 1.00 GB + working 0.50 GB');
    expect(p.reason).toContain('MemAvailable');
  });

  it('stream when they do not: budget = available − KV − working − headroom', () => {
    const avail = 22 * GiB;
    const p = planMemory({ ...sizes, available: { bytes: avail, source: 'MemAvailable' } });
    expect(p.mode).toBe('stream');
    const headroom = Math.floor(avail * 0.1);
    expect(p.budgetBytes).toBe(avail - sizes.kvBytes - sizes.workingBytes - headroom);
    expect(p.reason).toMatch(/exceeds 23\.62 GB available \(MemAvailable\); weight budget 20\.56 GB/);
  });

  it('a cgroup figure is planned against like any other, with its source named', () => {
    const p = planMemory({ ...sizes, weightBytes: 3 * GB, available: { bytes: 2 * GiB, source: 'cgroup v2 memory.max' } });
    expect(p.mode).toBe('stream');
    expect(p.headroomBytes).toBe(HEADROOM_MIN_BYTES);
    expect(p.budgetBytes).toBe(2 * GiB - 0.7 * GB - HEADROOM_MIN_BYTES);
    expect(p.source).toBe('cgroup v2 memory.max');
  });

  it('the boundary: exactly enough is resident, one byte less streams', () => {
    const headroom = HEADROOM_MIN_BYTES;
    const need = sizes.weightBytes + sizes.kvBytes + sizes.workingBytes + headroom;
    // 10 % of `need` is above the minimum headroom, so use a figure where the minimum applies.
    const small = { weightBytes: 1e8, kvBytes: 1e6, workingBytes: 2e8 };
    const exact = small.weightBytes + small.kvBytes + small.workingBytes + headroom;
    expect(planMemory({ ...small, available: { bytes: exact, source: 'MemAvailable' } }).mode).toBe('resident');
    expect(planMemory({ ...small, available: { bytes: exact - 1, source: 'MemAvailable' } })).toMatchObject({ mode: 'stream', budgetBytes: small.weightBytes - 1 });
    expect(need).toBeGreaterThan(0);
  });

  it('less than KV + working + headroom gives a zero budget (the residency refuses it with a typed error)', () => {
    expect(planMemory({ ...sizes, available: { bytes: 0.5 * GiB, source: 'MemAvailable' } }).budgetBytes).toBe(0);
  });

  it('maxMemory replaces the machine figure: resident if the weights fit it, else stream with it', () => {
    expect(planMemory({ ...sizes, available: { bytes: 100 * GiB, source: 'MemAvailable' }, maxMemory: 19 * GiB })).toMatchObject({ mode: 'stream', budgetBytes: 19 * GiB, source: 'maxMemory' });
    expect(planMemory({ ...sizes, available: undefined, maxMemory: 40 * GB })).toMatchObject({ mode: 'resident', budgetBytes: undefined });
  });

  it('stream asked for without a budget: stream with what the machine allows, even when the model fits', () => {
    const avail = 22 * GiB;
    const small = { weightBytes: 3.8 * GB, kvBytes: 1 * GB, workingBytes: 0.5 * GB };
    const p = planMemory({ ...small, available: { bytes: avail, source: 'MemAvailable' }, force: 'stream' });
    expect(p).toMatchObject({ mode: 'stream', budgetBytes: avail - 1.5 * GB - Math.floor(avail * 0.1) });
    expect(p.reason).toMatch(/fits in 23\.62 GB available \(MemAvailable\), stream mode asked for; weight budget/);
    expect(planMemory({ ...small, available: undefined, force: 'stream' })).toMatchObject({ mode: 'stream', budgetBytes: undefined });
  });

  it('unknown available memory keeps the model resident and says so', () => {
    expect(planMemory({ ...sizes, available: undefined })).toMatchObject({ mode: 'resident', source: 'unknown' });
  });
});

const reference = JSON.parse(readFileSync(join(FIXTURES, 'reference_llama2c_stories260k.json'), 'utf8')) as { bos_only: { generated_tokens: number[] } };
const EXPECTED = reference.bos_only.generated_tokens;

async function greedy(options: EngineOptions): Promise<{ tokens: number[]; plan: MemoryPlan | undefined; mode: string; pinnedBytes: number; lines: string[] }> {
  const lines: string[] = [];
  const engine = new LayerWiseInferenceEngine(F32_MODEL, { tokenizerPath: FIXTURE_TOKENIZER, threads: 2, onMemoryPlan: (l) => lines.push(l), ...options });
  await engine.initialize();
  try {
    const tokens: number[] = [];
    for await (const t of engine.generate([1], { maxTokens: EXPECTED.length, temperature: 0, stopAtEos: false })) tokens.push(t.token);
    return { tokens, plan: engine.memoryPlan, mode: engine.residencyStats().mode, pinnedBytes: engine.residencyStats().pinnedBytes, lines };
  } finally {
    await engine.cleanup();
  }
}

describe('auto mode on stories260K', () => {
  it('is the default, resident with plenty of memory, and matches llama2.c', async () => {
    const r = await greedy({ availableMemory: { bytes: 64 * GiB, source: 'MemAvailable' } });
    expect(r.tokens).toEqual(EXPECTED);
    expect(r.mode).toBe('resident');
    expect(r.lines).toHaveLength(1);
    expect(r.lines[0]).toMatch(/^airllm: memory plan: resident \(model 0\.00\d+ GB \+ KV cache 0\.\d+ GB \+ working 0\.\d+ GB \+ headroom 6\.87 GB = [\d.]+ GB fits in 68\.72 GB available \(MemAvailable\)\)$/);
  });

  it('streams when a small available figure forces it, pinning part, and still matches llama2.c', async () => {
    const layout = readModelFile(F32_MODEL).layout;
    const big = await greedy({ availableMemory: { bytes: 64 * GiB, source: 'test' } });
    // What the plan needs besides the weights, read from the first plan; leave room for 3 layers.
    const p0 = big.plan!;
    const room = 3 * layout.layerBytes;
    const available = p0.kvBytes + p0.workingBytes + HEADROOM_MIN_BYTES + room;
    const r = await greedy({ availableMemory: { bytes: available, source: 'cgroup v2 memory.max' } });
    expect(r.mode).toBe('stream');
    expect(r.pinnedBytes).toBeGreaterThan(0);
    expect(r.pinnedBytes).toBeLessThan(layout.fileSize);
    expect(r.plan).toMatchObject({ mode: 'stream', budgetBytes: room, source: 'cgroup v2 memory.max' });
    expect(r.lines[0]).toMatch(/^airllm: memory plan: stream, 0\.000\d+ GB of the weights pinned, the rest read from disk each pass \(.*exceeds .* available \(cgroup v2 memory.max\)/);
    expect(r.tokens).toEqual(EXPECTED);
  });

  it('stream without maxMemory takes its budget from the plan (everything fits: all pinned) and matches llama2.c', async () => {
    const layout = readModelFile(F32_MODEL).layout;
    const r = await greedy({ mode: 'stream', availableMemory: { bytes: 64 * GiB, source: 'MemAvailable' } });
    expect(r.mode).toBe('stream');
    expect(r.plan).toMatchObject({ mode: 'stream' });
    expect(r.pinnedBytes).toBe(layout.layers.reduce((a, l) => a + l.size, 0) + layout.head.size);
    expect(r.lines[0]).toMatch(/^airllm: memory plan: stream, .*stream mode asked for/);
    expect(r.tokens).toEqual(EXPECTED);
  });

  it('an explicit mode skips the plan (no line)', async () => {
    const r = await greedy({ mode: 'resident' });
    expect(r.lines).toHaveLength(0);
    expect(r.plan).toBeUndefined();
    expect(r.mode).toBe('resident');
    expect(r.tokens).toEqual(EXPECTED);
  });
});
