import { createReadStream, readFileSync, writeFileSync } from 'node:fs';
import type { JsonSchema } from '@airllm/engine';
import type { Command } from 'commander';
import { addDraftOptions, openDraft, type DraftCliOptions } from '../draft.js';
import { CliError } from '../errors.js';
import { runGeneration } from '../generation.js';
import { addModelOptions, addTokenLimitOptions, createEngine, parseInteger, parseNumber, tokenLimit, type ModelCliOptions } from '../model-options.js';
import { formatBytes, writeJson } from '../output.js';
import { initializeWithProgress } from '../progress.js';

interface GenerateCliOptions extends ModelCliOptions, DraftCliOptions {
  prompt?: string;
  promptFile?: string;
  steps: string;
  maxTokens?: string;
  temperature: string;
  topK?: string;
  topP?: string;
  seed?: string;
  stop?: string[];
  echo: boolean;
  bos: boolean;
  stats?: boolean;
  json?: boolean;
  jsonSchema?: string;
}

/** Largest prompt read from a file or stdin: far beyond any context, short of exhausting memory. */
const MAX_PROMPT_BYTES = 16 << 20;

/**
 * The prompt from a file or stdin ("-"), read up to MAX_PROMPT_BYTES: a device or a pipe that
 * never ends (/dev/zero, `yes |`) is cut off with an error instead of filling memory.
 */
async function readPrompt(file: string): Promise<string> {
  const where = file === '-' ? 'stdin' : file;
  const chunks: Buffer[] = [];
  let bytes = 0;
  try {
    for await (const chunk of file === '-' ? process.stdin : createReadStream(file)) {
      bytes += (chunk as Buffer).length;
      if (bytes > MAX_PROMPT_BYTES) throw new CliError(`the prompt from ${where} is longer than ${MAX_PROMPT_BYTES >> 20} MiB`);
      chunks.push(chunk as Buffer);
    }
  } catch (e) {
    if (e instanceof CliError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a directory' : code === 'EACCES' || code === 'EPERM' ? 'permission denied' : (e as Error).message;
    throw new CliError(`cannot read the prompt from ${where}: ${why}`);
  } finally {
    if (file === '-') process.stdin.destroy();
  }
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
}

/** The JSON schema in `file` (its keywords are checked when the generation starts). */
function readJsonSchema(file: string): JsonSchema {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new CliError(`cannot read the JSON schema ${file}: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text) as JsonSchema;
  } catch (e) {
    throw new CliError(`the JSON schema ${file} is not valid JSON: ${(e as Error).message}`);
  }
}

/** `airllm generate [prompt]`: stream a completion of the prompt to stdout. */
export function register(program: Command): void {
  addTokenLimitOptions(
    addDraftOptions(addModelOptions(
      program
        .command('generate')
        .description('complete a prompt, streaming the text as it is produced')
        .argument('[prompt]', 'prompt text (or use --prompt; "-" reads it from stdin)'),
    ))
      .option('-p, --prompt <text>', 'prompt text')
      .option('-f, --prompt-file <path>', 'read the prompt from a file ("-" = stdin)'),
    'tokens to generate at most',
    '256',
  )
    .option('--temperature <t>', 'sampling temperature; 0 = greedy', '0')
    .option('--top-k <k>', 'sample among the k most likely tokens')
    .option('--top-p <p>', 'nucleus sampling threshold in (0, 1)')
    .option('--seed <n>', 'random seed (runs with the same seed reproduce)')
    .option('--stop <text...>', 'stop when the output contains this text')
    .option('--no-echo', 'do not print the prompt before the completion')
    .option('--no-bos', 'do not start the prompt with the BOS token')
    .option('--stats', 'print speed and memory figures on stderr (default: only on a terminal)')
    .option('--json', 'print one JSON object at the end instead of streaming text')
    .option('--json-schema <file>', 'constrain the output to JSON valid against this schema (OpenAI structured-outputs subset)')
    .addHelpText(
      'after',
      `
Examples:
  airllm generate "Once upon a time"
  airllm generate -m llama.m -t llama.t --temperature 0.7 --top-p 0.9 --steps 200 "The capital of France"
  airllm generate -m big.m --mode stream --max-memory 8GiB --draft ngram "Repeat after me: ..."
  echo "Once upon a time" | airllm generate - --json | jq .text
  airllm generate --json-schema person.json --no-echo "A person as JSON:"`,
    )
    .action(async (positional: string | undefined, o: GenerateCliOptions, command: Command) => {
      const given = [positional, o.prompt, o.promptFile].filter((x) => x !== undefined).length;
      if (given > 1) throw new CliError('give the prompt one way: as an argument, with --prompt or with --prompt-file', 2);
      const file = o.promptFile ?? (positional === '-' ? '-' : undefined);
      let prompt = positional ?? o.prompt ?? '';
      if (file !== undefined) prompt = await readPrompt(file);
      const sampling = {
        maxTokens: tokenLimit(command, o, 0),
        temperature: parseNumber(o.temperature, '--temperature', 0, 100),
        topK: parseInteger(o.topK, '--top-k', 0),
        topP: parseNumber(o.topP, '--top-p', 0, 1),
        seed: parseInteger(o.seed, '--seed', 0),
        stop: o.stop,
        // Only --no-bos overrides the tokenizer's own add_bos.
        bos: o.bos === false ? false : undefined,
        ...(o.jsonSchema !== undefined ? { jsonSchema: readJsonSchema(o.jsonSchema) } : {}),
      };
      const engine = await createEngine(o);
      // The first Ctrl-C ends the generation (what was produced is still printed); a second one exits.
      const abort = new AbortController();
      const onSigint = (): void => {
        if (abort.signal.aborted) process.exit(130);
        abort.abort();
      };
      process.on('SIGINT', onSigint);
      let draft: Awaited<ReturnType<typeof openDraft>> | undefined;
      try {
        await initializeWithProgress(engine, { json: o.json });
        draft = await openDraft(o, engine);
        // Echo the prompt, as llama2.c's run does, so the story reads whole.
        if (!o.json && o.echo && prompt) process.stdout.write(prompt);
        const result = await runGeneration(engine, prompt, { ...sampling, ...draft.options, signal: abort.signal }, o.json ? undefined : (text) => void process.stdout.write(text));
        if (o.trace) writeFileSync(o.trace, JSON.stringify(engine.trace.toJSON()));
        if (o.json) {
          writeJson({ promptTokens: result.promptTokens, tokens: result.tokens, text: result.text, finishReason: result.finishReason, stats: result.stats });
        } else {
          process.stdout.write('\n');
          const s = result.stats;
          if (o.stats || process.stderr.isTTY) {
            process.stderr.write(
              `\n${s.generatedTokens} tokens (${result.finishReason}), prefill ${s.prefillTokensPerSecond.toFixed(1)} tok/s, decode ${s.decodeTokensPerSecond.toFixed(1)} tok/s, ` +
                `load wait ${s.loadWaitMs.toFixed(0)} ms, compute ${s.computeMs.toFixed(0)} ms, disk ${formatBytes(s.diskBytesRead)}, peak RSS ${formatBytes(s.peakRssBytes)}\n` +
                (draft.describe === undefined ? '' : `${draft.describe}: ${s.passes} passes over the model, ${s.draftedTokens} tokens drafted, ${s.acceptedTokens} accepted\n`),
            );
          }
        }
      } finally {
        process.off('SIGINT', onSigint);
        await draft?.cleanup();
        await engine.cleanup();
      }
    });
}
