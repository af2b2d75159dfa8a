/**
 * A bounded soak of `airllm serve` (measured, not a test): N clients for T seconds against a
 * server in its own process. Each client loops over requests of these kinds:
 *   - stream (most): a streaming chat or completion, read to the end; it must be well formed
 *     (chunks, one finish_reason per choice, `data: [DONE]` last);
 *   - cancel: a streaming request dropped after a few chunks;
 *   - malformed: invalid JSON, a wrong field, a body over --max-body, an unknown path, a wrong
 *     method, a foreign Origin or Host, a body cut off mid-send: each must get its 4xx (or, for the
 *     cut body, nothing), never a 5xx.
 * One request of each kind warms the server up first (not counted). A thread of its own asks
 * /health every 50 ms. At the end it prints requests by kind, unexpected
 * errors, latency p50/p99 of the streams, time to first token, /health latency (max and when,
 * p99, p50, checks over 100 ms), and the server's RSS (sampled every second: start, quarters,
 * end). Exits 1 on any unexpected error.
 *
 *   npm run soak -w @airllm/cli -- --clients 32 --seconds 60 [--parallel 4] [--threads n] [--model m.m] [--json]
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';

const { values: opt } = parseArgs({
  options: {
    clients: { type: 'string', default: '32' },
    seconds: { type: 'string', default: '60' },
    parallel: { type: 'string', default: '4' },
    threads: { type: 'string' },
    model: { type: 'string' },
    'cancel-share': { type: 'string', default: '0.15' },
    'malformed-share': { type: 'string', default: '0.15' },
    json: { type: 'boolean', default: false },
  },
});
const clients = Number(opt.clients);
const seconds = Number(opt.seconds);
const cancelShare = Number(opt['cancel-share']);
const malformedShare = Number(opt['malformed-share']);
for (const [k, v] of Object.entries({ clients, seconds, cancelShare, malformedShare })) {
  if (!Number.isFinite(v) || v < 0) throw new Error(`--${k} must be a number ≥ 0`);
}
const MAX_BODY = 64 * 1024;
const bin = new URL('../bin/airllm.js', import.meta.url).pathname;
const model = opt.model ?? new URL('../models/stories260K.m', import.meta.url).pathname;

const child = spawn(
  process.execPath,
  [
    ...[bin, 'serve', '-m', model, '--port', '0', '--json', '--parallel', opt.parallel, '--max-queue', String(Math.max(32, clients * 2)), '--max-body', String(MAX_BODY), '--grace', '1'],
    ...(opt.threads !== undefined ? ['--threads', opt.threads] : []),
  ],
  { stdio: ['ignore', 'pipe', 'inherit'] },
);
const exited = new Promise((r) => child.once('exit', r));
const ready = await new Promise((resolve, reject) => {
  child.once('exit', (code) => reject(new Error(`serve exited (${code})`)));
  createInterface({ input: child.stdout }).once('line', (l) => resolve(JSON.parse(l)));
});
const url = ready.url;
const { port } = new URL(url);

/** The server's resident set in MB (Linux /proc), or NaN elsewhere. */
function rssMb() {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

const poller = new Worker(new URL('./health-poller.mjs', import.meta.url), { workerData: { url, everyMs: 50 } });
/** /health checks: when (s into the run; negative: before it) and how long each took. */
const health = [];
let lastHealth;
let runStart = performance.now();
poller.on('message', (m) => {
  health.push({ t: (m.at - performance.timeOrigin - runStart) / 1000, ms: m.ms });
  if (m.status !== 200) unexpected('health', `/health answered ${m.status} ${m.error ?? ''}`);
  else lastHealth = m.health;
});

const counts = { stream: 0, cancel: 0, malformed: 0 };
const errors = [];
const latencies = [];
const ttfts = [];
function unexpected(kind, what) {
  errors.push(`${kind}: ${what}`);
}

const prompts = ['Once upon a time', 'The little dog', 'Lily wanted to', 'One day, a cat', 'Tom and Sue went'];
const pick = (xs) => xs[Math.floor(Math.random() * xs.length)];
const post = (path, body, headers = {}, signal) =>
  fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body), signal });

/** A streaming request read to its end (or dropped after `dropAfter` chunks). */
async function stream(dropAfter) {
  const chat = Math.random() < 0.5;
  const body = chat
    ? { messages: [{ role: 'user', content: pick(prompts) }], max_tokens: 16 + Math.floor(Math.random() * 48), stream: true }
    : { prompt: pick(prompts), max_tokens: 16 + Math.floor(Math.random() * 48), stream: true };
  const ac = new AbortController();
  const t0 = performance.now();
  const r = await post(chat ? '/v1/chat/completions' : '/v1/completions', body, {}, ac.signal);
  if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${(await r.text()).slice(0, 200)}`);
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  const events = [];
  let first;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let at;
      while ((at = buf.indexOf('\n\n')) >= 0) {
        const e = buf.slice(0, at);
        buf = buf.slice(at + 2);
        if (!e.startsWith('data: ')) throw new Error(`not an SSE data line: ${e.slice(0, 80)}`);
        events.push(e.slice(6));
        if (first === undefined && e.includes(chat ? '"content"' : '"text"')) first = performance.now() - t0;
        if (dropAfter !== undefined && events.length >= dropAfter) {
          ac.abort();
          return 'cancel';
        }
      }
    }
  } catch (e) {
    if (dropAfter !== undefined && ac.signal.aborted) return 'cancel';
    throw e;
  }
  if (dropAfter !== undefined) return 'cancel'; // the answer was shorter than dropAfter events
  if (buf !== '') throw new Error(`stream ended mid-event: ${buf.slice(0, 80)}`);
  if (events.at(-1) !== '[DONE]') throw new Error(`stream did not end with [DONE] (last: ${String(events.at(-1)).slice(0, 120)})`);
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
  if (chunks.some((c) => c.error)) throw new Error(`error event: ${JSON.stringify(chunks.find((c) => c.error))}`);
  const finishes = chunks.filter((c) => c.choices?.[0]?.finish_reason);
  if (finishes.length !== 1) throw new Error(`${finishes.length} finish reasons`);
  latencies.push(performance.now() - t0);
  if (first !== undefined) ttfts.push(first);
  return 'stream';
}

/** A body sent in part, then the connection closed. */
function cutBody() {
  return new Promise((resolve, reject) => {
    const s = connect(Number(port), '127.0.0.1', () => {
      s.write('POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"prompt":"');
      setTimeout(() => s.destroy(), 20);
    });
    s.on('close', () => resolve());
    s.on('error', reject);
  });
}

/** One malformed request and the status it must get. */
async function malformed() {
  const cases = [
    async () => [await post('/v1/completions', '{"prompt": "x",'), 400],
    async () => [await post('/v1/chat/completions', { messages: 'hello' }), 400],
    async () => [await post('/v1/completions', { prompt: 'x', temperature: 'hot' }), 400],
    async () => [await post('/v1/completions', { prompt: 'x'.repeat(MAX_BODY) }), 413],
    async () => [await post('/v1/nothing', { prompt: 'x' }), 404],
    async () => [await fetch(`${url}/v1/completions`), 405],
    async () => [await post('/v1/completions', 'x', { origin: 'https://evil.example', 'content-type': 'text/plain' }), 403],
    async () => [await post('/v1/completions', `{"prompt":${'['.repeat(100)}${']'.repeat(100)}}`), 400],
    async () => {
      await cutBody();
      return [undefined, undefined];
    },
  ];
  const [r, want] = await pick(cases)();
  if (r && r.status !== want) throw new Error(`expected ${want}, got ${r.status}: ${(await r.text()).slice(0, 160)}`);
  if (r) await r.arrayBuffer();
  return 'malformed';
}

// Warm-up, not measured: one request of each kind, so the run sees a server in service (its code
// compiled), not one answering its first requests.
runStart = Infinity;
const warm = (kind, f) => f().catch((e) => unexpected(`warm-up ${kind}`, e instanceof Error ? e.message : String(e)));
await warm('stream', () => stream(undefined));
await warm('cancel', () => stream(2));
await Promise.all(Array.from({ length: 12 }, () => warm('malformed', malformed)));
latencies.length = 0;
ttfts.length = 0;

const rss = [{ t: 0, mb: rssMb() }];
runStart = performance.now();
const end = runStart + seconds * 1000;
const sampler = setInterval(() => rss.push({ t: (performance.now() - runStart) / 1000, mb: rssMb() }), 1000);

await Promise.all(
  Array.from({ length: clients }, async () => {
    while (performance.now() < end) {
      const x = Math.random();
      const kind = x < malformedShare ? 'malformed' : x < malformedShare + cancelShare ? 'cancel' : 'stream';
      try {
        const done = kind === 'malformed' ? await malformed() : await stream(kind === 'cancel' ? 2 + Math.floor(Math.random() * 6) : undefined);
        counts[done]++;
      } catch (e) {
        counts[kind]++;
        unexpected(kind, e instanceof Error ? e.message : String(e));
      }
    }
  }),
);
clearInterval(sampler);
rss.push({ t: (performance.now() - runStart) / 1000, mb: rssMb() });
await new Promise((r) => setTimeout(r, 200));
poller.postMessage('stop');
await new Promise((r) => poller.once('exit', r));
child.kill('SIGTERM');
await exited;

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.floor(s.length * p))];
};
const quarter = (q) => rss[Math.min(rss.length - 1, Math.round((rss.length - 1) * q))];
const result = {
  clients,
  seconds,
  parallel: Number(opt.parallel),
  requests: counts.stream + counts.cancel + counts.malformed,
  byKind: counts,
  unexpectedErrors: errors.length,
  streamLatencyMs: { p50: pct(latencies, 0.5), p99: pct(latencies, 0.99) },
  timeToFirstTokenMs: { p50: pct(ttfts, 0.5), p99: pct(ttfts, 0.99) },
  healthMs: (() => {
    const run = health.filter((h) => h.t >= 0);
    const worst = run.reduce((a, b) => (b.ms > a.ms ? b : a), { t: NaN, ms: -Infinity });
    const ms = run.map((h) => h.ms);
    return { checks: run.length, max: worst.ms, maxAtSecond: worst.t, p99: pct(ms, 0.99), p50: pct(ms, 0.5), over100: ms.filter((x) => x > 100).length };
  })(),
  serverRssMb: { start: rss[0].mb, q1: quarter(0.25).mb, half: quarter(0.5).mb, q3: quarter(0.75).mb, end: rss.at(-1).mb },
  serverCounters: lastHealth && { accepted: lastHealth.accepted, completed: lastHealth.completed, cancelled: lastHealth.cancelled, rejected: lastHealth.rejected, failed: lastHealth.failed, maxBatch: lastHealth.maxBatch },
};
if (opt.json) console.log(JSON.stringify({ ...result, errors: errors.slice(0, 20) }));
else {
  const f = (x) => (Number.isFinite(x) ? x.toFixed(0) : '-');
  const m = result.serverRssMb;
  console.log(`soak: ${clients} clients, ${seconds} s, --parallel ${opt.parallel}${opt.threads !== undefined ? ` --threads ${opt.threads}` : ''}, ${model.split('/').at(-1)}`);
  console.log(`  requests       ${result.requests} (${counts.stream} streams, ${counts.cancel} cancelled, ${counts.malformed} malformed)`);
  console.log(`  unexpected     ${errors.length} errors`);
  console.log(`  stream latency p50 ${f(result.streamLatencyMs.p50)} ms, p99 ${f(result.streamLatencyMs.p99)} ms`);
  console.log(`  first token    p50 ${f(result.timeToFirstTokenMs.p50)} ms, p99 ${f(result.timeToFirstTokenMs.p99)} ms`);
  const h = result.healthMs;
  console.log(`  /health        ${h.checks} checks, max ${f(h.max)} ms (at ${h.maxAtSecond.toFixed(1)} s), p99 ${f(h.p99)} ms, p50 ${f(h.p50)} ms, ${h.over100} over 100 ms`);
  console.log(`  server RSS     start ${m.start.toFixed(0)} MB, 25% ${m.q1.toFixed(0)}, 50% ${m.half.toFixed(0)}, 75% ${m.q3.toFixed(0)}, end ${m.end.toFixed(0)} MB`);
  if (result.serverCounters) console.log(`  server counts  ${JSON.stringify(result.serverCounters)} (warm-up included)`);
  for (const e of errors.slice(0, 20)) console.log(`  ! ${e}`);
}
process.exitCode = errors.length > 0 ? 1 : 0;
