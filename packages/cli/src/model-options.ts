/**
 * Options every command that runs a model shares (generate, chat, serve, bench), their parsing,
 * and the bundled default model.
 */
import { existsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { open } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import type { EngineOptions, LayerWiseInferenceEngine } from '@airllm/engine';
import { CliError } from './errors.js';
import { resolveModelArg } from './hub.js';

/** stories260K, converted by our importer and shipped in the package (models/README.md). */
export const BUNDLED_MODEL = fileURLToPath(new URL('../models/stories260K.m', import.meta.url));
export const BUNDLED_TOKENIZER = fileURLToPath(new URL('../models/stories260K.t', import.meta.url));

export interface ModelCliOptions {
  model?: string;
  tokenizer?: string;
  mode?: string;
  maxMemory?: string;
  threads?: string;
  activations?: string;
  kernels?: string;
  maxSeqLen?: string;
  batchSize?: string;
  trace?: string;
  workers?: string;
  split?: string;
  workerToken?: string;
  workerTlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
}

export function addModelOptions(cmd: Command): Command {
  return cmd
    .option('-m, --model <path>', 'model .m or GGUF file (run in place), or hf:<owner>/<repo>[/<file>] pulled into the model cache (default: the bundled stories260K demo)')
    .option('-t, --tokenizer <path>', `tokenizer .t file (default: ${TOKENIZER_LOOKUP})`)
    .option('--mode <mode>', 'memory mode: auto (resident if the model fits in available memory, else stream) | resident | stream | sequential', 'auto')
    .option('--max-memory <size>', 'weight budget (stream mode: default what available memory allows; auto: instead of the available memory), e.g. 2GiB, 512MB, 25%')
    .option('--threads <n>', 'compute threads (default: number of cores)')
    .option('--activations <type>', 'f32 (default) or q80 (dllama numerics for Q40 models)')
    .option('--kernels <backend>', 'native (default) or reference')
    .option('--max-seq-len <n>', 'context length (KV cache rows)')
    .option('--batch-size <n>', 'prompt tokens per forward step')
    .option('--trace <file>', 'write a Chrome trace-event timeline of the layer pipeline (open in Perfetto)')
    .option('--workers <list>', 'run layer ranges on `airllm worker` nodes: host:port,host:port (pipeline order)')
    .option('--split <spec>', 'layers per node with --workers: auto (by layer bytes), speed (weighted by measured speed) or a-b,c-d', 'auto')
    .option('--worker-token <secret>', 'shared secret of the workers (default: $AIRLLM_TOKEN)')
    .option('--worker-tls-ca <file>', 'talk TLS to the workers, trusting the certificates this CA signed (PEM)')
    .option('--tls-cert <file>', "with --worker-tls-ca: this machine's certificate (PEM), for workers that require one (mutual TLS)")
    .option('--tls-key <file>', 'the private key of --tls-cert (PEM)');
}

/** Largest certificate or key file read (a chain of a few certificates is a few KiB). */
const MAX_PEM_BYTES = 1 << 20;

/** A PEM file named by `option`, read whole; a typed one-line error naming the file otherwise. */
export async function readPem(path: string, option: string): Promise<Buffer> {
  let fh: Awaited<ReturnType<typeof open>>;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new CliError(`${option} ${path}: ${code === 'ENOENT' ? 'no such file' : code === 'EACCES' || code === 'EPERM' ? 'permission denied' : code === 'EISDIR' ? 'is a directory' : (e as Error).message}`);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new CliError(`${option} ${path}: ${st.isDirectory() ? 'is a directory' : 'not a regular file'}`);
    if (st.size > MAX_PEM_BYTES) throw new CliError(`${option} ${path}: ${st.size} bytes is too large for a PEM certificate or key`);
    return await fh.readFile();
  } catch (e) {
    if (e instanceof CliError) throw e;
    throw new CliError(`${option} ${path}: ${(e as NodeJS.ErrnoException).code === 'EISDIR' ? 'is a directory' : (e as Error).message}`);
  } finally {
    await fh.close();
  }
}

/** The root's TLS towards its workers from --worker-tls-ca, --tls-cert and --tls-key. */
export async function workerTls(o: ModelCliOptions): Promise<import('@airllm/distributed').ClientTls | undefined> {
  if (o.workerTlsCa === undefined) {
    if (o.tlsCert !== undefined || o.tlsKey !== undefined) throw new CliError('--tls-cert and --tls-key need --worker-tls-ca (the CA that signed the workers\' certificates)', 2);
    return undefined;
  }
  if ((o.tlsCert === undefined) !== (o.tlsKey === undefined)) throw new CliError(o.tlsCert === undefined ? '--tls-key needs --tls-cert' : '--tls-cert needs --tls-key', 2);
  const ca = await readPem(o.workerTlsCa, '--worker-tls-ca');
  const tls = o.tlsCert === undefined || o.tlsKey === undefined ? { ca } : { ca, cert: await readPem(o.tlsCert, '--tls-cert'), key: await readPem(o.tlsKey, '--tls-key') };
  const { checkTls } = await import('@airllm/distributed');
  checkTls(tls, { cert: `--tls-cert ${o.tlsCert}`, key: `--tls-key ${o.tlsKey}`, ca: `--worker-tls-ca ${o.workerTlsCa}` });
  return tls;
}

const UNITS: Record<string, number> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  k: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tib: 1024 ** 4,
};

/** "2GiB", "512MB", "1.5g", "1048576" → bytes; "25%" → that share of `total` when given. */
export function parseBytes(text: string, option: string, total?: number): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z%]*)\s*$/.exec(text);
  const unit = m?.[2]?.toLowerCase() ?? '';
  if (m && unit === '%' && total !== undefined) return Math.floor((Number(m[1]) / 100) * total);
  const mult = UNITS[unit === '' ? 'b' : unit];
  if (!m || mult === undefined) throw new CliError(`${option}: cannot read "${text}" as a size (examples: 2GiB, 512MB, 1073741824${total !== undefined ? ', 25%' : ''})`, 2);
  const v = Math.floor(Number(m[1]) * mult);
  if (!Number.isSafeInteger(v) || v <= 0) throw new CliError(`${option}: size "${text}" is out of range`, 2);
  return v;
}

export function parseInteger(text: string | undefined, option: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (text === undefined) return undefined;
  const v = Number(text);
  if (!/^\s*-?\d+\s*$/.test(text) || !Number.isSafeInteger(v) || v < min || v > max) {
    throw new CliError(`${option}: expected a whole number ${min}..${max === Number.MAX_SAFE_INTEGER ? '' : max}, got "${text}"`, 2);
  }
  return v;
}

/**
 * `-n, --steps <n>` (dllama's and llama2.c's name for the token limit) and `--max-tokens <n>`
 * (the OpenAI API's name for it) on a command.
 */
export function addTokenLimitOptions(command: Command, description: string, fallback: string): Command {
  return command.option('-n, --steps <n>', description, fallback).option('--max-tokens <n>', 'the same as --steps');
}

/** The token limit given by --steps or --max-tokens; both on one command line must agree. */
export function tokenLimit(command: Command, o: { steps: string; maxTokens?: string }, min: number): number {
  if (o.maxTokens === undefined) return parseInteger(o.steps, '--steps', min)!;
  const v = parseInteger(o.maxTokens, '--max-tokens', min)!;
  if (command.getOptionValueSource('steps') === 'cli' && parseInteger(o.steps, '--steps', min) !== v) {
    throw new CliError(`--steps ${o.steps} and --max-tokens ${o.maxTokens} disagree: give the token limit once`, 2);
  }
  return v;
}

export function parseNumber(text: string | undefined, option: string, min: number, max: number): number | undefined {
  if (text === undefined) return undefined;
  const v = Number(text);
  if (text.trim() === '' || !Number.isFinite(v) || v < min || v > max) throw new CliError(`${option}: expected a number in [${min}, ${max}], got "${text}"`, 2);
  return v;
}

/** How the tokenizer is found when -t is not given, for help texts. */
export const TOKENIZER_LOOKUP = 'the model path with .t, or dllama_tokenizer_X.t beside dllama_model_X.m';

/**
 * The tokenizer files tried for a model, in order: the model path with `.t`, then
 * Distributed-Llama's naming (`dllama_model_X.m` → `dllama_tokenizer_X.t`, its launcher's
 * downloads), also with X's trailing `_part`s dropped one by one, since a vocabulary is shared
 * by every quantization and size of a model (`dllama_model_stories260k_hidden192_q40.m` →
 * `dllama_tokenizer_stories260k.t`).
 */
export function tokenizerCandidates(model: string): string[] {
  const dir = dirname(model);
  const name = basename(model);
  const candidates = [join(dir, `${name.endsWith('.m') ? name.slice(0, -2) : name}.t`)];
  const m = /^dllama_model_(.+)\.m$/.exec(name);
  if (m) {
    const parts = m[1]!.split('_');
    for (let n = parts.length; n >= 1; n--) candidates.push(join(dir, `dllama_tokenizer_${parts.slice(0, n).join('_')}.t`));
  }
  return candidates;
}

/** The tokenizer for `model`: `given` (which must exist), else the first candidate that exists. */
export function findTokenizer(model: string, given: string | undefined): string {
  if (given !== undefined) {
    if (!existsSync(given)) throw new CliError(`tokenizer ${given}: no such file`);
    return given;
  }
  const candidates = tokenizerCandidates(model);
  const found = candidates.find((c) => existsSync(c));
  if (found === undefined) throw new CliError(`no tokenizer for ${model}: looked for ${candidates.join(', ')}; pass -t/--tokenizer`, 1, 'AIRLLM_NO_TOKENIZER');
  return found;
}

/**
 * The tokenizer file for `model` as findTokenizer finds it; for a GGUF with no `.t` beside it,
 * undefined: the engine then takes the tokenizer from the GGUF's metadata.
 */
export async function modelTokenizer(model: string, given: string | undefined): Promise<string | undefined> {
  if (given !== undefined || tokenizerCandidates(model).some((c) => existsSync(c))) return findTokenizer(model, given);
  const { modelFileFormat } = await import('@airllm/format');
  // A missing or unreadable model is named before its tokenizer.
  return modelFileFormat(model) === 'gguf' ? undefined : findTokenizer(model, given);
}

/**
 * Model path, tokenizer path and engine options from the shared flags. A worker runs layers
 * only and needs no tokenizer (`tokenizer: false`).
 */
export async function engineOptions(o: ModelCliOptions, need: { tokenizer: boolean } = { tokenizer: true }): Promise<{ model: string; options: EngineOptions }> {
  const pulled = o.model === undefined ? undefined : await resolveModelArg(o.model, { json: (o as { json?: boolean }).json });
  const model = pulled?.modelPath ?? BUNDLED_MODEL;
  // A pulled safetensors repository comes with the .t its conversion wrote.
  const given = o.tokenizer ?? pulled?.tokenizerPath;
  const tokenizer = o.model === undefined && given === undefined ? BUNDLED_TOKENIZER : need.tokenizer ? await modelTokenizer(model, given) : undefined;
  const mode = o.mode ?? 'auto';
  if (!['auto', 'resident', 'stream', 'sequential'].includes(mode)) throw new CliError(`--mode: expected auto, resident, stream or sequential, got "${mode}"`, 2);
  if (o.activations !== undefined && !['f32', 'q80'].includes(o.activations)) throw new CliError(`--activations: expected f32 or q80, got "${o.activations}"`, 2);
  if (o.kernels !== undefined && !['native', 'reference'].includes(o.kernels)) throw new CliError(`--kernels: expected native or reference, got "${o.kernels}"`, 2);
  let maxMemory: number | undefined;
  if (o.maxMemory !== undefined) {
    const { readAnyModelFile } = await import('@airllm/format');
    maxMemory = parseBytes(o.maxMemory, '--max-memory', readAnyModelFile(model).layout.fileSize);
  }
  const options: EngineOptions = {
    mode: mode as EngineOptions['mode'],
    maxMemory,
    threads: parseInteger(o.threads, '--threads', 1, 256),
    activations: o.activations as EngineOptions['activations'],
    kernels: o.kernels as EngineOptions['kernels'],
    maxSeqLen: parseInteger(o.maxSeqLen, '--max-seq-len', 1),
    batchSize: parseInteger(o.batchSize, '--batch-size', 1, 4096),
    trace: o.trace !== undefined,
  };
  if (tokenizer !== undefined) options.tokenizerPath = tokenizer;
  return { model, options };
}

/**
 * The engine the shared flags describe (plus a command's own `extra` options), not yet initialized. Every command that runs a model
 * gets its engine here, so features that change how a model runs (e.g. distributed workers)
 * are added in one place.
 */
export async function createEngine(o: ModelCliOptions, extra: Partial<EngineOptions> = {}): Promise<LayerWiseInferenceEngine> {
  const { model, options: base } = await engineOptions(o);
  const options = { ...base, ...extra };
  if (o.workers !== undefined) {
    const workers = o.workers.split(',').map((w) => w.trim()).filter((w) => w !== '');
    if (workers.length === 0) throw new CliError('--workers: expected host:port,host:port', 2);
    const tls = await workerTls(o);
    const { DistributedEngine, quietGrpcLog } = await import('@airllm/distributed');
    quietGrpcLog();
    return new DistributedEngine(model, options, { workers, split: o.split, token: o.workerToken ?? process.env.AIRLLM_TOKEN, tls });
  }
  if (o.workerTlsCa !== undefined || o.tlsCert !== undefined || o.tlsKey !== undefined) throw new CliError('--worker-tls-ca, --tls-cert and --tls-key are for --workers', 2);
  const { LayerWiseInferenceEngine } = await import('@airllm/engine');
  return new LayerWiseInferenceEngine(model, options);
}
