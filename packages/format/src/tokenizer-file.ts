import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { AirllmError, BadMagicError, fileError, InvalidValueError, NotRegularFileError, OldFormatError, TruncatedError, UnknownKeyError } from './errors.js';

/** `.t` magic (current) and the legacy fixed-header magic (FORMAT.md §d.1). */
export const TOKENIZER_MAGIC = 0x567124;
export const TOKENIZER_MAGIC_LEGACY = 0x567123;

export enum TokenizerKey {
  Version = 0,
  VocabSize = 1,
  MaxTokenLength = 2,
  BosId = 3,
  EosId = 4,
  PadId = 5,
  ChatEosId = 6,
  ChatTemplate = 7,
  ChatStop = 8,
  NEosTokens = 9,
  AddBos = 10,
}

export const TOKENIZER_LIMITS = Object.freeze({
  maxPairs: 64,
  maxVocab: 1 << 22,
  maxTokenLength: 1 << 16,
  maxTemplateBytes: 1 << 20,
  maxEosTokens: 1024,
});

/**
 * Largest `.t` file read: the largest vocabulary at 16 bytes an entry, the longest template, and
 * 64 MiB for long pieces. Real files are a few MiB.
 */
export const TOKENIZER_MAX_FILE_BYTES = 16 + TOKENIZER_LIMITS.maxVocab * 16 + TOKENIZER_LIMITS.maxTemplateBytes + (64 << 20);

export interface TokenizerData {
  /** Pieces as raw bytes, indexed by token id. */
  readonly vocab: readonly Uint8Array[];
  readonly scores: Float32Array;
  readonly maxTokenLength: number;
  readonly bosId: number;
  readonly eosIds: readonly number[];
  readonly addBos: boolean;
  readonly chatTemplate: string | undefined;
  /** Which magic the file had. */
  readonly legacy: boolean;
}

class Reader {
  readonly view: DataView;
  pos = 0;
  constructor(readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  need(n: number, field: string): void {
    if (this.pos + n > this.bytes.length) {
      throw new TruncatedError('tokenizer file is cut short', {
        field,
        offset: this.pos,
        expected: `${n} more bytes`,
        actual: this.bytes.length - this.pos,
      });
    }
  }
  i32(field: string): number {
    this.need(4, field);
    const v = this.view.getInt32(this.pos, true);
    this.pos += 4;
    return v;
  }
  u32(field: string): number {
    this.need(4, field);
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  f32(field: string): number {
    this.need(4, field);
    const v = this.view.getFloat32(this.pos, true);
    this.pos += 4;
    return v;
  }
  take(n: number, field: string): Uint8Array {
    this.need(n, field);
    const v = this.bytes.slice(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }
}

function rangeCheck(field: string, offset: number, v: number, min: number, max: number): number {
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new InvalidValueError('value out of range', { field, offset, expected: `${min}..${max}`, actual: v });
  }
  return v;
}

/**
 * Read and parse a `.t` file. Refuses what is not a regular file (a directory, /dev/zero, a
 * pipe) and a file larger than TOKENIZER_MAX_FILE_BYTES before reading; every error names the
 * file.
 */
export function readTokenizerFile(path: string): TokenizerData {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    throw fileError(e, path, 'open the tokenizer');
  }
  let bytes: Uint8Array;
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new NotRegularFileError(st.isDirectory() ? 'is a directory, not a tokenizer file' : 'not a regular file (a device, pipe or socket), not a tokenizer file', { path });
    if (st.size > TOKENIZER_MAX_FILE_BYTES) {
      throw new InvalidValueError('file is larger than a tokenizer can be', { path, field: 'file size', expected: `≤ ${TOKENIZER_MAX_FILE_BYTES} bytes`, actual: st.size });
    }
    bytes = new Uint8Array(st.size);
    let done = 0;
    while (done < bytes.length) {
      const n = readSync(fd, bytes, done, bytes.length - done, done);
      if (n === 0) break;
      done += n;
    }
    if (done < bytes.length) bytes = bytes.subarray(0, done);
  } catch (e) {
    throw fileError(e, path, 'read the tokenizer');
  } finally {
    closeSync(fd);
  }
  try {
    return parseTokenizer(bytes);
  } catch (e) {
    throw e instanceof AirllmError ? e.withPath(path) : e;
  }
}

/** Parse a `.t` file (current or legacy magic). Every claimed size is checked before use. */
export function parseTokenizer(bytes: Uint8Array): TokenizerData {
  const r = new Reader(bytes);
  const magic = r.i32('magic');
  if (magic === TOKENIZER_MAGIC_LEGACY) return parseLegacy(r);
  if (magic !== TOKENIZER_MAGIC) {
    throw new BadMagicError('not a Distributed-Llama tokenizer file', {
      field: 'magic',
      offset: 0,
      expected: '0x567124',
      actual: `0x${(magic >>> 0).toString(16)}`,
    });
  }
  const headerSize = r.i32('headerSize');
  const maxHeader = 8 + 8 * TOKENIZER_LIMITS.maxPairs;
  if (headerSize < 8 || headerSize > maxHeader || headerSize % 8 !== 0) {
    throw new InvalidValueError('header size must be 8 + 8·pairs', {
      field: 'headerSize',
      offset: 4,
      expected: `8..${maxHeader}, a multiple of 8`,
      actual: headerSize,
    });
  }
  r.need(headerSize - 8, 'header pairs');
  let version = -1;
  let versionAt = 8;
  let vocabSize = -1;
  let maxTokenLength = -1;
  let bosId = -1;
  let chatTemplateLength = 0;
  let chatStopLength = 0;
  let nEos = 0;
  let addBos = 1;
  const eosIds: number[] = [];
  while (r.pos < headerSize) {
    const at = r.pos;
    const key = r.i32('key');
    const value = r.i32('value');
    switch (key) {
      case TokenizerKey.Version: version = value; versionAt = at + 4; break;
      case TokenizerKey.VocabSize: vocabSize = rangeCheck('vocab_size', at + 4, value, 1, TOKENIZER_LIMITS.maxVocab); break;
      case TokenizerKey.MaxTokenLength: maxTokenLength = rangeCheck('max_token_length', at + 4, value, 1, TOKENIZER_LIMITS.maxTokenLength); break;
      case TokenizerKey.BosId: bosId = value; break;
      case TokenizerKey.EosId: eosIds.push(value); break;
      case TokenizerKey.PadId: break;
      case TokenizerKey.ChatEosId: eosIds.push(value); break;
      case TokenizerKey.ChatTemplate: chatTemplateLength = rangeCheck('chat_template', at + 4, value, 0, TOKENIZER_LIMITS.maxTemplateBytes); break;
      case TokenizerKey.ChatStop: chatStopLength = rangeCheck('chat_stop', at + 4, value, 0, TOKENIZER_LIMITS.maxTemplateBytes); break;
      case TokenizerKey.NEosTokens: nEos = rangeCheck('n_eos_tokens', at + 4, value, 0, TOKENIZER_LIMITS.maxEosTokens); break;
      case TokenizerKey.AddBos: addBos = value; break;
      default:
        throw new UnknownKeyError('unsupported tokenizer header key', { field: `key ${key}`, offset: at });
    }
  }
  if (version !== 1) {
    throw new OldFormatError('tokenizer version must be 1', {
      field: 'version',
      offset: versionAt,
      expected: 1,
      actual: version === -1 ? 'absent' : version,
    });
  }
  // Missing keys are reported at the start of the pair list (where they would have been).
  if (vocabSize < 0) throw new InvalidValueError('required key is missing', { field: 'vocab_size', offset: 8, expected: 'present' });
  if (maxTokenLength < 0) throw new InvalidValueError('required key is missing', { field: 'max_token_length', offset: 8, expected: 'present' });
  r.take(chatStopLength, 'chat_stop');
  let chatTemplate: string | undefined;
  if (chatTemplateLength > 0) chatTemplate = new TextDecoder().decode(r.take(chatTemplateLength, 'chat_template'));
  for (let i = 0; i < nEos; i++) eosIds.push(r.i32(`eos_ids[${i}]`));
  const { vocab, scores } = readVocab(r, vocabSize, maxTokenLength);
  checkIds(bosId, eosIds, vocabSize, 8);
  return { vocab, scores, maxTokenLength, bosId, eosIds, addBos: addBos !== 0, chatTemplate, legacy: false };
}

function parseLegacy(r: Reader): TokenizerData {
  const vocabSize = rangeCheck('vocab_size', 4, r.u32('vocab_size'), 1, TOKENIZER_LIMITS.maxVocab);
  const maxTokenLength = rangeCheck('max_token_length', 8, r.u32('max_token_length'), 1, TOKENIZER_LIMITS.maxTokenLength);
  const bosId = r.i32('bos_id');
  const eosId = r.i32('eos_id');
  r.i32('pad_id');
  const { vocab, scores } = readVocab(r, vocabSize, maxTokenLength);
  const eosIds = eosId >= 0 ? [eosId] : [];
  checkIds(bosId, eosIds, vocabSize, 12);
  return { vocab, scores, maxTokenLength, bosId, eosIds, addBos: true, chatTemplate: undefined, legacy: true };
}

function readVocab(r: Reader, vocabSize: number, maxTokenLength: number): { vocab: Uint8Array[]; scores: Float32Array } {
  // Each entry takes at least 9 bytes: refuse a vocab the remaining bytes cannot hold before
  // allocating anything sized by it.
  const remaining = r.bytes.length - r.pos;
  if (vocabSize * 9 > remaining) {
    throw new TruncatedError('vocabulary is larger than the file', {
      field: 'vocab_size',
      offset: r.pos,
      expected: `≥ ${vocabSize * 9} bytes`,
      actual: remaining,
    });
  }
  const scores = new Float32Array(vocabSize);
  const vocab: Uint8Array[] = [];
  for (let i = 0; i < vocabSize; i++) {
    scores[i] = r.f32(`vocab[${i}].score`);
    const at = r.pos;
    const len = r.u32(`vocab[${i}].length`);
    if (len < 1 || len > maxTokenLength) {
      throw new InvalidValueError('token length out of range', {
        field: `vocab[${i}].length`,
        offset: at,
        expected: `1..${maxTokenLength} (max_token_length)`,
        actual: len,
      });
    }
    vocab.push(r.take(len, `vocab[${i}].bytes`));
  }
  if (r.pos !== r.bytes.length) {
    throw new InvalidValueError('trailing bytes after the vocabulary', {
      field: 'vocabulary',
      offset: r.pos,
      expected: `end of file at ${r.pos}`,
      actual: r.bytes.length,
    });
  }
  return { vocab, scores };
}

function checkIds(bosId: number, eosIds: number[], vocabSize: number, offset?: number): void {
  // -1 is "no BOS"; anything else must be a token.
  if (bosId >= vocabSize || bosId < -1) {
    throw new InvalidValueError('bos_id outside the vocabulary', { field: 'bos_id', offset, expected: `-1 (none) or 0..${vocabSize - 1}`, actual: bosId });
  }
  for (const id of eosIds) {
    if (id < 0 || id >= vocabSize) {
      throw new InvalidValueError('EOS id outside the vocabulary', { field: 'eos_ids', offset, expected: `0..${vocabSize - 1}`, actual: id });
    }
  }
}

/**
 * Write a `.t` file in the official writer's key order (bos_id, version, vocab_size,
 * max_token_length, [chat_template], n_eos_tokens, add_bos), byte for byte as
 * tokenizer-writer.py does.
 */
export function writeTokenizer(data: Omit<TokenizerData, 'legacy' | 'maxTokenLength'> & { maxTokenLength?: number }): Uint8Array {
  const vocabSize = data.vocab.length;
  if (data.scores.length !== vocabSize) {
    throw new InvalidValueError('scores and vocab differ in length', { field: 'scores', expected: vocabSize, actual: data.scores.length });
  }
  // A loop, not Math.max(...): spreading a 150k-entry vocabulary overflows the call stack.
  let longest = 0;
  data.vocab.forEach((p, i) => {
    if (p.length < 1 || p.length > TOKENIZER_LIMITS.maxTokenLength) {
      throw new InvalidValueError('token length out of range', {
        field: `vocab[${i}].length`,
        expected: `1..${TOKENIZER_LIMITS.maxTokenLength}`,
        actual: p.length,
      });
    }
    longest = Math.max(longest, p.length);
  });
  const maxTokenLength = data.maxTokenLength ?? longest;
  if (vocabSize < 1 || vocabSize > TOKENIZER_LIMITS.maxVocab) {
    throw new InvalidValueError('vocabulary size out of range', { field: 'vocab_size', expected: `1..${TOKENIZER_LIMITS.maxVocab}`, actual: vocabSize });
  }
  if (maxTokenLength < longest || maxTokenLength > TOKENIZER_LIMITS.maxTokenLength) {
    throw new InvalidValueError('max_token_length is shorter than the longest token', {
      field: 'max_token_length',
      expected: `${longest}..${TOKENIZER_LIMITS.maxTokenLength}`,
      actual: maxTokenLength,
    });
  }
  checkIds(data.bosId, [...data.eosIds], vocabSize);
  if (data.eosIds.length > TOKENIZER_LIMITS.maxEosTokens) {
    throw new InvalidValueError('too many EOS ids', { field: 'n_eos_tokens', expected: `≤ ${TOKENIZER_LIMITS.maxEosTokens}`, actual: data.eosIds.length });
  }
  const template = data.chatTemplate !== undefined ? new TextEncoder().encode(data.chatTemplate) : new Uint8Array(0);
  if (template.length > TOKENIZER_LIMITS.maxTemplateBytes) {
    throw new InvalidValueError('chat template too long', { field: 'chat_template', expected: `≤ ${TOKENIZER_LIMITS.maxTemplateBytes} bytes`, actual: template.length });
  }
  const pairs: [TokenizerKey, number][] = [
    [TokenizerKey.BosId, data.bosId],
    [TokenizerKey.Version, 1],
    [TokenizerKey.VocabSize, vocabSize],
    [TokenizerKey.MaxTokenLength, maxTokenLength],
  ];
  if (template.length > 0) pairs.push([TokenizerKey.ChatTemplate, template.length]);
  pairs.push([TokenizerKey.NEosTokens, data.eosIds.length], [TokenizerKey.AddBos, data.addBos ? 1 : 0]);
  const headerSize = 8 + 8 * pairs.length;
  let total = headerSize + template.length + 4 * data.eosIds.length;
  for (const p of data.vocab) total += 8 + p.length;
  const out = new Uint8Array(total);
  const v = new DataView(out.buffer);
  v.setInt32(0, TOKENIZER_MAGIC, true);
  v.setInt32(4, headerSize, true);
  pairs.forEach(([k, val], i) => {
    v.setInt32(8 + 8 * i, k, true);
    v.setInt32(12 + 8 * i, val, true);
  });
  let o = headerSize;
  out.set(template, o);
  o += template.length;
  for (const id of data.eosIds) {
    v.setInt32(o, id, true);
    o += 4;
  }
  data.vocab.forEach((piece, i) => {
    v.setFloat32(o, data.scores[i]!, true);
    v.setUint32(o + 4, piece.length, true);
    out.set(piece, o + 8);
    o += 8 + piece.length;
  });
  return out;
}
