/**
 * Server-sent events as OpenAI streams them: `data: <json>\n\n` per event, `data: [DONE]` last.
 */
import type { ServerResponse } from 'node:http';

export class EventStream {
  readonly #res: ServerResponse;
  readonly #maxBufferedBytes: number;
  readonly #onOverflow: () => void;

  /**
   * Start the stream on `res` (status 200 and the headers, sent at once). A client that lets
   * more than `maxBufferedBytes` of events pile up unread is dropped (`onOverflow`, then the
   * connection is destroyed): it would otherwise hold its place in the batch while memory grows.
   */
  constructor(res: ServerResponse, options: { maxBufferedBytes: number; onOverflow: () => void }) {
    this.#res = res;
    this.#maxBufferedBytes = options.maxBufferedBytes;
    this.#onOverflow = options.onOverflow;
    // x-accel-buffering: a reverse proxy (nginx) must pass events on as they come.
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    res.flushHeaders();
  }

  /** One event: a JSON value, or a string as is (`[DONE]`). Nothing once the client is gone. */
  send(data: unknown): void {
    const res = this.#res;
    if (res.destroyed || res.writableEnded) return;
    res.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);
    if (res.writableLength > this.#maxBufferedBytes) {
      this.#onOverflow();
      res.destroy();
    }
  }

  end(): void {
    this.#res.end();
  }
}
