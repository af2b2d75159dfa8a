/**
 * Chat formatting. Like dllama, the Jinja text in the `.t` file is never executed: a marker
 * substring picks one of a few hard-coded formats (FORMAT.md §d), which reproduce what the real
 * templates render (test/fixtures/chat holds Jinja2's output for the published templates):
 *
 * | marker in the template  | format  | models                         |
 * | ----------------------- | ------- | ------------------------------ |
 * | `[INST]`                | llama2  | Llama 2 chat, TinyStories .t   |
 * | `<|start_header_id|>`   | llama3  | Llama 3 instruct               |
 * | `<|im_start|>`          | chatml  | Qwen3 (and other ChatML models)|
 *
 * A formatted conversation is a list of parts: text, or a BOS/EOS token the template writes as
 * `bos_token`/`eos_token`. Keeping BOS/EOS as tokens matters for SentencePiece vocabularies,
 * whose control tokens can never be produced by encoding their text (`<s>` in text is three
 * characters, not BOS).
 */
import { EngineError } from './errors.js';
import type { Tokenizer } from './tokenizer.js';

export type ChatTemplateName = 'llama2' | 'llama3' | 'chatml';
export const CHAT_TEMPLATE_NAMES: readonly ChatTemplateName[] = ['llama2', 'llama3', 'chatml'];

export type ChatRole = 'system' | 'user' | 'assistant';
export const CHAT_ROLES: readonly ChatRole[] = ['system', 'user', 'assistant'];

export interface ChatMessage {
  role: ChatRole;
  content: string;
}

export interface ChatFormatOptions {
  /** Append the assistant header the model continues from (default true). */
  addGenerationPrompt?: boolean;
  /** chatml (Qwen3): false appends an empty `<think></think>` block, as `enable_thinking=False` does. */
  enableThinking?: boolean;
}

/** A piece of a formatted conversation: text, or the BOS/EOS token itself. */
export type ChatPart = string | { readonly token: 'bos' | 'eos' };

/** The conversation cannot be formatted (unknown role, order the template forbids, no template). */
export class ChatTemplateError extends EngineError {
  static override readonly code = 'AIRLLM_CHAT_TEMPLATE';
}

/** The format a `.t` file's Jinja template asks for, by dllama's marker substrings, or undefined. */
export function detectChatTemplate(jinja: string | undefined): ChatTemplateName | undefined {
  if (jinja === undefined) return undefined;
  if (jinja.includes('[INST]')) return 'llama2';
  if (jinja.includes('<|start_header_id|>')) return 'llama3';
  if (jinja.includes('<|im_start|>')) return 'chatml';
  return undefined;
}

/** A template name given by a user: the three names, plus `qwen3` for chatml. */
export function parseChatTemplateName(name: string): ChatTemplateName {
  const n = name.trim().toLowerCase();
  if (n === 'qwen3' || n === 'qwen') return 'chatml';
  if ((CHAT_TEMPLATE_NAMES as readonly string[]).includes(n)) return n as ChatTemplateName;
  throw new ChatTemplateError(`unknown chat template "${name}" (known: ${CHAT_TEMPLATE_NAMES.join(', ')}, qwen3)`);
}

function checkMessages(messages: readonly ChatMessage[]): void {
  messages.forEach((m, i) => {
    if (!(CHAT_ROLES as readonly string[]).includes(m.role)) {
      throw new ChatTemplateError(`message ${i}: unknown role "${String(m.role)}" (expected ${CHAT_ROLES.join(', ')})`);
    }
    if (typeof m.content !== 'string') throw new ChatTemplateError(`message ${i}: content must be a string`);
  });
}

/** Python's str.strip(chars) for a set of characters (the templates strip '\n' only). */
function stripChars(s: string, chars: string, left: boolean, right: boolean): string {
  let a = 0;
  let b = s.length;
  if (left) while (a < b && chars.includes(s[a]!)) a++;
  if (right) while (b > a && chars.includes(s[b - 1]!)) b--;
  return s.slice(a, b);
}

/**
 * Llama-2-chat: `<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {answer} </s><s>[INST] …`.
 * Contents are stripped; users and assistants must alternate starting with a user, and a system
 * message may only come first (the Jinja template silently drops one at an odd position; we
 * refuse it instead of losing it).
 */
function llama2(messages: readonly ChatMessage[]): ChatPart[] {
  const parts: ChatPart[] = [];
  const system = messages[0]?.role === 'system' ? messages[0].content : undefined;
  const loop = system === undefined ? messages : messages.slice(1);
  loop.forEach((m, i) => {
    if (m.role === 'system') throw new ChatTemplateError(`message ${i + (system === undefined ? 0 : 1)}: the llama2 chat format allows a system message only first`);
    if ((m.role === 'user') !== (i % 2 === 0)) throw new ChatTemplateError('Conversation roles must alternate user/assistant/user/assistant/...');
    const content = i === 0 && system !== undefined ? `<<SYS>>\n${system}\n<</SYS>>\n\n${m.content}` : m.content;
    if (m.role === 'user') parts.push({ token: 'bos' }, `[INST] ${content.trim()} [/INST]`);
    else parts.push(` ${content.trim()} `, { token: 'eos' });
  });
  return parts;
}

/** Llama 3 instruct: BOS, then `<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>` per message. */
function llama3(messages: readonly ChatMessage[], o: ChatFormatOptions): ChatPart[] {
  const parts: ChatPart[] = [];
  messages.forEach((m, i) => {
    if (i === 0) parts.push({ token: 'bos' });
    parts.push(`<|start_header_id|>${m.role}<|end_header_id|>\n\n${m.content.trim()}<|eot_id|>`);
  });
  if (o.addGenerationPrompt ?? true) parts.push('<|start_header_id|>assistant<|end_header_id|>\n\n');
  return parts;
}

/**
 * ChatML as Qwen3's template writes it: `<|im_start|>{role}\n{content}<|im_end|>\n`. Assistant
 * turns before the last user query lose their `<think>…</think>` reasoning; one after it keeps
 * it (and the last message, when it is the assistant's, always gets a think block).
 */
function chatml(messages: readonly ChatMessage[], o: ChatFormatOptions): ChatPart[] {
  let out = '';
  // The last user message that is not a tool response (the template's ns.last_query_index).
  let lastQuery = messages.length - 1;
  for (let i = messages.length - 1; i >= 0; i--) {
    const c = messages[i]!.content;
    if (messages[i]!.role === 'user' && !(c.startsWith('<tool_response>') && c.endsWith('</tool_response>'))) {
      lastQuery = i;
      break;
    }
  }
  messages.forEach((m, i) => {
    let content = m.content;
    if (m.role === 'user' || (m.role === 'system' && i > 0)) out += `<|im_start|>${m.role}\n${content}<|im_end|>\n`;
    else if (m.role === 'system') out += `<|im_start|>system\n${content}<|im_end|>\n`;
    else {
      let reasoning = '';
      if (content.includes('</think>')) {
        const before = content.split('</think>')[0]!;
        reasoning = stripChars(stripChars(before, '\n', false, true).split('<think>').at(-1)!, '\n', true, false);
        content = stripChars(content.split('</think>').at(-1)!, '\n', true, false);
      }
      const last = i === messages.length - 1;
      if (i > lastQuery && (last || reasoning)) {
        out += `<|im_start|>assistant\n<think>\n${stripChars(reasoning, '\n', true, true)}\n</think>\n\n${stripChars(content, '\n', true, false)}`;
      } else {
        out += `<|im_start|>assistant\n${content}`;
      }
      out += '<|im_end|>\n';
    }
  });
  if (o.addGenerationPrompt ?? true) {
    out += '<|im_start|>assistant\n';
    if (o.enableThinking === false) out += '<think>\n\n</think>\n\n';
  }
  return out === '' ? [] : [out];
}

/** The parts of a conversation in one of the formats. */
export function formatChat(name: ChatTemplateName, messages: readonly ChatMessage[], options: ChatFormatOptions = {}): ChatPart[] {
  checkMessages(messages);
  switch (name) {
    case 'llama2':
      return llama2(messages);
    case 'llama3':
      return llama3(messages, options);
    case 'chatml':
      return chatml(messages, options);
    default:
      throw new ChatTemplateError(`unknown chat template "${String(name)}"`);
  }
}

/** The text the Jinja template renders: parts joined, BOS/EOS written as the given texts. */
export function renderChatParts(parts: readonly ChatPart[], tokens: { bos: string; eos: string }): string {
  return parts.map((p) => (typeof p === 'string' ? p : p.token === 'bos' ? tokens.bos : tokens.eos)).join('');
}

/** The strings a format writes for bos_token / eos_token (Llama 2's and Llama 3's). */
const TOKEN_TEXTS: Record<ChatTemplateName, { bos: string; eos: string }> = {
  llama2: { bos: '<s>', eos: '</s>' },
  llama3: { bos: '<|begin_of_text|>', eos: '<|eot_id|>' },
  chatml: { bos: '', eos: '<|im_end|>' },
};

/** The text that closes a turn in each format (also a stop string). */
const END_OF_TURN: Record<ChatTemplateName, string> = { llama2: '</s>', llama3: '<|eot_id|>', chatml: '<|im_end|>' };

/**
 * A chat format bound to a tokenizer: turns a conversation into token ids and says where an
 * answer ends. `name` overrides the format the tokenizer's template asks for.
 */
export class ChatFormatter {
  readonly name: ChatTemplateName;
  /** Stop strings: the EOS tokens' texts and the format's end-of-turn marker. */
  readonly stop: readonly string[];

  constructor(
    readonly tokenizer: Tokenizer,
    name?: ChatTemplateName | string,
  ) {
    if (name !== undefined) this.name = parseChatTemplateName(name);
    else {
      const detected = detectChatTemplate(tokenizer.chatTemplate);
      if (detected === undefined) {
        throw new ChatTemplateError(
          tokenizer.chatTemplate === undefined
            ? `the tokenizer has no chat template; name one (${CHAT_TEMPLATE_NAMES.join(', ')})`
            : `the tokenizer's chat template is not one of the known formats; name one (${CHAT_TEMPLATE_NAMES.join(', ')})`,
        );
      }
      this.name = detected;
    }
    const dec = new TextDecoder();
    const stops = new Set<string>();
    for (const id of tokenizer.eosIds) {
      const piece = tokenizer.pieces[id];
      if (piece && piece.length > 0) stops.add(dec.decode(piece));
    }
    stops.add(END_OF_TURN[this.name]);
    this.stop = [...stops];
  }

  parts(messages: readonly ChatMessage[], options: ChatFormatOptions = {}): ChatPart[] {
    return formatChat(this.name, messages, options);
  }

  /** The prompt as text (what the Jinja template renders), for display and debugging. */
  render(messages: readonly ChatMessage[], options: ChatFormatOptions = {}): string {
    return renderChatParts(this.parts(messages, options), TOKEN_TEXTS[this.name]);
  }

  /** The prompt as token ids: text runs encoded without BOS, BOS/EOS as the tokenizer's ids. */
  encode(messages: readonly ChatMessage[], options: ChatFormatOptions = {}): number[] {
    const tok = this.tokenizer;
    const ids: number[] = [];
    let text = '';
    const flush = (): void => {
      if (text !== '') ids.push(...tok.encode(text, { bos: false }));
      text = '';
    };
    for (const p of this.parts(messages, options)) {
      if (typeof p === 'string') {
        text += p;
        continue;
      }
      flush();
      const id = p.token === 'bos' ? tok.bosId : tok.eosIds[0];
      if (id === undefined || id < 0) throw new ChatTemplateError(`the ${this.name} chat format needs a ${p.token.toUpperCase()} token, which this tokenizer lacks`);
      ids.push(id);
    }
    flush();
    return ids;
  }
}
