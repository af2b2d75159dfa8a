import { Worker } from 'node:worker_threads';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import type { HfTokenizerSidecar, TokenizerData } from '@airllm/format';
import type { ChatFormatOptions, ChatMessage } from './chat.js';
import { TokenizerError } from './errors.js';
import { MinHeap } from './heap.js';

/**
 * Text ↔ token ids.
 *
 * With the model's Hugging Face tokenizer (the sidecar the converters write beside the `.t`, or
 * one rebuilt from GGUF metadata), text is encoded by Hugging Face's own implementation
 * (`@huggingface/tokenizers`): the normalizer, pre-tokenizer regex, merges by rank and added
 * tokens exactly as the model was trained with. Without it, a `.t` file is encoded as its
 * family's reference does, so ids stay those of llama2.c and dllama:
 *
 * - SentencePiece-style (Llama 2, TinyStories: bos_id 1, 256 byte-fallback pieces right after
 *   the control tokens, stored either as the text `<0xNN>` or as the raw byte): llama2.c's
 *   algorithm — dummy-prefix space, one piece per UTF-8 character with byte fallback, then
 *   greedy merging of the best-scoring adjacent pair. Control tokens (`<unk>`, BOS, EOS) and
 *   byte pieces are never matched against text. dllama treats every id ≥ bos_id as special on
 *   such vocabularies and so never merges (FORMAT.md §d.2); this is what it should have done.
 * - Byte-level BPE (Llama 3, Qwen: regular ids below bos_id, specials from bos_id): dllama's
 *   algorithm exactly, so token ids match dllama's.
 */
export type TokenizerKind = 'sentencepiece' | 'bytelevel';
/** Which algorithm encodes: Hugging Face's, llama2.c's (SentencePiece-style `.t`) or dllama's (byte-level `.t`). */
export type TokenizerAlgorithm = 'huggingface' | 'llama2c' | 'dllama';

export interface TokenizerOptions {
  /** Force an algorithm family for a `.t` vocabulary (default: detected). */
  kind?: TokenizerKind;
  /** The Hugging Face tokenizer of this vocabulary: encoding then follows Hugging Face exactly. */
  hf?: HfTokenizerSidecar;
  /** Where the tokenizer came from (a path), for messages. */
  source?: string;
  /**
   * The files it was loaded from (loadTokenizer): a worker thread then reads them itself
   * instead of receiving a copy of every token, which would be made on this thread.
   */
  files?: { tokenizer: string; modelVocabSize?: number };
}

export interface EncodeOptions {
  /** Prepend BOS (default: what the tokenizer itself does: its add_bos, or HF's post-processor). */
  bos?: boolean;
  /** `.t` byte-level only: match special-token texts in the input (default true, as dllama). */
  specials?: boolean;
}

/** Texts longer than this are encoded on a worker thread by encodeAsync. */
const ASYNC_MIN_CHARS = 1024;

const enc = new TextEncoder();

/** Byte-wise comparison, the order both dllama and llama2.c sort their vocabularies in. */
function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

/** Key for Map lookups of byte strings (latin1: one char per byte, reversible). */
function key(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]!);
  return s;
}

function hex2(b: number): string {
  return b.toString(16).toUpperCase().padStart(2, '0');
}

/** Where the 256 byte-fallback pieces start (the text `<0xNN>` or the raw byte), or -1. */
function findBytePieces(vocab: readonly Uint8Array[]): number {
  const isByte = (id: number, b: number): boolean => {
    const p = vocab[id];
    if (p === undefined) return false;
    if (p.length === 1 && p[0] === b) return true;
    return p.length === 6 && key(p) === `<0x${hex2(b)}>`;
  };
  for (const start of [3, 0, 1, 2, 4]) {
    let ok = true;
    for (let b = 0; b < 256 && ok; b++) ok = isByte(start + b, b);
    if (ok) return start;
  }
  return -1;
}

export class Tokenizer {
  readonly kind: TokenizerKind;
  readonly algorithm: TokenizerAlgorithm;
  readonly vocabSize: number;
  readonly bosId: number;
  readonly eosIds: readonly number[];
  readonly addBos: boolean;
  readonly chatTemplate: string | undefined;
  /** Where the tokenizer came from, for messages. */
  readonly source: string | undefined;
  /** Bytes each token decodes to in generated text (byte pieces as the raw byte, control tokens empty). */
  readonly pieces: readonly Uint8Array[];
  /** Longest token in bytes: a text of n bytes needs at least n / maxPieceBytes tokens. */
  readonly maxPieceBytes: number;
  /**
   * The model emitting BOS ends the text (llama2.c's run.c stops there: in its vocabularies BOS
   * separates documents).
   */
  readonly endsOnBos: boolean;
  /** The Hugging Face tokenizer, when encoding follows it. */
  readonly hfSidecar: HfTokenizerSidecar | undefined;
  /** The files it was loaded from, if any. */
  readonly files: { tokenizer: string; modelVocabSize?: number } | undefined;
  readonly #data: TokenizerData;
  readonly #vocab: readonly Uint8Array[];
  readonly #scores: Float32Array;
  /** Lookup of mergeable/matchable pieces → id (first id wins on duplicates). */
  readonly #lookup = new Map<string, number>();
  readonly #byteBase: number;
  /** Byte-level mode: special tokens (ids ≥ bos) by first byte, each list in id order (dllama's first match). */
  readonly #specials = new Map<number, { id: number; bytes: Uint8Array }[]>();
  readonly #control: ReadonlySet<number>;
  readonly #hf: HfTokenizer | undefined;
  /** NFC/NFKC applied by the HF normalizer (the byte count of a text is taken after it). */
  readonly #normalForm: 'NFC' | 'NFKC' | undefined;
  /** The decoder drops the leading space of the first piece (SentencePiece's dummy prefix). */
  readonly #stripFirstSpace: 'after-bos' | 'first-piece' | 'never';
  #worker: EncodeWorker | undefined;

  /** `options` (or a kind, to force an algorithm family) — see TokenizerOptions. */
  constructor(data: TokenizerData, options: TokenizerKind | TokenizerOptions = {}) {
    const o: TokenizerOptions = typeof options === 'string' ? { kind: options } : options;
    this.#data = data;
    this.#vocab = data.vocab;
    this.#scores = data.scores;
    this.vocabSize = data.vocab.length;
    this.bosId = data.bosId;
    this.eosIds = data.eosIds;
    this.addBos = data.addBos;
    this.chatTemplate = data.chatTemplate;
    this.source = o.source;
    this.files = o.files;
    this.#byteBase = findBytePieces(data.vocab);
    const looksSentencePiece = this.#byteBase >= 0 && data.bosId >= 0 && data.bosId < this.#byteBase;
    this.kind = o.kind ?? (looksSentencePiece ? 'sentencepiece' : 'bytelevel');
    if (this.kind === 'sentencepiece' && this.#byteBase < 0) {
      throw new TokenizerError('a SentencePiece tokenizer needs the 256 byte-fallback pieces <0x00>…<0xFF>');
    }
    const control = new Set<number>([...this.eosIds, ...(this.bosId >= 0 ? [this.bosId] : [])]);
    if (this.kind === 'sentencepiece') {
      // Ids below the byte pieces are control tokens (<unk>, <s>, </s>).
      for (let id = 0; id < this.#byteBase; id++) control.add(id);
      this.pieces = data.vocab.map((p, id) =>
        control.has(id) ? new Uint8Array(0) : this.#isBytePiece(id) ? Uint8Array.of(id - this.#byteBase) : p,
      );
      data.vocab.forEach((p, id) => {
        if (control.has(id) || this.#isBytePiece(id)) return;
        const k = key(p);
        if (!this.#lookup.has(k)) this.#lookup.set(k, id);
      });
    } else {
      const regularEnd = this.bosId >= 0 ? this.bosId : this.vocabSize;
      this.pieces = data.vocab.map((p, id) => (id === this.bosId ? new Uint8Array(0) : p));
      // dllama binary-searches the byte-wise sorted regular vocabulary; with duplicates the
      // result is the first id in sorted order, which is the smallest id for a stable sort.
      const order = [...Array(regularEnd).keys()].sort((a, b) => compareBytes(data.vocab[a]!, data.vocab[b]!) || a - b);
      for (const id of order) {
        const k = key(data.vocab[id]!);
        if (!this.#lookup.has(k)) this.#lookup.set(k, id);
      }
      for (let id = regularEnd; id < this.vocabSize; id++) {
        const bytes = data.vocab[id]!;
        if (bytes.length === 0) continue;
        const list = this.#specials.get(bytes[0]!) ?? [];
        list.push({ id, bytes });
        this.#specials.set(bytes[0]!, list);
      }
    }
    this.#control = control;
    let longest = 1;
    for (const p of data.vocab) longest = Math.max(longest, p.length);
    this.maxPieceBytes = longest;
    this.hfSidecar = o.hf;
    if (o.hf !== undefined) {
      try {
        // tokenizers' files always have these keys (null when unused); hand-written ones may not.
        const tj: Record<string, unknown> = { added_tokens: [], normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null, ...o.hf.tokenizer };
        const model = tj.model as Record<string, unknown>;
        if (model.type === 'BPE' && model.merges === undefined) tj.model = { ...model, merges: [] };
        this.#hf = new HfTokenizer(tj, o.hf.config);
      } catch (e) {
        throw new TokenizerError(`${o.source ?? 'the HF tokenizer'}: Hugging Face's tokenizer cannot load it (${(e as Error).message})`);
      }
      this.algorithm = 'huggingface';
      const norm = JSON.stringify(o.hf.tokenizer.normalizer ?? null);
      this.#normalForm = norm.includes('"NFKC"') ? 'NFKC' : norm.includes('"NFC"') ? 'NFC' : undefined;
      const dec = JSON.stringify(o.hf.tokenizer.decoder ?? null);
      this.#stripFirstSpace = this.kind === 'sentencepiece' && (dec.includes('"Strip"') || dec.includes('"Metaspace"')) ? 'first-piece' : 'never';
      this.endsOnBos = false;
    } else {
      this.algorithm = this.kind === 'sentencepiece' ? 'llama2c' : 'dllama';
      this.#stripFirstSpace = this.kind === 'sentencepiece' ? 'after-bos' : 'never';
      this.endsOnBos = this.kind === 'sentencepiece' && this.bosId >= 0;
    }
  }

  /** The data this tokenizer was built from (for a worker thread to build the same). */
  get data(): TokenizerData {
    return this.#data;
  }

  #isBytePiece(id: number): boolean {
    return this.#byteBase >= 0 && id >= this.#byteBase && id < this.#byteBase + 256;
  }

  isControl(id: number): boolean {
    return this.#control.has(id) || this.pieces[id]?.length === 0;
  }

  isEos(id: number): boolean {
    return this.eosIds.includes(id);
  }

  /** The text of a token as written in text (control tokens as their text, e.g. `<s>`), or undefined. */
  tokenText(id: number): string | undefined {
    const p = this.#vocab[id];
    if (p === undefined) return undefined;
    return new TextDecoder('utf-8', { ignoreBOM: true }).decode(this.#isBytePiece(id) ? Uint8Array.of(id - this.#byteBase) : p);
  }

  /**
   * Encode text. `bos` (default: what the tokenizer does by itself) prepends BOS. With a
   * Hugging Face tokenizer, added tokens written in the text (`<|im_start|>`, `<s>`, …) become
   * their ids, as in Hugging Face. A `.t` byte-level vocabulary matches special-token texts
   * too (`specials`, default true, as dllama); SentencePiece-style `.t` control tokens never do.
   */
  encode(text: string, options: EncodeOptions = {}): number[] {
    if (this.#hf !== undefined) return this.#encodeHf(text, options.bos);
    const bos = options.bos ?? this.addBos;
    const out: number[] = [];
    if (bos && this.bosId >= 0) out.push(this.bosId);
    const bytes = enc.encode(text);
    const body = this.kind === 'sentencepiece' ? this.#encodeSentencePiece(bytes) : this.#encodeByteLevel(bytes, options.specials ?? true);
    for (const id of body) out.push(id);
    return out;
  }

  #encodeHf(text: string, bos: boolean | undefined): number[] {
    let ids: number[];
    try {
      ids = this.#hf!.encode(text, { add_special_tokens: bos !== false }).ids;
    } catch (e) {
      throw new TokenizerError(`Hugging Face's tokenizer failed on the text: ${(e as Error).message}`);
    }
    if (bos === true && this.bosId >= 0 && ids[0] !== this.bosId) ids.unshift(this.bosId);
    return ids;
  }

  /**
   * The fewest tokens `text` can encode to (BOS excluded): every token stands for at most
   * maxPieceBytes bytes of the (normalized) text. A prompt can be refused by this bound
   * without encoding it.
   */
  minTokens(text: string): number {
    const t = this.#normalForm !== undefined ? text.normalize(this.#normalForm) : text;
    return Math.ceil(Buffer.byteLength(t, 'utf8') / this.maxPieceBytes);
  }

  /**
   * encode() without blocking the event loop: a text of more than ASYNC_MIN_CHARS characters is
   * encoded on a worker thread (started on first use, one per tokenizer; close() ends it).
   */
  async encodeAsync(text: string, options: EncodeOptions = {}): Promise<number[]> {
    if (text.length <= ASYNC_MIN_CHARS) return this.encode(text, options);
    this.startWorker();
    return await this.#worker!.encode({ text, options });
  }

  /**
   * A conversation formatted and encoded (ChatFormatter.encode) on encodeAsync's worker thread:
   * rendering a Jinja template over thousands of messages takes long too. ChatFormatter's
   * encodeAsync calls this; `format` is the ChatFormatter's format argument.
   */
  encodeChatAsync(request: ChatEncodeRequest): Promise<number[]> {
    this.startWorker();
    return this.#worker!.encode({ chat: request });
  }

  /** Start encodeAsync's worker thread now (a server does, so the first long prompt does not wait for it). */
  startWorker(): void {
    this.#worker ??= new EncodeWorker(this);
  }

  /** End the encoding worker thread, if one was started. */
  async close(): Promise<void> {
    const w = this.#worker;
    this.#worker = undefined;
    await w?.close();
  }

  /** llama2.c's `encode` (without BOS/EOS), with byte pieces and control tokens unmatchable. */
  #encodeSentencePiece(text: Uint8Array): number[] {
    const tokens: number[] = [];
    if (text.length > 0) {
      const space = this.#lookup.get(' ');
      if (space !== undefined) tokens.push(space);
    }
    for (let i = 0; i < text.length; ) {
      // One UTF-8 character: a lead byte plus up to 3 continuation bytes.
      let end = i + 1;
      while (end < text.length && (text[end]! & 0xc0) === 0x80 && end - i < 4) end++;
      const ch = text.subarray(i, end);
      const id = this.#lookup.get(key(ch));
      if (id !== undefined) tokens.push(id);
      else for (const b of ch) tokens.push(this.#byteBase + b);
      i = end;
    }
    return this.#mergePairs(tokens, (id) => (this.#isBytePiece(id) ? undefined : key(this.#vocab[id]!)));
  }

  /** dllama's Tokenizer::encode body (FORMAT.md §d.2 steps 3–4). */
  #encodeByteLevel(text: Uint8Array, specials: boolean): number[] {
    const tokens: number[] = [];
    let pending: number[] = [];
    outer: for (let i = 0; i < text.length; ) {
      if (specials) {
        for (const s of this.#specials.get(text[i]!) ?? []) {
          const n = s.bytes.length;
          if (i + n <= text.length && compareBytes(text.subarray(i, i + n), s.bytes) === 0) {
            if (pending.length > 0) throw this.#noMatch(pending, i);
            tokens.push(s.id);
            i += n;
            continue outer;
          }
        }
      }
      pending.push(text[i]!);
      i++;
      // No piece is longer than maxPieceBytes: a longer run can never match (and must not grow).
      if (pending.length > this.maxPieceBytes) throw this.#noMatch(pending.slice(0, this.maxPieceBytes), i);
      const id = this.#lookup.get(String.fromCharCode(...pending));
      if (id !== undefined) {
        tokens.push(id);
        pending = [];
      }
    }
    if (pending.length > 0) throw this.#noMatch(pending, text.length);
    return this.#mergePairs(tokens, (id) => (id < (this.bosId >= 0 ? this.bosId : this.vocabSize) ? key(this.#vocab[id]!) : undefined));
  }

  #noMatch(pending: number[], offset: number): TokenizerError {
    return new TokenizerError(
      `bytes ${pending.map((b) => `0x${hex2(b)}`).join(' ')} before byte ${offset} of the prompt match no token of this vocabulary`,
    );
  }

  /**
   * Repeatedly merge the adjacent pair whose concatenation is a token with the highest score
   * (strictly greater wins, so the leftmost pair wins ties); `text(id)` gives the string a token
   * contributes to a merge, or undefined when it never merges. The references rescan every pair
   * after each merge (quadratic); here the tokens form a linked list and candidate pairs wait in
   * a heap ordered by (score, position), so the same merges happen in O(n log n).
   */
  #mergePairs(tokens: number[], text: (id: number) => string | undefined): number[] {
    const n = tokens.length;
    if (n < 2) return tokens;
    const ids = Int32Array.from(tokens);
    const strs = tokens.map(text);
    const next = new Int32Array(n);
    const prev = new Int32Array(n);
    // Bumped whenever a node changes, so heap entries about its old contents are skipped.
    const version = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    const heap = new MinHeap();
    const consider = (left: number): void => {
      const right = next[left]!;
      if (right < 0) return;
      const a = strs[left];
      const b = strs[right];
      if (a === undefined || b === undefined) return;
      const id = this.#lookup.get(a + b);
      if (id === undefined) return;
      const score = this.#scores[id]!;
      // A NaN or -Infinity score never beats the references' starting best of -Infinity.
      if (!(score > -Infinity)) return;
      heap.push(-score, left, id, version[left]!, version[right]!);
    };
    for (let i = 0; i + 1 < n; i++) consider(i);
    while (heap.size > 0) {
      const { position: left, id, leftVersion, rightVersion } = heap.pop();
      const right = next[left]!;
      if (right < 0 || version[left] !== leftVersion || version[right] !== rightVersion) continue;
      ids[left] = id;
      strs[left] = text(id);
      version[left]!++;
      version[right]!++;
      const after = next[right]!;
      next[left] = after;
      if (after >= 0) prev[after] = left;
      if (prev[left]! >= 0) consider(prev[left]!);
      consider(left);
    }
    const out: number[] = [];
    for (let i = 0; i >= 0; i = next[i]!) out.push(ids[i]!);
    return out;
  }

  /** A streaming decoder that only ever emits complete UTF-8 (`specials`: control tokens as their text). */
  decoder(options: { specials?: boolean } = {}): TokenDecoder {
    return new TokenDecoder(this, options.specials ?? false);
  }

  /**
   * Decode a whole sequence: control tokens (BOS, EOS) are left out unless `specials`, other
   * added tokens are their text; SentencePiece's dummy-prefix space is dropped where the
   * tokenizer's decoder drops it (llama2.c: after BOS; Hugging Face: at the start of the text).
   */
  decode(ids: readonly number[], options: { specials?: boolean } = {}): string {
    const d = this.decoder(options);
    let s = '';
    for (const id of ids) s += d.push(id);
    return s + d.flush();
  }

  /** The bytes `id` adds to the text (`specials`: control tokens as their text). */
  piece(id: number, specials: boolean): Uint8Array | undefined {
    const p = this.pieces[id];
    if (p === undefined) return undefined;
    if (specials && p.length === 0 && this.#control.has(id)) return this.#vocab[id];
    return p;
  }

  /** TokenDecoder's rule for SentencePiece's dummy-prefix space. */
  get stripFirstSpace(): 'after-bos' | 'first-piece' | 'never' {
    return this.#stripFirstSpace;
  }
}

/**
 * Turns a token stream into text, holding back incomplete UTF-8 sequences until they complete
 * (a multi-byte character can be split across byte-fallback tokens). Invalid bytes become
 * U+FFFD.
 */
export class TokenDecoder {
  #pending: number[] = [];
  #prev = -1;
  #started = false;
  // ignoreBOM: a U+FEFF at the start of the text is text, not a byte-order mark to drop.
  readonly #utf8 = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

  constructor(
    private readonly tok: Tokenizer,
    private readonly specials = false,
  ) {}

  push(id: number): string {
    const prev = this.#prev;
    this.#prev = id;
    let piece = this.tok.piece(id, this.specials);
    if (piece === undefined) return '';
    const rule = this.tok.stripFirstSpace;
    const first = !this.#started;
    if (piece.length > 0) this.#started = true;
    if (piece[0] === 0x20 && ((rule === 'after-bos' && prev === this.tok.bosId) || (rule === 'first-piece' && first))) piece = piece.subarray(1);
    for (const b of piece) this.#pending.push(b);
    return this.#drain(false);
  }

  /** Bytes are held back (the start of a character not yet complete). */
  get pending(): boolean {
    return this.#pending.length > 0;
  }

  /** Emit whatever is held back (incomplete sequences become U+FFFD). */
  flush(): string {
    return this.#drain(true);
  }

  #drain(all: boolean): string {
    const p = this.#pending;
    let end = p.length;
    if (!all) end = completePrefix(p);
    if (end === 0) return '';
    const s = this.#utf8.decode(Uint8Array.from(p.slice(0, end)));
    this.#pending = p.slice(end);
    return s;
  }
}

/** Length of the longest prefix of `b` that does not end inside a (possibly valid) UTF-8 sequence. */
function completePrefix(b: number[]): number {
  const n = b.length;
  // Look back at most 3 bytes for the start of an unfinished multi-byte sequence.
  for (let back = 1; back <= Math.min(3, n); back++) {
    const c = b[n - back]!;
    if ((c & 0xc0) === 0x80) continue; // continuation byte: keep looking for the lead
    const need = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 1;
    return need > back ? n - back : n;
  }
  return n;
}

/** What a worker thread needs to build the same tokenizer: the files to load, or the data itself. */
export type TokenizerSpec =
  | { files: { tokenizer: string; modelVocabSize?: number } }
  | { data: TokenizerData; kind: TokenizerKind; hf: HfTokenizerSidecar | undefined; source: string | undefined };

/** What ChatFormatter.encodeAsync asks the worker for: its format (undefined: the tokenizer's template), a conversation and options. */
export interface ChatEncodeRequest {
  format: string | undefined;
  messages: readonly ChatMessage[];
  options: ChatFormatOptions;
}

/** A request to the encoding thread: a text or a conversation. */
export type WorkerRequest = { text: string; options: EncodeOptions } | { chat: ChatEncodeRequest };

type WorkerReply = { n: number; ids: Int32Array } | { n: number; error: string; message: string };

/**
 * One worker thread that encodes for a tokenizer, so long prompts do not stall the event loop
 * (a server's health checks and streams keep going). Requests are answered in order. The
 * thread does not keep the process alive while idle.
 */
class EncodeWorker {
  readonly #worker: import('node:worker_threads').Worker;
  readonly #waiting = new Map<number, { resolve: (ids: number[]) => void; reject: (e: Error) => void }>();
  #next = 0;
  #failed: Error | undefined;

  constructor(tok: Tokenizer) {
    const spec: TokenizerSpec = tok.files !== undefined ? { files: tok.files } : { data: tok.data, kind: tok.kind, hf: tok.hfSidecar, source: tok.source };
    // Workers inherit execArgv (e.g. --input-type=module, which breaks loading a file).
    this.#worker = new Worker(new URL('./tokenizer-worker.js', import.meta.url), { workerData: spec, execArgv: [] });
    this.#worker.unref();
    this.#worker.on('message', (r: WorkerReply) => {
      const w = this.#waiting.get(r.n);
      this.#waiting.delete(r.n);
      if (this.#waiting.size === 0) this.#worker.unref();
      if (!w) return;
      if ('ids' in r) w.resolve(Array.from(r.ids));
      // The error's class does not cross threads: TokenizerError is rebuilt, others keep their name.
      else w.reject(r.error === 'TokenizerError' ? new TokenizerError(r.message) : Object.assign(new Error(r.message), { name: r.error }));
    });
    this.#worker.on('error', (e) => this.#fail(e));
    this.#worker.on('exit', (code) => this.#fail(new TokenizerError(`the tokenizer worker thread exited (code ${code})`)));
  }

  #fail(e: Error): void {
    this.#failed ??= e;
    for (const w of this.#waiting.values()) w.reject(this.#failed);
    this.#waiting.clear();
  }

  encode(request: WorkerRequest): Promise<number[]> {
    if (this.#failed) return Promise.reject(this.#failed);
    const n = this.#next++;
    return new Promise((resolve, reject) => {
      this.#waiting.set(n, { resolve, reject });
      this.#worker.ref();
      this.#worker.postMessage({ n, ...request });
    });
  }

  async close(): Promise<void> {
    this.#failed ??= new TokenizerError('the tokenizer was closed');
    await this.#worker.terminate();
  }
}
