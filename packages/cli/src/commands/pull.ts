import type { Command } from 'commander';
import { CliError } from '../errors.js';
import { pullReporter } from '../hub.js';
import { parseInteger } from '../model-options.js';
import { formatBytes, writeJson, writeOut } from '../output.js';

interface PullCliOptions {
  hub?: string;
  cacheDir?: string;
  dtype: string;
  keepSource?: boolean;
  retries: string;
  json?: boolean;
}

/**
 * `airllm pull hf:<owner>/<repo>[/<file>]`: a model from the Hugging Face hub (or a mirror) into
 * the model cache, resumable and checked against the hub's checksums; the work is
 * @airllm/loader's `pullModel`.
 */
export function register(program: Command): void {
  program
    .command('pull')
    .description('download a model from the Hugging Face hub into the model cache (a .gguf or .m file, or a safetensors repository converted to .m + .t)')
    .argument('<spec>', 'hf:<owner>/<repo>[@<revision>]/<file> or hf:<owner>/<repo>[@<revision>]')
    .option('--hub <url>', 'hub base URL (default: $AIRLLM_HUB, else $HF_ENDPOINT, else https://huggingface.co)')
    .option('--cache-dir <dir>', 'model cache folder (default: $AIRLLM_HOME/models, else ~/.cache/airllm/models)')
    .option('--dtype <type>', 'weight type when converting a safetensors repository: q40, q80, f16 or f32', 'q40')
    .option('--keep-source', "keep a converted repository's safetensors shards in the cache")
    .option('--retries <n>', 'retries after a dropped or stalled connection, each resuming where it stopped', '5')
    .option('--json', 'print one JSON summary instead of text')
    .addHelpText(
      'after',
      `
The token in $HF_TOKEN is sent to the hub (never to the CDN it redirects downloads to).
An interrupted pull keeps <file>.partial next to the file; the next pull resumes it.
\`-m hf:…\` on generate, chat, serve and bench pulls the same way when the cache lacks the model.

Examples:
  airllm pull hf:TheBloke/Llama-2-7B-GGUF/llama-2-7b.Q4_0.gguf
  airllm pull hf:Qwen/Qwen3-0.6B --dtype q80
  airllm generate -m hf:Qwen/Qwen3-0.6B "Once upon a time"`,
    )
    .action(async (specText: string, o: PullCliOptions) => {
      const L = await import('@airllm/loader');
      const F = await import('@airllm/format');
      const spec = L.parseHubSpec(specText);
      let dtype: import('@airllm/format').FloatType;
      try {
        dtype = F.parseFloatType(o.dtype);
      } catch {
        throw new CliError(`--dtype must be q40, q80, f16 or f32, got ${o.dtype}`, 2);
      }
      const retries = parseInteger(o.retries, '--retries', 0, 100)!;
      const reporter = pullReporter({ json: o.json });
      const abort = new AbortController();
      const onSigint = (): void => abort.abort(new CliError('interrupted; the partial download is kept, run the pull again to resume', 130));
      process.once('SIGINT', onSigint);
      let r: import('@airllm/loader').PullResult;
      try {
        r = await L.pullModel(spec, { endpoint: o.hub, cacheDir: o.cacheDir, dtype, keepSource: o.keepSource, retries, onEvent: reporter.onEvent, signal: abort.signal });
      } finally {
        process.off('SIGINT', onSigint);
        reporter.stop();
      }
      if (o.json) {
        writeJson({ spec: L.formatHubSpec(spec), commit: r.commit, model: r.modelPath, tokenizer: r.tokenizerPath ?? null, converted: r.converted ?? null, files: r.files });
        return;
      }
      const lines: string[] = [];
      for (const f of r.files) {
        const how = f.status === 'cached' ? 'up to date' : f.resumedFrom > 0 ? `downloaded, resumed at ${formatBytes(f.resumedFrom)}` : 'downloaded';
        lines.push(`${f.path}: ${how}, ${formatBytes(f.size)}, ${f.checksum.algorithm} ok → ${f.dest}`);
      }
      if (r.converted !== undefined) lines.push(`converted to ${r.converted.dtype}: ${r.modelPath} + ${r.tokenizerPath}`);
      else if (r.files.length === 0) lines.push(`up to date: ${r.modelPath}`);
      lines.push(`${L.formatHubSpec(spec)} at commit ${r.commit.slice(0, 12)}: ${r.modelPath}${r.tokenizerPath !== undefined && r.converted === undefined ? ` (tokenizer ${r.tokenizerPath})` : ''}`);
      writeOut(lines.join('\n'));
    });
}
