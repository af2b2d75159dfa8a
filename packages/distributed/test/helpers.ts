import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ArchType, FloatType, HeaderKey, type HeaderValues } from '@airllm/format';
import { generateSyntheticModel } from '@airllm/format/convert';
import { LayerWiseInferenceEngine, type EngineOptions, type GenerateOptions } from '@airllm/engine';

const here = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(here, '../../..');
export const FIXTURES = join(REPO, '../shared/fixtures');
export const STORIES = join(FIXTURES, 'dllama_model_stories260k_hidden192_f32.m');
export const STORIES_TOKENIZER = join(FIXTURES, 'dllama_tokenizer_stories260k.t');
export const CLI = join(REPO, 'packages/cli/bin/airllm.js');

export function tempDir(prefix = 'airllm-distributed-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A Llama-shaped model with more layers than stories260K (12), F32 or Q40 weights. */
export function syntheticValues(weights: FloatType = FloatType.F32, nLayers = 12): HeaderValues {
  return {
    [HeaderKey.ArchType]: ArchType.LLAMA,
    [HeaderKey.Dim]: 64,
    [HeaderKey.HiddenDim]: 128,
    [HeaderKey.NLayers]: nLayers,
    [HeaderKey.NHeads]: 4,
    [HeaderKey.NKvHeads]: 2,
    [HeaderKey.VocabSize]: 96,
    [HeaderKey.MaxSeqLen]: 160,
    [HeaderKey.WeightsFloatType]: weights,
  };
}

export async function writeSynthetic(path: string, values: HeaderValues, seed = 7): Promise<string> {
  await generateSyntheticModel(path, values, { seed });
  return path;
}

/** A real `airllm worker` process, started on a free port of 127.0.0.1. */
export interface WorkerProcess {
  proc: ChildProcess;
  port: number;
  address: string;
  /** Everything it wrote on stderr so far. */
  stderr(): string;
  /** SIGTERM (then SIGKILL after 5 s) and wait for it to exit. */
  stop(): Promise<void>;
}

export async function startWorker(model: string, extra: readonly string[] = []): Promise<WorkerProcess> {
  const proc = spawn(process.execPath, [CLI, 'worker', '--model', model, '--port', '0', '--threads', '1', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const port = await new Promise<number>((resolvePort, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`worker did not start in 20 s: ${err}`)), 20_000);
    proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        const line = JSON.parse(out.slice(0, nl)) as { event: string; port: number };
        if (line.event === 'listening') resolvePort(line.port);
        else reject(new Error(`unexpected first line ${out}`));
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`worker exited with ${code}: ${err}`));
    });
  });
  return {
    proc,
    port,
    address: `127.0.0.1:${port}`,
    stderr: () => err,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      // A stopped process (SIGSTOP test) must be continued to see the SIGTERM.
      proc.kill('SIGCONT');
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(t);
    },
  };
}

/** Greedy tokens of a single-process engine: the reference the pipeline must equal. */
export async function singleProcessTokens(model: string, options: EngineOptions, prompt: readonly number[], gen: GenerateOptions): Promise<number[]> {
  const engine = new LayerWiseInferenceEngine(model, options);
  await engine.initialize();
  try {
    const tokens: number[] = [];
    for await (const t of engine.generate(prompt, gen)) tokens.push(t.token);
    return tokens;
  } finally {
    await engine.cleanup();
  }
}

/**
 * A TCP proxy that counts the bytes passing through it in both directions (an independent
 * measure of what is on the wire, HTTP/2 framing included).
 */
export async function countingProxy(target: number, options: { capture?: boolean } = {}): Promise<{ port: number; bytes(): number; captured(): Buffer; close(): Promise<void> }> {
  let bytes = 0;
  /** With `capture`: everything the clients sent, in arrival order (for tests of what is on the wire). */
  const seen: Buffer[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect(target, '127.0.0.1');
    sockets.add(client);
    sockets.add(upstream);
    client.on('data', (d: Buffer) => {
      bytes += d.length;
      if (options.capture) seen.push(d);
      upstream.write(d);
    });
    upstream.on('data', (d) => {
      bytes += d.length;
      client.write(d);
    });
    const end = (): void => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('close', end);
    upstream.on('close', end);
    client.on('error', end);
    upstream.on('error', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    bytes: () => bytes,
    captured: () => Buffer.concat(seen),
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** Negate `count` F32 values in place at `offset` of a file, keeping its size and header. */
export function negateFloats(path: string, offset: number, count: number): void {
  const fd = openSync(path, 'r+');
  try {
    const b = Buffer.alloc(count * 4);
    readSync(fd, b, 0, b.length, offset);
    for (let i = 0; i < count; i++) b.writeFloatLE(-b.readFloatLE(i * 4), i * 4);
    writeSync(fd, b, 0, b.length, offset);
  } finally {
    closeSync(fd);
  }
}
