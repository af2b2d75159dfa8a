/**
 * Phase 2 of a shape, with the model in RAM: airllm's resident decode and prefill, run side by
 * side with llama.cpp on the same weights; then the kernels alone and batch decoding.
 *
 * airllm and llama.cpp run side by side: both processes stay loaded and alternate run by run
 * (A B A B …), because the machine's load drifts (other work, and llama.cpp's spinning threads
 * suffer badly from it). Ratios are taken per pair of runs, then the median.
 */
import { decodeBreakdown } from './analysis.js';
import { probeDram, type DramProbe } from './probes.js';
import type { AirllmResult, BatchResult, EngineSpec, GenerateResult, KernelProbeResult, PeerResult, PeerVariant, SessionInfo, SessionRun } from './protocol.js';
import { fmt, type BatchPoint, type PeerSummary, type ResidentSummary } from './report.js';
import type { ShapeRun } from './shape-run.js';
import { ChildSession, runChild } from './spawn.js';
import { median, round } from './stats.js';

export interface ResidentPhase {
  dram: DramProbe;
  resident: ResidentSummary;
  peers: PeerSummary[];
  /** The engine settings the resident scenarios ran with (the batch scenario reuses them). */
  engine: EngineSpec;
}

/** airllm resident, alternating with each llama.cpp variant when `ggufPath` is given. */
export async function runResident(run: ShapeRun, ggufPath: string | undefined): Promise<ResidentPhase> {
  const { o, log } = run;
  await run.settle('resident');
  const dram = await probeDram({ threads: o.threads, bufferBytes: o.quick ? 256 << 20 : 1 << 30, rounds: o.quick ? 3 : 7 });
  log(`memory read bandwidth ${fmt.gbps(dram.bytesPerSecond)} (${Object.entries(dram.byMethod).map(([m, v]) => `${m} ${fmt.gbps(v)}`).join(', ')}; ${dram.threads} threads)`);
  const maxSeq = Math.max(...o.batchSizes);
  const engine = run.engine({ mode: 'resident', maxSequences: maxSeq, batchSize: Math.max(128, maxSeq) });
  const ours = new ChildSession<AirllmResult>(
    {
      kind: 'airllm',
      label: 'resident',
      modelPath: run.modelPath,
      engine,
      warmup: true,
      coldStart: false,
      seed: o.seed + 1,
      tasks: [{ kind: 'generate', runs: o.runs, promptTokens: o.promptTokens, decodeTokens: o.decodeTokens, budgetSeconds: o.budgetSeconds, minTokens: 4, traceLast: true, session: true }],
    },
    run.childOpts,
  );
  try {
    const info = await ours.ready();
    const peers: PeerSummary[] = [];
    for (const variant of ggufPath !== undefined ? o.peerVariants : []) {
      const p = await runPeerBeside(run, ours, ggufPath!, variant, info);
      if (p) peers.push(p);
    }
    // Without a peer (or if it failed), airllm's runs alone.
    if (peers.length === 0) {
      for (let i = 0; i < o.runs; i++) {
        await run.settle(`resident run ${i + 1}`);
        await ours.run();
      }
    }
    const r = await ours.result();
    const g = r.tasks[0] as GenerateResult;
    const resident: ResidentSummary = {
      promptTokens: g.promptTokens,
      decodeTokens: g.decodeTokens,
      runs: g.runs.length,
      note: info.note,
      prefillTokensPerSecond: median(g.runs.map((x) => x.prefillTokensPerSecond)),
      decodeTokensPerSecond: median(g.runs.map((x) => x.decodeTokensPerSecond)),
      prefillRuns: g.runs.map((x) => round(x.prefillTokensPerSecond, 3)),
      decodeRuns: g.runs.map((x) => round(x.decodeTokensPerSecond, 3)),
      peakRssBytes: r.memory.peakRss,
      baselineRssBytes: r.memory.baselineRss,
      initMs: r.initMs,
      decodeBreakdown: decodeBreakdown(r.trace, run.header.nLayers),
    };
    run.timeline('resident', r.trace, 2, (st) => st.rows === 1, `${run.name}: resident decode, last 2 tokens`, fmt.tps(resident.decodeTokensPerSecond) + ' median decode');
    return { dram, resident, peers, engine };
  } catch (e) {
    ours.kill();
    throw e;
  }
}

/**
 * One llama.cpp variant, loaded beside airllm's resident session, the two alternating run by
 * run with the same prompt and lengths. Undefined (and a note) when llama.cpp fails.
 */
async function runPeerBeside(
  run: ShapeRun,
  ours: ChildSession<AirllmResult>,
  ggufPath: string,
  variant: PeerVariant,
  info: SessionInfo,
): Promise<PeerSummary | undefined> {
  const { o, log } = run;
  // Whatever the calibration chose, llama.cpp runs the same lengths.
  const runs = o.runs;
  await run.settle(`llama.cpp ${variant}`);
  const p = new ChildSession<PeerResult>(
    {
      kind: 'llamacpp',
      label: `llama.cpp ${variant}`,
      ggufPath,
      peerDir: o.peerDir,
      variant,
      threads: o.threads,
      runs,
      promptTokens: info.promptTokens,
      decodeTokens: info.decodeTokens,
      vocabSize: run.header.vocabSize,
      seed: o.seed + 1,
      session: true,
    },
    run.childOpts,
  );
  try {
    await p.ready();
    const decode: number[] = [];
    const prefill: number[] = [];
    const busy: number[] = [];
    for (let i = 0; i < runs; i++) {
      busy.push((await run.settle(`llama.cpp ${variant} pair ${i + 1}`)) ?? Number.NaN);
      // Alternate who goes first, so neither side always follows the other's run.
      let x: SessionRun;
      let y: SessionRun;
      if (i % 2 === 0) {
        x = await ours.run();
        y = await p.run();
      } else {
        y = await p.run();
        x = await ours.run();
      }
      decode.push(x.decodeTokensPerSecond / y.decodeTokensPerSecond);
      prefill.push(x.prefillTokensPerSecond / y.prefillTokensPerSecond);
    }
    const pr = await p.result();
    return {
      variant,
      version: pr.version,
      prefillTokensPerSecond: median(pr.runs.map((x) => x.prefillTokensPerSecond)),
      decodeTokensPerSecond: median(pr.runs.map((x) => x.decodeTokensPerSecond)),
      prefillRuns: pr.runs.map((x) => round(x.prefillTokensPerSecond, 3)),
      decodeRuns: pr.runs.map((x) => round(x.decodeTokensPerSecond, 3)),
      peakRssBytes: pr.memory.peakRss,
      rssAnonAfterLoadBytes: pr.memory.rssAnonAfterLoad,
      rssFileAfterLoadBytes: pr.memory.rssFileAfterLoad,
      loadMs: pr.loadMs,
      repackLogLines: pr.repackLines,
      pairedDecodeRatios: decode.map((x) => round(x, 3)),
      pairedPrefillRatios: prefill.map((x) => round(x, 3)),
      pairedOtherBusy: busy.map((x) => round(x, 2)),
    };
  } catch (e) {
    p.kill();
    run.notes.push(`llama.cpp (${variant}) failed: ${(e as Error).message.split('\n')[0]}`);
    log(`llama.cpp ${variant} failed: ${(e as Error).message}`);
    return undefined;
  }
}

/** The kernels alone, then batch decoding, in one more resident process. */
export async function runKernelsAndBatch(run: ShapeRun, engine: EngineSpec, promptTokens: number): Promise<{ kernels: KernelProbeResult | undefined; batch: BatchPoint[] }> {
  const { o } = run;
  await run.settle('batch');
  const kb = await runChild<AirllmResult>(
    {
      kind: 'airllm',
      label: 'resident batch',
      modelPath: run.modelPath,
      engine,
      warmup: true,
      coldStart: false,
      seed: o.seed + 4,
      tasks: [
        { kind: 'kernel-probe', rows: [...new Set([1, 4, 16, promptTokens])].sort((x, y) => x - y) },
        { kind: 'batch', sequences: o.batchSizes, promptTokens: o.quick ? 4 : 8, decodeTokens: o.quick ? 3 : 8, runs: Math.min(o.runs, 3), budgetSeconds: o.budgetSeconds },
      ],
    },
    run.childOpts,
  );
  const kernels = kb.tasks.find((x): x is KernelProbeResult => x.kind === 'kernel-probe');
  const br = kb.tasks.find((x): x is BatchResult => x.kind === 'batch')!;
  const one = median(br.bySequences.find((b) => b.sequences === 1)?.decodeTokensPerSecond ?? []);
  const batch: BatchPoint[] = [];
  for (const b of br.bySequences) {
    const tps = median(b.decodeTokensPerSecond);
    batch.push({ sequences: b.sequences, decodeTokensPerSecond: tps, prefillTokensPerSecond: median(b.prefillTokensPerSecond), runs: b.decodeTokensPerSecond.map((x) => round(x, 3)), speedup: tps / one });
  }
  return { kernels, batch };
}
