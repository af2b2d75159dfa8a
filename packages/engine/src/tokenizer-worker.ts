/** The encoding thread of Tokenizer.encodeAsync: builds the same tokenizer, then encodes on request. */
import { parentPort, workerData } from 'node:worker_threads';
import { Tokenizer, type EncodeOptions, type TokenizerSpec } from './tokenizer.js';
import { loadTokenizer } from './tokenizer-load.js';

const spec = workerData as TokenizerSpec;
const tok =
  'files' in spec
    ? loadTokenizer('', { tokenizerPath: spec.files.tokenizer, modelVocabSize: spec.files.modelVocabSize })!
    : new Tokenizer(spec.data, { kind: spec.kind, hf: spec.hf, source: spec.source });

parentPort!.on('message', (m: { n: number; text: string; options: EncodeOptions }) => {
  try {
    const ids = Int32Array.from(tok.encode(m.text, m.options));
    parentPort!.postMessage({ n: m.n, ids }, [ids.buffer]);
  } catch (e) {
    parentPort!.postMessage({ n: m.n, error: e instanceof Error ? e.name : 'Error', message: e instanceof Error ? e.message : String(e) });
  }
});
