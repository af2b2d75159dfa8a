import { statSync } from 'node:fs';
import type { Command } from 'commander';
import type { GenerationStats } from '@airllm/engine';
import { CliError } from '../errors.js';
import { runGeneration } from '../generation.js';
import { addModelOptions, createEngine, parseInteger, type ModelCliOptions } from '../model-options.js';
import { formatBytes, table, writeJson } from '../output.js';
import { initializeWithProgress, progressBar } from '../progress.js';

interface BenchCliOptions extends ModelCliOptions {
  prompt: string;
  steps: string;
  runs: string;
  json?: boolean;
}

export interface PhaseFigures {
  tokens: number;
  tokensPerSecond: number;
  msPerToken: number;
  loadWaitMsPerToken: number;
  computeMsPerToken: number;
  diskBytesPerToken: number;
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

function figures(stats: GenerationStats, tokens: number, ms: number): PhaseFigures {
  return {
    tokens,
    tokensPerSecond: tokens / (ms / 1000),
    msPerToken: ms / tokens,
    loadWaitMsPerToken: stats.loadWaitMs / tokens,
    computeMsPerToken: stats.computeMs / tokens,
    diskBytesPerToken: stats.diskBytesRead / tokens,
  };
}

function medianFigures(runs: readonly PhaseFigures[]): PhaseFigures {
  const pick = (k: keyof PhaseFigures): number => median(runs.map((r) => r[k]));
  return {
    tokens: pick('tokens'),
    tokensPerSecond: pick('tokensPerSecond'),
    msPerToken: pick('msPerToken'),
    loadWaitMsPerToken: pick('loadWaitMsPerToken'),
    computeMsPerToken: pick('computeMsPerToken'),
    diskBytesPerToken: pick('diskBytesPerToken'),
  };
}

/**
 * `airllm bench`: prefill and decode measured apart, each run as three generations on one
 * engine. (1) one token that shares no prefix with the prompt, so (2) the prompt with
 * maxTokens 0 is a full prefill (no KV cache reuse); (3) the same prompt again with `steps`
 * tokens reuses all but its last token, so it is `steps` single-token forward passes: decode.
 */
export function register(program: Command): void {
  addModelOptions(program.command('bench').description('measure prefill and decode speed, load wait vs compute, disk bytes per token and peak RSS'))
    .option('-p, --prompt <text>', 'prompt for the prefill measurement', 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park.')
    .option('-n, --steps <n>', 'tokens to decode per run', '64')
    .option('--runs <n>', 'measured runs (the median is reported), after one warm-up run', '3')
    .option('--json', 'print one JSON object')
    .action(async (o: BenchCliOptions) => {
      const steps = parseInteger(o.steps, '--steps', 1)!;
      const runs = parseInteger(o.runs, '--runs', 1, 1000)!;
      const engine = await createEngine(o);
      try {
        const t0 = performance.now();
        await initializeWithProgress(engine, { json: o.json });
        const loadMs = performance.now() - t0;
        const prompt = engine.encode(o.prompt);
        if (prompt.length < 2) throw new CliError('--prompt: needs at least one token besides BOS', 2);
        if (prompt.length + steps > engine.maxSeqLen) {
          throw new CliError(`prompt (${prompt.length} tokens) + --steps ${steps} do not fit the context of ${engine.maxSeqLen} tokens`, 2);
        }
        // Any token other than the prompt's first: the cache then shares nothing with the prompt.
        const reset = [prompt[0] === 0 ? 1 : 0];
        const bar = progressBar('benchmark', { json: o.json, unit: 'items' });
        const prefills: PhaseFigures[] = [];
        const decodes: PhaseFigures[] = [];
        try {
          for (let run = 0; run <= runs; run++) {
            bar.update(run, runs + 1);
            await runGeneration(engine, reset, { maxTokens: 0 });
            const p = await runGeneration(engine, prompt, { maxTokens: 0 });
            const d = await runGeneration(engine, prompt, { maxTokens: steps, temperature: 0, stopAtEos: false });
            if (p.stats.cachedPromptTokens !== 0 || d.stats.cachedPromptTokens !== prompt.length - 1) {
              throw new Error(`benchmark setup: expected cache reuse 0 then ${prompt.length - 1} tokens, got ${p.stats.cachedPromptTokens} and ${d.stats.cachedPromptTokens}`);
            }
            if (run === 0) continue; // warm-up
            prefills.push(figures(p.stats, prompt.length, p.stats.prefillMs));
            decodes.push(figures(d.stats, d.tokens.length, d.stats.prefillMs + d.stats.decodeMs));
          }
        } finally {
          bar.stop();
        }
        const prefill = medianFigures(prefills);
        const decode = medianFigures(decodes);
        const peakRssBytes = process.resourceUsage().maxRSS * 1024;
        const result = {
          model: engine.modelPath,
          modelBytes: statSync(engine.modelPath).size,
          mode: engine.memoryMode,
          threads: engine.threads,
          promptTokens: prompt.length,
          steps,
          runs,
          loadMs,
          prefill,
          decode,
          peakRssBytes,
          perRun: { prefill: prefills, decode: decodes },
        };
        if (o.json) {
          writeJson(result);
          return;
        }
        const row = (name: string, f: PhaseFigures): (string | number)[] => [
          name,
          f.tokens,
          f.tokensPerSecond.toFixed(1),
          f.msPerToken.toFixed(2),
          f.loadWaitMsPerToken.toFixed(2),
          f.computeMsPerToken.toFixed(2),
          formatBytes(Math.round(f.diskBytesPerToken)),
        ];
        process.stdout.write(
          `${engine.modelPath} (${formatBytes(result.modelBytes)}), ${result.mode}, ${engine.threads} thread${engine.threads === 1 ? "" : "s"}, load ${loadMs.toFixed(0)} ms; median of ${runs} runs\n\n` +
            `${table([['phase', 'tokens', 'tok/s', 'ms/token', 'load wait ms/tok', 'compute ms/tok', 'disk/token'], row('prefill', prefill), row('decode', decode)])}\n\n` +
            `peak RSS ${formatBytes(peakRssBytes)}\n`,
        );
      } finally {
        await engine.cleanup();
      }
    });
}
