/**
 * The benchmark: synthetic models of real shapes, every scenario in its own child process, and
 * every comparison a ratio of two figures measured in this run.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import { exportGguf, generateSyntheticModel } from '@airllm/format/convert';
import type { TraceEvent } from '@airllm/engine';
import { loadBackend, type NativeBackend } from '@airllm/kernels';
import { decodeBreakdown, ioBreakdown, lastStepsWindow, traceSteps } from './analysis.js';
import { BenchError } from './errors.js';
import { ensurePeer, PEER_VERSION } from './peer.js';
import { mergeDiskProbes, probeDisk, probeDram, type DramProbe } from './probes.js';
import type { AirllmJob, AirllmResult, BatchResult, EngineSpec, GenerateResult, KernelProbeResult, PeerResult, PeerVariant, SessionRun, StepsResult } from './protocol.js';
import { fmt, markdownReport, markdownTable, type BatchPoint, type BenchReport, type PeerSummary, type ResidentSummary, type ShapeReport, type StepsSummary, type SweepPoint, type TableRow } from './report.js';
import { waitForQuiet } from './machine.js';
import { ChildSession, runChild } from './spawn.js';
import { bytesPerStep, kvBytes, segmentSizes, shapeLayout, SHAPES, type ShapeName } from './shapes.js';
import { median, round } from './stats.js';
import { renderTimeline } from './timeline.js';
import { syntheticTokenizer } from './tokenizer.js';
import { freeBytes, WorkDir } from './workdir.js';

export interface BenchOptions {
  /** Shapes to run, in order. */
  readonly shapes: readonly ShapeName[];
  /** Small settings for CI: fewer runs and tokens, a smaller memory probe. */
  readonly quick: boolean;
  /** Compare with llama.cpp (installs node-llama-cpp on first use). */
  readonly peer: boolean;
  readonly peerDir: string;
  readonly peerVersion: string;
  /** llama.cpp load variants to measure (default: node-llama-cpp's defaults only). */
  readonly peerVariants: readonly PeerVariant[];
  readonly threads: number;
  readonly activations: 'f32' | 'q80';
  readonly runs: number;
  readonly promptTokens: number;
  readonly decodeTokens: number;
  /** Decode steps of the streaming scenarios (cold cache each step). */
  readonly streamSteps: number;
  readonly batchSizes: readonly number[];
  readonly budgets: readonly number[];
  /** Where `bench-<timestamp>/` is created. */
  readonly resultsDir: string;
  /** Parent of the scratch directory (default os.tmpdir()). */
  readonly tmpDir: string | undefined;
  readonly seed: number;
  /** Time one resident scenario may take before its token counts shrink (seconds). */
  readonly budgetSeconds: number;
  /** Before timed work, wait until the CPUs are at most this busy with other work (0..1)… */
  readonly quietThreshold: number;
  /** …for at most this long (seconds; 0: never wait). */
  readonly quietMaxWaitSeconds: number;
  readonly verbose: boolean;
  readonly log: (line: string) => void;
}

export function defaultOptions(quick: boolean): Omit<BenchOptions, 'resultsDir' | 'log' | 'peerDir'> {
  return {
    shapes: quick ? ['mini'] : ['tinyllama', '7b'],
    quick,
    peer: true,
    peerVersion: PEER_VERSION,
    peerVariants: ['default'],
    threads: 2,
    activations: 'q80',
    runs: quick ? 2 : 5,
    promptTokens: quick ? 8 : 32,
    decodeTokens: quick ? 6 : 16,
    streamSteps: quick ? 3 : 5,
    batchSizes: [1, 4, 16],
    budgets: [0.25, 0.5, 0.75],
    tmpDir: undefined,
    seed: 1,
    budgetSeconds: quick ? 20 : 150,
    quietThreshold: 0.15,
    quietMaxWaitSeconds: quick ? 2 : 90,
    verbose: false,
  };
}

export interface BenchOutcome {
  readonly report: BenchReport;
  readonly dir: string;
  readonly markdown: string;
  readonly table: string;
}

function memAvailable(): number {
  try {
    const m = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    // not Linux
  }
  return totalmem() / 2;
}

/** What the engine's workers compute with: loadBackend('native'), or the reference backend without the addon. */
function preferredKernels(): string {
  const b = loadBackend('native');
  return b.name === 'native' ? `native-${(b as NativeBackend).path}` : b.name;
}

function timestamp(d: Date): string {
  return d.toISOString().replace(/[:]/g, '-').replace(/\..*$/, '');
}

export async function runBench(o: BenchOptions): Promise<BenchOutcome> {
  const started = new Date();
  const dir = join(o.resultsDir, `bench-${timestamp(started)}`);
  mkdirSync(dir, { recursive: true });
  const machine = {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memoryBytes: totalmem(),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    kernels: preferredKernels(),
  };
  o.log(`airllm bench: ${o.shapes.join(', ')}${o.quick ? ' (quick)' : ''}; results in ${dir}`);
  const shapes: ShapeReport[] = [];
  for (const name of o.shapes) shapes.push(await benchShape(name, o, dir));
  const report: BenchReport = {
    version: 1,
    startedAt: started.toISOString(),
    seconds: (Date.now() - started.getTime()) / 1000,
    machine,
    options: {
      shapes: o.shapes,
      quick: o.quick,
      peer: o.peer,
      peerVariants: o.peerVariants,
      threads: o.threads,
      activations: o.activations,
      runs: o.runs,
      promptTokens: o.promptTokens,
      decodeTokens: o.decodeTokens,
      streamSteps: o.streamSteps,
      batchSizes: o.batchSizes,
      budgets: o.budgets,
      seed: o.seed,
      quietThreshold: o.quietThreshold,
      quietMaxWaitSeconds: o.quietMaxWaitSeconds,
    },
    shapes,
  };
  const markdown = markdownReport(report);
  writeFileSync(join(dir, 'report.json'), JSON.stringify(report, null, 2) + '\n');
  writeFileSync(join(dir, 'report.md'), markdown);
  return { report, dir, markdown, table: markdownTable(shapes.flatMap((s) => s.rows)) };
}

/** Everything for one shape; its files live in a scratch directory removed at the end. */
async function benchShape(name: ShapeName, o: BenchOptions, outDir: string): Promise<ShapeReport> {
  const shape = SHAPES[name];
  const layout = shapeLayout(shape);
  const h = layout.header;
  const stepBytes = bytesPerStep(layout);
  const segs = segmentSizes(layout);
  const notes: string[] = [];
  const t0 = performance.now();
  const log = (line: string): void => o.log(`[${name} ${((performance.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${line}`);
  const rows: TableRow[] = [];
  // Other work on the machine skews every figure (llama.cpp's spinning threads most). Before
  // each scenario (and each pair of resident runs) the harness waits for the CPUs to be quiet,
  // and records how busy they were (our own processes idle meanwhile) and the load average.
  const loadAverages: Record<string, number> = {};
  const otherBusy: Record<string, number> = {};
  const settle = async (scenario: string): Promise<number | undefined> => {
    const q = await waitForQuiet({ threshold: o.quietThreshold, sampleMs: 500, maxWaitMs: o.quietMaxWaitSeconds * 1000 });
    if (q.waitedMs > 1000) log(`waited ${(q.waitedMs / 1000).toFixed(0)} s for the machine to be quiet before ${scenario} (${q.quiet ? 'quiet' : 'gave up'}: CPUs ${Math.round((q.busy ?? 0) * 100)}% busy)`);
    loadAverages[scenario] = round(loadavg()[0]!, 2);
    if (q.busy !== undefined) otherBusy[scenario] = round(q.busy, 2);
    return q.busy;
  };
  const timelines: { scenario: string; svg: string; trace: string }[] = [];

  const work = WorkDir.create(layout.fileSize, o.tmpDir);
  try {
    const modelPath = work.file('model.m');
    const tokPath = work.file('vocab.t');
    log(`writing ${shape.description}: ${fmt.gb(layout.fileSize)} to ${modelPath}`);
    let t = performance.now();
    await generateSyntheticModel(modelPath, shape.header, { seed: o.seed });
    const generateSeconds = (performance.now() - t) / 1000;
    writeFileSync(tokPath, syntheticTokenizer(h.vocabSize));
    log(`written in ${round(generateSeconds, 1)} s`);

    const avail = memAvailable();
    const fitsInRam = layout.fileSize < 0.7 * avail;
    if (!fitsInRam) notes.push(`resident, llama.cpp and batch scenarios skipped: the model (${fmt.gb(layout.fileSize)}) does not fit in 70% of available memory (${fmt.gb(avail)})`);

    // --- llama.cpp peer: install on demand, export the same weights to GGUF -----------------
    let ggufPath: string | undefined;
    let ggufSeconds: number | undefined;
    let peerReady = false;
    if (o.peer && fitsInRam) {
      if (freeBytes(work.path) < layout.fileSize + (1 << 30)) {
        notes.push(`llama.cpp skipped: no room for the GGUF copy (${fmt.gb(layout.fileSize)}) next to the model`);
      } else {
        try {
          await ensurePeer(o.peerDir, o.peerVersion, log);
          ggufPath = work.file('model.gguf');
          t = performance.now();
          await exportGguf(modelPath, ggufPath, { tokenizerPath: tokPath, fsync: false, name: `airllm bench ${name}` });
          ggufSeconds = (performance.now() - t) / 1000;
          log(`GGUF export in ${round(ggufSeconds, 1)} s`);
          peerReady = true;
        } catch (e) {
          notes.push(`llama.cpp skipped: ${(e as Error).message.split('\n')[0]}`);
          log(`llama.cpp unavailable: ${(e as Error).message}`);
        }
      }
    } else if (!o.peer) notes.push('llama.cpp not run (--no-peer)');

    const engine = (spec: Partial<EngineSpec> & Pick<EngineSpec, 'mode'>): EngineSpec => ({
      threads: o.threads,
      maxSeqLen: Math.max(o.promptTokens + o.decodeTokens, 64) + 16,
      batchSize: 128,
      maxSequences: 1,
      activations: o.activations,
      trace: true,
      ...spec,
    });
    const childOpts = { workdir: work, onLog: log, verbose: o.verbose, timeoutMs: (o.quick ? 5 : 30) * 60_000 };

    // --- 1, 2, 5: resident (decode, prefill, kernels, batch) ------------------------------
    // airllm and llama.cpp run side by side: both processes stay loaded and alternate run by
    // run (A B A B …), because the machine's load drifts (other work, and llama.cpp's spinning
    // threads suffer badly from it). Ratios are taken per pair of runs, then the median.
    let dram: DramProbe | undefined;
    let resident: ResidentSummary | undefined;
    let kernelProbe: KernelProbeResult | undefined;
    const batch: BatchPoint[] = [];
    const peers: PeerSummary[] = [];
    if (fitsInRam) {
      await settle('resident');
      dram = await probeDram({ threads: o.threads, bufferBytes: o.quick ? 256 << 20 : 1 << 30, rounds: o.quick ? 3 : 7 });
      log(`memory read bandwidth ${fmt.gbps(dram.bytesPerSecond)} (${Object.entries(dram.byMethod).map(([m, v]) => `${m} ${fmt.gbps(v)}`).join(', ')}; ${dram.threads} threads)`);
      const maxSeq = Math.max(...o.batchSizes);
      const residentEngine = engine({ mode: 'resident', maxSequences: maxSeq, batchSize: Math.max(128, maxSeq) });
      const a = new ChildSession<AirllmResult>(
        {
          kind: 'airllm',
          label: 'resident',
          modelPath,
          engine: residentEngine,
          warmup: true,
          coldStart: false,
          seed: o.seed + 1,
          tasks: [{ kind: 'generate', runs: o.runs, promptTokens: o.promptTokens, decodeTokens: o.decodeTokens, budgetSeconds: o.budgetSeconds, minTokens: 4, traceLast: true, session: true }],
        },
        childOpts,
      );
      try {
        const info = await a.ready();
        // Whatever the calibration chose, llama.cpp runs the same lengths.
        const runs = o.runs;
        for (const variant of peerReady && ggufPath ? o.peerVariants : []) {
          await settle(`llama.cpp ${variant}`);
          const p = new ChildSession<PeerResult>(
            {
              kind: 'llamacpp',
              label: `llama.cpp ${variant}`,
              ggufPath: ggufPath!,
              peerDir: o.peerDir,
              variant,
              threads: o.threads,
              runs,
              promptTokens: info.promptTokens,
              decodeTokens: info.decodeTokens,
              vocabSize: h.vocabSize,
              seed: o.seed + 1,
              session: true,
            },
            childOpts,
          );
          try {
            await p.ready();
            const decode: number[] = [];
            const prefill: number[] = [];
            const busy: number[] = [];
            for (let i = 0; i < runs; i++) {
              busy.push((await settle(`llama.cpp ${variant} pair ${i + 1}`)) ?? Number.NaN);
              // Alternate who goes first, so neither side always follows the other's run.
              let x: SessionRun;
              let y: SessionRun;
              if (i % 2 === 0) {
                x = await a.run();
                y = await p.run();
              } else {
                y = await p.run();
                x = await a.run();
              }
              decode.push(x.decodeTokensPerSecond / y.decodeTokensPerSecond);
              prefill.push(x.prefillTokensPerSecond / y.prefillTokensPerSecond);
            }
            const pr = await p.result();
            peers.push({
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
            });
          } catch (e) {
            p.kill();
            notes.push(`llama.cpp (${variant}) failed: ${(e as Error).message.split('\n')[0]}`);
            log(`llama.cpp ${variant} failed: ${(e as Error).message}`);
          }
        }
        // Without a peer (or if it failed), airllm's runs alone.
        if (peers.length === 0) {
          for (let i = 0; i < runs; i++) {
            await settle(`resident run ${i + 1}`);
            await a.run();
          }
        }
        const r = await a.result();
        const g = r.tasks[0] as GenerateResult;
        resident = {
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
          decodeBreakdown: decodeBreakdown(r.trace, h.nLayers),
        };
        timelines.push(writeTimeline(outDir, name, 'resident', r.trace, h.nLayers, 2, (st) => st.rows === 1, `${name}: resident decode, last 2 tokens`, fmt.tps(resident.decodeTokensPerSecond) + ' median decode'));
      } catch (e) {
        a.kill();
        throw e;
      }

      // Kernels alone, then batch decoding, in one more resident process.
      await settle('batch');
      const kb = await runChild<AirllmResult>(
        {
          kind: 'airllm',
          label: 'resident batch',
          modelPath,
          engine: residentEngine,
          warmup: true,
          coldStart: false,
          seed: o.seed + 4,
          tasks: [
            { kind: 'kernel-probe', rows: [...new Set([1, 4, 16, resident.promptTokens])].sort((x, y) => x - y) },
            { kind: 'batch', sequences: o.batchSizes, promptTokens: o.quick ? 4 : 8, decodeTokens: o.quick ? 3 : 8, runs: Math.min(o.runs, 3), budgetSeconds: o.budgetSeconds },
          ],
        },
        childOpts,
      );
      kernelProbe = kb.tasks.find((x): x is KernelProbeResult => x.kind === 'kernel-probe');
      const br = kb.tasks.find((x): x is BatchResult => x.kind === 'batch')!;
      const one = median(br.bySequences.find((b) => b.sequences === 1)?.decodeTokensPerSecond ?? []);
      for (const b of br.bySequences) {
        const tps = median(b.decodeTokensPerSecond);
        batch.push({ sequences: b.sequences, decodeTokensPerSecond: tps, prefillTokensPerSecond: median(b.prefillTokensPerSecond), runs: b.decodeTokensPerSecond.map((x) => round(x, 3)), speedup: tps / one });
      }
    }

    // --- 3: streaming from a cold cache against the disk floor; pipelined vs sequential ----
    await settle('stream');
    const diskBefore = probeDisk(modelPath, layout.fileSize, o.quick ? 2 : 3);
    log(`cold sequential read ${fmt.gbps(diskBefore.bytesPerSecond)} (best of ${diskBefore.runs.length})`);
    // Prompt length for the streamed prompt step: enough tokens that computing them takes about
    // as long as reading the weights (the case where overlapping the two pays most).
    const ioMs = (stepBytes / diskBefore.bytesPerSecond) * 1000;
    const prefillMsPerToken = resident ? 1000 / resident.prefillTokensPerSecond : 0;
    const streamPrompt = prefillMsPerToken > 0 ? Math.max(1, Math.min(o.quick ? 16 : 64, Math.round(ioMs / prefillMsPerToken))) : 8;
    const minBudget = 2 * Math.max(...segs);
    const steps = (label: string, mode: 'stream' | 'sequential', budget: number | undefined, promptTokens: number, decodeSteps: number, traceSteps: number, seed: number): AirllmJob => ({
      kind: 'airllm',
      label,
      modelPath,
      engine: engine({ mode, maxMemory: budget, maxSeqLen: promptTokens + decodeSteps + 16 }),
      warmup: true,
      coldStart: true,
      seed,
      tasks: [{ kind: 'steps', promptTokens, decodeSteps, budgetSeconds: o.quick ? 15 : 120, minSteps: Math.min(2, decodeSteps), dropCache: true, traceSteps }],
    });
    const summarize = (r: AirllmResult, mode: 'stream' | 'sequential', budget: number | undefined): StepsSummary => {
      const s = r.tasks[0] as StepsResult;
      return {
        mode,
        budgetBytes: budget,
        pinnedBytes: s.pinnedBytes,
        slots: s.slots,
        slotBytes: s.slotBytes,
        streamBytes: s.streamBytes,
        streamedBytesPerStep: stepBytes - s.pinnedBytes,
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
        io: ioBreakdown(r.trace, traceSteps(r.trace, h.nLayers)),
        dropCacheMs: s.dropCacheMs,
      };
    };
    const streamRes = await runChild<AirllmResult>(steps('stream', 'stream', minBudget, streamPrompt, o.streamSteps, 2, o.seed + 2), childOpts);
    const stream = summarize(streamRes, 'stream', minBudget);
    timelines.push(writeTimeline(outDir, name, 'stream', streamRes.trace, h.nLayers, 2, () => true, `${name}: pipelined streaming decode (cold page cache), 2 tokens`, `budget ${fmt.mb(minBudget)}: 2 slots, nothing pinned`));
    await settle('sequential');
    const seqRes = await runChild<AirllmResult>(steps('sequential', 'sequential', undefined, streamPrompt, o.streamSteps, 2, o.seed + 2), childOpts);
    const sequential = summarize(seqRes, 'sequential', undefined);
    timelines.push(writeTimeline(outDir, name, 'sequential', seqRes.trace, h.nLayers, 2, () => true, `${name}: sequential (load, then compute) decode (cold page cache), 2 tokens`, 'one slot, nothing pinned'));

    // The disk's speed drifts: probe again after the two streaming scenarios and keep every run.
    const disk = mergeDiskProbes(diskBefore, probeDisk(modelPath, layout.fileSize, 2, { warm: false }));
    log(`cold sequential read after streaming: ${disk.runs.slice(diskBefore.runs.length).map((x) => fmt.gbps(x)).join(', ')}`);

    // --- 4: budget sweep -------------------------------------------------------------------
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
      await settle(`budget ${Math.round(f * 100)}%`);
      const r = await runChild<AirllmResult>(steps(`budget ${Math.round(f * 100)}%`, 'stream', budget, 1, sweepSteps, 0, o.seed + 3), childOpts);
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

    // --- the table -------------------------------------------------------------------------
    const status = (ok: boolean): 'pass' | 'fail' => (ok ? 'pass' : 'fail');
    if (resident) {
      for (const p of peers) {
        // The median of per-round ratios (each round measured back to back).
        const rd = median(p.pairedDecodeRatios);
        const rp = median(p.pairedPrefillRatios);
        const what = `llama.cpp (${p.variant === 'default' ? 'default' : p.variant === 'lazy' ? 'lazyMode' : 'useMmap: false'})`;
        rows.push({ shape: name, scenario: `resident decode vs ${what}`, airllm: fmt.tps(resident.decodeTokensPerSecond), reference: fmt.tps(p.decodeTokensPerSecond), ratio: rd, target: '≥ 1.0×', status: status(rd >= 1) });
        rows.push({ shape: name, scenario: `prefill (${resident.promptTokens} tokens) vs ${what}`, airllm: fmt.tps(resident.prefillTokensPerSecond), reference: fmt.tps(p.prefillTokensPerSecond), ratio: rp, target: '≥ 1.0×', status: status(rp >= 1) });
      }
      if (dram) {
        const floorTps = dram.bytesPerSecond / stepBytes;
        const r = resident.decodeTokensPerSecond / floorTps;
        rows.push({
          shape: name,
          scenario: 'resident decode vs DRAM floor',
          airllm: fmt.tps(resident.decodeTokensPerSecond),
          reference: `${fmt.tps(floorTps)} (${fmt.gb(stepBytes)} ÷ ${fmt.gbps(dram.bytesPerSecond)}, best ${dram.method} round)`,
          ratio: r,
          target: '≥ 0.8',
          status: status(r >= 0.8),
        });
      }
    }
    {
      const floorMs = (stream.streamedBytesPerStep / disk.bytesPerSecond) * 1000;
      const r = floorMs / stream.decodeMsMedian;
      rows.push({
        shape: name,
        scenario: 'streaming decode (cold cache) vs disk floor',
        airllm: `${fmt.ms(stream.decodeMsMedian)}/token`,
        reference: `${fmt.ms(floorMs)}/token (${fmt.gb(stream.streamedBytesPerStep)} ÷ ${fmt.gbps(disk.bytesPerSecond)}, best plain read)`,
        ratio: r,
        target: '≥ 0.9',
        status: status(r >= 0.9),
      });
      for (const [what, pMs, sMs, pCompute, sCompute] of [
        ['decode step', stream.decodeMsMedian, sequential.decodeMsMedian, stream.decodeComputeMsMedian, sequential.decodeComputeMsMedian],
        [`prompt step (${stream.promptTokens} tokens)`, stream.promptMs, sequential.promptMs, stream.promptComputeMs, sequential.promptComputeMs],
      ] as const) {
        const ratio = sMs / pMs;
        // In sequential mode a step is load + compute; overlap can at best hide the smaller one.
        const loadMs = Math.max(0, sMs - sCompute);
        const ideal = sMs / Math.max(loadMs, sCompute);
        const comparable = Math.min(loadMs, sCompute) / Math.max(loadMs, sCompute) >= 0.5;
        rows.push({
          shape: name,
          scenario: `pipelined vs sequential, ${what}`,
          airllm: `${fmt.ms(pMs)} (computing ${fmt.ms(pCompute)})`,
          reference: `${fmt.ms(sMs)} (load ${fmt.ms(loadMs)} + compute ${fmt.ms(sCompute)}; perfect overlap ${fmt.ratio(ideal)})`,
          ratio,
          target: comparable ? '≥ 1.3× (compute ≈ I/O)' : `— (compute/I-O ${round(Math.min(loadMs, sCompute) / Math.max(loadMs, sCompute), 2)}: not comparable)`,
          status: comparable ? status(ratio >= 1.3) : 'info',
        });
      }
    }
    for (const p of sweep) {
      const r = p.modelMinusBudget / p.diskBytesPerToken;
      const pct = Math.round(p.fraction * 100);
      rows.push({
        shape: name,
        scenario: `budget ${pct}%: disk bytes per token`,
        airllm: fmt.bytes(p.diskBytesPerToken),
        reference: `model − budget ${fmt.bytes(p.modelMinusBudget)} (model − pinned ${fmt.bytes(stepBytes - p.pinnedBytes)})`,
        ratio: r,
        target: '≥ 1/1.05 (≤ 1.05 × (model − budget))',
        status: status(p.diskBytesPerToken <= 1.05 * p.modelMinusBudget),
      });
      const rr = p.rssLimitBytes / p.peakRssBytes;
      rows.push({
        shape: name,
        scenario: `budget ${pct}%: peak RSS`,
        airllm: `${fmt.bytes(p.peakRssBytes)} (Node alone ${fmt.bytes(p.baselineRssBytes)})`,
        reference: `budget + 10% + KV ${fmt.bytes(p.rssLimitBytes)}`,
        ratio: rr,
        target: '≥ 1.0 (peak ≤ limit)',
        status: status(p.peakRssBytes <= p.rssLimitBytes),
      });
    }
    for (const b of batch) {
      if (b.sequences === 1) continue;
      rows.push({ shape: name, scenario: `batch decode, ${b.sequences} sequences (aggregate)`, airllm: fmt.tps(b.decodeTokensPerSecond), reference: `1 sequence ${fmt.tps(b.decodeTokensPerSecond / b.speedup)}`, ratio: b.speedup, target: '—', status: 'info' });
    }

    return {
      shape: name,
      description: shape.description,
      fileBytes: layout.fileSize,
      stepBytes,
      layerBytes: layout.layerBytes,
      headBytes: segs.at(-1)!,
      nLayers: h.nLayers,
      generateSeconds,
      ggufSeconds,
      dram,
      disk,
      resident,
      kernels: kernelProbe,
      peers,
      stream,
      sequential,
      sweep,
      batch,
      rows,
      notes,
      timelines,
      loadAverages,
      otherBusy,
    };
  } finally {
    work.close();
  }
}

function writeTimeline(
  outDir: string,
  shape: string,
  scenario: string,
  events: readonly TraceEvent[],
  nLayers: number,
  steps: number,
  filter: Parameters<typeof lastStepsWindow>[3],
  title: string,
  subtitle: string,
): { scenario: string; svg: string; trace: string } {
  const traceFile = `trace-${shape}-${scenario}.json`;
  writeFileSync(join(outDir, traceFile), JSON.stringify({ traceEvents: events, displayTimeUnit: 'ms' }));
  const svgFile = `timeline-${shape}-${scenario}.svg`;
  const win = lastStepsWindow(events, nLayers, steps, filter);
  if (!win) throw new BenchError(`${shape} ${scenario}: the trace has no complete step to draw`);
  const pad = (win.end - win.start) * 0.003;
  writeFileSync(join(outDir, svgFile), renderTimeline(events, { title, subtitle, start: win.start - pad, end: win.end + pad, nLayers }));
  return { scenario, svg: svgFile, trace: traceFile };
}

