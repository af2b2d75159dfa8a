import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, FIXTURES, MODEL, Reference, TOKENIZER } from './helpers.js';

/** The airllm binary as a user runs it: a real process, the bundled model, no arguments needed. */
function airllm(args: string[], input?: string): { code: number | null; stdout: string; stderr: string } {
  return run(args, input);
}

/** A model-running command with the reference kernels on one thread, as the Reference runs. */
function airllmRef(args: string[], input?: string): { code: number | null; stdout: string; stderr: string } {
  return run([...args, '--threads', '1', '--kernels', 'reference'], input);
}

function run(args: string[], input?: string): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000, input });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function expectOneLineError(r: ReturnType<typeof airllm>, pattern: RegExp, code?: number): void {
  if (code !== undefined) expect(r.code).toBe(code);
  else expect(r.code).not.toBe(0);
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^airllm: /);
  expect(lines[0]).toMatch(pattern);
}

const llama2c = JSON.parse(readFileSync(join(FIXTURES, 'reference_llama2c_stories260k.json'), 'utf8')) as {
  bos_only: { generated_tokens: number[] };
  encodings: Record<string, number[]>;
};

let ref: Reference;
beforeAll(async () => {
  // The processes below run with the same kernels and one thread, so sums happen in the same order.
  ref = new Reference({ kernels: 'reference' });
  await ref.init();
});
afterAll(async () => {
  await ref?.cleanup();
});

describe('generate', () => {
  it('--json: one object whose greedy tokens are llama2.c run.c output for the same prompt', () => {
    const r = airllm(['generate', '--prompt', '', '--steps', '40', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as { promptTokens: number[]; tokens: number[]; text: string; finishReason: string; stats: Record<string, number> };
    expect(j.promptTokens).toEqual([1]);
    expect(j.tokens).toEqual(llama2c.bos_only.generated_tokens.slice(0, 40));
    expect(j.finishReason).toBe('length');
    for (const k of ['prefillTokensPerSecond', 'decodeTokensPerSecond', 'loadWaitMs', 'computeMs', 'diskBytesRead', 'peakRssBytes']) expect(Number.isFinite(j.stats[k])).toBe(true);
  });

  it('with no --mode, a --max-memory below the model streams it (one stderr line says so) and the tokens stay llama2.c\'s', () => {
    const r = airllm(['generate', '--prompt', '', '--steps', '40', '--json', '--max-memory', '600KB']);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^airllm: memory plan: stream, 0\.000\d+ GB of the weights pinned, the rest read from disk each pass \(model 0\.00\d+ GB > the weight budget 0\.0006 GB given\)$/);
    const j = JSON.parse(r.stdout) as { tokens: number[] };
    expect(j.tokens).toEqual(llama2c.bos_only.generated_tokens.slice(0, 40));
  });

  it('--mode stream alone takes its weight budget from the available memory (one stderr line says so)', () => {
    const r = airllm(['generate', '--prompt', '', '--steps', '40', '--json', '--mode', 'stream']);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^airllm: memory plan: stream, .* available \((MemAvailable|cgroup v[12] [a-z_.]+)\), stream mode asked for; weight budget [\d.]+ GB\)$/);
    expect((JSON.parse(r.stdout) as { tokens: number[] }).tokens).toEqual(llama2c.bos_only.generated_tokens.slice(0, 40));
  });

  it('streams the prompt and its completion as text; the same from stdin with "-"', async () => {
    const want = await ref.completion('Once upon a time', 30);
    const r = airllmRef(['generate', 'Once upon a time', '-n', '30']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(`Once upon a time${want.text}\n`);
    expect(r.stderr).toBe(''); // not a terminal: no statistics, no progress
    const s = airllmRef(['generate', '-', '-n', '30', '--no-echo'], 'Once upon a time\n');
    expect(s.stdout).toBe(`${want.text}\n`);
    const j = JSON.parse(airllmRef(['generate', 'Once upon a time', '-n', '30', '--json']).stdout) as { promptTokens: number[]; text: string };
    expect(j.promptTokens).toEqual(llama2c.encodings['Once upon a time']);
    expect(j.text).toBe(want.text);
    const nb = JSON.parse(airllm(['generate', 'Once upon a time', '-n', '1', '--no-bos', '--json']).stdout) as { promptTokens: number[] };
    expect(nb.promptTokens).toEqual(llama2c.encodings['Once upon a time']!.slice(1));
  });

  it('--max-tokens is --steps under the OpenAI API\'s name', async () => {
    const want = await ref.completion('Once upon a time', 12);
    const r = airllmRef(['generate', 'Once upon a time', '--max-tokens', '12', '--no-echo']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(`${want.text}\n`);
    expect(airllmRef(['generate', 'Once upon a time', '-n', '12', '--max-tokens', '12', '--no-echo']).stdout).toBe(`${want.text}\n`);
    expectOneLineError(airllm(['generate', 'Once', '-n', '5', '--max-tokens', '6']), /--steps 5 and --max-tokens 6 disagree/, 2);
    expectOneLineError(airllm(['generate', '--max-tokens', 'x']), /--max-tokens: expected a whole number/, 2);
  });

  it('--stop: the streamed text ends before the stop string, and a tail held back as its possible start is printed when the steps run out', async () => {
    const want = await ref.completion('Once upon a time', 30);
    const word = want.text.trim().split(/\s+/)[4]!;
    const stopped = airllmRef(['generate', 'Once upon a time', '-n', '30', '--no-echo', '--stop', word]);
    expect(stopped.stdout).toBe(`${want.text.slice(0, want.text.indexOf(word))}\n`);
    // Starts with the answer's last characters: held back until the 30 steps end, then printed.
    const held = airllmRef(['generate', 'Once upon a time', '-n', '30', '--no-echo', '--stop', `${want.text.slice(-3)}\u0007never`]);
    expect(held.stdout).toBe(`${want.text}\n`);
  });

  it('the same seed reproduces a sampled story; --stats prints figures on stderr', () => {
    const a = airllm(['generate', 'Tom', '-n', '20', '--temperature', '1', '--seed', '7', '--stats']);
    const b = airllm(['generate', 'Tom', '-n', '20', '--temperature', '1', '--seed', '7']);
    expect(a.stdout).toBe(b.stdout);
    expect(a.stderr).toMatch(/20 tokens \(length\), prefill [\d.]+ tok\/s, decode [\d.]+ tok\/s, load wait \d+ ms, compute \d+ ms, disk .*, peak RSS/);
  });

  it('bad input: one line, non-zero exit, a stack only with --debug', () => {
    expectOneLineError(airllm(['generate', '--model', '/nonexistent/model.m']), /\/nonexistent\/model\.m/);
    expectOneLineError(airllm(['generate', '--steps', 'lots']), /--steps: expected a whole number/, 2);
    expectOneLineError(airllm(['generate', '--temperature', '-1']), /--temperature: expected a number in \[0, 100\]/, 2);
    expectOneLineError(airllm(['generate', 'a', '--prompt', 'b']), /one way/, 2);
    expectOneLineError(airllm(['generate', '--prompt-file', '/nonexistent.txt']), /cannot read the prompt from \/nonexistent\.txt/);
    expectOneLineError(airllm(['frobnicate']), /unknown command 'frobnicate'/);
    const d = airllm(['generate', '--debug', '--model', '/nonexistent/model.m']);
    expect(d.code).not.toBe(0);
    expect(d.stderr).toMatch(/^airllm: .*\n[^]*\n\s+at /);
  });
});

describe('files that are not what they claim (issue #24)', () => {
  it('-t /dev/zero is refused at once, not read without end', () => {
    // Without the check this read grew by gigabytes until the timeout ended it.
    const r = spawnSync(process.execPath, [BIN, 'generate', '-t', '/dev/zero', '-n', '2', 'x'], { encoding: 'utf8', timeout: 30_000 });
    expectOneLineError({ code: r.status, stdout: r.stdout, stderr: r.stderr }, /^airllm: \/dev\/zero: not a regular file \(a device, pipe or socket\), not a tokenizer file$/);
  });

  it('a prompt from a file or stdin that never ends is cut off at 16 MiB', () => {
    const f = spawnSync(process.execPath, [BIN, 'generate', '-f', '/dev/zero', '-n', '2'], { encoding: 'utf8', timeout: 30_000 });
    expectOneLineError({ code: f.status, stdout: f.stdout, stderr: f.stderr }, /^airllm: the prompt from \/dev\/zero is longer than 16 MiB$/);
    const s = spawnSync(process.execPath, [BIN, 'generate', '-', '-n', '2'], { encoding: 'utf8', timeout: 30_000, input: 'a'.repeat((16 << 20) + 1) });
    expectOneLineError({ code: s.status, stdout: s.stdout, stderr: s.stderr }, /^airllm: the prompt from stdin is longer than 16 MiB$/);
  });

  it('a directory, a malformed .t and an unreadable file: one line naming the path', () => {
    const dir = mkdtempSync(join(tmpdir(), 'airllm-cli-files-'));
    try {
      expectOneLineError(airllm(['generate', '-t', dir, '-n', '2', 'x']), new RegExp(`^airllm: ${dir}: is a directory, not a tokenizer file$`));
      const bad = join(dir, 'bad.t');
      writeFileSync(bad, 'garbage!');
      expectOneLineError(airllm(['generate', '-t', bad, '-n', '2', 'x']), new RegExp(`^airllm: ${bad}, field magic, byte offset 0: not a Distributed-Llama tokenizer file`));
      // EACCES: as root, chmod alone does not deny a read, so the command runs without root's
      // capabilities (util-linux's setpriv), still as root, so a checkout in a private folder works.
      chmodSync(dir, 0o755);
      const tok = join(dir, 'locked.t');
      const model = join(dir, 'locked.m');
      copyFileSync(TOKENIZER, tok);
      copyFileSync(MODEL, model);
      chmodSync(tok, 0);
      chmodSync(model, 0);
      const withoutCaps = process.getuid?.() === 0 ? ['setpriv', '--bounding-set=-all', '--inh-caps=-all', '--'] : [];
      const locked = (args: string[]): ReturnType<typeof airllm> => {
        const [cmd, ...pre] = [...withoutCaps, process.execPath, BIN];
        const r = spawnSync(cmd!, [...pre, ...args], { encoding: 'utf8', timeout: 60_000 });
        return { code: r.status, stdout: r.stdout, stderr: r.stderr };
      };
      expectOneLineError(locked(['generate', '-t', tok, '-n', '2', 'x']), new RegExp(`^airllm: ${tok}: cannot open the tokenizer: permission denied$`));
      expectOneLineError(locked(['generate', '-m', model, '-t', TOKENIZER, '-n', '2', 'x']), new RegExp(`^airllm: ${model}: permission denied$`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('bench', () => {
  it('--json: prefill and decode figures, split into load wait and compute', () => {
    const r = airllm(['bench', '--steps', '16', '--runs', '1', '--threads', '1', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as {
      promptTokens: number;
      steps: number;
      prefill: Record<string, number>;
      decode: Record<string, number>;
      peakRssBytes: number;
      modelBytes: number;
    };
    expect(j.steps).toBe(16);
    expect(j.decode.tokens).toBe(16);
    expect(j.prefill.tokens).toBe(j.promptTokens);
    for (const phase of [j.prefill, j.decode]) {
      expect(phase.tokensPerSecond).toBeGreaterThan(0);
      // The split accounts for the time per token: wait + compute never exceed the whole.
      expect(phase.loadWaitMsPerToken + phase.computeMsPerToken).toBeLessThanOrEqual(phase.msPerToken * 1.05 + 0.05);
      expect(phase.computeMsPerToken).toBeGreaterThan(0);
      expect(phase.diskBytesPerToken).toBeGreaterThanOrEqual(0);
    }
    expect(j.peakRssBytes).toBeGreaterThan(j.modelBytes);
  });

  it('prints a table for people', () => {
    const r = airllm(['bench', '--steps', '8', '--runs', '1', '--threads', '1']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/phase\s+tokens\s+tok\/s\s+ms\/token\s+load wait ms\/tok\s+compute ms\/tok\s+disk\/token/);
    expect(r.stdout).toMatch(/^prefill\s+\d+/m);
    expect(r.stdout).toMatch(/^decode\s+8\s/m);
    expect(r.stdout).toMatch(/peak RSS/);
  });
});

/** A running `airllm chat`, read up to each "> " prompt. */
class ChatProcess {
  readonly child: ChildProcessWithoutNullStreams;
  out = '';
  err = '';
  #read = 0;
  readonly exited: Promise<number | null>;

  constructor(args: string[]) {
    // Reference kernels and one thread keep answers slow enough (~ms per token) to interrupt.
    this.child = spawn(process.execPath, [BIN, 'chat', '--threads', '1', '--kernels', 'reference', ...args], { stdio: 'pipe' });
    this.child.stdout.setEncoding('utf8').on('data', (d: string) => (this.out += d));
    this.child.stderr.setEncoding('utf8').on('data', (d: string) => (this.err += d));
    this.exited = new Promise((r) => this.child.on('exit', (code) => r(code)));
  }

  /** Everything printed since the last call up to `pattern` (excluded), once it appears. */
  async waitFor(pattern: RegExp | string, ms = 30_000): Promise<string> {
    const end = Date.now() + ms;
    for (;;) {
      const fresh = this.out.slice(this.#read);
      const m = typeof pattern === 'string' ? fresh.indexOf(pattern) : fresh.search(pattern);
      if (m >= 0) {
        const len = typeof pattern === 'string' ? pattern.length : fresh.slice(m).match(pattern)![0].length;
        this.#read += m + len;
        return fresh.slice(0, m);
      }
      if (Date.now() > end) throw new Error(`timed out waiting for ${String(pattern)}; stdout: ${JSON.stringify(this.out)} stderr: ${this.err}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  send(line: string): void {
    this.child.stdin.write(`${line}\n`);
  }
}

describe('chat', () => {
  it('answers with the template-formatted conversation, remembers it, /reset forgets it; /exit quits', async () => {
    const c = new ChatProcess(['--temperature', '0', '--steps', '30', '--system', 'Tell stories.']);
    await c.waitFor('> ');
    c.send('Hello');
    const first = await c.waitFor('> ');
    const sys = { role: 'system' as const, content: 'Tell stories.' };
    const a1 = await ref.chat([sys, { role: 'user', content: 'Hello' }], 30);
    expect(first).toBe(`${a1.text}\n${a1.finishReason === 'length' ? '[cut at the length limit]\n' : ''}`);
    // The second turn sees the first one.
    c.send('What next?');
    const second = await c.waitFor('> ');
    const a2 = await ref.chat([sys, { role: 'user', content: 'Hello' }, { role: 'assistant', content: a1.text }, { role: 'user', content: 'What next?' }], 30);
    expect(second.startsWith(`${a2.text}\n`)).toBe(true);
    c.send('/reset');
    expect(await c.waitFor('> ')).toBe('(conversation cleared)\n');
    c.send('Hello');
    expect(await c.waitFor('> ')).toBe(first);
    c.send('/nonsense');
    expect(await c.waitFor('> ')).toMatch(/unknown command \/nonsense/);
    c.send('/exit');
    expect(await c.exited).toBe(0);
  });

  it('Ctrl-C (SIGINT) stops the answer, not the session; Ctrl-C twice at the prompt quits', async () => {
    const c = new ChatProcess(['--temperature', '0', '--steps', '400']);
    await c.waitFor('> ');
    const start = c.out.length;
    c.send('Tell me a long story.');
    await c.waitFor(/\S/); // the answer has begun
    c.child.kill('SIGINT');
    await c.waitFor('> ');
    const stopped = c.out.slice(start, -2);
    expect(stopped).toMatch(/\n\[stopped\]\n$/);
    const full = await ref.chat([{ role: 'user', content: 'Tell me a long story.' }], 400);
    // What was printed is the start of the full answer, cut short.
    const partial = stopped.replace(/\n\[stopped\]\n$/, '');
    expect(full.text.startsWith(partial)).toBe(true);
    expect(partial.length).toBeLessThan(full.text.length);
    // The session goes on.
    c.send('/reset');
    expect(await c.waitFor('> ')).toBe('(conversation cleared)\n');
    c.child.kill('SIGINT');
    expect(await c.waitFor('> ')).toMatch(/press Ctrl-C again/);
    c.child.kill('SIGINT');
    expect(await c.exited).toBe(0);
  });

  it('Ctrl-D (end of input) ends the session after the last answer', async () => {
    const r = airllmRef(['chat', '--temperature', '0', '--steps', '10'], 'Hi\n');
    expect(r.code, r.stderr).toBe(0);
    const a = await ref.chat([{ role: 'user', content: 'Hi' }], 10);
    expect(r.stdout.startsWith(`> ${a.text}\n`)).toBe(true);
    const m = airllmRef(['chat', '--temperature', '0', '--max-tokens', '10'], 'Hi\n');
    expect(m.stdout).toBe(r.stdout);
  });

  it('an unknown chat template is a one-line error', () => {
    expectOneLineError(airllm(['chat', '--chat-template', 'vicuna'], ''), /unknown chat template "vicuna".*--chat-template llama2\|llama3\|chatml/, 2);
  });
});

describe('serve (as a child process)', () => {
  it('prints its address with --json, answers, and shuts down cleanly on SIGTERM', async () => {
    const child = spawn(process.execPath, [BIN, 'serve', '--port', '0', '--json', '--threads', '1', '--kernels', 'reference'], { stdio: 'pipe' });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const end = Date.now() + 30_000;
    while (!out.includes('\n')) {
      if (Date.now() > end) throw new Error(`serve did not start: ${err}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const info = JSON.parse(out.split('\n')[0]!) as { url: string; port: number; model: string };
    expect(info.model).toBe('stories260K');
    expect(info.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const r = await fetch(`${info.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: 'Once upon a time', max_tokens: 12, temperature: 0 }) });
    const j = (await r.json()) as { choices: { text: string }[] };
    expect(j.choices[0]!.text).toBe((await ref.completion('Once upon a time', 12)).text);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(err).toBe('');
  });

  it('a port in use is a one-line error', async () => {
    const { createServer } = await import('node:net');
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
    const port = (blocker.address() as { port: number }).port;
    try {
      expectOneLineError(airllm(['serve', '--port', String(port), '--threads', '1']), /EADDRINUSE/);
    } finally {
      blocker.close();
    }
  });
});
