/**
 * The llama.cpp side of a scenario, inside a child process: node-llama-cpp (installed by the
 * harness into its own folder, never a dependency of the product) loads the GGUF export of the
 * same `.m` weights, evaluates a prompt and decodes greedily on the same number of threads.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { memoryStatus, resetPeakRss } from '@airllm/loader';
import { PeerUnavailableError } from './errors.js';
import type { SessionControl } from './child.js';
import type { PeerJob, PeerResult, PeerRun } from './protocol.js';
import { Prng } from './stats.js';
import { FIRST_WORD_TOKEN } from './tokenizer.js';

type Log = (line: string) => void;
const now = (): number => performance.now();

/** The slice of node-llama-cpp's API the harness uses (it is not a dependency, so no types). */
interface NlcSequence {
  clearHistory(): Promise<void>;
  evaluate(tokens: number[], options?: { temperature?: number }): AsyncGenerator<number, void, void>;
}
interface NlcContext {
  getSequence(): NlcSequence;
  dispose(): Promise<void>;
}
interface NlcModel {
  createContext(o: Record<string, unknown>): Promise<NlcContext>;
  dispose(): Promise<void>;
}
interface NlcLlama {
  loadModel(o: Record<string, unknown>): Promise<NlcModel>;
  dispose(): Promise<void>;
  logLevel: string;
}
interface NlcModule {
  getLlama(o: Record<string, unknown>): Promise<NlcLlama>;
}

export function peerPackageDir(peerDir: string): string {
  return join(peerDir, 'node_modules', 'node-llama-cpp');
}

export async function runPeerJob(job: PeerJob, log: Log, control?: SessionControl): Promise<PeerResult> {
  const pkgDir = peerPackageDir(job.peerDir);
  let mod: NlcModule;
  let version: string;
  try {
    version = (JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8')) as { version: string }).version;
    mod = (await import(pathToFileURL(join(pkgDir, 'dist', 'index.js')).href)) as NlcModule;
  } catch (e) {
    throw new PeerUnavailableError(`node-llama-cpp is not loadable from ${pkgDir}: ${(e as Error).message}`, {}, { cause: e });
  }
  const rng = new Prng(job.seed);
  const prompt = (n: number): number[] => Array.from({ length: n }, () => FIRST_WORD_TOKEN + rng.below(job.vocabSize - FIRST_WORD_TOKEN));
  let repackLines = 0;
  const baselineRss = memoryStatus()?.rss ?? 0;
  resetPeakRss();
  const llama = await mod.getLlama({
    gpu: false,
    // Prebuilt binaries only: never download or compile llama.cpp at benchmark time.
    build: 'never',
    usePrebuiltBinaries: true,
    skipDownload: true,
    progressLogs: false,
    maxThreads: job.threads,
    logLevel: 'debug',
    logger: (level: string, message: string) => {
      if (/repack/i.test(message)) repackLines++;
      if (level === 'error' || level === 'fatal') log(`${job.label}: llama.cpp: ${message.trim()}`);
    },
  });
  try {
    const t0 = now();
    const model = await llama.loadModel({ modelPath: job.ggufPath, gpuLayers: 0, useMmap: job.variant !== 'nommap', lazyMode: job.variant === 'lazy' });
    try {
      const ctx = await model.createContext({
        contextSize: job.promptTokens + job.decodeTokens + 16,
        batchSize: Math.max(512, job.promptTokens),
        sequences: 1,
        threads: { ideal: job.threads, min: job.threads },
      });
      const loadMs = now() - t0;
      // Debug logging only while loading (to count repack messages): during evaluation every
      // log line wakes the Node main thread, which then competes with llama.cpp's spinning
      // threads for the 2 cores.
      llama.logLevel = 'warn';
      const afterLoad = memoryStatus();
      log(
        `${job.label}: llama.cpp ${version} loaded in ${(loadMs / 1000).toFixed(1)} s; RssAnon ${((afterLoad?.rssAnon ?? 0) / 1e9).toFixed(2)} GB, ` +
          `RssFile ${((afterLoad?.rssFile ?? 0) / 1e9).toFixed(2)} GB, ${repackLines} repack log lines`,
      );
      try {
        const seq = ctx.getSequence();
        const once = async (n: number, m: number): Promise<PeerRun> => {
          await seq.clearHistory();
          const tokens = prompt(n);
          const tStart = now();
          let tFirst = Number.NaN;
          let tLast = Number.NaN;
          let count = 0;
          // evaluate() yields the token sampled after the prompt, then one per further evaluation:
          // the same prefill / decode split as the engine's generate().
          for await (const _token of seq.evaluate(tokens, { temperature: 0 })) {
            count++;
            if (count === 1) tFirst = now();
            tLast = now();
            if (count >= m) break;
          }
          const prefillMs = tFirst - tStart;
          const decodeMs = tLast - tFirst;
          return {
            prefillMs,
            decodeMs,
            prefillTokensPerSecond: n / (prefillMs / 1000),
            decodeTokensPerSecond: count > 1 ? (count - 1) / (decodeMs / 1000) : 0,
          };
        };
        await once(Math.min(8, job.promptTokens), 3); // untimed warm-up
        const runs: PeerRun[] = [];
        const measured = async (): Promise<PeerRun> => {
          const run = await once(job.promptTokens, job.decodeTokens);
          runs.push(run);
          log(`${job.label}: run ${runs.length}: prefill ${run.prefillTokensPerSecond.toFixed(2)} tok/s, decode ${run.decodeTokensPerSecond.toFixed(2)} tok/s`);
          return run;
        };
        if (job.session && control) {
          control.ready({ promptTokens: job.promptTokens, decodeTokens: job.decodeTokens, note: `llama.cpp ${version}` });
          while ((await control.next()) === 'run') control.ran(await measured());
        } else {
          for (let r = 0; r < job.runs; r++) await measured();
        }
        const m = memoryStatus();
        return {
          kind: 'llamacpp',
          label: job.label,
          variant: job.variant,
          version,
          loadMs,
          memory: { peakRss: m?.peakRss ?? 0, baselineRss, rssAnonAfterLoad: afterLoad?.rssAnon, rssFileAfterLoad: afterLoad?.rssFile },
          runs,
          repackLines,
        };
      } finally {
        await ctx.dispose();
      }
    } finally {
      await model.dispose();
    }
  } finally {
    await llama.dispose();
  }
}
