/**
 * Progress for long operations: a cli-progress bar on stderr when a person is watching (stdout
 * and stderr are terminals and no --json), nothing at all in pipes and scripts.
 */
import cliProgress from 'cli-progress';
import type { LayerWiseInferenceEngine } from '@airllm/engine';
import { formatBytes } from './output.js';

export function interactive(json = false): boolean {
  return !json && process.stdout.isTTY === true && process.stderr.isTTY === true;
}

export interface Progress {
  update(done: number, total: number): void;
  stop(): void;
}

/** A bar of `label` over a byte count (or plain count with `unit: 'items'`), or a no-op when not interactive. */
export function progressBar(label: string, options: { json?: boolean; unit?: 'bytes' | 'items' } = {}): Progress {
  if (!interactive(options.json)) return { update() {}, stop() {} };
  const bytes = (options.unit ?? 'bytes') === 'bytes';
  let bar: cliProgress.SingleBar | undefined;
  return {
    update(done, total) {
      if (!bar) {
        bar = new cliProgress.SingleBar(
          {
            stream: process.stderr,
            format: `${label} {bar} {percentage}% | {value}/{total}`,
            formatValue: (v, _o, type) => (bytes && (type === 'value' || type === 'total') ? formatBytes(v) : String(v)),
            hideCursor: true,
            clearOnComplete: true,
            barsize: 30,
          },
          cliProgress.Presets.shades_classic,
        );
        bar.start(total, done);
      }
      bar.setTotal(total);
      bar.update(done);
    },
    stop() {
      bar?.stop();
      bar = undefined;
    },
  };
}

/**
 * A line that says something is happening when no progress figures come (e.g. an engine that
 * reports none); shown only after `delayMs`, so quick operations stay silent. Cleared on stop.
 */
export function statusLine(text: string, options: { json?: boolean; delayMs?: number } = {}): { stop(): void } {
  if (!interactive(options.json)) return { stop() {} };
  let shown = false;
  const timer = setTimeout(() => {
    shown = true;
    process.stderr.write(`${text}`);
  }, options.delayMs ?? 250);
  return {
    stop() {
      clearTimeout(timer);
      if (shown) process.stderr.write('\r\x1b[K');
      shown = false;
    },
  };
}

/**
 * `engine.initialize()` loading the weights up front (warmup) with a progress bar of the bytes
 * read, so the first token does not pay for the load; a plain "loading…" line if the engine
 * reports no progress.
 */
export async function initializeWithProgress(engine: LayerWiseInferenceEngine, options: { json?: boolean } = {}): Promise<void> {
  const bar = progressBar('loading model', options);
  const line = statusLine(`loading ${engine.modelPath}…`, options);
  let reported = false;
  try {
    await engine.initialize({
      warmup: true,
      onProgress: (done, total) => {
        if (!reported) line.stop();
        reported = true;
        bar.update(done, total);
      },
    });
  } finally {
    line.stop();
    bar.stop();
  }
}
