import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseTokenizer, type TokenizerData } from '@airllm/format';
import {
  ChatFormatter,
  ChatTemplateError,
  Tokenizer,
  detectChatTemplate,
  formatChat,
  parseChatTemplateName,
  renderChatParts,
  type ChatMessage,
  type ChatTemplateName,
} from '@airllm/engine';
import { FIXTURE_TOKENIZER } from './helpers.js';

/**
 * Expected texts come from the real templates rendered by Jinja2 (fixtures/chat/render.py, run
 * as Hugging Face's apply_chat_template runs them): llama2 = the chat template inside
 * stories260K's .t file, llama3.jinja = Meta-Llama-3-8B-Instruct's, qwen3.jinja = Qwen3's.
 */
const FIX = join(import.meta.dirname, 'fixtures', 'chat');
const expected = JSON.parse(readFileSync(join(FIX, 'expected.json'), 'utf8')) as {
  tokens: Record<ChatTemplateName, { bos: string; eos: string }>;
  cases: { template: ChatTemplateName; messages: ChatMessage[]; addGenerationPrompt: boolean; enableThinking?: boolean; expected?: string; error?: string }[];
};
const stories = parseTokenizer(readFileSync(FIXTURE_TOKENIZER));
const storiesTok = new Tokenizer(stories);

describe('detection by marker substrings (dllama)', () => {
  it('picks the format of each real template', () => {
    expect(detectChatTemplate(stories.chatTemplate)).toBe('llama2');
    expect(detectChatTemplate(readFileSync(join(FIX, 'llama3.jinja'), 'utf8'))).toBe('llama3');
    expect(detectChatTemplate(readFileSync(join(FIX, 'qwen3.jinja'), 'utf8'))).toBe('chatml');
    expect(detectChatTemplate(undefined)).toBeUndefined();
    expect(detectChatTemplate('{{ messages }}')).toBeUndefined();
  });
  it('accepts names, qwen3 as chatml, and refuses others', () => {
    expect(parseChatTemplateName('Llama3')).toBe('llama3');
    expect(parseChatTemplateName('qwen3')).toBe('chatml');
    expect(() => parseChatTemplateName('vicuna')).toThrow(/unknown chat template "vicuna"/);
  });
});

describe('formats render what the real templates render (Jinja2 fixtures)', () => {
  // Where Jinja silently drops a llama2 system message at an odd position, we refuse it instead.
  const dropsSystem = (c: (typeof expected.cases)[number]): boolean =>
    c.template === 'llama2' && c.messages.slice(1).some((m) => m.role === 'system') && c.error === undefined;
  it('has every template and both generation-prompt settings', () => {
    expect(new Set(expected.cases.map((c) => c.template))).toEqual(new Set(['llama2', 'llama3', 'chatml']));
    expect(expected.cases.length).toBeGreaterThan(60);
  });
  for (const c of expected.cases) {
    const roles = c.messages.map((m) => m.role[0]).join('');
    const label = `${c.template} [${roles}] gen=${c.addGenerationPrompt}${c.enableThinking === false ? ' thinking=off' : ''}`;
    it(label, () => {
      const run = (): string =>
        renderChatParts(
          formatChat(c.template, c.messages, { addGenerationPrompt: c.addGenerationPrompt, ...(c.enableThinking !== undefined ? { enableThinking: c.enableThinking } : {}) }),
          expected.tokens[c.template],
        );
      if (c.error !== undefined) expect(run).toThrow(ChatTemplateError);
      else if (dropsSystem(c)) expect(run).toThrow(/allows a system message only first/);
      else expect(run()).toBe(c.expected);
    });
  }
});

describe('ChatFormatter on stories260K (SentencePiece, Llama-2 template)', () => {
  const f = new ChatFormatter(storiesTok);
  const convo: ChatMessage[] = [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Hi' },
    { role: 'assistant', content: 'Hello' },
    { role: 'user', content: 'Tell a story' },
  ];
  it("renders the .t file's own template and stops at its end of turn", () => {
    expect(f.name).toBe('jinja');
    expect(f.stop).toEqual(['</s>']);
  });
  it('puts BOS/EOS ids where the template writes <s> and </s>, text runs encoded without BOS', () => {
    const ids = f.encode(convo);
    const run1 = storiesTok.encode('[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello ', { bos: false });
    const run2 = storiesTok.encode('[INST] Tell a story [/INST]', { bos: false });
    expect(ids).toEqual([1, ...run1, 2, 1, ...run2]);
    // The control ids appear only at those three places: text never encodes to them.
    expect(ids.filter((t) => t === 1 || t === 2)).toEqual([1, 2, 1]);
    expect(f.render(convo)).toBe('<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello </s><s>[INST] Tell a story [/INST]');
  });
  it('a longer conversation starts with the tokens of the shorter one (KV cache prefix reuse)', () => {
    const a = f.encode(convo.slice(0, 2));
    const b = f.encode(convo);
    expect(b.slice(0, a.length - 1)).toEqual(a.slice(0, a.length - 1));
  });
  it('refuses unknown roles and bad order with typed errors', () => {
    expect(() => f.encode([{ role: 'wizard' as 'user', content: 'x' }])).toThrow(/unknown role "wizard"/);
    expect(() => f.encode([{ role: 'tool', content: 'x' }])).toThrow(/tool messages need a Jinja template with tools/);
    expect(() => f.encode([{ role: 'user', content: 'x' }], { tools: [{ type: 'function', function: { name: 'f' } }] })).toThrow(/has no tool calls/);
    expect(() => f.encode([{ role: 'assistant', content: 'x' }])).toThrow(ChatTemplateError);
  });
  it('an override wins over detection', () => {
    const g = new ChatFormatter(storiesTok, 'chatml');
    expect(g.name).toBe('chatml');
    // SentencePiece control tokens decode to nothing, so only the marker is a stop string.
    expect(g.stop).toEqual(['<|im_end|>']);
  });
});

describe('ChatFormatter on a byte-level vocabulary with special tokens', () => {
  const enc = new TextEncoder();
  const specials = ['<|begin_of_text|>', '<|end_of_text|>', '<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>'];
  const bytes = Array.from({ length: 256 }, (_, b) => Uint8Array.of(b));
  const vocab = [...bytes, ...specials.map((s) => enc.encode(s))];
  const data: TokenizerData = {
    vocab,
    scores: Float32Array.from(vocab, (_, i) => -i),
    maxTokenLength: 20,
    bosId: 256,
    eosIds: [257, 260],
    addBos: true,
    chatTemplate: readFileSync(join(FIX, 'llama3.jinja'), 'utf8'),
    legacy: false,
  };
  const tok = new Tokenizer(data);
  const f = new ChatFormatter(tok);
  it("renders the .t file's template; stops are the EOS texts plus its end of turn <|eot_id|>", () => {
    expect(f.name).toBe('jinja');
    expect(f.stop).toEqual(['<|end_of_text|>', '<|eot_id|>']);
  });
  it('encodes the header tokens as their special ids and BOS once', () => {
    const ids = f.encode([{ role: 'user', content: 'hi' }]);
    const h = (s: string): number[] => [...enc.encode(s)];
    expect(ids).toEqual([256, 258, ...h('user'), 259, ...h('\n\nhi'), 260, 258, ...h('assistant'), 259, ...h('\n\n')]);
  });
  it('without any chat template, asks for a name', () => {
    expect(() => new ChatFormatter(new Tokenizer({ ...data, chatTemplate: undefined }))).toThrow(/no chat template; name one/);
  });
});
