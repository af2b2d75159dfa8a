import type { Command } from 'commander';
import { CliError } from '../errors.js';
import { findTokenizer, TOKENIZER_LOOKUP } from '../model-options.js';
import { formatBytes, writeJson, writeOut } from '../output.js';
import { progressBar, removePartialsOnSignal, withExtension } from './convert.js';

/** `airllm export gguf model.m [-o file.gguf] [-t model.t]`: a GGUF llama.cpp loads. */
export function register(program: Command): void {
  const exp = program.command('export').description('export a .m model to another format');
  exp
    .command('gguf')
    .description('.m + .t → GGUF v3 for llama.cpp: same tensor bytes (F32/F16/Q40/Q80 = F32/F16/Q4_0/Q8_0), llama.cpp names and metadata')
    .argument('<model>', '.m model file')
    .option('-o, --out <file.gguf>', 'output GGUF file (default: the model path with .gguf)')
    .option('-t, --tokenizer <model.t>', `tokenizer to embed; llama.cpp needs one to load the model (default: ${TOKENIZER_LOOKUP})`)
    .option('--name <name>', 'general.name metadata', 'airllm export')
    .option('--overwrite', 'replace an existing output file')
    .option('--json', 'print one JSON summary instead of text')
    .action(async (model: string, opts: { out?: string; tokenizer?: string; name: string; overwrite?: boolean; json?: boolean }) => {
      const { readModelFile } = await import('@airllm/format');
      readModelFile(model); // a missing or broken model is named before its tokenizer
      // Without a tokenizer llama.cpp refuses the file: fail here rather than write it.
      const tokenizer = findTokenizer(model, opts.tokenizer);
      const out = opts.out ?? withExtension(model, '.gguf');
      if (out === model) throw new CliError(`${model} already ends in .gguf: pass -o/--out`, 2);
      const { exportGguf, removePartialFilesSync } = await import('@airllm/format/convert');
      const bar = progressBar('exporting', opts.json);
      const signalsOff = removePartialsOnSignal(removePartialFilesSync);
      try {
        const r = await exportGguf(model, out, { tokenizerPath: tokenizer, name: opts.name, overwrite: opts.overwrite, onProgress: bar.update });
        bar.stop();
        const summary = { path: out, bytes: r.fileSize, tensors: r.tensors.length, tokenizerPath: tokenizer, tokenizer: r.tokenizerStyle ?? null, derivedMerges: r.derivedMerges };
        if (opts.json) writeJson(summary);
        else {
          const lines = [`wrote ${out}: ${r.tensors.length} tensors, ${formatBytes(r.fileSize)}, tokenizer ${tokenizer}`];
          if (r.tokenizerStyle === 'bytelevel') lines.push(`byte-level tokenizer: ${r.derivedMerges} merges derived from the vocabulary (.t files keep no merge list), so prompts may tokenize differently from the original tokenizer`);
          writeOut(lines.join('\n'));
        }
      } finally {
        bar.stop();
        signalsOff();
      }
    });
}
