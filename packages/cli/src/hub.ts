/**
 * The CLI face of @airllm/loader's hub client: progress bars and notes for a pull, and the
 * `-m hf:…` model argument turned into a local path (pulled first when the cache lacks it).
 */
import type { PullEvent, PullOptions } from '@airllm/loader';
import { CliError } from './errors.js';
import { formatBytes } from './output.js';
import { progressBar, type Progress } from './progress.js';

/** Bars (on a terminal) and one-line notes on stderr for what a pull reports. */
export function pullReporter(options: { json?: boolean } = {}): { onEvent: (e: PullEvent) => void; stop: () => void } {
  let bar: Progress | undefined;
  let label = '';
  const note = (text: string): void => {
    bar?.stop();
    bar = undefined;
    process.stderr.write(`airllm pull: ${text}\n`);
  };
  const barFor = (name: string): Progress => {
    if (bar === undefined || label !== name) {
      bar?.stop();
      bar = progressBar(name, options);
      label = name;
    }
    return bar;
  };
  return {
    onEvent(e) {
      switch (e.type) {
        case 'file':
          if (e.status === 'resume') note(`resuming ${e.file} from ${formatBytes(e.from)} of ${formatBytes(e.size)}`);
          break;
        case 'progress':
          barFor(e.file).update(e.done, e.total);
          break;
        case 'done':
          if (label === e.file) {
            bar?.stop();
            bar = undefined;
          }
          break;
        case 'retry':
          note(`${e.file}: ${e.reason}${e.at === undefined ? '' : ` at ${formatBytes(e.at)}`}; retrying in ${(e.delayMs / 1000).toFixed(1)} s (${e.attempt}/${e.retries})`);
          break;
        case 'restart':
          note(`${e.file}: ${e.reason}`);
          break;
        case 'wait':
          note(`waiting for another pull of ${e.file} (${e.holder}; lock ${e.lock})`);
          break;
        case 'convert':
          barFor('converting').update(e.done, e.total);
          break;
      }
    },
    stop() {
      bar?.stop();
      bar = undefined;
    },
  };
}

/**
 * A `-m` argument as a local model: an `hf:` spec becomes its cached file (pulled first if
 * needed; hub, cache folder and token from $AIRLLM_HUB / $HF_ENDPOINT, $AIRLLM_HOME, $HF_TOKEN),
 * anything else is returned as it is.
 */
export async function resolveModelArg(model: string, options: { json?: boolean } = {}): Promise<{ modelPath: string; tokenizerPath?: string }> {
  const { isHubSpec, resolveHubModel } = await import('@airllm/loader');
  if (!isHubSpec(model)) return { modelPath: model };
  const reporter = pullReporter(options);
  const abort = new AbortController();
  // Ctrl-C during the download keeps the partial file for the next run, then exits.
  const onSigint = (): void => abort.abort(new CliError('interrupted; the partial download is kept, run again to resume', 130));
  process.once('SIGINT', onSigint);
  try {
    const pull: PullOptions = { onEvent: reporter.onEvent, signal: abort.signal };
    return await resolveHubModel(model, pull);
  } finally {
    process.off('SIGINT', onSigint);
    reporter.stop();
  }
}
