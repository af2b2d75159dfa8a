/**
 * What every phase of one shape's benchmark shares: the shape and its layout, the scratch
 * directory and the model files in it, logging, the wait for a quiet machine before each
 * scenario (with what it measured), how child processes are started, and the notes and
 * timelines the report gathers.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import type { ModelLayout } from '@airllm/format';
import type { TraceEvent } from '@airllm/engine';
import { lastStepsWindow } from './analysis.js';
import type { BenchOptions } from './bench.js';
import { BenchError } from './errors.js';
import { waitForQuiet } from './machine.js';
import type { EngineSpec } from './protocol.js';
import type { ChildOptions } from './spawn.js';
import { bytesPerStep, segmentSizes, shapeLayout, SHAPES, type ModelShape, type ShapeName } from './shapes.js';
import { round } from './stats.js';
import { renderTimeline } from './timeline.js';
import { WorkDir } from './workdir.js';

export type Timeline = { scenario: string; svg: string; trace: string };

export class ShapeRun {
  readonly shape: ModelShape;
  readonly layout: ModelLayout;
  /** Bytes of weights one forward step reads. */
  readonly stepBytes: number;
  /** Residency segment sizes: one per layer, then the head. */
  readonly segs: number[];
  readonly notes: string[] = [];
  readonly timelines: Timeline[] = [];
  readonly loadAverages: Record<string, number> = {};
  readonly otherBusy: Record<string, number> = {};
  readonly work: WorkDir;
  readonly modelPath: string;
  readonly tokPath: string;
  readonly childOpts: ChildOptions;
  readonly #t0 = performance.now();

  constructor(
    readonly name: ShapeName,
    readonly o: BenchOptions,
    readonly outDir: string,
  ) {
    this.shape = SHAPES[name];
    this.layout = shapeLayout(this.shape);
    this.stepBytes = bytesPerStep(this.layout);
    this.segs = segmentSizes(this.layout);
    this.work = WorkDir.create(this.layout.fileSize, o.tmpDir);
    this.modelPath = this.work.file('model.m');
    this.tokPath = this.work.file('vocab.t');
    this.childOpts = { workdir: this.work, onLog: this.log, verbose: o.verbose, timeoutMs: (o.quick ? 5 : 30) * 60_000 };
  }

  get header(): ModelLayout['header'] {
    return this.layout.header;
  }

  readonly log = (line: string): void => this.o.log(`[${this.name} ${((performance.now() - this.#t0) / 1000).toFixed(0).padStart(4)} s] ${line}`);

  /**
   * Other work on the machine skews every figure (llama.cpp's spinning threads most). Before
   * each scenario (and each pair of resident runs) the harness waits for the CPUs to be quiet,
   * and records how busy they were (our own processes idle meanwhile) and the load average.
   */
  async settle(scenario: string): Promise<number | undefined> {
    const o = this.o;
    const q = await waitForQuiet({ threshold: o.quietThreshold, sampleMs: 500, maxWaitMs: o.quietMaxWaitSeconds * 1000 });
    if (q.waitedMs > 1000) this.log(`waited ${(q.waitedMs / 1000).toFixed(0)} s for the machine to be quiet before ${scenario} (${q.quiet ? 'quiet' : 'gave up'}: CPUs ${Math.round((q.busy ?? 0) * 100)}% busy)`);
    this.loadAverages[scenario] = round(loadavg()[0]!, 2);
    if (q.busy !== undefined) this.otherBusy[scenario] = round(q.busy, 2);
    return q.busy;
  }

  /** The engine settings of a scenario: the run's threads and activations, traced. */
  engine(spec: Partial<EngineSpec> & Pick<EngineSpec, 'mode'>): EngineSpec {
    const o = this.o;
    return {
      threads: o.threads,
      maxSeqLen: Math.max(o.promptTokens + o.decodeTokens, 64) + 16,
      batchSize: 128,
      maxSequences: 1,
      activations: o.activations,
      trace: true,
      ...spec,
    };
  }

  /** Save a scenario's engine trace and an SVG of its last `steps` steps (those `filter` accepts). */
  timeline(scenario: string, events: readonly TraceEvent[], steps: number, filter: Parameters<typeof lastStepsWindow>[3], title: string, subtitle: string): void {
    const { outDir, name } = this;
    const nLayers = this.header.nLayers;
    const traceFile = `trace-${name}-${scenario}.json`;
    writeFileSync(join(outDir, traceFile), JSON.stringify({ traceEvents: events, displayTimeUnit: 'ms' }));
    const svgFile = `timeline-${name}-${scenario}.svg`;
    const win = lastStepsWindow(events, nLayers, steps, filter);
    if (!win) throw new BenchError(`${name} ${scenario}: the trace has no complete step to draw`);
    const pad = (win.end - win.start) * 0.003;
    writeFileSync(join(outDir, svgFile), renderTimeline(events, { title, subtitle, start: win.start - pad, end: win.end + pad, nLayers }));
    this.timelines.push({ scenario, svg: svgFile, trace: traceFile });
  }

  close(): void {
    this.work.close();
  }
}

export function memAvailable(): number {
  try {
    const m = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    // not Linux
  }
  return totalmem() / 2;
}
