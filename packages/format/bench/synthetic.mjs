// Benchmark: time to write a Llama-2-7B-shaped Q40 model with generateSyntheticModel, side by
// side with writing the same number of bytes (a constant buffer) through fs, so the ratio says
// how much the generator costs on top of the disk/page cache. Usage:
//   npm run bench -w @airllm/format [-- --runs 3 --dtype q40]
// The files go to os.tmpdir() and are removed after each run.
import { open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ArchType, HeaderKey as K, parseFloatType } from '../dist/index.js';
import { generateSyntheticModel } from '../dist/convert.js';

const { values: args } = parseArgs({ options: { runs: { type: 'string', default: '3' }, dtype: { type: 'string', default: 'q40' } } });
const runs = Number(args.runs);
const values = {
  [K.ArchType]: ArchType.LLAMA,
  [K.Dim]: 4096,
  [K.HiddenDim]: 11008,
  [K.NLayers]: 32,
  [K.NHeads]: 32,
  [K.NKvHeads]: 32,
  [K.VocabSize]: 32000,
  [K.MaxSeqLen]: 4096,
  [K.WeightsFloatType]: parseFloatType(args.dtype),
};
const path = join(tmpdir(), `airllm-bench-synthetic-${process.pid}.m`);

async function plainWrite(bytes) {
  const fh = await open(path, 'w');
  const buf = new Uint8Array(16 << 20).fill(0x5a);
  try {
    for (let pos = 0; pos < bytes; pos += buf.length) await fh.write(buf, 0, Math.min(buf.length, bytes - pos), pos);
  } finally {
    await fh.close();
  }
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const gen = [];
const plain = [];
let size = 0;
try {
  for (let r = 0; r < runs; r++) {
    let t = performance.now();
    const layout = await generateSyntheticModel(path, values, { seed: r });
    gen.push((performance.now() - t) / 1000);
    size = layout.fileSize;
    await rm(path);
    t = performance.now();
    await plainWrite(size);
    plain.push((performance.now() - t) / 1000);
    await rm(path);
  }
} finally {
  await rm(path, { force: true });
}
const gib = size / 2 ** 30;
console.log(`Llama-2-7B-shaped ${args.dtype.toUpperCase()}: ${size} bytes (${gib.toFixed(2)} GiB), ${runs} runs`);
console.log(`generateSyntheticModel  median ${median(gen).toFixed(2)} s  (${(gib / median(gen)).toFixed(2)} GiB/s)  runs ${gen.map((x) => x.toFixed(2)).join(' ')}`);
console.log(`plain fs write          median ${median(plain).toFixed(2)} s  (${(gib / median(plain)).toFixed(2)} GiB/s)  runs ${plain.map((x) => x.toFixed(2)).join(' ')}`);
console.log(`ratio generator / plain write: ${(median(gen) / median(plain)).toFixed(2)}`);
