import { createInterface } from 'node:readline';
import type { Command } from 'commander';
import type { ChatMessage } from '@airllm/engine';
import { addDraftOptions, openDraft, type DraftCliOptions } from '../draft.js';
import { CliError } from '../errors.js';
import { runGeneration } from '../generation.js';
import { addModelOptions, addTokenLimitOptions, createEngine, parseInteger, parseNumber, tokenLimit, type ModelCliOptions } from '../model-options.js';
import { initializeWithProgress } from '../progress.js';

interface ChatCliOptions extends ModelCliOptions, DraftCliOptions {
  system?: string;
  chatTemplate?: string;
  steps: string;
  maxTokens?: string;
  temperature: string;
  topK?: string;
  topP: string;
  seed?: string;
  thinking?: boolean;
}

const HELP = `commands: /reset (forget the conversation), /system <text> (set the system prompt and reset), /exit (or Ctrl-D)
Ctrl-C stops an answer; at the prompt, press it twice to quit.`;

/** At least this much room is kept for an answer when old turns must be forgotten. */
const MIN_ANSWER_ROOM = 32;

/** `airllm chat`: an interactive conversation using the model's chat template. */
export function register(program: Command): void {
  addTokenLimitOptions(
    addDraftOptions(addModelOptions(program.command('chat').description("talk with the model in a terminal, using the chat template in its tokenizer")))
      .option('-s, --system <text>', 'system prompt')
      .option('--chat-template <name>', "llama2, llama3 or chatml (default: from the tokenizer's template)"),
    'tokens per answer at most',
    '256',
  )
    .option('--temperature <t>', 'sampling temperature; 0 = greedy', '0.8')
    .option('--top-k <k>', 'sample among the k most likely tokens')
    .option('--top-p <p>', 'nucleus sampling threshold (0 or 1 = off)', '0.9')
    .option('--seed <n>', 'random seed')
    .option('--no-thinking', 'chatml (Qwen3): answer without a thinking block')
    .action(async (o: ChatCliOptions, command: Command) => {
      const maxAnswer = tokenLimit(command, o, 1);
      const sampling = {
        temperature: parseNumber(o.temperature, '--temperature', 0, 100),
        topK: parseInteger(o.topK, '--top-k', 0),
        topP: parseNumber(o.topP, '--top-p', 0, 1),
        seed: parseInteger(o.seed, '--seed', 0),
      };
      const { ChatFormatter, ChatTemplateError } = await import('@airllm/engine');
      const engine = await createEngine(o);
      let draft: Awaited<ReturnType<typeof openDraft>> | undefined;
      try {
        await initializeWithProgress(engine);
        draft = await openDraft(o, engine);
        let format: InstanceType<typeof ChatFormatter>;
        try {
          format = new ChatFormatter(engine.tokenizer, o.chatTemplate);
        } catch (e) {
          if (e instanceof ChatTemplateError) throw new CliError(`${e.message}: pass --chat-template llama2|llama3|chatml`, 2);
          throw e;
        }
        await converse(engine, format, o, maxAnswer, { ...sampling, ...draft.options });
      } finally {
        await draft?.cleanup();
        await engine.cleanup();
      }
    });
}

async function converse(
  engine: Awaited<ReturnType<typeof createEngine>>,
  format: import('@airllm/engine').ChatFormatter,
  o: ChatCliOptions,
  maxAnswer: number,
  sampling: Pick<import('@airllm/engine').GenerateOptions, 'temperature' | 'topK' | 'topP' | 'seed' | 'draft' | 'draftMax'>,
): Promise<void> {
  const tty = process.stdin.isTTY === true && process.stdout.isTTY === true;
  const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: tty, prompt: '> ' });
  const dim = (s: string): string => (tty ? `\x1b[2m${s}\x1b[22m` : s);
  const say = (s: string): void => void process.stdout.write(`${dim(s)}\n`);
  let system = o.system;
  let history: ChatMessage[] = [];
  let answering: AbortController | undefined;
  let exitArmed = false;

  // Ctrl-C arrives as readline's SIGINT on a terminal and as a real signal otherwise.
  const onInterrupt = (): void => {
    if (answering) {
      answering.abort();
      return;
    }
    if (exitArmed) {
      rl.close();
      return;
    }
    exitArmed = true;
    process.stdout.write('\n');
    say('(to exit, press Ctrl-C again, press Ctrl-D, or type /exit)');
    rl.prompt();
  };
  rl.on('SIGINT', onInterrupt);
  process.on('SIGINT', onInterrupt);

  if (tty) {
    process.stderr.write(dim(`airllm chat · ${engine.modelPath} · ${format.name === 'jinja' ? "the model's" : format.name} chat template · context ${engine.maxSeqLen} tokens\n${HELP}\n`));
  }
  const conversation = (user: string): ChatMessage[] => [...(system ? [{ role: 'system' as const, content: system }] : []), ...history, { role: 'user', content: user }];
  const encode = (messages: ChatMessage[]): number[] => format.encode(messages, o.thinking === false ? { enableThinking: false } : {});

  try {
    rl.prompt();
    for await (const raw of rl) {
      exitArmed = false;
      const line = raw.trim();
      if (line === '') {
        rl.prompt();
        continue;
      }
      if (line.startsWith('/')) {
        const [cmd, ...rest] = line.split(/\s+/);
        if (cmd === '/exit' || cmd === '/quit') break;
        if (cmd === '/reset') {
          history = [];
          say('(conversation cleared)');
        } else if (cmd === '/system') {
          const text = line.slice(cmd.length).trim();
          if (text) {
            system = text;
            history = [];
            say('(system prompt set; conversation cleared)');
          } else say(system ? `system prompt: ${system}` : '(no system prompt)');
        } else if (cmd === '/help') say(HELP);
        else say(`unknown command ${cmd}${rest.length ? '' : ''} (try /help)`);
        rl.prompt();
        continue;
      }
      // Forget the oldest exchanges until the conversation leaves room for an answer.
      let ids = encode(conversation(line));
      const room = Math.min(maxAnswer, MIN_ANSWER_ROOM);
      let forgot = 0;
      while (ids.length + room > engine.maxSeqLen && history.length > 0) {
        history = history.slice(2);
        forgot++;
        ids = encode(conversation(line));
      }
      if (forgot > 0) say(`(context full: forgot the oldest ${forgot === 1 ? 'exchange' : `${forgot} exchanges`})`);
      if (ids.length + 1 > engine.maxSeqLen) {
        say(`(that message is ${ids.length} tokens; the context holds ${engine.maxSeqLen}: say it shorter)`);
        rl.prompt();
        continue;
      }
      answering = new AbortController();
      const t0 = performance.now();
      const r = await runGeneration(
        engine,
        ids,
        { ...sampling, maxTokens: Math.min(maxAnswer, engine.maxSeqLen - ids.length), stop: format.stop, signal: answering.signal },
        (text) => void process.stdout.write(text),
      );
      answering = undefined;
      process.stdout.write('\n');
      if (r.finishReason === 'cancelled') say('[stopped]');
      else if (r.finishReason === 'length' || r.finishReason === 'context') say('[cut at the length limit]');
      if (tty) {
        const s = (performance.now() - t0) / 1000;
        process.stderr.write(dim(`${r.tokens.length} tokens · ${(r.tokens.length / s).toFixed(1)} tok/s\n`));
      }
      // A stopped answer is kept as far as it went: the next turn follows on from it.
      history.push({ role: 'user', content: line }, { role: 'assistant', content: r.text });
      rl.prompt();
    }
  } finally {
    process.off('SIGINT', onInterrupt);
    rl.close();
    if (tty) process.stdout.write('\n');
  }
}
