import { InvalidValueError } from './errors.js';
import { readHfVocab } from './hf-tokenizer.js';
import type { TokenizerData } from './tokenizer-file.js';

/**
 * The Hugging Face tokenizer beside a `.t` file (FORMAT docs: "HF tokenizer sidecar").
 *
 * A `.t` file keeps pieces and scores only: no merge list, no pre-tokenizer, no normalizer, so
 * it cannot reproduce a Hugging Face tokenizer's ids (dllama merges by score over the whole
 * text). dllama's reader refuses unknown header keys, so what exactness needs lives in a file of
 * its own next to the `.t`: `model.t` → `model.tokenizer.json`, one JSON object
 *
 *     { "format": "airllm-hf-tokenizer", "version": 1,
 *       "tokenizer": <tokenizer.json, unchanged>, "config": <tokenizer_config.json without added_tokens_decoder> }
 *
 * The converters write it (HF: the checkpoint's own files; GGUF: a tokenizer.json rebuilt from
 * the metadata). The engine uses it when present and when its vocabulary is the `.t`'s, token
 * for token; without it, `.t` files keep dllama's / llama2.c's algorithms and ids.
 */
export const HF_SIDECAR_FORMAT = 'airllm-hf-tokenizer';
export const HF_SIDECAR_VERSION = 1;
/** The sidecar is read whole; tokenizer.json files of real models are 2–20 MB. */
export const HF_SIDECAR_MAX_BYTES = 256 << 20;

export interface HfTokenizerSidecar {
  /** tokenizer.json as Hugging Face's `tokenizers` reads it. */
  readonly tokenizer: Record<string, unknown>;
  /** tokenizer_config.json fields (bos_token, eos_token, add_bos_token, chat_template, …). */
  readonly config: Record<string, unknown>;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `dir/model.t` → `dir/model.tokenizer.json` (any other name: the name + `.tokenizer.json`). */
export function hfSidecarPath(tokenizerPath: string): string {
  return tokenizerPath.replace(/\.t$/, '') + '.tokenizer.json';
}

/**
 * tokenizer_config.json → the sidecar's config: everything but `added_tokens_decoder` (it
 * repeats tokenizer.json's added_tokens), with the chat template from `chat_template.jinja` when
 * the config has none.
 */
export function hfSidecarConfig(tokenizerConfig: unknown, chatTemplateFile?: string): Record<string, unknown> {
  const config: Record<string, unknown> = isObject(tokenizerConfig) ? { ...tokenizerConfig } : {};
  delete config.added_tokens_decoder;
  if (config.chat_template === undefined && chatTemplateFile !== undefined) config.chat_template = chatTemplateFile;
  return config;
}

export function encodeHfSidecar(s: HfTokenizerSidecar): Uint8Array {
  return new TextEncoder().encode(JSON.stringify({ format: HF_SIDECAR_FORMAT, version: HF_SIDECAR_VERSION, tokenizer: s.tokenizer, config: s.config }));
}

/** Parse and shape-check a sidecar (the tokenizer itself is checked by whoever builds it). */
export function parseHfSidecar(bytes: Uint8Array, path?: string): HfTokenizerSidecar {
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (e) {
    throw new InvalidValueError(`not valid UTF-8 JSON (${(e as Error).message})`, { path, field: 'json' });
  }
  if (!isObject(v) || v.format !== HF_SIDECAR_FORMAT) {
    throw new InvalidValueError('not an airllm HF tokenizer sidecar', { path, field: 'format', expected: HF_SIDECAR_FORMAT, actual: isObject(v) ? String(v.format) : typeof v });
  }
  if (v.version !== HF_SIDECAR_VERSION) {
    throw new InvalidValueError('unsupported sidecar version', { path, field: 'version', expected: HF_SIDECAR_VERSION, actual: String(v.version) });
  }
  if (!isObject(v.tokenizer) || !isObject(v.tokenizer.model)) {
    throw new InvalidValueError('"tokenizer" must be a tokenizer.json object', { path, field: 'tokenizer' });
  }
  if (v.config !== undefined && !isObject(v.config)) throw new InvalidValueError('"config" must be an object', { path, field: 'config' });
  return { tokenizer: v.tokenizer, config: (v.config as Record<string, unknown> | undefined) ?? {} };
}

/**
 * Refuse a sidecar whose vocabulary is not the `.t`'s, id for id (a `.t` replaced or edited
 * after conversion): ids from one and text from the other would be garbage.
 */
export function checkHfSidecarVocab(s: HfTokenizerSidecar, data: TokenizerData, path?: string): void {
  const { vocab } = readHfVocab(s.tokenizer);
  if (vocab.length !== data.vocab.length) {
    throw new InvalidValueError('the HF tokenizer sidecar has another vocabulary size than the .t file', { path, field: 'tokenizer.model.vocab', expected: data.vocab.length, actual: vocab.length });
  }
  const dec = new TextDecoder();
  for (let id = 0; id < vocab.length; id++) {
    const a = vocab[id]!;
    const b = data.vocab[id]!;
    if (a.length === b.length && a.every((x, i) => x === b[i])) continue;
    throw new InvalidValueError('the HF tokenizer sidecar and the .t file differ', {
      path,
      field: `token ${id}`,
      expected: JSON.stringify(dec.decode(b)).slice(0, 60),
      actual: JSON.stringify(dec.decode(a)).slice(0, 60),
    });
  }
}
