import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { CliError } from '../errors.js';
import { BUNDLED_MODEL, BUNDLED_TOKENIZER, modelTokenizer, TOKENIZER_LOOKUP } from '../model-options.js';
import { writeJson } from '../output.js';

export interface TokenizeCliOptions {
  model?: string;
  tokenizer?: string;
  /** false: --no-bos */
  bos?: boolean;
  chat?: boolean;
  chatTemplate?: string;
  thinking?: boolean;
  json?: boolean;
}

/**
 * `airllm tokenize [text | -]`: the ids a model is fed for a text (or, with --chat, for a
 * conversation rendered by its chat template), exactly as generate/chat/serve encode it. Only
 * the tokenizer is loaded, not the weights.
 */
export function register(program: Command): void {
  program
    .command('tokenize')
    .description('print the token ids of a text (or of a chat conversation) as the model is fed them')
    .argument('[text]', 'the text ("-" or nothing: read stdin, byte for byte)')
    .option('-m, --model <path>', 'model .m or GGUF file (default: the bundled stories260K demo)')
    .option('-t, --tokenizer <path>', `tokenizer .t file (default: ${TOKENIZER_LOOKUP})`)
    .option('--no-bos', 'do not start with the BOS token')
    .option('--chat', 'the input is a JSON array of {role, content} messages, rendered with the chat template and the generation prompt')
    .option('--chat-template <name>', "with --chat: a built-in format (llama2, llama3, chatml) instead of the model's template")
    .option('--no-thinking', 'with --chat: enable_thinking=false (Qwen3)')
    .option('--json', 'print {"ids": [...], "pieces": [...], "text": ...}: each token as text, and the ids decoded with special tokens written out')
    .addHelpText(
      'after',
      `
Examples:
  airllm tokenize -m qwen3.m "    if n < 2:"
  airllm tokenize -m llama.m --json --no-bos "Hello world"
  echo '[{"role":"user","content":"Hi"}]' | airllm tokenize -m qwen3.m --chat --json`,
    )
    .action(async (positional: string | undefined, o: TokenizeCliOptions) => {
      const input = positional === undefined || positional === '-' ? readStdin() : positional;
      const r = await tokenizeInput(input, o);
      if (o.json) writeJson(r);
      else process.stdout.write(`${r.ids.join(' ')}\n`);
    });
}

export interface TokenizeResult {
  ids: number[];
  /** Each token as text (control tokens as written, e.g. `<s>`; a piece of a character as U+FFFD). */
  pieces: string[];
  /** The ids decoded with special tokens written out; with --chat, the rendered prompt. */
  text: string;
}

/** Tokenizers already loaded, by model and tokenizer path (a test tokenizes many texts). */
const loaded = new Map<string, import('@airllm/engine').Tokenizer>();

/** What `airllm tokenize` prints, for `input` and the command's options. */
export async function tokenizeInput(input: string, o: TokenizeCliOptions): Promise<TokenizeResult> {
  const { readAnyModelFile } = await import('@airllm/format');
  const { loadTokenizer, ChatFormatter, ChatTemplateError, CHAT_ROLES } = await import('@airllm/engine');
  const model = o.model ?? BUNDLED_MODEL;
  const cacheKey = `${model}\0${o.tokenizer ?? ''}`;
  let tok = loaded.get(cacheKey);
  if (tok === undefined) {
    const file = readAnyModelFile(model);
    // A GGUF with no .t beside it: the tokenizer of its metadata.
    const tokenizerPath = o.model === undefined && o.tokenizer === undefined ? BUNDLED_TOKENIZER : await modelTokenizer(model, o.tokenizer);
    // Given a path (or a GGUF), loadTokenizer returns the tokenizer or throws.
    tok = loadTokenizer(model, { tokenizerPath, modelVocabSize: file.header.vocabSize, gguf: file.format === 'gguf' ? file.gguf : undefined })!;
    loaded.set(cacheKey, tok);
  }
  let ids: number[];
  let text: string;
  if (o.chat) {
    let messages: unknown;
    try {
      messages = JSON.parse(input);
    } catch (e) {
      throw new CliError(`--chat: the input is not JSON (${(e as Error).message})`, 2);
    }
    if (!Array.isArray(messages) || messages.some((m) => typeof m !== 'object' || m === null || !(CHAT_ROLES as readonly unknown[]).includes(m.role) || typeof m.content !== 'string')) {
      throw new CliError(`--chat: expected a JSON array of {"role": ${CHAT_ROLES.join('|')}, "content": string}`, 2);
    }
    try {
      const format = new ChatFormatter(tok, o.chatTemplate);
      const options = o.thinking === false ? { enableThinking: false } : {};
      ids = format.encode(messages, options);
      text = format.render(messages, options);
    } catch (e) {
      if (e instanceof ChatTemplateError) throw new CliError(e.message, 2);
      throw e;
    }
  } else {
    if (o.chatTemplate !== undefined || o.thinking === false) throw new CliError('--chat-template and --no-thinking go with --chat', 2);
    ids = tok.encode(input, o.bos === false ? { bos: false } : {});
    text = tok.decode(ids, { specials: true });
  }
  const t = tok;
  return { ids, pieces: ids.map((id) => t.tokenText(id) ?? ''), text };
}

function readStdin(): string {
  try {
    return readFileSync(0, 'utf8');
  } catch (e) {
    throw new CliError(`cannot read the text from stdin: ${(e as Error).message}`);
  }
}
