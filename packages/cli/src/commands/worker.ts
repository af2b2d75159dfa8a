import type { Command } from 'commander';
import { CliError } from '../errors.js';
import { engineOptions, parseInteger, type ModelCliOptions } from '../model-options.js';

interface WorkerCliOptions extends ModelCliOptions {
  host: string;
  port: string;
  token?: string;
}

/**
 * `airllm worker`: serve layer ranges of a model to a root (`--workers` on generate/chat/serve).
 * Prints one JSON line on stdout once it listens ({"event":"listening","host","port"}), so
 * scripts can start it with --port 0 and read the port; progress goes to stderr.
 */
export function register(program: Command): void {
  program
    .command('worker')
    .description('serve layer ranges of a model to an airllm root over gRPC (only activations travel)')
    .option('-m, --model <path>', 'model .m file: the same file as the root (default: the bundled stories260K demo)')
    .option('--host <host>', 'interface to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface)', '127.0.0.1')
    .option('--port <n>', 'port to listen on (0: any free port)', '9100')
    .option('--token <secret>', 'shared secret a root must send (default: $AIRLLM_TOKEN)')
    .option('--mode <mode>', 'memory mode: resident | stream | sequential', 'resident')
    .option('--max-memory <size>', 'weight budget for stream mode, e.g. 2GiB, 512MB, 25%')
    .option('--threads <n>', 'compute threads (default: number of cores)')
    .option('--kernels <backend>', 'native (default) or reference')
    .action(async (o: WorkerCliOptions) => {
      const port = parseInteger(o.port, '--port', 0, 65535)!;
      const token = o.token ?? process.env.AIRLLM_TOKEN;
      // The root decides context, batch, slots and numerics; the worker only its machine's side.
      const { model, options } = await engineOptions({ model: o.model, mode: o.mode, maxMemory: o.maxMemory, threads: o.threads, kernels: o.kernels }, { tokenizer: false });
      if (token === undefined && o.host !== '127.0.0.1' && o.host !== 'localhost' && o.host !== '::1') {
        process.stderr.write(`airllm worker: warning: listening on ${o.host} without --token: anyone who can reach this port can use it\n`);
      }
      const { PipelineWorker } = await import('@airllm/distributed');
      let worker: Awaited<ReturnType<typeof PipelineWorker.start>>;
      try {
        worker = await PipelineWorker.start({
          modelPath: model,
          host: o.host,
          port,
          token,
          engineOptions: { mode: options.mode, maxMemory: options.maxMemory, threads: options.threads, kernels: options.kernels },
          log: (line) => process.stderr.write(`airllm worker: ${line}\n`),
        });
      } catch (e) {
        const err = e as { code?: string; message?: string };
        if (err.code === 'EADDRINUSE' || /address already in use|EADDRINUSE|No address added/i.test(err.message ?? '')) {
          throw new CliError(`cannot listen on ${o.host}:${port}: ${err.message ?? 'address in use'}`);
        }
        throw e;
      }
      process.stdout.write(`${JSON.stringify({ event: 'listening', host: worker.host, port: worker.port, model })}\n`);
      await new Promise<void>((resolve) => {
        const stop = (): void => {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          resolve();
        };
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
      });
      await worker.close();
    });
}
