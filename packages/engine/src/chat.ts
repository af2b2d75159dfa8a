/**
 * Chat formatting. A model's own chat template (from its HF tokenizer config or its `.t` file)
 * is rendered as Jinja by `@huggingface/jinja`, as Hugging Face's apply_chat_template does, and
 * the text is encoded with the tokenizer (added tokens written in it, such as `<|im_start|>` or
 * `<s>`, become their ids). For `.t` files without a template, or by request, three built-in
 * formats remain (dllama picks them by a marker substring, FORMAT.md §d); they reproduce what
 * the real templates render (test/fixtures/chat holds Jinja2's output for the published ones):
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
import { Template } from '@huggingface/jinja';
import { EngineError } from './errors.js';
import type { EncodeOptions, Tokenizer } from './tokenizer.js';
import { toolCallStyle, type ToolCallStyle, type ToolFunction } from './tools.js';

export type ChatTemplateName = 'llama2' | 'llama3' | 'chatml';
export const CHAT_TEMPLATE_NAMES: readonly ChatTemplateName[] = ['llama2', 'llama3', 'chatml'];

/** 'tool': a tool's result (Jinja templates that have tools only). */
export type ChatRole = 'system' | 'user' | 'assistant' | 'tool';
/** The roles every format knows. */
export const CHAT_ROLES: readonly ChatRole[] = ['system', 'user', 'assistant'];

/** A call an assistant message made, as templates receive it (arguments as an object, or text). */
export interface ChatToolCall {
  id?: string;
  name: string;
  arguments: Record<string, unknown> | string;
}

export interface ChatMessage {
  role: ChatRole;
  content: string;
  /** An assistant's tool calls. */
  toolCalls?: readonly ChatToolCall[];
  /** A tool message: the call it answers. */
  toolCallId?: string;
}

export interface ChatFormatOptions {
  /** Append the assistant header the model continues from (default true). */
  addGenerationPrompt?: boolean;
  /** chatml (Qwen3): false appends an empty `<think></think>` block, as `enable_thinking=False` does. */
  enableThinking?: boolean;
  /** Functions the model may call, given to a Jinja template as `tools` (OpenAI's `{type, function}` entries). */
  tools?: readonly { type: 'function'; function: ToolFunction }[];
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

function checkMessages(messages: readonly ChatMessage[], roles: readonly ChatRole[] = CHAT_ROLES): void {
  messages.forEach((m, i) => {
    if (!(roles as readonly string[]).includes(m.role)) {
      throw new ChatTemplateError(`message ${i}: ${m.role === 'tool' ? 'tool messages need a Jinja template with tools' : `unknown role "${String(m.role)}"`} (expected ${roles.join(', ')})`);
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

/** A token in tokenizer_config.json: a string, or an AddedToken object with `content`. */
function configToken(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return undefined;
}

/** tokenizer_config.json's chat_template: a string, or a list of named templates ("default" first). */
function configTemplate(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) {
    const named = v.filter((x): x is { name?: unknown; template?: unknown } => typeof x === 'object' && x !== null);
    const t = named.find((x) => x.name === 'default') ?? named[0];
    return typeof t?.template === 'string' ? t.template : undefined;
  }
  return undefined;
}

/** A formatted conversation on its way to ids: text, or a token id placed as is. */
type Segment = string | number;

/**
 * A chat format bound to a tokenizer: turns a conversation into token ids and says where an
 * answer ends. By default it renders the model's own Jinja template; `name` picks one of the
 * built-in formats instead (llama2, llama3, chatml, qwen3).
 */
export class ChatFormatter {
  /** 'jinja' (the model's own template) or the built-in format in use. */
  readonly name: ChatTemplateName | 'jinja';
  /** Where the template came from, for messages. */
  readonly templateSource: string;
  /** Stop strings: the EOS tokens' texts and the text that ends an assistant turn. */
  readonly stop: readonly string[];
  /** What the template gets as bos_token / eos_token. */
  readonly tokenTexts: { bos: string; eos: string };
  /** How the template's model writes tool calls; undefined: the template has no tools. */
  readonly toolStyle: ToolCallStyle | undefined;
  readonly #template: Template | undefined;

  /** The format argument, for the same formatter on the tokenizer's worker thread. */
  readonly #format: string | undefined;

  constructor(
    readonly tokenizer: Tokenizer,
    name?: ChatTemplateName | string,
  ) {
    this.#format = name;
    const config = tokenizer.hfSidecar?.config ?? {};
    const source = configTemplate(config.chat_template) ?? tokenizer.chatTemplate;
    const where = tokenizer.source ?? 'the tokenizer';
    if (name !== undefined) {
      this.name = parseChatTemplateName(name);
      this.templateSource = `the built-in ${this.name} format`;
      this.tokenTexts = TOKEN_TEXTS[this.name];
    } else {
      if (source === undefined) {
        throw new ChatTemplateError(`${where} has no chat template; name one of the built-in formats (${CHAT_TEMPLATE_NAMES.join(', ')})`);
      }
      this.name = 'jinja';
      this.templateSource = `the chat template of ${where}`;
      try {
        this.#template = new Template(source);
      } catch (e) {
        throw new ChatTemplateError(`${this.templateSource} cannot be parsed: ${(e as Error).message}`);
      }
      // An HF config says which special tokens exist (Qwen's bos_token is null); a `.t` alone gives its BOS/EOS.
      const hf = tokenizer.hfSidecar !== undefined;
      this.tokenTexts = {
        bos: hf ? (configToken(config.bos_token) ?? '') : this.#controlText(tokenizer.bosId),
        eos: hf ? (configToken(config.eos_token) ?? '') : this.#controlText(tokenizer.eosIds[0]),
      };
    }
    this.toolStyle = this.name === 'jinja' ? toolCallStyle(source) : undefined;
    const stops = new Set<string>();
    for (const id of tokenizer.eosIds) {
      const t = tokenizer.tokenText(id);
      if (t !== undefined && t.length > 0 && !(tokenizer.algorithm === 'llama2c' && tokenizer.isControl(id))) stops.add(t);
    }
    const eot = this.name === 'jinja' ? this.#endOfTurn() : END_OF_TURN[this.name];
    if (eot !== undefined && eot !== '') stops.add(eot);
    this.stop = [...stops];
  }

  /** A control token's text for the template: `.t` SentencePiece controls may carry newlines (tok512's "\n<s>\n"). */
  #controlText(id: number | undefined): string {
    if (id === undefined || id < 0) return '';
    const t = this.tokenizer.tokenText(id) ?? '';
    return this.tokenizer.algorithm === 'llama2c' ? t.trim() : t;
  }

  /** What the template writes right after an assistant's answer, trimmed: its end-of-turn marker. */
  #endOfTurn(): string | undefined {
    const sentinel = '\u0000answer\u0000';
    let text: string;
    try {
      text = this.#render([{ role: 'user', content: 'question' }, { role: 'assistant', content: sentinel }], { addGenerationPrompt: false });
    } catch {
      return undefined;
    }
    const at = text.lastIndexOf(sentinel);
    return at < 0 ? undefined : text.slice(at + sentinel.length).trim();
  }

  #render(messages: readonly ChatMessage[], o: ChatFormatOptions): string {
    const vars: Record<string, unknown> = {
      messages: messages.map((m) => ({
        role: m.role,
        content: m.content,
        ...(m.toolCalls ? { tool_calls: m.toolCalls.map((c) => ({ type: 'function', ...(c.id ? { id: c.id } : {}), function: { name: c.name, arguments: c.arguments } })) } : {}),
        ...(m.toolCallId !== undefined ? { tool_call_id: m.toolCallId } : {}),
      })),
      add_generation_prompt: o.addGenerationPrompt ?? true,
    };
    if (o.tools && o.tools.length > 0) vars.tools = o.tools;
    // Like apply_chat_template: only the special tokens the tokenizer has are defined.
    if (this.tokenTexts.bos !== '') vars.bos_token = this.tokenTexts.bos;
    if (this.tokenTexts.eos !== '') vars.eos_token = this.tokenTexts.eos;
    if (o.enableThinking !== undefined) vars.enable_thinking = o.enableThinking;
    try {
      return this.#template!.render(vars);
    } catch (e) {
      throw new ChatTemplateError(`${this.templateSource}: ${(e as Error).message}`);
    }
  }

  parts(messages: readonly ChatMessage[], options: ChatFormatOptions = {}): ChatPart[] {
    if (this.name === 'jinja') {
      checkMessages(messages, this.toolStyle ? [...CHAT_ROLES, 'tool'] : CHAT_ROLES);
      if (options.tools?.length && !this.toolStyle) throw new ChatTemplateError(`${this.templateSource} has no tool calls; tools cannot be given to it`);
      return [this.#render(messages, options)];
    }
    if (options.tools?.length) throw new ChatTemplateError(`the built-in ${this.name} format has no tool calls; tools need the model's own template`);
    return formatChat(this.name, messages, options);
  }

  /** The prompt as text (what the Jinja template renders), for display and debugging. */
  render(messages: readonly ChatMessage[], options: ChatFormatOptions = {}): string {
    return renderChatParts(this.parts(messages, options), this.tokenTexts);
  }

  /**
   * The prompt as text runs and token ids: BOS/EOS parts as ids; for llama2.c-style `.t`
   * vocabularies, whose control tokens text never encodes to, the bos/eos texts a template
   * rendered are cut out as ids too.
   */
  #segments(messages: readonly ChatMessage[], options: ChatFormatOptions): Segment[] {
    const tok = this.tokenizer;
    const out: Segment[] = [];
    const idOf = (which: 'bos' | 'eos'): number => {
      const id = which === 'bos' ? tok.bosId : tok.eosIds[0];
      if (id === undefined || id < 0) throw new ChatTemplateError(`${this.templateSource} needs a ${which.toUpperCase()} token, which this tokenizer lacks`);
      return id;
    };
    for (const p of this.parts(messages, options)) {
      if (typeof p !== 'string') out.push(idOf(p.token));
      else if (this.name !== 'jinja' || tok.algorithm !== 'llama2c') out.push(p);
      else for (const s of splitControls(p, [[this.tokenTexts.bos, () => idOf('bos')], [this.tokenTexts.eos, () => idOf('eos')]])) out.push(s);
    }
    return out;
  }

  /** The prompt as token ids: text runs encoded without BOS (added tokens in them become their ids). */
  encode(messages: readonly ChatMessage[], options: ChatFormatOptions = {}): number[] {
    const ids: number[] = [];
    for (const s of this.#segments(messages, options)) {
      if (typeof s === 'number') ids.push(s);
      else if (s !== '') append(ids, this.tokenizer.encode(s, NO_BOS));
    }
    return ids;
  }

  /**
   * encode() off the event loop for a long conversation (more than ASYNC_MAX_MESSAGES messages or
   * ASYNC_MIN_CHARS characters): formatted and encoded on the tokenizer's worker thread.
   */
  async encodeAsync(messages: readonly ChatMessage[], options: ChatFormatOptions = {}): Promise<number[]> {
    let chars = 0;
    for (const m of messages) chars += typeof m.content === 'string' ? m.content.length : 0;
    if (messages.length <= ASYNC_MAX_MESSAGES && chars <= ASYNC_MIN_CHARS) return this.encode(messages, options);
    try {
      return await this.tokenizer.encodeChatAsync({ format: this.#format, messages, options });
    } catch (e) {
      throw e instanceof Error && e.name === 'ChatTemplateError' ? new ChatTemplateError(e.message) : e;
    }
  }
}

const NO_BOS: EncodeOptions = { bos: false };
/** encodeAsync formats and encodes on the event loop up to this many messages… */
const ASYNC_MAX_MESSAGES = 16;
/** …and characters of content; more go to the tokenizer's worker thread. */
const ASYNC_MIN_CHARS = 1024;

/** `to.push(...from)` without spreading: a spread of ~130k ids overflows the call stack. */
function append(to: number[], from: readonly number[]): void {
  for (const x of from) to.push(x);
}

/** Cut `text` at every occurrence of the given (non-empty) texts, which become their ids. */
function splitControls(text: string, controls: [string, () => number][]): Segment[] {
  const active = controls.filter(([t]) => t !== '');
  const out: Segment[] = [];
  let from = 0;
  for (;;) {
    let at = -1;
    let hit: [string, () => number] | undefined;
    for (const c of active) {
      const i = text.indexOf(c[0], from);
      if (i >= 0 && (at < 0 || i < at || (i === at && c[0].length > hit![0].length))) {
        at = i;
        hit = c;
      }
    }
    if (hit === undefined) break;
    if (at > from) out.push(text.slice(from, at));
    out.push(hit[1]());
    from = at + hit[0].length;
  }
  if (from < text.length) out.push(text.slice(from));
  return out;
}
