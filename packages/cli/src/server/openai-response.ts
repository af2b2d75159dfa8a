/** Response mapping: the engine's results as OpenAI response bodies and stream chunks. */
import { randomBytes } from 'node:crypto';
import { ContextOverflowError, TokenizerError, type FinishReason, type TokenLogprob } from '@airllm/engine';
import { chatLogprobs, completionLogprobs, type TokenNames } from './logprobs.js';
import { ApiError } from './openai.js';

/** OpenAI's finish reasons from the engine's ('tool_calls' when the answer is calls). */
export function finishReason(r: FinishReason | string, calls = false): 'stop' | 'length' | 'tool_calls' {
  if (calls) return 'tool_calls';
  return r === 'length' || r === 'context' ? 'length' : 'stop';
}

/** A tool call as OpenAI sends it. */
export interface ToolCallOut {
  id: string;
  name: string;
  arguments: string;
}

const toolCallJson = (c: ToolCallOut, index?: number): Record<string, unknown> => ({
  ...(index !== undefined ? { index } : {}),
  id: c.id,
  type: 'function',
  function: { name: c.name, arguments: c.arguments },
});

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** One choice of a finished answer. */
export interface ChoiceResult {
  index: number;
  text: string;
  finishReason: FinishReason;
  /** Present when the request asked for log-probabilities. */
  logprobs?: readonly TokenLogprob[];
  /** The calls the answer made (chat with tools); `text` is then what it wrote besides. */
  toolCalls?: readonly ToolCallOut[];
}

/**
 * The bodies of one response, chat (`chat.completion`, `chat.completion.chunk`) or legacy
 * completion (`text_completion`): one id and creation time for the whole answer or stream.
 */
export class CompletionShape {
  readonly id: string;
  readonly created = Math.floor(Date.now() / 1000);
  /** Stream: where each completion choice's next token starts in its text (text_offset). */
  readonly #offsets = new Map<number, number>();

  /** `names`: how tokens are shown, when the request asked for log-probabilities. */
  constructor(
    readonly isChat: boolean,
    readonly model: string,
    readonly names?: TokenNames,
  ) {
    this.id = `${isChat ? 'chatcmpl' : 'cmpl'}-${randomBytes(12).toString('hex')}`;
  }

  /** The whole answer (stream: false). */
  response(choices: readonly ChoiceResult[], usage: Usage): Record<string, unknown> {
    return {
      id: this.id,
      object: this.isChat ? 'chat.completion' : 'text_completion',
      created: this.created,
      model: this.model,
      choices: choices.map((c) =>
        this.isChat
          ? {
              index: c.index,
              message: c.toolCalls?.length
                ? { role: 'assistant', content: c.text || null, refusal: null, tool_calls: c.toolCalls.map((t) => toolCallJson(t)) }
                : { role: 'assistant', content: c.text, refusal: null },
              logprobs: this.#logprobs(c.index, c.logprobs),
              finish_reason: finishReason(c.finishReason, (c.toolCalls?.length ?? 0) > 0),
            }
          : { index: c.index, text: c.text, logprobs: this.#logprobs(c.index, c.logprobs), finish_reason: finishReason(c.finishReason) },
      ),
      usage,
    };
  }

  /** A choice's first chunk: the assistant role (chat), or the echoed prompt (completion, if any). */
  start(index: number, echo: string): Record<string, unknown> | undefined {
    if (this.isChat) return this.#chunk({ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null });
    return echo ? this.#chunk({ index, text: echo, logprobs: null, finish_reason: null }) : undefined;
  }

  /** A piece of a choice's text, with the log-probabilities of the tokens it came with. */
  delta(index: number, text: string, logprobs?: readonly TokenLogprob[]): Record<string, unknown> {
    const lp = this.#logprobs(index, logprobs);
    return this.#chunk(this.isChat ? { index, delta: { content: text }, logprobs: lp, finish_reason: null } : { index, text, logprobs: lp, finish_reason: null });
  }

  #logprobs(index: number, lps: readonly TokenLogprob[] | undefined): Record<string, unknown> | null {
    if (!this.names || !lps) return null;
    if (this.isChat) return { ...chatLogprobs(this.names, lps) };
    const r = completionLogprobs(this.names, lps, this.#offsets.get(index) ?? 0);
    const last = r.tokens.length - 1;
    if (last >= 0) this.#offsets.set(index, r.text_offset[last]! + r.tokens[last]!.length);
    return { ...r };
  }

  /** A delta of a chat choice's tool calls, each call whole; `first`: the index of the first in the answer. */
  toolCalls(index: number, calls: readonly ToolCallOut[], first = 0): Record<string, unknown> {
    return this.#chunk({ index, delta: { tool_calls: calls.map((c, k) => toolCallJson(c, first + k)) }, logprobs: null, finish_reason: null });
  }

  /** A choice's last chunk, with its finish reason. */
  finish(index: number, reason: FinishReason, calls = false): Record<string, unknown> {
    const r = finishReason(reason, calls);
    return this.#chunk(this.isChat ? { index, delta: {}, logprobs: null, finish_reason: r } : { index, text: '', logprobs: null, finish_reason: r });
  }

  /** The usage chunk after every choice has finished (stream_options.include_usage). */
  usage(usage: Usage): Record<string, unknown> {
    return { id: this.id, object: this.#chunkObject(), created: this.created, model: this.model, choices: [], usage };
  }

  #chunk(choice: Record<string, unknown>): Record<string, unknown> {
    return { id: this.id, object: this.#chunkObject(), created: this.created, model: this.model, choices: [choice] };
  }

  #chunkObject(): string {
    return this.isChat ? 'chat.completion.chunk' : 'text_completion';
  }
}

/** The API error for an engine error a client caused (400), or undefined for any other error. */
export function toApiError(e: unknown): ApiError | undefined {
  if (e instanceof ApiError) return e;
  if (e instanceof ContextOverflowError) return new ApiError(400, e.message, 'messages', 'context_length_exceeded');
  if (e instanceof TokenizerError) return new ApiError(400, e.message, 'prompt');
  return undefined;
}
