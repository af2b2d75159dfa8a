import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DTYPES, FloatType, readAnyModelFile } from '@airllm/format';
import { importGguf } from '@airllm/format/convert';
import { LayerWiseInferenceEngine } from '@airllm/engine';
import { tempDir } from './helpers.js';
import { writeKQuantGguf } from './kquant-gguf.js';

const tmp = tempDir('airllm-convert-kq-');
afterAll(() => tmp.cleanup());

const shape = { arch: 'llama', dim: 256, ff: 512, layers: 2, heads: 4, kvHeads: 2, headDim: 64, vocab: 512, context: 64 } as const;

describe('convert gguf re-quantizes K-quants to Q40/Q80 and measures the error', () => {
  for (const dtype of [FloatType.Q40, FloatType.Q80]) {
    it(`Q4_K/Q6_K → ${DTYPES[dtype].name}: the reported RMS error is the one between the two files' decoded weights`, async () => {
      const gguf = join(tmp.dir, `m-${dtype}.gguf`);
      const model = join(tmp.dir, `m-${dtype}.m`);
      writeKQuantGguf(gguf, shape, 21);
      const r = await importGguf({ gguf, model, tokenizerOut: join(tmp.dir, `m-${dtype}.t`) }, { dtype });
      const rq = r.requantization!;
      expect(rq).toBeDefined();
      // Recompute from the files: every quantized `.m` matrix against the GGUF tensor it came from.
      const src = readAnyModelFile(gguf);
      const dst = readAnyModelFile(model);
      const gb = readFileSync(gguf);
      const mb = readFileSync(model);
      const decode = (bytes: Buffer, t: { dtype: FloatType; offset: number; byteLength: number; shape: readonly number[] }): Float32Array => {
        const out = new Float32Array(t.shape.reduce((a, b) => a * b, 1));
        DTYPES[t.dtype].dequantize(new Uint8Array(bytes.buffer, bytes.byteOffset + t.offset, t.byteLength), out);
        return out;
      };
      let n = 0;
      let sqErr = 0;
      let sqSrc = 0;
      for (const t of dst.layout.tensors) {
        if (t.dtype === FloatType.F32) continue;
        const a = decode(gb, src.layout.tensors.find((x) => x.name === t.name)!);
        const b = decode(mb, t);
        for (let i = 0; i < a.length; i++) {
          sqErr += (a[i]! - b[i]!) ** 2;
          sqSrc += a[i]! ** 2;
        }
        n += a.length;
      }
      expect(rq.values).toBe(n);
      expect(rq.rms).toBeCloseTo(Math.sqrt(sqErr / n), 6);
      expect(rq.relativeRms).toBeCloseTo(Math.sqrt(sqErr / sqSrc), 6);
      expect(rq.rms).toBeGreaterThan(0);
      console.log(`${DTYPES[dtype].name}: re-quantization RMS error ${rq.rms.toExponential(3)} (${(100 * rq.relativeRms).toFixed(2)}% of the weights' RMS), worst ${rq.worst.tensor}`);

      // The converted `.m` runs and, at Q80, predicts what the GGUF in place predicts.
      if (dtype === FloatType.Q80) {
        const top = async (path: string): Promise<number[]> => {
          const e = new LayerWiseInferenceEngine(path, { threads: 1, maxSeqLen: 16 });
          await e.initialize();
          try {
            const ids: number[] = [];
            for (let p = 0; p < 8; p++) {
              const l = await e.forward([3 + 37 * p], p);
              ids.push(l.indexOf(Math.max(...l)));
            }
            return ids;
          } finally {
            await e.cleanup();
          }
        };
        expect(await top(model)).toEqual(await top(gguf));
      }
    }, 60_000);
  }
});
