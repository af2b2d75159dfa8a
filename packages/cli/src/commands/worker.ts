import type { Command } from 'commander';
import { CliError } from '../errors.js';
import { engineOptions, parseInteger, readPem, type ModelCliOptions } from '../model-options.js';

interface WorkerCliOptions extends ModelCliOptions {
  host: string;
  port: string;
  token?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsClientCa?: string;
  tlsCa?: string;
}

const LOOPBACK = ['127.0.0.1', 'localhost', '::1'];

/** The worker's TLS from its flags: none, a certificate and key, and optionally client CAs. */
async function serverTls(o: WorkerCliOptions): Promise<import('@airllm/distributed').WorkerOptions['tls']> {
  if (o.tlsCert === undefined && o.tlsKey === undefined) {
    if (o.tlsClientCa !== undefined || o.tlsCa !== undefined) throw new CliError(`${o.tlsClientCa !== undefined ? '--tls-client-ca' : '--tls-ca'} needs --tls-cert and --tls-key`, 2);
    return undefined;
  }
  if (o.tlsCert === undefined || o.tlsKey === undefined) throw new CliError(o.tlsCert === undefined ? '--tls-key needs --tls-cert' : '--tls-cert needs --tls-key', 2);
  const tls = {
    cert: await readPem(o.tlsCert, '--tls-cert'),
    key: await readPem(o.tlsKey, '--tls-key'),
    clientCa: o.tlsClientCa === undefined ? undefined : await readPem(o.tlsClientCa, '--tls-client-ca'),
    peerCa: o.tlsCa === undefined ? undefined : await readPem(o.tlsCa, '--tls-ca'),
  };
  const { checkTls } = await import('@airllm/distributed');
  const names = { cert: `--tls-cert ${o.tlsCert}`, key: `--tls-key ${o.tlsKey}` };
  checkTls({ cert: tls.cert, key: tls.key, ca: tls.clientCa }, { ...names, ca: `--tls-client-ca ${o.tlsClientCa}` });
  if (tls.peerCa !== undefined) checkTls({ ca: tls.peerCa }, { ...names, ca: `--tls-ca ${o.tlsCa}` });
  return tls;
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
    .option('-m, --model <path>', 'model .m or GGUF file: the same file as the root (default: the bundled stories260K demo)')
    .option('--host <host>', 'interface to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface)', '127.0.0.1')
    .option('--port <n>', 'port to listen on (0: any free port)', '9100')
    .option('--token <secret>', 'shared secret a root must send (default: $AIRLLM_TOKEN)')
    .option('--tls-cert <file>', 'serve over TLS with this certificate (PEM; it must name the host the root uses in --workers)')
    .option('--tls-key <file>', 'the private key of --tls-cert (PEM)')
    .option('--tls-client-ca <file>', 'require client certificates signed by this CA (mutual TLS)')
    .option('--tls-ca <file>', 'CA of the next worker\'s certificate, for the relay between workers (default: --tls-client-ca)')
    .option('--mode <mode>', 'memory mode: auto (resident if the layers fit in available memory, else stream) | resident | stream | sequential', 'auto')
    .option('--max-memory <size>', 'weight budget (stream mode: default what available memory allows; auto: instead of the available memory), e.g. 2GiB, 512MB, 25%')
    .option('--threads <n>', 'compute threads (default: number of cores)')
    .option('--kernels <backend>', 'native (default) or reference')
    .action(async (o: WorkerCliOptions) => {
      const port = parseInteger(o.port, '--port', 0, 65535)!;
      const token = o.token ?? process.env.AIRLLM_TOKEN;
      // The root decides context, batch, slots and numerics; the worker only its machine's side.
      const { model, options } = await engineOptions({ model: o.model, mode: o.mode, maxMemory: o.maxMemory, threads: o.threads, kernels: o.kernels }, { tokenizer: false });
      const tls = await serverTls(o);
      if (!LOOPBACK.includes(o.host)) {
        if (token === undefined) process.stderr.write(`airllm worker: warning: listening on ${o.host} without --token: anyone who can reach this port can use it\n`);
        if (tls === undefined) process.stderr.write(`airllm worker: warning: listening on ${o.host} without TLS: the token and the activations travel in clear (see --tls-cert)\n`);
      }
      const { PipelineWorker, quietGrpcLog } = await import('@airllm/distributed');
      // A failed bind is reported below as one line, without grpc-js's own line before it.
      quietGrpcLog();
      let worker: Awaited<ReturnType<typeof PipelineWorker.start>>;
      try {
        worker = await PipelineWorker.start({
          modelPath: model,
          host: o.host,
          port,
          token,
          tls,
          engineOptions: { mode: options.mode, maxMemory: options.maxMemory, threads: options.threads, kernels: options.kernels },
          log: (line) => process.stderr.write(`airllm worker: ${line}\n`),
        });
      } catch (e) {
        const err = e as { code?: string; message?: string };
        if (err.code === 'EADDRINUSE' || /address already in use|EADDRINUSE/i.test(err.message ?? '')) {
          throw new CliError(`cannot listen on ${o.host}:${port}: address already in use (another program has this port; choose one with --port)`);
        }
        if (/No address added/i.test(err.message ?? '')) {
          const cause = /errors: \[(.*)\]/.exec(err.message ?? '')?.[1];
          throw new CliError(`cannot listen on ${o.host}:${port}: ${cause ?? err.message}`);
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
