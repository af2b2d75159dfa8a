/**
 * Backend loading: CPU path selection (AIRLLM_KERNELS), the reference fallback with one stderr
 * line when the addon cannot load, per-op fallback at load, and the addon in worker threads
 * (context-aware module, SharedArrayBuffer views). Child processes and workers run the compiled
 * dist/ build, as the engine's workers will.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { FloatType, Q80_BLOCK_BYTES, Q_BLOCK, quantizeQ80 } from '@airllm/format';
import { assembleBackend, nativeBackend, nativePaths, type AddonOps } from '../src/native.js';
import { referenceBackend } from '../src/reference.js';
import { randomFloats, randomWeights } from '../src/testing/builders.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const DIST = pathToFileURL(path.resolve(here, '../dist/index.js')).href;

function runNode(code: string, env: Record<string, string>): { stdout: string; stderr: string; status: number | null } {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], {
    env: { ...process.env, ...env },
    encoding: 'utf8',
    timeout: 30000,
  });
  return { stdout: r.stdout.trim(), stderr: r.stderr, status: r.status };
}

describe('loadBackend', () => {
  it('AIRLLM_KERNELS forces each available CPU path, or the reference', () => {
    for (const p of [...nativePaths(), 'reference']) {
      const r = runNode(
        `import { loadBackend } from '${DIST}'; const b = loadBackend(); console.log(b.name, b.path ?? '-');`,
        { AIRLLM_KERNELS: p },
      );
      expect(r.status).toBe(0);
      expect(r.stdout).toBe(p === 'reference' ? 'reference -' : `native ${p}`);
      expect(r.stderr).toBe('');
    }
  });

  it('an unloadable addon gives the reference backend and exactly one stderr line', () => {
    const r = runNode(
      `import { loadBackend } from '${DIST}';
       const a = loadBackend(); const b = loadBackend('native'); console.log(a.name, b.name);`,
      { AIRLLM_KERNELS: '', AIRLLM_KERNELS_ADDON: '/nonexistent/airllm_kernels.node' },
    );
    expect(r.status).toBe(0);
    expect(r.stdout).toBe('reference reference');
    const lines = r.stderr.split('\n').filter((l) => l.length > 0);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/reference backend.*not loadable.*\/nonexistent\/airllm_kernels\.node/);
  });

  it('a path this CPU lacks falls back to the best one with one note', () => {
    const r = runNode(
      `import { loadBackend, nativePaths } from '${DIST}'; console.log(loadBackend().path === nativePaths()[0]);`,
      { AIRLLM_KERNELS: 'not-a-path' },
    );
    expect(r.stdout).toBe('true');
    expect(r.stderr.split('\n').filter((l) => l.length > 0)).toHaveLength(1);
  });

  it('nativeBackend(path) rejects a path the CPU lacks with a typed error', () => {
    expect(() => nativeBackend('bogus' as never)).toThrow(/not available on this machine/);
  });

  it('an op missing from the addon is taken from the reference, once, at load', () => {
    const full = nativeBackend('scalar');
    const { rope: _drop, ...rest } = full;
    const ops = { ...rest, path: 'scalar', features: [] } as unknown as AddonOps;
    const b = assembleBackend(ops);
    expect(b.fallbacks).toEqual(['rope']);
    expect(b.rope).toBe(referenceBackend.rope);
    expect(b.matmul).toBe(full.matmul);
    expect(Object.isFrozen(b)).toBe(true);
  });
});

describe('worker threads', () => {
  it('two workers each load the addon and share one matmul on SharedArrayBuffers', async () => {
    const nOut = 517;
    const nIn = 256;
    const batch = 3;
    const wBytes = randomWeights(FloatType.Q40, nOut, nIn, 9);
    const w = new Uint8Array(new SharedArrayBuffer(wBytes.length));
    w.set(wBytes);
    const x = randomFloats(batch * nIn, 10);
    const xq = new Uint8Array(new SharedArrayBuffer((batch * nIn * Q80_BLOCK_BYTES) / Q_BLOCK));
    quantizeQ80(x, xq);
    const out = new Float32Array(new SharedArrayBuffer(batch * nOut * 4));
    const code = `
      const { workerData, parentPort } = require('node:worker_threads');
      import(workerData.dist).then(({ loadBackend, splitRange }) => {
        const b = loadBackend();
        const [r0, r1] = splitRange(workerData.nOut, 2, workerData.index, 4);
        b.matmulQ80(2, workerData.out, workerData.xq, workerData.w, workerData.nIn, workerData.nOut, workerData.batch, r0, r1);
        parentPort.postMessage(b.name + ':' + (b.path ?? ''));
      }, (e) => parentPort.postMessage('error:' + e.message));`;
    const results = await Promise.all(
      [0, 1].map(
        (index) =>
          new Promise<string>((resolve, reject) => {
            const wk = new Worker(code, { eval: true, workerData: { dist: DIST, w, xq, out, nIn, nOut, batch, index } });
            wk.once('message', (m: string) => {
              void wk.terminate();
              resolve(m);
            });
            wk.once('error', reject);
          }),
      ),
    );
    const best = nativePaths()[0];
    expect(results).toEqual([`native:${best}`, `native:${best}`]);
    const want = new Float32Array(batch * nOut);
    nativeBackend(best).matmulQ80(FloatType.Q40, want, xq, w, nIn, nOut, batch, 0, nOut);
    expect(Array.from(out)).toEqual(Array.from(want));
  });
});
