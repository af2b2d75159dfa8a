/**
 * The airllm side of a scenario, run inside a child process (see child.ts): one engine, the
 * job's tasks in order, figures back to the parent.
 */
import { FloatType, layerTensor, readModelFile, type ModelLayout } from '@airllm/format';
import { LayerWiseInferenceEngine, type GenerationResult, type TraceEvent } from '@airllm/engine';
import { loadBackend, referenceBackend, type KernelBackend, type NativeBackend } from '@airllm/kernels';
import { diskReadBytes, dropFileCache, memoryStatus, MemoryMappedWeights, nativeAddon, resetPeakRss } from '@airllm/loader';
import type {
  AirllmJob,
  AirllmResult,
  BatchResult,
  BatchTask,
  GenerateResult,
  GenerateRun,
  GenerateTask,
  KernelProbeResult,
  KernelProbeTask,
  StepRecord,
  StepsResult,
  StepsTask,
  VerifyResult,
  VerifyTask,
  TaskResult,
} from './protocol.js';
import type { SessionControl } from './child.js';
import { Prng, median } from './stats.js';
import { FIRST_WORD_TOKEN } from './tokenizer.js';

type Log = (line: string) => void;
const now = (): number => performance.now();

export async function runAirllmJob(job: AirllmJob, log: Log, control?: SessionControl): Promise<AirllmResult> {
  const rng = new Prng(job.seed);
  if (job.coldStart) dropFileCache(job.modelPath);
  const baselineRss = memoryStatus()?.rss ?? 0;
  resetPeakRss();
  const t0 = now();
  let memoryPlan: string | undefined;
  const engine = new LayerWiseInferenceEngine(job.modelPath, {
    mode: job.engine.mode,
    maxMemory: job.engine.maxMemory,
    threads: job.engine.threads,
    maxSeqLen: job.engine.maxSeqLen,
    batchSize: job.engine.batchSize,
    maxSequences: job.engine.maxSequences,
    activations: job.engine.activations,
    kernels: 'native',
    trace: job.engine.trace,
    // No tokenizer: every scenario feeds token ids (as the llama.cpp peer does).
    tokenizerPath: undefined,
    onMemoryPlan: (line) => {
      memoryPlan = line;
      log(line);
    },
  });
  const trace: TraceEvent[] = [];
  const results: TaskResult[] = [];
  try {
    const disk0 = diskReadBytes() ?? 0;
    await engine.initialize();
    const initMs = now() - t0;
    if (job.warmup) await engine.warmup();
    const readyAtMs = now();
    const warmupMs = readyAtMs - t0 - initMs;
    const warmupDiskBytes = (diskReadBytes() ?? 0) - disk0;
    const mode = engine.memoryMode;
    log(`${job.label}: engine ready in ${((initMs + warmupMs) / 1000).toFixed(1)} s (${job.engine.mode}${mode !== job.engine.mode ? ` → ${mode}` : ''}, ${job.engine.threads} threads)`);
    const prompt = (n: number): number[] => Array.from({ length: n }, () => FIRST_WORD_TOKEN + rng.below(engine.header.vocabSize - FIRST_WORD_TOKEN));
    for (const task of job.tasks) {
      switch (task.kind) {
        case 'generate':
          results.push(await generateTask(engine, task, prompt, trace, log, job.label, control));
          break;
        case 'batch':
          results.push(await batchTask(engine, task, prompt, log, job.label));
          break;
        case 'steps':
          results.push(await stepsTask(engine, job, task, prompt, trace, log, warmupDiskBytes));
          break;
        case 'kernel-probe':
          results.push(await kernelProbe(job, task, log));
          break;
        case 'verify':
          results.push(await verifyTask(engine, job, task, prompt, log));
          break;
      }
    }
    const m = memoryStatus();
    return { kind: 'airllm', label: job.label, initMs, warmupMs, readyAtMs, mode, memoryPlan, memory: { peakRss: m?.peakRss ?? 0, baselineRss }, tasks: results, trace };
  } finally {
    await engine.cleanup();
  }
}

async function consume(gen: AsyncGenerator<unknown, GenerationResult[] | GenerationResult>): Promise<GenerationResult[]> {
  for (;;) {
    const r = await gen.next();
    if (r.done) return Array.isArray(r.value) ? r.value : [r.value];
  }
}

function runOf(r: GenerationResult): GenerateRun {
  const s = r.stats;
  return {
    promptTokens: s.promptTokens,
    generatedTokens: s.generatedTokens,
    prefillMs: s.prefillMs,
    decodeMs: s.decodeMs,
    prefillTokensPerSecond: s.prefillTokensPerSecond,
    decodeTokensPerSecond: s.decodeTokensPerSecond,
    loadWaitMs: s.loadWaitMs,
    computeMs: s.computeMs,
    diskBytesRead: s.diskBytesRead,
  };
}

async function generateTask(
  engine: LayerWiseInferenceEngine,
  task: GenerateTask,
  prompt: (n: number) => number[],
  trace: TraceEvent[],
  log: Log,
  label: string,
  control: SessionControl | undefined,
): Promise<GenerateResult> {
  const opts = (maxTokens: number) => ({ maxTokens, temperature: 0, stopAtEos: false });
  // Untimed warm-up that also calibrates: first touches, JIT, then the per-token costs.
  const calN = Math.min(task.promptTokens, 8);
  const [cal] = await consume(engine.generate(prompt(calN), opts(3)));
  const tPre = cal!.stats.prefillMs / calN;
  const tDec = cal!.stats.decodeMs / Math.max(1, cal!.stats.generatedTokens - 1);
  let { runs, promptTokens: n, decodeTokens: m } = task;
  let note = 'as planned';
  const planned = (r: number, pn: number, dm: number): number => (r * (pn * tPre + dm * tDec)) / 1000;
  if (planned(runs, n, m) > task.budgetSeconds) {
    runs = Math.max(2, Math.min(runs, Math.floor(task.budgetSeconds / planned(1, n, m))));
    const f = Math.min(1, task.budgetSeconds / planned(runs, n, m));
    n = Math.max(task.minTokens, Math.floor(n * f));
    m = Math.max(task.minTokens, Math.floor(m * f));
    note = `shrunk to fit ${task.budgetSeconds} s: warm-up measured ${tPre.toFixed(0)} ms per prompt token (8-token prompt), ${tDec.toFixed(0)} ms per decoded token`;
  }
  const out: GenerateRun[] = [];
  let kept: readonly TraceEvent[] = [];
  const once = async (): Promise<GenerateRun> => {
    engine.trace.clear();
    const [res] = await consume(engine.generate(prompt(n), opts(m)));
    if (res!.stats.cachedPromptTokens !== 0) throw new Error('prompt prefix was reused from the KV cache: runs would not be comparable');
    const run = runOf(res!);
    out.push(run);
    log(`${label}: run ${out.length}: prefill ${run.prefillTokensPerSecond.toFixed(2)} tok/s (${n} tokens), decode ${run.decodeTokensPerSecond.toFixed(2)} tok/s (${m} tokens)`);
    // Keep the latest run's trace (a session's last run is only known at 'finish').
    if (task.traceLast) kept = engine.trace.events.slice();
    return run;
  };
  if (task.session && control) {
    control.ready({ promptTokens: n, decodeTokens: m, note });
    while ((await control.next()) === 'run') control.ran(await once());
  } else {
    for (let r = 0; r < runs; r++) await once();
  }
  trace.push(...kept);
  engine.trace.clear();
  return { kind: 'generate', promptTokens: n, decodeTokens: m, runs: out, note };
}

async function batchTask(engine: LayerWiseInferenceEngine, task: BatchTask, prompt: (n: number) => number[], log: Log, label: string): Promise<BatchResult> {
  const bySequences: { sequences: number; decodeTokensPerSecond: number[]; prefillTokensPerSecond: number[] }[] = [];
  const start = now();
  for (const s of task.sequences) {
    const entry = { sequences: s, decodeTokensPerSecond: [] as number[], prefillTokensPerSecond: [] as number[] };
    bySequences.push(entry);
    for (let r = 0; r < task.runs; r++) {
      // At least one run per size; more only while the budget lasts.
      if (r > 0 && (now() - start) / 1000 > task.budgetSeconds) break;
      engine.trace.clear();
      const res = await consume(engine.generateBatch(Array.from({ length: s }, () => prompt(task.promptTokens)), { maxTokens: task.decodeTokens, temperature: 0, stopAtEos: false }));
      const st = res[0]!.stats;
      entry.decodeTokensPerSecond.push(st.decodeTokensPerSecond);
      entry.prefillTokensPerSecond.push(st.prefillTokensPerSecond);
      log(`${label}: batch of ${s}: decode ${st.decodeTokensPerSecond.toFixed(2)} tok/s aggregate, prefill ${st.prefillTokensPerSecond.toFixed(1)} tok/s`);
    }
  }
  engine.trace.clear();
  return { kind: 'batch', promptTokens: task.promptTokens, decodeTokens: task.decodeTokens, bySequences };
}

function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

/** Thread 0's compute and load-wait ms among trace events [from, to). */
function threadZero(events: readonly TraceEvent[], from: number): { computeMs: number; loadWaitMs: number } {
  let computeMs = 0;
  let loadWaitMs = 0;
  for (let i = from; i < events.length; i++) {
    const e = events[i]!;
    if (e.tid !== 0) continue;
    if (e.cat === 'compute') computeMs += (e.dur ?? 0) / 1000;
    else if (e.cat === 'load-wait') loadWaitMs += (e.dur ?? 0) / 1000;
  }
  return { computeMs, loadWaitMs };
}

async function stepsTask(
  engine: LayerWiseInferenceEngine,
  job: AirllmJob,
  task: StepsTask,
  prompt: (n: number) => number[],
  trace: TraceEvent[],
  log: Log,
  warmupDiskBytes: number,
): Promise<StepsResult> {
  if (!job.engine.trace) throw new Error('steps tasks need the engine trace (per-step compute and load waits)');
  const events = engine.trace.events;
  engine.trace.clear();
  // Pinned layers are mapped, not locked: under page-cache pressure the kernel may still reclaim
  // their pages. A second mapping of the file lets mincore say how much of them is cached.
  const layout = engine.layout;
  const pinnedRanges = engine
    .residencyStats()
    .perSegment.filter((p) => p.pinned)
    .flatMap((p) => (p.kind === 'head' ? layout.head : layout.layers[p.layer]!).extents);
  const addon = nativeAddon();
  // Only mapped pinned layers (mmap backend) are file pages; the read backend's are anonymous memory.
  const mapped = engine.residencyStats().backend === 'mmap';
  const probe = mapped && pinnedRanges.length > 0 && addon ? await new MemoryMappedWeights(job.modelPath, { backend: 'mmap' }).open() : undefined;
  const pinnedCached = (): number | undefined => {
    const map = probe?.mapping;
    if (!map || !addon) return undefined;
    return pinnedRanges.reduce((a, r) => a + addon.residentBytes(map, r.offset, r.size), 0);
  };
  // Disk bytes and time are counted from the end of the previous step, so what the prefetcher
  // reads between steps (the next pass's first layer, read-ahead) is charged to the step that
  // uses it; the cache drop's own time is taken out.
  let lastDisk = diskReadBytes() ?? 0;
  let lastEnd = now();
  let dropMs = 0;
  const step = async (tokens: number[], pos: number, keep: boolean): Promise<{ rec: StepRecord; next: number }> => {
    let drop: TraceEvent | undefined;
    if (task.dropCache) {
      const d = now();
      dropFileCache(job.modelPath);
      const e = now();
      dropMs += e - d;
      const us = (t: number): number => (performance.timeOrigin + t) * 1000;
      drop = { name: 'evict the model file from the page cache (harness, not timed)', cat: 'harness', ph: 'X', ts: us(d), dur: us(e) - us(d), pid: 1, tid: 'harness' };
    }
    const cachedPinned = pinnedCached();
    const mark = events.length;
    const startDrop = dropMs;
    const logits = await engine.forward(tokens, pos);
    const next = argmax(logits);
    const end = now();
    const disk = diskReadBytes() ?? 0;
    const ms = end - lastEnd - (dropMs - startDrop);
    const diskBytes = disk - lastDisk;
    lastEnd = end;
    lastDisk = disk;
    const split = threadZero(events, mark);
    if (keep) trace.push(...(drop ? [drop] : []), ...events.slice(mark));
    events.length = mark;
    return { rec: { tokens: tokens.length, ms, diskBytes, pinnedCachedBytes: cachedPinned, ...split }, next };
  };
  const p = prompt(task.promptTokens);
  const first = await step(p, 0, false);
  const promptEndAtMs = now();
  log(`${job.label}: prompt step (${p.length} tokens) ${(first.rec.ms / 1000).toFixed(2)} s, ${(first.rec.diskBytes / 1e6).toFixed(0)} MB from disk`);
  const decode: StepRecord[] = [];
  let token = first.next;
  let pos = p.length;
  const start = now();
  for (let i = 0; i < task.decodeSteps; i++) {
    if (i >= task.minSteps && (now() - start) / 1000 > task.budgetSeconds) break;
    const s = await step([token], pos++, i < task.traceSteps);
    decode.push(s.rec);
    token = s.next;
    log(`${job.label}: step ${i + 1}: ${s.rec.ms.toFixed(0)} ms, ${(s.rec.diskBytes / 1e6).toFixed(0)} MB from disk, waited ${s.rec.loadWaitMs.toFixed(0)} ms, computed ${s.rec.computeMs.toFixed(0)} ms`);
  }
  probe?.close();
  const st = engine.residencyStats();
  log(`${job.label}: median step ${median(decode.map((d) => d.ms)).toFixed(0)} ms; pinned ${(st.pinnedBytes / 1e6).toFixed(0)} MB of plan ${(st.plannedBytes / 1e6).toFixed(0)} MB`);
  return { kind: 'steps', prompt: first.rec, promptEndAtMs, decode, pinnedBytes: st.pinnedBytes, plannedBytes: st.plannedBytes, slotBytes: st.slotBytes, slots: st.slots, streamBytes: st.streamBytes, warmupDiskBytes, dropCacheMs: dropMs };
}

async function verifyTask(engine: LayerWiseInferenceEngine, job: AirllmJob, task: VerifyTask, prompt: (n: number) => number[], log: Log): Promise<VerifyResult> {
  const tokens = prompt(task.rows);
  const manyMs: number[] = [];
  const oneMs: number[] = [];
  const pass = async (n: number): Promise<number> => {
    if (task.dropCache) dropFileCache(job.modelPath);
    const t = now();
    await engine.forwardBatch([{ slot: 0, pos: 0, tokens: tokens.slice(0, n), allLogits: n > 1 }]);
    return now() - t;
  };
  for (let i = 0; i < task.repeats; i++) {
    // Alternate the order, so a drift of the disk's speed weighs on both alike.
    for (const n of i % 2 === 0 ? [task.rows, 1] : [1, task.rows]) (n === 1 ? oneMs : manyMs).push(await pass(n));
    log(`${job.label}: pass of ${task.rows} rows ${manyMs.at(-1)!.toFixed(0)} ms, of 1 row ${oneMs.at(-1)!.toFixed(0)} ms`);
  }
  return { kind: 'verify', rows: task.rows, manyMs, oneMs };
}

/** The backend the engine's workers load for kernels: 'native' (the reference one if the addon is missing). */
function backendLabel(b: KernelBackend): string {
  return b.name === 'native' ? `native-${(b as NativeBackend).path}` : b.name;
}

/**
 * One layer's seven matmuls (and the classifier) on one thread, with the engine's activation
 * numerics: the floor of a layer's compute before barriers, attention, norms and imbalance.
 */
async function kernelProbe(job: AirllmJob, task: KernelProbeTask, log: Log): Promise<KernelProbeResult> {
  const { layout } = readModelFile(job.modelPath);
  const preferred = loadBackend('native');
  const backends: { b: KernelBackend; rows: readonly number[] }[] = [{ b: preferred, rows: task.rows }];
  // The reference backend only at one row: it is 20–60× slower, and one figure is enough to
  // recognise it in the engine's per-layer compute times.
  if (preferred.name !== 'reference') backends.push({ b: referenceBackend, rows: [1] });
  const weights = await new MemoryMappedWeights(job.modelPath).open();
  try {
    const view = (name: string): Uint8Array => weights.tensorView(layout.tensor(name)) as Uint8Array;
    const layerNames = ['q', 'k', 'v', 'wo', 'w1', 'w2', 'w3'].map((k) => layerTensor(layout, 0, k as 'q').name);
    const q80 = job.engine.activations === 'q80';
    const layerMatmulMs: { backend: string; rows: number; ms: number }[] = [];
    const headMatmulMs: { backend: string; rows: number; ms: number }[] = [];
    for (const { b, rows } of backends) {
      for (const r of rows) {
        const repeats = b.name === 'reference' ? 1 : 3;
        layerMatmulMs.push({ backend: backendLabel(b), rows: r, ms: timeMatmuls(layout, view, b, q80, r, layerNames, repeats) });
        headMatmulMs.push({ backend: backendLabel(b), rows: r, ms: timeMatmuls(layout, view, b, q80, r, [layout.wcls.name], repeats) });
        log(`${job.label}: kernels ${backendLabel(b)}, ${r} row(s): one layer's matmuls ${layerMatmulMs.at(-1)!.ms.toFixed(1)} ms, classifier ${headMatmulMs.at(-1)!.ms.toFixed(1)} ms (1 thread)`);
      }
    }
    return { kind: 'kernel-probe', layerMatmulMs, headMatmulMs, preferred: backendLabel(preferred) };
  } finally {
    weights.close();
  }
}

function timeMatmuls(layout: ModelLayout, view: (name: string) => Uint8Array, b: KernelBackend, q80: boolean, rows: number, names: readonly string[], repeats: number): number {
  const h = layout.header;
  const maxIn = Math.max(h.dim, h.qDim, h.ffDim);
  const maxOut = Math.max(h.dim, h.qDim, h.ffDim, h.vocabSize);
  const x = new Float32Array(rows * maxIn);
  for (let i = 0; i < x.length; i++) x[i] = Math.sin(i) * 0.5;
  const xq = new Uint8Array(((rows * maxIn) / 32) * 34);
  const out = new Float32Array(rows * maxOut);
  const once = (): number => {
    const t0 = now();
    for (const name of names) {
      const t = layout.tensor(name);
      const [nOut, nIn] = t.shape as [number, number];
      if (q80) {
        b.quantizeQ80(xq, x, nIn, 0, rows);
        b.matmulQ80(t.dtype, out, xq, view(name), nIn, nOut, rows, 0, nOut);
      } else b.matmul(t.dtype, out, x, view(name), nIn, nOut, rows, 0, nOut);
    }
    return now() - t0;
  };
  once();
  return median(Array.from({ length: repeats }, once));
}

