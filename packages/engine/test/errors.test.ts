import { spawnSync } from 'node:child_process';
import { copyFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ArchType, FloatType, HeaderKey, InvalidValueError, MissingFileError, NotRegularFileError } from '@airllm/format';
import { checkErrorFamily, rawModelHeader, TINY_QWEN3 } from '@airllm/format/testing';
import * as engineApi from '@airllm/engine';
import { ContextOverflowError, EngineStateError, LayerWiseInferenceEngine, OptionError, UnsupportedModelError } from '@airllm/engine';
import { F32_MODEL, FIXTURE_TOKENIZER, REPO, tempDir } from './helpers.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

describe('the error family', () => {
  it('every error class @airllm/engine exports is an AirllmError with a code of its own', () => {
    const { classes, problems } = checkErrorFamily(engineApi);
    expect(problems).toEqual([]);
    expect(classes.map((c) => c.name)).toEqual(expect.arrayContaining(['AirllmError', 'EngineError', 'OptionError', 'ChatTemplateError', 'UnsupportedModelError']));
  });

  it('an option error names the option in its message and details', () => {
    const e = new OptionError('threads', 'must be 1..256, got 0');
    expect(e.message).toBe('option threads: must be 1..256, got 0');
    expect(e.code).toBe('AIRLLM_OPTION');
    expect(e.details).toEqual({ option: 'threads' });
  });
});

describe('bad input gets typed errors', () => {
  it('a prompt longer than the context', async () => {
    const engine = new LayerWiseInferenceEngine(F32_MODEL, { tokenizerPath: FIXTURE_TOKENIZER, maxSeqLen: 16, threads: 1 });
    await engine.initialize();
    try {
      const long = 'Once upon a time there was a little girl named Lily who loved to play outside';
      const run = async (): Promise<void> => {
        for await (const _ of engine.generate(long)) void _;
      };
      await expect(run()).rejects.toThrow(ContextOverflowError);
      await expect(run()).rejects.toThrow(/context holds 16/);
      await expect(engine.forward(Array(17).fill(5), 0)).rejects.toThrow(ContextOverflowError);
      // The engine keeps working after refusing.
      const out: number[] = [];
      for await (const t of engine.generate('Once', { maxTokens: 3, temperature: 0 })) out.push(t.token);
      expect(out).toHaveLength(3);
    } finally {
      await engine.cleanup();
    }
  });

  it('a token outside the vocabulary, a bad slot and bad options', async () => {
    const engine = new LayerWiseInferenceEngine(F32_MODEL, { threads: 1 });
    await engine.initialize();
    try {
      await expect(engine.forward([512], 0)).rejects.toThrow(OptionError);
      await expect(engine.forward([1], 0, 3)).rejects.toThrow(/slot/);
    } finally {
      await engine.cleanup();
    }
    await expect(new LayerWiseInferenceEngine(F32_MODEL, { threads: 0 }).initialize()).rejects.toThrow(OptionError);
    await expect(new LayerWiseInferenceEngine(F32_MODEL, { mode: 'fast' as never }).initialize()).rejects.toThrow(/mode/);
    await expect(new LayerWiseInferenceEngine(F32_MODEL, { maxSeqLen: 100000 }).initialize()).rejects.toThrow(/maxSeqLen/);
  });

  it('an unknown architecture', async () => {
    const path = join(tmp.dir, 'unknown-arch.m');
    const pairs = Object.entries({ ...TINY_QWEN3, [HeaderKey.ArchType]: 0xabcd07 }).map(([k, v]) => [Number(k), v] as const);
    writeFileSync(path, rawModelHeader(pairs));
    const e = new LayerWiseInferenceEngine(path);
    await expect(e.initialize()).rejects.toThrow(InvalidValueError);
    await expect(e.initialize()).rejects.toThrow(/arch_type.*unknown architecture/);
  });

  it('a path that is not a model', async () => {
    await expect(new LayerWiseInferenceEngine(join(tmp.dir, 'missing.m')).initialize()).rejects.toThrow(MissingFileError);
    await expect(new LayerWiseInferenceEngine(tmp.dir).initialize()).rejects.toThrow(NotRegularFileError);
    await expect(new LayerWiseInferenceEngine(tmp.dir).initialize()).rejects.toThrow(/directory/);
    await expect(new LayerWiseInferenceEngine(FIXTURE_TOKENIZER).initialize()).rejects.toThrow(/not a Distributed-Llama model/);
  });

  it('q80 activations on a model whose rows are not whole blocks', async () => {
    const { writeTinyModel, TINY_LLAMA31 } = await import('@airllm/format/testing');
    const path = join(tmp.dir, 'odd.m');
    await writeTinyModel(path, { ...TINY_LLAMA31, [HeaderKey.HiddenDim]: 40, [HeaderKey.WeightsFloatType]: FloatType.F32 });
    await expect(new LayerWiseInferenceEngine(path, { activations: 'q80' }).initialize()).rejects.toThrow(UnsupportedModelError);
  });

  it('use before initialize and after cleanup', async () => {
    const e = new LayerWiseInferenceEngine(F32_MODEL, { threads: 1 });
    await expect(e.forward([1], 0)).rejects.toThrow(EngineStateError);
    await e.initialize();
    await e.cleanup();
    await e.cleanup();
    await expect(e.forward([1], 0)).rejects.toThrow(EngineStateError);
    expect(ArchType.LLAMA).toBe(0xabcd00);
  });
});

describe('stopping early', () => {
  it('a caller that breaks out of generate() leaves the engine usable', async () => {
    const engine = new LayerWiseInferenceEngine(F32_MODEL, { tokenizerPath: FIXTURE_TOKENIZER, threads: 1 });
    await engine.initialize();
    try {
      for await (const _ of engine.generate('Once', { maxTokens: 20 })) break;
      const batch = engine.generateBatch(['Once'], { maxTokens: 20 });
      await batch.next();
      await batch.return([]);
      const out: number[] = [];
      for await (const t of engine.generate([1], { maxTokens: 5, temperature: 0, stopAtEos: false })) out.push(t.token);
      expect(out).toEqual([403, 407, 261, 378, 432]);
    } finally {
      await engine.cleanup();
    }
  }, 20_000);
});

describe('failures inside the compute threads', () => {
  it('a model file truncated while in use: a typed error naming the file, no hang, cleanup works', async () => {
    const path = join(tmp.dir, 'truncated.m');
    copyFileSync(F32_MODEL, path);
    const engine = new LayerWiseInferenceEngine(path, { threads: 2, mode: 'stream', maxMemory: 2 * 197120 });
    await engine.initialize();
    try {
      await engine.forward([1, 403], 0);
      truncateSync(path, 1000);
      const err = await engine.forward([407], 2).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(Error);
      expect((err as Error).message).toContain(path);
      expect((err as Error).name).toMatch(/FileChanged/);
      // The engine stays usable as an object: it refuses again (no hang) and cleans up.
      await expect(engine.forward([407], 2)).rejects.toThrow();
    } finally {
      await engine.cleanup();
    }
  });
});

describe('cleanup', () => {
  it('frees the workers so the process exits promptly on its own', () => {
    const script = `
      import { LayerWiseInferenceEngine } from '@airllm/engine';
      const e = new LayerWiseInferenceEngine(${JSON.stringify(F32_MODEL)}, { tokenizerPath: ${JSON.stringify(FIXTURE_TOKENIZER)}, threads: 2 });
      await e.initialize();
      let n = 0;
      for await (const t of e.generate('Once upon a time', { maxTokens: 20 })) n++;
      await e.cleanup();
      console.log('generated', n);
      globalThis.__done = performance.now();
    `;
    const t0 = Date.now();
    // No process.exit anywhere: the child only ends if nothing (workers, handles) keeps it alive.
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: REPO, encoding: 'utf8', timeout: 30000 });
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('generated 20');
    expect(r.status).toBe(0);
    expect(Date.now() - t0).toBeLessThan(15000);
  });
});
