import { existsSync, readFileSync, statSync } from 'node:fs';
import {
  checkHfSidecarVocab,
  FormatError,
  ggufToHfTokenizer,
  ggufTokenizerToData,
  HF_SIDECAR_MAX_BYTES,
  hfSidecarPath,
  parseHfSidecar,
  readTokenizerFile,
  type GgufHeader,
  type HfTokenizerSidecar,
  type TokenizerData,
} from '@airllm/format';
import { TokenizerError } from './errors.js';
import { Tokenizer } from './tokenizer.js';

export interface LoadTokenizerOptions {
  /** The `.t` file (default: the model path with `.t` instead of `.m`, when it exists). */
  tokenizerPath?: string;
  /** Embedding rows of the model: a tokenizer with more tokens is refused. */
  modelVocabSize?: number;
  /** Use the Hugging Face tokenizer sidecar beside the `.t` when there is one (default true). */
  hf?: boolean;
  /** The model is a GGUF with this header: with no `.t`, its tokenizer metadata is the tokenizer. */
  gguf?: GgufHeader;
}

/** The `.t` path the engine uses for a model when none is given. */
export function defaultTokenizerPath(modelPath: string): string {
  return modelPath.replace(/\.m$/, '') + '.t';
}

/**
 * The tokenizer of a model: its `.t` file and, when the converter left one beside it, the
 * Hugging Face tokenizer sidecar (hfSidecarPath), which then does the encoding. Returns
 * undefined when no path was given and the default `.t` does not exist.
 *
 * Refused here rather than mid-generation: a tokenizer with more tokens than the model has
 * embedding rows, BOS/EOS ids outside the vocabulary (parseTokenizer), and a sidecar whose
 * vocabulary is not the `.t`'s. A tokenizer with fewer tokens than the model is fine (real
 * models pad their embedding, e.g. Qwen3's 151936 rows for 151669 tokens); the sampler only
 * ever picks ids the tokenizer has.
 */
export function loadTokenizer(modelPath: string, options: LoadTokenizerOptions = {}): Tokenizer | undefined {
  const path = options.tokenizerPath ?? defaultTokenizerPath(modelPath);
  if (options.tokenizerPath === undefined && !existsSync(path)) {
    return options.gguf !== undefined ? ggufTokenizer(modelPath, options.gguf, options) : undefined;
  }
  // Refuses a device (/dev/zero), a directory or an oversized file before reading; errors name the file.
  const data = readTokenizerFile(path);
  checkVocab(data, path, modelPath, options.modelVocabSize);
  const V = options.modelVocabSize;
  let hf: HfTokenizerSidecar | undefined;
  const sidecarPath = hfSidecarPath(path);
  if ((options.hf ?? true) && existsSync(sidecarPath)) {
    try {
      const st = statSync(sidecarPath);
      if (!st.isFile()) throw new TokenizerError(`the HF tokenizer sidecar ${sidecarPath} is not a regular file`);
      const size = st.size;
      if (size > HF_SIDECAR_MAX_BYTES) throw new TokenizerError(`the HF tokenizer sidecar ${sidecarPath} is larger than ${HF_SIDECAR_MAX_BYTES} bytes`);
      hf = parseHfSidecar(readFileSync(sidecarPath), sidecarPath);
      checkHfSidecarVocab(hf, data, sidecarPath);
    } catch (e) {
      throw e instanceof FormatError ? e.withPath(sidecarPath) : e;
    }
  }
  return new Tokenizer(data, { hf, source: hf !== undefined ? sidecarPath : path, files: { tokenizer: path, modelVocabSize: V } });
}

function checkVocab(data: TokenizerData, path: string, modelPath: string, V: number | undefined): void {
  if (V !== undefined && data.vocab.length > V) {
    throw new TokenizerError(
      `the tokenizer ${path} has ${data.vocab.length} tokens but the model ${modelPath} has ${V} (its vocab_size): they do not belong together`,
    );
  }
}

/**
 * A GGUF's own tokenizer (`tokenizer.ggml.*` and `tokenizer.chat_template`): the same data a
 * `.t` converted from it holds, with the Hugging Face tokenizer rebuilt from the same metadata
 * (ggufToHfTokenizer) doing the encoding. When that rebuild is refused (a pre-tokenizer not
 * known here), the `.t` algorithms encode, as they would for the converted `.t` alone.
 */
function ggufTokenizer(modelPath: string, gguf: GgufHeader, options: LoadTokenizerOptions): Tokenizer {
  let data: TokenizerData;
  let hf: HfTokenizerSidecar | undefined;
  try {
    data = ggufTokenizerToData(gguf, modelPath);
    checkVocab(data, modelPath, modelPath, options.modelVocabSize);
    if (options.hf ?? true) {
      try {
        hf = ggufToHfTokenizer(gguf, modelPath);
      } catch (e) {
        if (!(e instanceof FormatError)) throw e;
      }
    }
  } catch (e) {
    throw e instanceof FormatError ? e.withPath(modelPath) : e;
  }
  return new Tokenizer(data, { hf, source: modelPath });
}
