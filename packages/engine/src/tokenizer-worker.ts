/**
 * The encoding thread of Tokenizer.encodeAsync: builds the same tokenizer, then encodes texts,
 * or formats and encodes conversations (ChatFormatter.encodeAsync), on request.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { ChatFormatter } from './chat.js';
import { Tokenizer, type TokenizerSpec, type WorkerRequest } from './tokenizer.js';
import { loadTokenizer } from './tokenizer-load.js';

const spec = workerData as TokenizerSpec;
const tok =
  'files' in spec
    ? loadTokenizer('', { tokenizerPath: spec.files.tokenizer, modelVocabSize: spec.files.modelVocabSize })!
    : new Tokenizer(spec.data, { kind: spec.kind, hf: spec.hf, source: spec.source });

/** One formatter per format asked for ('' = the tokenizer's own template). */
const formatters = new Map<string, ChatFormatter>();

function formatter(format: string | undefined): ChatFormatter {
  let f = formatters.get(format ?? '');
  if (!f) formatters.set(format ?? '', (f = new ChatFormatter(tok, format)));
  return f;
}

parentPort!.on('message', (m: WorkerRequest & { n: number }) => {
  try {
    const ids = Int32Array.from('chat' in m ? formatter(m.chat.format).encode(m.chat.messages, m.chat.options) : tok.encode(m.text, m.options));
    parentPort!.postMessage({ n: m.n, ids }, [ids.buffer]);
  } catch (e) {
    parentPort!.postMessage({ n: m.n, error: e instanceof Error ? e.name : 'Error', message: e instanceof Error ? e.message : String(e) });
  }
});
