import { extname } from 'node:path';
import type { Command } from 'commander';
import { CliError } from '../errors.js';
import { formatBytes, writeJson, writeOut } from '../output.js';

/**
 * `airllm convert hf|gguf|llama2c …`: bring your own model. Each subcommand writes a `.m` model
 * (by default next to its input: `x.gguf` → `x.m`, a checkpoint folder `dir/` → `dir.m`) and
 * (unless --no-tokenizer) a `.t` tokenizer next to the model; the work is done by the
 * @airllm/format importers, tensor by tensor, so memory stays about one tensor.
 */
export function register(program: Command): void {
  const convert = program.command('convert').description('convert a Hugging Face checkpoint, a GGUF file or a llama2.c checkpoint to .m/.t');

  convert
    .command('hf')
    .description('Hugging Face safetensors checkpoint directory (llama, mistral, qwen3, qwen3_moe) → .m + .t')
    .argument('<dir>', 'directory with config.json, *.safetensors (or model.safetensors.index.json) and tokenizer.json')
    .option('-o, --out <model.m>', 'output model file (default: next to the input, with .m)')
    .option('--tokenizer-out <model.t>', 'output tokenizer file (default: the model path with .t)')
    .option('--no-tokenizer', 'do not convert the tokenizer')
    .option('--dtype <type>', 'weight type: q40, q80, f16 or f32', 'q40')
    .option('--overwrite', 'replace existing output files')
    .option('--json', 'print one JSON summary instead of text')
    .action(async (dir: string, opts: ConvertOptions) => {
      const F = await import('@airllm/format');
      const C = await import('@airllm/format/convert');
      const dtype = parseDtype(F, opts.dtype);
      const out = outputPath(opts, dir, true);
      const tokenizerOut = tokenizerPath(opts, out);
      const bar = progressBar('converting', opts.json);
      const signalsOff = removePartialsOnSignal(C.removePartialFilesSync);
      try {
        const r = await C.importHf({ dir, model: out, tokenizerOut }, { dtype, overwrite: opts.overwrite, onProgress: bar.update });
        bar.stop();
        report(F, opts, out, r.layout, tokenizerOut, r.tokenizer?.data, { source: 'hf', modelType: r.plan.modelType, tokenizerStyle: r.tokenizer?.style, unusedTensors: r.unusedTensors });
      } finally {
        bar.stop();
        signalsOff();
      }
    });

  convert
    .command('gguf')
    .description('llama.cpp GGUF (llama, qwen3, qwen3moe; F32/F16/BF16/Q4_0/Q8_0/Q4_K/Q5_K/Q6_K tensors) → .m + .t, losslessly when the type is kept; re-quantizing prints its RMS error')
    .argument('<file>', 'GGUF file')
    .option('-o, --out <model.m>', 'output model file (default: next to the input, with .m)')
    .option('--tokenizer-out <model.t>', 'output tokenizer file (default: the model path with .t)')
    .option('--no-tokenizer', 'do not convert the tokenizer')
    .option('--dtype <type>', 'weight type: q40, q80, f16 or f32 (default: the GGUF attn_q type, no re-quantization; for K-quants q40 from Q4_K/Q5_K, q80 from Q6_K/BF16)')
    .option('--overwrite', 'replace existing output files')
    .option('--json', 'print one JSON summary instead of text')
    .action(async (file: string, opts: ConvertOptions) => {
      const F = await import('@airllm/format');
      const C = await import('@airllm/format/convert');
      const dtype = opts.dtype === undefined ? undefined : parseDtype(F, opts.dtype);
      const out = outputPath(opts, file);
      const tokenizerOut = tokenizerPath(opts, out);
      const bar = progressBar('converting', opts.json);
      const signalsOff = removePartialsOnSignal(C.removePartialFilesSync);
      try {
        const r = await C.importGguf({ gguf: file, model: out, tokenizerOut }, { dtype, overwrite: opts.overwrite, onProgress: bar.update });
        bar.stop();
        report(F, opts, out, r.layout, tokenizerOut, r.tokenizer, { source: 'gguf', architecture: r.plan.archName, reencoded: r.reencoded, requantization: r.requantization ?? null });
      } finally {
        bar.stop();
        signalsOff();
      }
    });

  convert
    .command('llama2c')
    .description("llama2.c checkpoint (legacy, or export.py version 1/2) + tokenizer.bin → .m + .t")
    .argument('<checkpoint>', 'llama2.c model .bin')
    .argument('<tokenizer>', "llama2.c tokenizer.bin (e.g. tok512.bin)")
    .option('-o, --out <model.m>', 'output model file (default: next to the input, with .m)')
    .option('--tokenizer-out <model.t>', 'output tokenizer file (default: the model path with .t)')
    .option('--dtype <type>', 'weight type: q40, q80, f16 or f32', 'q40')
    .option('--hidden-multiple <n>', 'zero-pad hidden_dim to a multiple of n (exact; dllama needs 32 for Q40/Q80)', '32')
    .option('--overwrite', 'replace existing output files')
    .option('--json', 'print one JSON summary instead of text')
    .action(async (checkpoint: string, tokenizer: string, opts: ConvertOptions & { hiddenMultiple: string }) => {
      const F = await import('@airllm/format');
      const C = await import('@airllm/format/convert');
      const dtype = parseDtype(F, opts.dtype);
      const hiddenDimMultiple = Number(opts.hiddenMultiple);
      if (!Number.isSafeInteger(hiddenDimMultiple) || hiddenDimMultiple < 1) throw new CliError(`--hidden-multiple must be a positive integer, got ${opts.hiddenMultiple}`);
      const out = outputPath(opts, checkpoint);
      const tokenizerOut = opts.tokenizerOut ?? withExtension(out, '.t');
      const bar = progressBar('converting', opts.json);
      const signalsOff = removePartialsOnSignal(C.removePartialFilesSync);
      try {
        const r = await C.importLlama2c({ checkpoint, tokenizer, model: out, tokenizerOut }, { dtype, hiddenDimMultiple, overwrite: opts.overwrite, onProgress: bar.update });
        bar.stop();
        report(F, opts, out, r.layout, tokenizerOut, r.tokenizer, { source: 'llama2c', checkpointVersion: r.checkpoint.version });
      } finally {
        bar.stop();
        signalsOff();
      }
    });
}

type Format = typeof import('@airllm/format');

interface ConvertOptions {
  out?: string;
  tokenizerOut?: string;
  /** commander's --no-tokenizer: false when given. */
  tokenizer?: boolean;
  dtype?: string;
  overwrite?: boolean;
  json?: boolean;
}

function parseDtype(F: Format, name: string | undefined): import('@airllm/format').FloatType {
  try {
    return F.parseFloatType(name ?? 'q40');
  } catch {
    throw new CliError(`--dtype must be q40, q80, f16 or f32, got ${name}`);
  }
}

/** `path` with its extension (if any) replaced by `ext`. */
export function withExtension(path: string, ext: string): string {
  const e = extname(path);
  return (e === '' ? path : path.slice(0, -e.length)) + ext;
}

/**
 * -o, or beside the input: a file's path with its extension replaced by .m (`x.gguf` → `x.m`),
 * a checkpoint folder's path with .m added (`Qwen3-0.6B/` → `Qwen3-0.6B.m`: a folder name's
 * dot is not an extension).
 */
function outputPath(opts: ConvertOptions, input: string, folder = false): string {
  if (opts.out !== undefined) return opts.out;
  const trimmed = input.replace(/[/\\]+$/, '') || input;
  const out = folder ? `${trimmed}.m` : withExtension(trimmed, '.m');
  if (out === trimmed) throw new CliError(`${input} already ends in .m: pass -o/--out for the converted model`, 2);
  return out;
}

function tokenizerPath(opts: ConvertOptions, model: string): string | undefined {
  if (opts.tokenizer === false) return undefined;
  return opts.tokenizerOut ?? withExtension(model, '.t');
}

function report(
  F: Format,
  opts: ConvertOptions,
  out: string,
  layout: import('@airllm/format').ModelLayout,
  tokenizerOut: string | undefined,
  tok: import('@airllm/format').TokenizerData | undefined,
  extra: Record<string, unknown>,
): void {
  const h = layout.header;
  const model = { path: out, bytes: layout.fileSize, arch: F.archName(h.archType), weightType: F.floatTypeName(h.weightType), dim: h.dim, nLayers: h.nLayers, vocabSize: h.vocabSize };
  const tokenizer = tok !== undefined && tokenizerOut !== undefined ? { path: tokenizerOut, vocabSize: tok.vocab.length, bosId: tok.bosId, eosIds: tok.eosIds, chatTemplate: tok.chatTemplate !== undefined } : null;
  if (opts.json) {
    writeJson({ model, tokenizer, ...extra });
    return;
  }
  const lines = [`wrote ${model.path}: ${model.arch} ${model.weightType}, ${h.nLayers} layers, dim ${h.dim}, vocab ${h.vocabSize} (${formatBytes(layout.fileSize)})`];
  if (tokenizer !== null) lines.push(`wrote ${tokenizer.path}: ${tokenizer.vocabSize} tokens, bos ${tokenizer.bosId}, eos ${tokenizer.eosIds.join(',') || 'none'}${tokenizer.chatTemplate ? ', chat template' : ''}`);
  const re = extra.reencoded as string[] | undefined;
  if (re !== undefined && re.length > 0) lines.push(`re-encoded ${re.length} tensor(s) whose GGUF type differs from ${model.weightType}: ${re.slice(0, 4).join('; ')}${re.length > 4 ? '; …' : ''}`);
  const rq = extra.requantization as import('@airllm/format/convert').RequantizationError | null | undefined;
  if (rq) {
    lines.push(
      `re-quantization RMS error ${rq.rms.toExponential(3)} over ${rq.values} values (${(100 * rq.relativeRms).toFixed(2)}% of the source weights' RMS; worst ${rq.worst.tensor} ${(100 * rq.worst.relativeRms).toFixed(2)}%)`,
    );
  }
  const unused = extra.unusedTensors as string[] | undefined;
  if (unused !== undefined && unused.length > 0) lines.push(`ignored ${unused.length} tensor(s) the .m format has no place for: ${unused.slice(0, 4).join(', ')}${unused.length > 4 ? ', …' : ''}`);
  writeOut(lines.join('\n'));
}

const STOP_SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/**
 * For a command that writes files through `.partial` files (convert, export): on Ctrl-C, SIGTERM
 * or SIGHUP, remove the partial files (and their locks) at once, say so, and end the process by
 * the same signal, as an interrupted program does; Node's default action would leave
 * `out.m.partial` behind. Returns the function that takes the handlers off again.
 */
export function removePartialsOnSignal(removePartialFilesSync: () => string[]): () => void {
  const off = (): void => {
    for (const s of STOP_SIGNALS) process.off(s, onSignal);
  };
  const onSignal = (sig: NodeJS.Signals): void => {
    const removed = removePartialFilesSync();
    process.stderr.write(`airllm: ${sig}: stopped${removed.length > 0 ? `, removed ${removed.join(', ')}` : ''}\n`);
    off();
    process.kill(process.pid, sig);
  };
  for (const s of STOP_SIGNALS) process.on(s, onSignal);
  return off;
}

/**
 * A cli-progress bar over bytes written, on stderr, only when a person is watching (stdout and
 * stderr are terminals, no --json); a no-op in pipes and tests.
 */
export function progressBar(label: string, json = false): { update: (done: number, total: number) => void; stop: () => void } {
  if (json || process.stdout.isTTY !== true || process.stderr.isTTY !== true) return { update: () => undefined, stop: () => undefined };
  let bar: import('cli-progress').SingleBar | undefined;
  let stopped = false;
  return {
    update: (done, total) => {
      if (stopped) return;
      if (bar === undefined) {
        // Loaded lazily: cli-progress is only needed when a terminal is watching.
        void import('cli-progress').then((m) => {
          if (stopped || bar !== undefined) return;
          bar = new m.default.SingleBar(
            { stream: process.stderr, format: `${label} {bar} {percentage}% | {value}/{total}`, formatValue: (v, _o, type) => (type === 'value' || type === 'total' ? formatBytes(v) : String(v)), hideCursor: true, clearOnComplete: true },
            m.default.Presets.shades_classic,
          );
          bar.start(total, done);
        });
        return;
      }
      bar.setTotal(total);
      bar.update(done);
    },
    stop: () => {
      stopped = true;
      bar?.stop();
      bar = undefined;
    },
  };
}
