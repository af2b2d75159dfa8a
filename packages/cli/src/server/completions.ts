/**
 * POST /v1/chat/completions and /v1/completions: a request is checked and tokenized before it
 * queues (helpful 400s), waits its turn in the FIFO queue, then each of its choices runs as a
 * sequence of its own in the engine's batch, answered whole or streamed as server-sent events.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  ChatTemplateError,
  TokenizerError,
  forcedCallPrefix,
  parseToolCalls,
  toolCallSchema,
  type BatchScheduler,
  type ChatFormatOptions,
  type ChatFormatter,
  type ToolCallStyle,
  type SequenceOptions,
  type SequenceResult,
  type TokenLogprob,
  type Tokenizer,
} from '@airllm/engine';
import { nextTurn, noteOutcome, readJson, sendError, sendJson, ShutdownCutError, type InFlight } from './http.js';
import { ApiError, parseChatRequest, parseCompletionRequest, type SamplingRequest } from './openai.js';
import { TokenNames } from './logprobs.js';
import { CompletionShape, toApiError, type ToolCallOut, type Usage } from './openai-response.js';
import { QueueClosedError, QueueFullError, WaitCancelledError, type FairQueue } from './queue.js';
import { EventStream } from './sse.js';
import { ToolStream } from './tool-stream.js';

/** A client that lets this much stream output pile up unread is dropped (it would hold the engine). */
const MAX_BUFFERED_BYTES = 4 * 1024 * 1024;

/** Request outcomes, counted for /health and ServerStats. */
export interface Counts {
  accepted: number;
  completed: number;
  cancelled: number;
  rejected: number;
  failed: number;
  generatedTokens: number;
  draftedTokens: number;
  acceptedTokens: number;
}

/** What the completion endpoints work with, shared with the server around them. */
export interface CompletionsContext {
  modelName: string;
  seqLen: number;
  vocabSize: number;
  tokenizer: Tokenizer;
  /** The chat format, or why this model cannot chat (answered to chat requests as is). */
  chat: ChatFormatter | ApiError;
  scheduler: BatchScheduler;
  queue: FairQueue;
  maxBodyBytes: number;
  counts: Counts;
  /** Requests past the queue; shutdown waits for them, then aborts them. */
  inflight: Set<InFlight>;
  closing: () => boolean;
  /** Speculative decoding options every sequence gets. */
  draft: Pick<SequenceOptions, 'draft' | 'draftMax'>;
}

/** One validated request: the prompts' token ids and the engine options of each choice. */
interface Plan {
  jobs: { prompt: number[]; index: number; echo: string }[];
  options: SequenceOptions;
  req: SamplingRequest;
  /** Chat with tools: the answer is parsed for calls in this style; `prefix` is what the prompt wrote of a forced call. */
  tools?: { style: ToolCallStyle; prefix: string };
}

/** Token ids decoded at most this many at a time between turns of the event loop. */
const DECODE_SLICE = 4096;

/** tokenizer.decode(ids), yielding to the event loop between slices (a prompt may have 100k+ ids). */
async function decodeInSlices(tokenizer: Tokenizer, ids: readonly number[]): Promise<string> {
  const d = tokenizer.decoder();
  let text = '';
  for (let i = 0; i < ids.length; i++) {
    text += d.push(ids[i]!);
    if ((i + 1) % DECODE_SLICE === 0) await new Promise((r) => setImmediate(r));
  }
  return text + d.flush();
}

/** The calls in an answer (with fresh ids) and the text besides them. */
function toolAnswer(tools: NonNullable<Plan['tools']>, text: string): { content: string; calls: ToolCallOut[] } {
  const { content, calls } = parseToolCalls(tools.style, text, tools.prefix);
  return { content, calls: calls.map((c) => ({ id: newCallId(), ...c })) };
}

const newCallId = (): string => `call_${randomBytes(12).toString('hex')}`;

/**
 * The handler of both endpoints. It throws an ApiError for a request refused before it queues
 * (the caller answers and counts it as rejected); everything after that it answers itself.
 */
export function completionsHandler(ctx: CompletionsContext): (req: IncomingMessage, res: ServerResponse, isChat: boolean) => Promise<void> {
  const { counts } = ctx;

  async function plan(body: unknown, isChat: boolean): Promise<Plan> {
    const { tokenizer, chat, seqLen } = ctx;
    await nextTurn();
    const r = isChat ? parseChatRequest(body) : parseCompletionRequest(body, ctx.vocabSize);
    await nextTurn();
    const prompts: { ids: number[]; echo: string | undefined }[] = [];
    let tools: Plan['tools'];
    let jsonSchema = r.jsonSchema;
    // Refused before encoding when even the fewest tokens the text can make do not fit; long
    // texts and conversations are encoded on the tokenizer's worker thread, so /health and
    // streams go on.
    const fits = (text: string, param: 'messages' | 'prompt'): void => {
      const least = tokenizer.minTokens(text);
      if (least >= seqLen) {
        throw new ApiError(400, `This model's maximum context length is ${seqLen} tokens. However, your ${param} has ${Buffer.byteLength(text)} bytes, at least ${least} tokens. Please reduce the length of the ${param}.`, param, 'context_length_exceeded');
      }
    };
    try {
      if ('messages' in r) {
        if (chat instanceof ApiError) throw chat;
        const options: ChatFormatOptions = r.enableThinking === undefined ? {} : { enableThinking: r.enableThinking };
        let prefix = '';
        if (r.tools.length > 0 && r.toolChoice !== 'none') {
          const style = chat.toolStyle;
          if (!style) throw new ApiError(400, `tools: ${chat.templateSource} has no tool calls, so this model cannot be given tools`, 'tools');
          options.tools = r.tools.map((f) => ({ type: 'function', function: f }));
          if (r.toolChoice !== 'auto') {
            // A forced call: the answer starts as a call and is constrained to the tools' schemas.
            const choice = r.toolChoice;
            prefix = forcedCallPrefix(style);
            jsonSchema = toolCallSchema(style, choice === 'required' ? r.tools : r.tools.filter((t) => t.name === choice.name));
            options.enableThinking = false;
          }
          tools = { style, prefix };
        }
        // The contents (trimmed, as templates write them) bound the prompt from below; the
        // template is rendered on the tokenizer's worker thread with the encoding.
        fits(r.messages.map((m) => m.content.trim()).join('') + prefix, 'messages');
        const ids = await chat.encodeAsync(r.messages, options);
        if (prefix) ids.push(...(await tokenizer.encodeAsync(prefix, { bos: false })));
        prompts.push({ ids, echo: '' });
      } else {
        for (const p of r.prompts) {
          if (typeof p === 'string') fits(p, 'prompt');
          // Token ids are decoded (for echo) only once they are known to fit.
          prompts.push(typeof p === 'string' ? { ids: await tokenizer.encodeAsync(p), echo: p } : { ids: p, echo: undefined });
        }
      }
    } catch (e) {
      if (e instanceof ChatTemplateError) throw new ApiError(400, `messages: ${e.message}`, 'messages');
      if (e instanceof TokenizerError) throw new ApiError(400, `${'messages' in r ? 'messages' : 'prompt'}: ${e.message}`, 'messages' in r ? 'messages' : 'prompt');
      throw e;
    }
    const what = 'messages' in r ? 'messages' : 'prompt';
    let maxTokens = r.maxTokens;
    for (const p of prompts) {
      if (p.ids.length === 0) throw new ApiError(400, 'prompt: encodes to no tokens', 'prompt');
      const room = seqLen - p.ids.length;
      if (room < 1 || (r.maxTokens !== undefined && r.maxTokens > room)) {
        throw new ApiError(
          400,
          `This model's maximum context length is ${seqLen} tokens. However, you requested ${p.ids.length + (r.maxTokens ?? 1)} tokens ` +
            `(${p.ids.length} in the ${what}, ${r.maxTokens ?? 1} in the completion). ` +
            `Please reduce the length of the ${what} or completion.`,
          r.maxTokens !== undefined && room >= 1 ? 'max_tokens' : what,
          'context_length_exceeded',
        );
      }
      // No max_tokens: as many as the context leaves for the longest prompt.
      if (r.maxTokens === undefined) maxTokens = Math.min(maxTokens ?? room, room);
    }
    const echo = 'echo' in r && r.echo;
    for (const p of prompts) p.echo = echo ? (p.echo ?? (await decodeInSlices(tokenizer, p.ids))) : '';
    // Constrained output ends with its value: the template's stop texts could only cut a JSON string short.
    const stop = 'messages' in r && !(chat instanceof ApiError) && jsonSchema === undefined ? [...chat.stop, ...r.stop] : r.stop;
    const jobs = prompts.flatMap((p, pi) => Array.from({ length: r.n }, (_, k) => ({ prompt: p.ids, index: pi * r.n + k, echo: p.echo! })));
    return {
      jobs,
      req: r,
      ...(tools ? { tools } : {}),
      options: {
        maxTokens,
        temperature: r.temperature,
        topP: r.topP,
        topK: r.topK,
        stop,
        ...(r.seed !== undefined ? { seed: r.seed } : {}),
        ...(r.logprobs !== undefined ? { logprobs: r.logprobs } : {}),
        ...ctx.draft,
        ...(jsonSchema !== undefined ? { jsonSchema } : {}),
      },
    };
  }

  /**
   * Run every choice of a plan (each a sequence of its own, decoded beside the other requests');
   * `onText` gets streamed pieces. Undefined when the client went away.
   */
  async function runChoices(
    p: Plan,
    abort: AbortController,
    onText: (index: number, text: string, logprobs: readonly TokenLogprob[]) => void,
    onDone: (index: number, r: SequenceResult) => void,
  ): Promise<SequenceResult[] | undefined> {
    // One failed choice ends the others too (the request fails as a whole).
    const own = new AbortController();
    const signal = AbortSignal.any([abort.signal, own.signal]);
    const settled = await Promise.allSettled(
      p.jobs.map(async (job) => {
        // Different seeds per choice, so n > 1 samples differ (and reproduce with a seed).
        const seed = p.req.seed !== undefined ? p.req.seed + job.index : Number(randomBytes(4).readUInt32LE(0));
        try {
          const r = await ctx.scheduler.run({ prompt: job.prompt, options: { ...p.options, seed }, signal, onText: (text, lps) => onText(job.index, text, lps) });
          counts.generatedTokens += r.tokens.length;
          counts.draftedTokens += r.stats.draftedTokens;
          counts.acceptedTokens += r.stats.acceptedTokens;
          if (r.finishReason !== 'cancelled') onDone(job.index, r);
          return r;
        } catch (e) {
          own.abort();
          throw e;
        }
      }),
    );
    const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    const results = settled.map((r) => (r as PromiseFulfilledResult<SequenceResult>).value);
    return results.some((r) => r.finishReason === 'cancelled') ? undefined : results;
  }

  function usage(p: Plan, results: readonly SequenceResult[]): Usage {
    // A prompt is counted once however many choices were sampled from it.
    const promptTokens = results.filter((_, i) => p.jobs[i]!.index % p.req.n === 0).reduce((n, r) => n + r.promptTokens.length, 0);
    const completion = results.reduce((n, r) => n + r.tokens.length, 0);
    return { prompt_tokens: promptTokens, completion_tokens: completion, total_tokens: promptTokens + completion };
  }

  async function respond(res: ServerResponse, p: Plan, shape: CompletionShape, abort: AbortController): Promise<void> {
    let results: SequenceResult[] | undefined;
    try {
      results = await runChoices(p, abort, () => {}, () => {});
    } catch (e) {
      const api = toApiError(e);
      if (!api) throw e;
      counts.failed++;
      sendError(res, api);
      return;
    }
    if (!results) {
      const cut = shutdownCut(abort);
      if (cut) {
        counts.failed++;
        sendError(res, cut);
      } else {
        counts.cancelled++;
        noteOutcome(res, 'cancelled: the client went away');
      }
      return;
    }
    counts.completed++;
    const choices = results.map((r, i) => {
      const c = { index: p.jobs[i]!.index, text: p.jobs[i]!.echo + r.text, finishReason: r.finishReason, logprobs: r.logprobs };
      if (!p.tools) return c;
      const a = toolAnswer(p.tools, r.text);
      return a.calls.length > 0 ? { ...c, text: a.content, toolCalls: a.calls } : c;
    });
    sendJson(res, 200, shape.response(choices, usage(p, results)));
  }

  async function stream(res: ServerResponse, p: Plan, shape: CompletionShape, abort: AbortController): Promise<void> {
    const events = new EventStream(res, { maxBufferedBytes: MAX_BUFFERED_BYTES, onOverflow: () => abort.abort() });
    const started = new Set<number>();
    const begin = (index: number): void => {
      if (started.has(index)) return;
      started.add(index);
      const first = shape.start(index, p.jobs.find((j) => j.index === index)!.echo);
      if (first) events.send(first);
    };
    // With tools: each choice's text goes through a ToolStream (content, then calls as they complete).
    const streams = new Map<number, ToolStream>();
    const toolStream = (index: number): ToolStream => {
      let ts = streams.get(index);
      if (!ts) {
        let sent = 0;
        ts = new ToolStream(
          p.tools!.style,
          p.tools!.prefix,
          (text) => events.send(shape.delta(index, text)),
          (call) => events.send(shape.toolCalls(index, [{ id: newCallId(), ...call }], sent++)),
        );
        streams.set(index, ts);
      }
      return ts;
    };
    let results: SequenceResult[] | undefined;
    try {
      results = await runChoices(
        p,
        abort,
        (index, text, lps) => {
          begin(index);
          if (p.tools) toolStream(index).push(text);
          else events.send(shape.delta(index, text, lps));
        },
        (index, r) => {
          begin(index);
          const ts = p.tools ? toolStream(index) : undefined;
          ts?.end();
          events.send(shape.finish(index, r.finishReason, (ts?.calls ?? 0) > 0));
        },
      );
    } catch (e) {
      const api = toApiError(e) ?? new ApiError(500, `generation failed: ${e instanceof Error ? e.message : String(e)}`);
      counts.failed++;
      events.send(api.body());
      events.end();
      return;
    }
    if (!results) {
      const cut = shutdownCut(abort);
      if (cut) {
        // The client is still there: tell it the answer is incomplete, and end the stream properly.
        counts.failed++;
        noteOutcome(res, 'stream cut off by the shutdown (error event sent)');
        events.send(cut.body());
        events.send('[DONE]');
      } else {
        counts.cancelled++;
        noteOutcome(res, 'stream cancelled: the client went away');
      }
      events.end();
      return;
    }
    counts.completed++;
    if (p.req.includeUsage) events.send(shape.usage(usage(p, results)));
    events.send('[DONE]');
    events.end();
  }

  /** The 503 for a request whose work the shutdown aborted (undefined: the client went away). */
  function shutdownCut(abort: AbortController): ApiError | undefined {
    const reason: unknown = abort.signal.reason;
    return reason instanceof ShutdownCutError ? new ApiError(503, reason.message, null, 'shutting_down') : undefined;
  }

  return async (req, res, isChat) => {
    const p = await plan(await readJson(req, ctx.maxBodyBytes), isChat);
    if (ctx.closing()) throw new ApiError(503, 'the server is shutting down', null, 'shutting_down');
    const abort = new AbortController();
    // 'close' before the response ended = the client went away (or the server is closing).
    const onClose = (): void => {
      if (!res.writableFinished) abort.abort();
    };
    res.once('close', onClose);
    let release: () => void;
    try {
      release = await ctx.queue.acquire(abort.signal);
    } catch (e) {
      res.off('close', onClose);
      if (e instanceof QueueFullError) {
        throw new ApiError(429, `${e.message}; retry in about ${e.retryAfterSeconds} s`, null, 'queue_full', 'rate_limit_error', { 'retry-after': String(e.retryAfterSeconds) });
      }
      if (e instanceof QueueClosedError) throw new ApiError(503, 'the server is shutting down', null, 'shutting_down');
      if (e instanceof WaitCancelledError) {
        counts.cancelled++;
        return;
      }
      throw e;
    }
    counts.accepted++;
    let finished!: () => void;
    const entry: InFlight = { abort, done: new Promise<void>((r) => (finished = r)) };
    ctx.inflight.add(entry);
    try {
      const shape = new CompletionShape(isChat, ctx.modelName, p.req.logprobs !== undefined ? new TokenNames(ctx.tokenizer) : undefined);
      if (abort.signal.aborted) counts.cancelled++;
      else await (p.req.stream ? stream(res, p, shape, abort) : respond(res, p, shape, abort));
    } finally {
      res.off('close', onClose);
      release();
      ctx.inflight.delete(entry);
      finished();
    }
  };
}
