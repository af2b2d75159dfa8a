import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseTokenizer } from '@airllm/format';
import { ChatFormatter, ChatTemplateError, Tokenizer } from '@airllm/engine';
import { KvHistory } from '../src/history.js';
import { FIXTURE_TOKENIZER } from './helpers.js';

/**
 * Inputs long enough that spreading them into a call (`push(...ids)`) overflows the call stack
 * (about 125k arguments): 130,000 'a's encode to one stories260K token each.
 */
const N = 130_000;
const tok = new Tokenizer(parseTokenizer(readFileSync(FIXTURE_TOKENIZER)));

describe('long inputs do not overflow the call stack', () => {
  it('ChatFormatter.encode and encodeAsync: a 130,000-character message', async () => {
    const f = new ChatFormatter(tok);
    const messages = [{ role: 'user' as const, content: 'a'.repeat(N) }];
    // The reference: the rendered prompt is BOS's text then plain text; encoded as BOS + the rest.
    const text = f.render(messages);
    expect(text.startsWith(f.tokenTexts.bos)).toBe(true);
    const want = [tok.bosId];
    for (const id of tok.encode(text.slice(f.tokenTexts.bos.length), { bos: false })) want.push(id);
    expect(want.length).toBeGreaterThan(N);
    expect(f.encode(messages)).toEqual(want);
    expect(await f.encodeAsync(messages)).toEqual(want);
    await tok.close();
  });

  it('ChatFormatter.encodeAsync of a long conversation (on the tokenizer thread) equals encode', async () => {
    const f = new ChatFormatter(tok);
    const messages = Array.from({ length: 2000 }, (_, i) => ({ role: i % 2 ? ('assistant' as const) : ('user' as const), content: `turn ${i}` }));
    expect(await f.encodeAsync(messages)).toEqual(f.encode(messages));
    // A template error raised on that thread keeps its class.
    const bad = [{ role: 'assistant' as const, content: 'x' }, ...messages];
    await expect(f.encodeAsync(bad)).rejects.toBeInstanceOf(ChatTemplateError);
    expect(() => f.encode(bad)).toThrow(ChatTemplateError);
    await tok.close();
  });

  it('KvHistory.append: a 200,000-token step', () => {
    const h = new KvHistory(1);
    const ids = Array.from({ length: 200_000 }, (_, i) => i % 512);
    h.append(0, ids);
    expect(h.tokens(0)).toEqual(ids);
  });

  it('a byte-level vocabulary stops at the first unmatched run instead of growing it', () => {
    // 200,000 bytes that no piece matches: refused with the bytes named, not a stack overflow.
    const bytes = new Tokenizer(parseTokenizer(readFileSync(FIXTURE_TOKENIZER)), 'bytelevel');
    expect(() => bytes.encode('\u0001'.repeat(200_000))).toThrow(/match no token/);
  });
});
