import type { Command } from 'commander';
import { formatBytes, writeJson, writeOut } from '../output.js';
import { progressBar, removePartialsOnSignal } from './convert.js';

/** `airllm export gguf model.m --out file.gguf [--tokenizer model.t]`: a GGUF llama.cpp loads. */
export function register(program: Command): void {
  const exp = program.command('export').description('export a .m model to another format');
  exp
    .command('gguf')
    .description('.m (+ .t) → GGUF v3 for llama.cpp: same tensor bytes (F32/F16/Q40/Q80 = F32/F16/Q4_0/Q8_0), llama.cpp names and metadata')
    .argument('<model>', '.m model file')
    .requiredOption('-o, --out <file.gguf>', 'output GGUF file')
    .option('-t, --tokenizer <model.t>', 'tokenizer to embed (llama.cpp needs one to load the model)')
    .option('--name <name>', 'general.name metadata', 'airllm export')
    .option('--overwrite', 'replace an existing output file')
    .option('--json', 'print one JSON summary instead of text')
    .action(async (model: string, opts: { out: string; tokenizer?: string; name: string; overwrite?: boolean; json?: boolean }) => {
      const { exportGguf, removePartialFilesSync } = await import('@airllm/format/convert');
      const bar = progressBar('exporting', opts.json);
      const signalsOff = removePartialsOnSignal(removePartialFilesSync);
      try {
        const r = await exportGguf(model, opts.out, { tokenizerPath: opts.tokenizer, name: opts.name, overwrite: opts.overwrite, onProgress: bar.update });
        bar.stop();
        const summary = { path: opts.out, bytes: r.fileSize, tensors: r.tensors.length, tokenizer: r.tokenizerStyle ?? null, derivedMerges: r.derivedMerges };
        if (opts.json) writeJson(summary);
        else {
          const lines = [`wrote ${opts.out}: ${r.tensors.length} tensors, ${formatBytes(r.fileSize)}`];
          if (r.tokenizerStyle === undefined) lines.push('no tokenizer embedded (pass --tokenizer model.t): llama.cpp will refuse to load the file');
          else if (r.tokenizerStyle === 'bytelevel') lines.push(`byte-level tokenizer: ${r.derivedMerges} merges derived from the vocabulary (.t files keep no merge list), so prompts may tokenize differently from the original tokenizer`);
          writeOut(lines.join('\n'));
        }
      } finally {
        bar.stop();
        signalsOff();
      }
    });
}
