import { basename } from 'node:path';
import type { Command } from 'commander';
import { addDraftOptions, openDraft, type DraftCliOptions } from '../draft.js';
import { CliError } from '../errors.js';
import { addModelOptions, createEngine, parseBytes, parseInteger, parseNumber, type ModelCliOptions } from '../model-options.js';
import { initializeWithProgress } from '../progress.js';

interface ServeCliOptions extends ModelCliOptions, DraftCliOptions {
  host: string;
  port: string;
  apiKey?: string;
  chatTemplate?: string;
  modelName?: string;
  maxQueue: string;
  parallel: string;
  maxBody: string;
  web: boolean;
  grace: string;
  allowedHosts?: string[];
  corsOrigin?: string[];
  json?: boolean;
  quiet?: boolean;
}

/** A comma-separated option value added to the earlier ones (the option may be repeated). */
function list(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), ...value.split(',').map((v) => v.trim()).filter((v) => v !== '')];
}

/** `airllm serve`: the OpenAI-compatible HTTP API and the web chat page. */
export function register(program: Command): void {
  addDraftOptions(addModelOptions(program.command('serve').description('serve an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions) and a chat page at /')))
    .option('--host <address>', 'address to listen on (0.0.0.0 for every interface)', '127.0.0.1')
    .option('--port <n>', 'port (0 = any free port)', '8080')
    .option('--api-key <key>', 'require "Authorization: Bearer <key>" on /v1 (default: $AIRLLM_API_KEY, else no auth)')
    .option('--chat-template <name>', "chat format: llama2, llama3 or chatml (default: from the tokenizer's template)")
    .option('--model-name <id>', 'model id clients see (default: the model file name)')
    .option('--parallel <n>', 'requests decoded together (continuous batching: one read of each layer serves all of them); 1 = one at a time', '4')
    .option('--max-queue <n>', 'requests that may wait for a turn; more get 429', '32')
    .option('--max-body <size>', 'largest request body', '1MiB')
    .option('--no-web', 'do not serve the chat page at /')
    .option('--allowed-hosts <names>', 'Host names to accept besides the listen address, localhost, 127.0.0.1 and [::1] (comma-separated; .example.com includes subdomains; * = any)', list)
    .option('--cors-origin <origins>', 'origins whose web pages may call the API (comma-separated, e.g. https://app.example.com; * = any); others get 403', list)
    .option('--grace <seconds>', 'on Ctrl-C/SIGTERM, let running requests finish this long before cancelling them', '10')
    .option('--json', 'print one JSON line with the address when ready, and no request log')
    .option('-q, --quiet', 'no request log')
    .action(async (o: ServeCliOptions) => {
      const port = parseInteger(o.port, '--port', 0, 65535)!;
      const maxQueue = parseInteger(o.maxQueue, '--max-queue', 0, 1_000_000)!;
      const parallel = parseInteger(o.parallel, '--parallel', 1, 256)!;
      const batchSize = parseInteger(o.batchSize, '--batch-size', 1, 4096);
      if (batchSize !== undefined && batchSize < parallel) throw new CliError(`--batch-size (${batchSize}) must be at least --parallel (${parallel}): every sequence needs a row in a step`, 2);
      const maxBodyBytes = parseBytes(o.maxBody, '--max-body');
      const graceMs = parseNumber(o.grace, '--grace', 0, 86400)! * 1000;
      const apiKey = o.apiKey ?? (process.env.AIRLLM_API_KEY || undefined);
      if (apiKey !== undefined && apiKey.trim() === '') throw new CliError('--api-key must not be empty', 2);
      const { createServer } = await import('../server/server.js');
      // One KV cache slot per sequence decoded together; a step holds at least one row each.
      const engine = await createEngine(o, { maxSequences: parallel, ...(batchSize === undefined && parallel > 128 ? { batchSize: parallel } : {}) });
      let server: Awaited<ReturnType<typeof createServer>> | undefined;
      let draft: Awaited<ReturnType<typeof openDraft>> | undefined;
      try {
        await initializeWithProgress(engine, { json: o.json });
        draft = await openDraft(o, engine);
        const log = o.json || o.quiet ? undefined : (line: string): void => void process.stderr.write(`${new Date().toISOString()} ${line}\n`);
        server = createServer(engine, {
          apiKey,
          chatTemplate: o.chatTemplate,
          modelName: o.modelName,
          maxQueue,
          parallel,
          maxBodyBytes,
          webPage: o.web,
          allowedHosts: o.allowedHosts,
          corsOrigins: o.corsOrigin,
          log,
          draft: draft.options,
        });
        const addr = await server.listen(port, o.host);
        const model = o.modelName ?? basename(engine.modelPath).replace(/\.m$/, '');
        if (o.json) process.stdout.write(`${JSON.stringify({ url: addr.url, host: addr.host, port: addr.port, model, auth: apiKey !== undefined })}\n`);
        else {
          process.stdout.write(
            `airllm: serving ${model} at ${addr.url}\n` +
              `  chat page  ${o.web ? `${addr.url}/` : '(off)'}\n` +
              `  API        ${addr.url}/v1  (OpenAI-compatible${apiKey !== undefined ? ', bearer key required' : ''})\n` +
              `  parallel   ${parallel} sequence${parallel === 1 ? '' : 's'} decoded together, ${maxQueue} may wait\n` +
              (draft.describe === undefined ? '' : `  ${draft.describe}\n`) +
              `  Ctrl-C to stop\n`,
          );
        }
      } catch (e) {
        await server?.close({ graceMs: 0 });
        await draft?.cleanup();
        await engine.cleanup();
        throw e;
      }
      const s = server;
      const d = draft;
      // Stay up until SIGINT/SIGTERM; the first one shuts down gracefully, a second one exits now.
      await new Promise<void>((resolve, reject) => {
        let stopping = false;
        const onSignal = (sig: NodeJS.Signals): void => {
          if (stopping) {
            process.stderr.write(`airllm: ${sig} again, exiting now\n`);
            process.exit(130);
          }
          stopping = true;
          if (!o.json) process.stderr.write(`airllm: ${sig}: stopping (running requests get ${graceMs / 1000} s to finish)\n`);
          s.close({ graceMs })
            .then(() => d.cleanup())
            .then(() => engine.cleanup())
            .then(() => {
              process.off('SIGINT', onSignal);
              process.off('SIGTERM', onSignal);
              resolve();
            }, reject);
        };
        process.on('SIGINT', onSignal);
        process.on('SIGTERM', onSignal);
      });
    });
}
