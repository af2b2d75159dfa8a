import { writeTokenizer } from '@airllm/format';

const utf8 = new TextEncoder();

/**
 * A SentencePiece-style `.t` vocabulary of `vocabSize` tokens: `<unk>`, `<s>`, `</s>`, the 256
 * byte pieces, then made-up word pieces. Its only jobs are to make the GGUF export loadable by
 * llama.cpp (which needs one token per embedding row) and to give the engine a decoder; every
 * benchmark feeds token ids, never text, so both engines see exactly the same inputs.
 */
export function syntheticTokenizer(vocabSize: number): Uint8Array {
  if (vocabSize < 512) throw new RangeError(`synthetic tokenizer needs a vocabulary of at least 512 tokens, got ${vocabSize}`);
  const vocab: Uint8Array[] = [utf8.encode('<unk>'), utf8.encode('<s>'), utf8.encode('</s>')];
  for (let b = 0; b < 256; b++) vocab.push(Uint8Array.of(b));
  for (let id = vocab.length; id < vocabSize; id++) {
    // Distinct lowercase "words" (bijective base 26), every other one with a leading space.
    let n = id;
    let word = '';
    do {
      word = String.fromCharCode(97 + (n % 26)) + word;
      n = Math.floor(n / 26) - 1;
    } while (n >= 0);
    vocab.push(utf8.encode((id % 2 === 0 ? ' ' : '') + word));
  }
  const scores = new Float32Array(vocabSize);
  for (let id = 0; id < vocabSize; id++) scores[id] = id < 259 ? 0 : -id;
  return writeTokenizer({ vocab, scores, bosId: 1, eosIds: [2], addBos: true, chatTemplate: undefined });
}

/** First id of the ordinary word pieces (prompts are drawn from these). */
export const FIRST_WORD_TOKEN = 259;
