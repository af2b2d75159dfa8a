/**
 * A chat answer with tools, streamed: text is content until a call begins; each call is sent as
 * a `tool_calls` delta once its block is complete. Hermes/Qwen3 blocks are found by their tags
 * (text that might be the start of `<tool_call>` is held back); a Llama 3.1 answer that starts
 * like a JSON call is held to its end, since only the whole of it says whether it is one.
 */
import { parseToolCalls, type ParsedToolCall, type ToolCallStyle } from '@airllm/engine';

const OPEN = '<tool_call>';
const CLOSE = '</tool_call>';

export class ToolStream {
  readonly #style: ToolCallStyle;
  readonly #content: (text: string) => void;
  readonly #call: (call: ParsedToolCall) => void;
  #buf: string;
  #inCall: boolean;
  /** Llama 3.1: undecided until the first non-space character. */
  #held = false;
  calls = 0;

  /** `prefix`: what the prompt already wrote of the answer (a forced call's opening tag). */
  constructor(style: ToolCallStyle, prefix: string, onContent: (text: string) => void, onCall: (call: ParsedToolCall) => void) {
    this.#style = style;
    this.#content = onContent;
    this.#call = onCall;
    this.#buf = prefix;
    this.#inCall = prefix.startsWith(OPEN);
  }

  push(text: string): void {
    this.#buf += text;
    if (this.#style === 'llama3') {
      const start = this.#buf.trimStart();
      if (!this.#held && start !== '') {
        this.#held = start.startsWith('{') || start.startsWith('<|python_tag|>');
      }
      if (!this.#held && start !== '') this.#emitContent(this.#buf.length);
      return;
    }
    for (;;) {
      if (this.#inCall) {
        const end = this.#buf.indexOf(CLOSE);
        if (end < 0) return;
        this.#block(this.#buf.slice(0, end + CLOSE.length));
        this.#buf = this.#buf.slice(end + CLOSE.length);
        this.#inCall = false;
        continue;
      }
      const at = this.#buf.indexOf(OPEN);
      if (at >= 0) {
        this.#emitContent(at);
        this.#inCall = true;
        continue;
      }
      // Hold back a tail that could still become the opening tag.
      let keep = Math.min(OPEN.length - 1, this.#buf.length);
      while (keep > 0 && !OPEN.startsWith(this.#buf.slice(-keep))) keep--;
      this.#emitContent(this.#buf.length - keep);
      return;
    }
  }

  /** The answer ended: what is left is a last (possibly unclosed) call, or content. */
  end(): void {
    if (this.#buf === '') return;
    if (this.#inCall || this.#held) this.#block(this.#buf);
    else this.#emitContent(this.#buf.length);
    this.#buf = '';
  }

  #block(text: string): void {
    const { content, calls } = parseToolCalls(this.#style, text);
    for (const c of calls) {
      this.calls++;
      this.#call(c);
    }
    if (calls.length === 0) this.#content(text);
    else if (content) this.#content(content);
  }

  #emitContent(n: number): void {
    if (n > 0) this.#content(this.#buf.slice(0, n));
    this.#buf = this.#buf.slice(n);
  }
}
