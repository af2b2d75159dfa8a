import { writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { CliError } from '../errors.js';
import { addModelOptions, createEngine, parseInteger, parseNumber, type ModelCliOptions } from '../model-options.js';
import { formatBytes, writeJson } from '../output.js';

interface GenerateCliOptions extends ModelCliOptions {
  prompt?: string;
  steps: string;
  temperature: string;
  topK?: string;
  topP?: string;
  seed?: string;
  stop?: string[];
  json?: boolean;
}

/** `airllm generate [prompt]`: stream a completion of the prompt to stdout. */
export function register(program: Command): void {
  addModelOptions(
    program
      .command('generate')
      .description('complete a prompt, streaming the text as it is produced')
      .argument('[prompt]', 'prompt text (or use --prompt)'),
  )
    .option('-p, --prompt <text>', 'prompt text')
    .option('-n, --steps <n>', 'tokens to generate at most', '256')
    .option('--temperature <t>', 'sampling temperature; 0 = greedy', '0')
    .option('--top-k <k>', 'sample among the k most likely tokens')
    .option('--top-p <p>', 'nucleus sampling threshold in (0, 1)')
    .option('--seed <n>', 'random seed (runs with the same seed reproduce)')
    .option('--stop <text...>', 'stop when the output contains this text')
    .option('--json', 'print one JSON object at the end instead of streaming text')
    .action(async (positional: string | undefined, o: GenerateCliOptions) => {
      if (positional !== undefined && o.prompt !== undefined) throw new CliError('give the prompt either as an argument or with --prompt, not both', 2);
      const prompt = positional ?? o.prompt ?? '';
      const sampling = {
        maxTokens: parseInteger(o.steps, '--steps', 0),
        temperature: parseNumber(o.temperature, '--temperature', 0, 100),
        topK: parseInteger(o.topK, '--top-k', 0),
        topP: parseNumber(o.topP, '--top-p', 0, 1),
        seed: parseInteger(o.seed, '--seed', 0),
        stop: o.stop,
      };
      const engine = await createEngine(o);
      const abort = new AbortController();
      const onSigint = (): void => abort.abort();
      process.once('SIGINT', onSigint);
      try {
        await engine.initialize();
        // Echo the prompt, as llama2.c's run does, so the story reads whole.
        if (!o.json && prompt) process.stdout.write(prompt);
        const gen = engine.generate(prompt, { ...sampling, signal: abort.signal });
        let r = await gen.next();
        while (!r.done) {
          if (!o.json && r.value.text) process.stdout.write(r.value.text);
          r = await gen.next();
        }
        const result = r.value;
        if (o.trace) writeFileSync(o.trace, JSON.stringify(engine.trace.toJSON()));
        if (o.json) {
          writeJson({ promptTokens: result.promptTokens, tokens: result.tokens, text: result.text, finishReason: result.finishReason, stats: result.stats });
        } else {
          process.stdout.write('\n');
          const s = result.stats;
          if (process.stderr.isTTY) {
            process.stderr.write(
              `\n${s.generatedTokens} tokens, prefill ${s.prefillTokensPerSecond.toFixed(1)} tok/s, decode ${s.decodeTokensPerSecond.toFixed(1)} tok/s, ` +
                `load wait ${s.loadWaitMs.toFixed(0)} ms, compute ${s.computeMs.toFixed(0)} ms, disk ${formatBytes(s.diskBytesRead)}, peak RSS ${formatBytes(s.peakRssBytes)}\n`,
            );
          }
        }
      } finally {
        process.off('SIGINT', onSigint);
        await engine.cleanup();
      }
    });
}
