/**
 * The benchmark: synthetic models of real shapes, every scenario in its own child process, and
 * every comparison a ratio of two figures measured in this run.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { loadBackend, type NativeBackend } from '@airllm/kernels';
import { PEER_VERSION } from './peer.js';
import { prepareModel, preparePeer } from './prepare.js';
import type { PeerVariant } from './protocol.js';
import { markdownReport, markdownTable, tableRows, type BenchReport, type ShapeReport } from './report.js';
import { runKernelsAndBatch, runResident } from './resident.js';
import { ShapeRun } from './shape-run.js';
import type { ShapeName } from './shapes.js';
import { runBudgetSweep, runStreaming } from './streaming.js';
import { autoRows, runAutoPlan } from './auto-plan.js';
import { DiskSpaceError } from './errors.js';

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
  /** Run only the automatic memory plan's scenario (after writing the model). */
  readonly autoOnly: boolean;
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
    autoOnly: false,
  };
}

export interface BenchOutcome {
  readonly report: BenchReport;
  readonly dir: string;
  readonly markdown: string;
  readonly table: string;
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
  const skipped: string[] = [];
  for (const name of o.shapes) {
    try {
      shapes.push(await benchShape(name, o, dir));
    } catch (e) {
      // A shape whose files cannot fit on the scratch disk is skipped with the reason.
      if (!(e instanceof DiskSpaceError)) throw e;
      o.log(`${name} skipped: ${e.message}`);
      skipped.push(`${name}: ${e.message}`);
    }
  }
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
      autoOnly: o.autoOnly,
    },
    shapes,
    skipped,
  };
  const markdown = markdownReport(report);
  writeFileSync(join(dir, 'report.json'), JSON.stringify(report, null, 2) + '\n');
  writeFileSync(join(dir, 'report.md'), markdown);
  return { report, dir, markdown, table: markdownTable(shapes.flatMap((s) => s.rows)) };
}

/**
 * Everything for one shape, phase by phase: prepare the model (and llama.cpp's GGUF copy), run
 * airllm resident beside llama.cpp, then the kernels and batching, streaming from a cold cache,
 * the budget sweep, and the report's rows. Its files live in a scratch directory removed at the
 * end.
 */
async function benchShape(name: ShapeName, o: BenchOptions, outDir: string): Promise<ShapeReport> {
  const run = new ShapeRun(name, o, outDir);
  try {
    const { layout, stepBytes, segs } = run;
    const { generateSeconds, fitsInRam } = await prepareModel(run);
    // The automatic plan: with no flags where the model is larger than memory, else with a
    // budget of half the model (what a machine with less memory would see).
    const autoBudget = fitsInRam ? Math.floor(0.5 * stepBytes) : undefined;
    if (o.autoOnly) {
      const auto = await runAutoPlan(run, autoBudget, o.streamSteps);
      return shapeReport(run, { generateSeconds, ggufSeconds: undefined, dram: undefined, disk: auto.disk, resident: undefined, kernels: undefined, peers: [], stream: undefined, sequential: undefined, sweep: [], batch: [], auto, rows: autoRows(name, auto) });
    }
    const { ggufPath, ggufSeconds } = await preparePeer(run, fitsInRam);
    const resident = fitsInRam ? await runResident(run, ggufPath) : undefined;
    const kernelsAndBatch = resident ? await runKernelsAndBatch(run, resident.engine, resident.resident.promptTokens) : undefined;
    const { stream, sequential, disk, minBudget } = await runStreaming(run, resident?.resident);
    const sweep = await runBudgetSweep(run, minBudget);
    const auto = await runAutoPlan(run, autoBudget, o.streamSteps);
    const measured = {
      dram: resident?.dram,
      resident: resident?.resident,
      peers: resident?.peers ?? [],
      stream,
      sequential,
      disk,
      sweep,
      batch: kernelsAndBatch?.batch ?? [],
    };
    return shapeReport(run, {
      generateSeconds,
      ggufSeconds,
      dram: measured.dram,
      disk,
      resident: measured.resident,
      kernels: kernelsAndBatch?.kernels,
      peers: measured.peers,
      stream,
      sequential,
      sweep,
      batch: measured.batch,
      auto,
      rows: [...tableRows({ shape: name, stepBytes, ...measured }), ...autoRows(name, auto)],
    });
  } finally {
    run.close();
  }
}

type Measured = Omit<ShapeReport, 'shape' | 'description' | 'fileBytes' | 'stepBytes' | 'layerBytes' | 'headBytes' | 'nLayers' | 'notes' | 'timelines' | 'loadAverages' | 'otherBusy'>;

/** A shape's report: what it measured, with the shape's sizes and the run's notes and timelines. */
function shapeReport(run: ShapeRun, m: Measured): ShapeReport {
  const { layout } = run;
  return {
    shape: run.name,
    description: run.shape.description,
    fileBytes: layout.fileSize,
    stepBytes: run.stepBytes,
    layerBytes: layout.layerBytes,
    headBytes: run.segs.at(-1)!,
    nLayers: layout.header.nLayers,
    ...m,
    notes: run.notes,
    timelines: run.timelines,
    loadAverages: run.loadAverages,
    otherBusy: run.otherBusy,
  };
}
