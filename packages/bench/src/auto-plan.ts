/**
 * The automatic memory plan as a user meets it: `mode: 'auto'` with no memory flags (a model
 * larger than memory: the 70B shape), or with a weight budget below the model (the 7B shape,
 * which fits this machine), from a cold page cache in a fresh process. Against the cold read(2)
 * bandwidth of the same file measured in the same run, before and after: the decode step, the
 * pinning at start-up, and the first token from process start.
 */
import { allocateReadBuffer } from '@airllm/loader';
import { mergeDiskProbes, probeDisk, type DiskProbe } from './probes.js';
import type { AirllmResult, StepsResult } from './protocol.js';
import { fmt, type TableRow } from './report.js';
import type { ShapeRun } from './shape-run.js';
import { runChild } from './spawn.js';
import { median, round } from './stats.js';

export interface AutoSummary {
  /** The weight budget given (`maxMemory`), or undefined: no memory flags. */
  readonly budgetBytes: number | undefined;
  readonly mode: string;
  readonly memoryPlan: string | undefined;
  readonly stepBytes: number;
  readonly pinnedBytes: number;
  /** Cold read(2) of the same file, before and after the scenario (every run). */
  readonly disk: DiskProbe;
  /**
   * First touch of fresh anonymous memory (1 GiB, bytes per second), measured before the
   * scenario: pinned layers are read into fresh memory, whose pages the kernel allocates and
   * zeroes as they are first written, so this bounds the pinning throughput too.
   */
  readonly freshMemoryBytesPerSecond: number;
  readonly decodeMsMedian: number;
  readonly decodeMsRuns: readonly number[];
  readonly decodeLoadWaitMsMedian: number;
  readonly decodeComputeMsMedian: number;
  readonly diskBytesPerStepMedian: number;
  /** Engine initialize() without the pinning, and the pinning (warmup). */
  readonly initMs: number;
  readonly warmupMs: number;
  /** From the child process's start: engine ready (pins loaded), first token (prompt step done). */
  readonly readyAtMs: number;
  readonly firstTokenAtMs: number;
  readonly promptTokens: number;
  readonly promptMs: number;
  readonly promptComputeMs: number;
  readonly promptLoadWaitMs: number;
  readonly peakRssBytes: number;
}

/** Run the scenario: auto mode, `budget` as maxMemory (undefined: no flags). */
export async function runAutoPlan(run: ShapeRun, budget: number | undefined, decodeSteps: number): Promise<AutoSummary> {
  const { o, log, layout } = run;
  await run.settle('auto plan');
  const before = probeDisk(run.modelPath, layout.fileSize, 2);
  log(`cold read(2) of the model file: ${before.runs.map((x) => fmt.gbps(x)).join(', ')}`);
  const freshMemoryBytesPerSecond = probeFreshMemory();
  log(`first touch of fresh memory: ${fmt.gbps(freshMemoryBytesPerSecond)}`);
  const res = await runChild<AirllmResult>(
    {
      kind: 'airllm',
      label: 'auto',
      modelPath: run.modelPath,
      engine: run.engine({ mode: 'auto', maxMemory: budget, maxSeqLen: 1 + decodeSteps + 16 }),
      warmup: true,
      coldStart: true,
      seed: o.seed + 4,
      tasks: [{ kind: 'steps', promptTokens: 1, decodeSteps, budgetSeconds: o.quick ? 30 : 600, minSteps: Math.min(2, decodeSteps), dropCache: true, traceSteps: 0 }],
    },
    run.childOpts,
  );
  const disk = mergeDiskProbes(before, probeDisk(run.modelPath, layout.fileSize, 2, { warm: false }));
  log(`cold read(2) after: ${disk.runs.slice(before.runs.length).map((x) => fmt.gbps(x)).join(', ')}`);
  const s = res.tasks[0] as StepsResult;
  return {
    budgetBytes: budget,
    mode: res.mode,
    memoryPlan: res.memoryPlan,
    stepBytes: run.stepBytes,
    pinnedBytes: s.pinnedBytes,
    disk,
    freshMemoryBytesPerSecond,
    decodeMsMedian: median(s.decode.map((d) => d.ms)),
    decodeMsRuns: s.decode.map((d) => round(d.ms, 0)),
    decodeLoadWaitMsMedian: median(s.decode.map((d) => d.loadWaitMs)),
    decodeComputeMsMedian: median(s.decode.map((d) => d.computeMs)),
    diskBytesPerStepMedian: median(s.decode.map((d) => d.diskBytes)),
    initMs: res.initMs,
    warmupMs: res.warmupMs,
    readyAtMs: res.readyAtMs,
    firstTokenAtMs: s.promptEndAtMs,
    promptTokens: s.prompt.tokens,
    promptMs: s.prompt.ms,
    promptComputeMs: s.prompt.computeMs,
    promptLoadWaitMs: s.prompt.loadWaitMs,
    peakRssBytes: res.memory.peakRss,
  };
}

/** Bytes per second of a first write to 1 GiB of fresh memory (the page faults included). */
function probeFreshMemory(): number {
  const bytes = 2 ** 30;
  const t = performance.now();
  new Uint8Array(allocateReadBuffer(bytes)).fill(1);
  return bytes / ((performance.now() - t) / 1000);
}

/**
 * The table's rows of the scenario. Disk bandwidth: the median of the cold read(2) runs around
 * it (the disk drifts minute to minute; the best run is shown beside it).
 */
export function autoRows(shape: TableRow['shape'], a: AutoSummary): TableRow[] {
  const bw = a.disk.medianBytesPerSecond;
  const disk = `read(2) median ${fmt.gbps(bw)} (runs ${a.disk.runs.map((x) => round(x / 1e9, 2)).join(', ')} GB/s)`;
  const rows: TableRow[] = [];
  const flags = a.budgetBytes === undefined ? 'no memory flags' : `--max-memory ${fmt.gb(a.budgetBytes)}`;
  const plan = a.mode === 'stream' ? `stream, ${fmt.gb(a.pinnedBytes)} of ${fmt.gb(a.stepBytes)} pinned` : a.mode;
  const streamed = a.stepBytes - a.pinnedBytes;
  const floorMs = (streamed / bw) * 1000;
  const r = floorMs / a.decodeMsMedian;
  rows.push({
    shape,
    scenario: `auto plan (${flags}): decode s/token vs (model − pinned) ÷ disk`,
    airllm: `${plan}: ${round(a.decodeMsMedian / 1000, 2)} s/token (waits ${fmt.ms(a.decodeLoadWaitMsMedian)}, compute ${fmt.ms(a.decodeComputeMsMedian)}, ${fmt.gb(a.diskBytesPerStepMedian)} from disk)`,
    reference: `${round(floorMs / 1000, 2)} s (${fmt.gb(streamed)} ÷ ${disk})`,
    ratio: r,
    target: '≥ 1/1.1 (s/token ≤ 1.1 × floor)',
    status: a.mode !== 'stream' ? 'info' : r >= 1 / 1.1 ? 'pass' : 'fail',
  });
  if (a.pinnedBytes > 0 && a.mode === 'stream') {
    const pinBps = a.pinnedBytes / (a.warmupMs / 1000);
    const rp = pinBps / bw;
    rows.push({
      shape,
      scenario: 'auto: pinning throughput vs disk',
      airllm: `${fmt.gbps(pinBps)} (${fmt.gb(a.pinnedBytes)} in ${round(a.warmupMs / 1000, 1)} s)`,
      reference: `${disk}; first touch of fresh memory ${fmt.gbps(a.freshMemoryBytesPerSecond)}`,
      ratio: rp,
      target: '≥ 0.9',
      status: rp >= 0.9 ? 'pass' : 'fail',
    });
  }
  const idealMs = (a.stepBytes / bw) * 1000 + a.promptComputeMs;
  const startMs = a.readyAtMs - a.initMs - a.warmupMs;
  rows.push({
    shape,
    scenario: 'auto: cold first token from process start',
    airllm: `${round(a.firstTokenAtMs / 1000, 2)} s: process start  ${round(startMs / 1000, 2)} + init ${round(a.initMs / 1000, 2)} + pinning ${round(a.warmupMs / 1000, 2)} + prompt step ${round(a.promptMs / 1000, 2)} (waits ${round(a.promptLoadWaitMs / 1000, 2)}, compute ${round(a.promptComputeMs / 1000, 2)}) s`,
    reference: `${round(idealMs / 1000, 2)} s = ${fmt.gb(a.stepBytes)} ÷ ${fmt.gbps(bw)} + compute ${round(a.promptComputeMs / 1000, 2)} s`,
    ratio: idealMs / a.firstTokenAtMs,
    target: '—',
    status: 'info',
  });
  return rows;
}
