/**
 * Phase 3 of a shape: streaming from a cold page cache against the disk floor, pipelined
 * against sequential, and the memory-budget sweep (disk bytes per token and peak RSS).
 */
import { ioBreakdown, traceSteps } from './analysis.js';
import { mergeDiskProbes, probeDisk, type DiskProbe } from './probes.js';
import type { AirllmJob, AirllmResult, StepsResult, VerifyResult, VerifyTask } from './protocol.js';
import { fmt, type ResidentSummary, type StepsSummary, type SweepPoint } from './report.js';
import { memAvailable, type ShapeRun } from './shape-run.js';
import { kvBytes } from './shapes.js';
import { runChild } from './spawn.js';
import { median, round } from './stats.js';

export interface StreamingPhase {
  stream: StepsSummary;
  sequential: StepsSummary;
  /** Cold reads of the model file before and after the two streaming scenarios. */
  disk: DiskProbe;
  /** The smallest budget streaming runs with: two of the largest segment. */
  minBudget: number;
}

/** A steps job: a prompt step then decode steps, the page cache dropped before each. */
function stepsJob(
  run: ShapeRun,
  label: string,
  mode: 'stream' | 'sequential',
  budget: number | undefined,
  promptTokens: number,
  decodeSteps: number,
  traceSteps: number,
  seed: number,
  extra: readonly VerifyTask[] = [],
): AirllmJob {
  const o = run.o;
  return {
    kind: 'airllm',
    label,
    modelPath: run.modelPath,
    engine: run.engine({ mode, maxMemory: budget, maxSeqLen: promptTokens + decodeSteps + 16 }),
    warmup: true,
    coldStart: true,
    seed,
    tasks: [{ kind: 'steps', promptTokens, decodeSteps, budgetSeconds: o.quick ? 15 : 120, minSteps: Math.min(2, decodeSteps), dropCache: true, traceSteps }, ...extra],
  };
}

function summarize(run: ShapeRun, r: AirllmResult, mode: 'stream' | 'sequential', budget: number | undefined): StepsSummary {
  const s = r.tasks[0] as StepsResult;
  return {
    mode,
    budgetBytes: budget,
    pinnedBytes: s.pinnedBytes,
    slots: s.slots,
    slotBytes: s.slotBytes,
    streamBytes: s.streamBytes,
    streamedBytesPerStep: run.stepBytes - s.pinnedBytes,
    promptTokens: s.prompt.tokens,
    promptMs: s.prompt.ms,
    promptComputeMs: s.prompt.computeMs,
    promptDiskBytes: s.prompt.diskBytes,
    decodeSteps: s.decode.length,
    decodeMsMedian: median(s.decode.map((d) => d.ms)),
    decodeMsRuns: s.decode.map((d) => round(d.ms, 1)),
    decodeComputeMsMedian: median(s.decode.map((d) => d.computeMs)),
    decodeLoadWaitMsMedian: median(s.decode.map((d) => d.loadWaitMs)),
    diskBytesPerStepMedian: median(s.decode.map((d) => d.diskBytes)),
    peakRssBytes: r.memory.peakRss,
    baselineRssBytes: r.memory.baselineRss,
    io: ioBreakdown(r.trace, traceSteps(r.trace, run.header.nLayers)),
    dropCacheMs: s.dropCacheMs,
    verify: verifySummary(r.tasks.find((t): t is VerifyResult => t.kind === 'verify')),
  };
}

function verifySummary(v: VerifyResult | undefined): StepsSummary['verify'] {
  if (!v) return undefined;
  return { rows: v.rows, manyMs: median([...v.manyMs]), oneMs: median([...v.oneMs]), manyRuns: v.manyMs.map((x) => round(x, 1)), oneRuns: v.oneMs.map((x) => round(x, 1)) };
}

/** Rows one speculative-decoding pass verifies in the bench: the last token and 8 drafted ones. */
const VERIFY_ROWS = 9;

/** Pipelined streaming and sequential (load, then compute), both from a cold cache, between two disk probes. */
export async function runStreaming(run: ShapeRun, resident: ResidentSummary | undefined): Promise<StreamingPhase> {
  const { o, log, layout, name } = run;
  await run.settle('stream');
  const diskBefore = probeDisk(run.modelPath, layout.fileSize, o.quick ? 2 : 3);
  log(`cold sequential read ${fmt.gbps(diskBefore.bytesPerSecond)} (best of ${diskBefore.runs.length})`);
  // Prompt length for the streamed prompt step: enough tokens that computing them takes about
  // as long as reading the weights (the case where overlapping the two pays most).
  const ioMs = (run.stepBytes / diskBefore.bytesPerSecond) * 1000;
  const prefillMsPerToken = resident ? 1000 / resident.prefillTokensPerSecond : 0;
  const streamPrompt = prefillMsPerToken > 0 ? Math.max(1, Math.min(o.quick ? 16 : 64, Math.round(ioMs / prefillMsPerToken))) : 8;
  const minBudget = 2 * Math.max(...run.segs);
  const verify: VerifyTask = { kind: 'verify', rows: VERIFY_ROWS, repeats: o.quick ? 2 : 3, dropCache: true };
  const streamRes = await runChild<AirllmResult>(stepsJob(run, 'stream', 'stream', minBudget, streamPrompt, o.streamSteps, 2, o.seed + 2, [verify]), run.childOpts);
  const stream = summarize(run, streamRes, 'stream', minBudget);
  run.timeline('stream', streamRes.trace, 2, () => true, `${name}: pipelined streaming decode (cold page cache), 2 tokens`, `budget ${fmt.mb(minBudget)}: 2 slots, nothing pinned`);
  await run.settle('sequential');
  const seqRes = await runChild<AirllmResult>(stepsJob(run, 'sequential', 'sequential', undefined, streamPrompt, o.streamSteps, 2, o.seed + 2), run.childOpts);
  const sequential = summarize(run, seqRes, 'sequential', undefined);
  run.timeline('sequential', seqRes.trace, 2, () => true, `${name}: sequential (load, then compute) decode (cold page cache), 2 tokens`, 'one slot, nothing pinned');

  // The disk's speed drifts: probe again after the two streaming scenarios and keep every run.
  const disk = mergeDiskProbes(diskBefore, probeDisk(run.modelPath, layout.fileSize, 2, { warm: false }));
  log(`cold sequential read after streaming: ${disk.runs.slice(diskBefore.runs.length).map((x) => fmt.gbps(x)).join(', ')}`);
  return { stream, sequential, disk, minBudget };
}

/** Streaming under each budget fraction of the model (skipping ones that do not fit this machine or the plan). */
export async function runBudgetSweep(run: ShapeRun, minBudget: number): Promise<SweepPoint[]> {
  const { o, layout, stepBytes, notes } = run;
  const sweep: SweepPoint[] = [];
  for (const f of o.budgets) {
    const budget = Math.floor(f * stepBytes);
    if (budget > 0.6 * memAvailable()) {
      notes.push(`budget ${Math.round(f * 100)}% skipped: ${fmt.gb(budget)} is more than 60% of available memory`);
      continue;
    }
    if (budget < minBudget) {
      notes.push(`budget ${Math.round(f * 100)}% skipped: ${fmt.gb(budget)} is below the pipelined scenario's two layers (${fmt.gb(minBudget)})`);
      continue;
    }
    const sweepSteps = o.quick ? 2 : 4;
    await run.settle(`budget ${Math.round(f * 100)}%`);
    const r = await runChild<AirllmResult>(stepsJob(run, `budget ${Math.round(f * 100)}%`, 'stream', budget, 1, sweepSteps, 0, o.seed + 3), run.childOpts);
    const s = r.tasks[0] as StepsResult;
    const kv = kvBytes(layout, 1 + s.decode.length);
    sweep.push({
      fraction: f,
      budgetBytes: budget,
      pinnedBytes: s.pinnedBytes,
      plannedBytes: s.plannedBytes,
      slots: s.slots,
      slotBytes: s.slotBytes,
      streamBytes: s.streamBytes,
      diskBytesPerToken: median(s.decode.map((d) => d.diskBytes)),
      modelMinusBudget: stepBytes - budget,
      peakRssBytes: r.memory.peakRss,
      baselineRssBytes: r.memory.baselineRss,
      kvBytes: kv,
      pinnedCachedMinBytes: s.decode.every((d) => d.pinnedCachedBytes !== undefined) && s.decode.length > 0 ? Math.min(...s.decode.map((d) => d.pinnedCachedBytes!)) : undefined,
      rssLimitBytes: budget * 1.1 + kv,
      msPerToken: median(s.decode.map((d) => d.ms)),
    });
  }
  return sweep;
}
