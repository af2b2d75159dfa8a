/**
 * The benchmark's results: the JSON document (BenchReport) and its Markdown rendering. Every
 * comparison is a ratio of two figures measured in the same run.
 */
import type { AutoSummary } from './auto-plan.js';
import type { KernelProbeResult } from './protocol.js';
import type { DiskProbe, DramProbe } from './probes.js';
import type { ShapeName } from './shapes.js';
import type { IoBreakdown, StepBreakdown } from './analysis.js';
import { GB, MB, median, round } from './stats.js';

export type Status = 'pass' | 'fail' | 'info';

export interface TableRow {
  readonly shape: ShapeName;
  readonly scenario: string;
  readonly airllm: string;
  readonly reference: string;
  /** airllm ÷ reference, oriented so that higher is better for airllm (NaN when not measured). */
  readonly ratio: number;
  readonly target: string;
  readonly status: Status;
}

export interface ResidentSummary {
  readonly promptTokens: number;
  readonly decodeTokens: number;
  readonly runs: number;
  readonly note: string;
  readonly prefillTokensPerSecond: number;
  readonly decodeTokensPerSecond: number;
  readonly prefillRuns: readonly number[];
  readonly decodeRuns: readonly number[];
  readonly peakRssBytes: number;
  readonly baselineRssBytes: number;
  readonly initMs: number;
  /** Where a decode step's time goes (from the trace of the last run). */
  readonly decodeBreakdown: StepBreakdown | undefined;
}

export interface PeerSummary {
  readonly variant: string;
  readonly version: string;
  readonly prefillTokensPerSecond: number;
  readonly decodeTokensPerSecond: number;
  readonly prefillRuns: readonly number[];
  readonly decodeRuns: readonly number[];
  readonly peakRssBytes: number;
  readonly rssAnonAfterLoadBytes: number | undefined;
  readonly rssFileAfterLoadBytes: number | undefined;
  readonly loadMs: number;
  readonly repackLogLines: number;
  /** airllm ÷ llama.cpp per round (the two measured back to back). */
  readonly pairedDecodeRatios: readonly number[];
  readonly pairedPrefillRatios: readonly number[];
  /** Other work's CPU share measured right before each pair. */
  readonly pairedOtherBusy: readonly number[];
}

export interface StepsSummary {
  readonly mode: 'stream' | 'sequential';
  readonly budgetBytes: number | undefined;
  readonly pinnedBytes: number;
  readonly slots: number;
  readonly slotBytes: number;
  readonly streamBytes: number;
  /** Weight bytes a step has to bring in (step bytes − pinned). */
  readonly streamedBytesPerStep: number;
  readonly promptTokens: number;
  readonly promptMs: number;
  readonly promptComputeMs: number;
  readonly promptDiskBytes: number;
  readonly decodeSteps: number;
  readonly decodeMsMedian: number;
  readonly decodeMsRuns: readonly number[];
  readonly decodeComputeMsMedian: number;
  readonly decodeLoadWaitMsMedian: number;
  readonly diskBytesPerStepMedian: number;
  readonly peakRssBytes: number;
  readonly baselineRssBytes: number;
  /** The prefetch thread's loads over the traced decode steps. */
  readonly io: IoBreakdown | undefined;
  /** Time spent evicting the file between steps (outside every step's time). */
  readonly dropCacheMs: number;
  /** A streamed pass verifying `rows` drafted rows against a pass of 1 row (median ms of each), when measured. */
  readonly verify?: { readonly rows: number; readonly manyMs: number; readonly oneMs: number; readonly manyRuns: readonly number[]; readonly oneRuns: readonly number[] };
}

export interface SweepPoint {
  readonly fraction: number;
  readonly budgetBytes: number;
  readonly pinnedBytes: number;
  readonly plannedBytes: number;
  readonly slots: number;
  readonly slotBytes: number;
  readonly streamBytes: number;
  readonly diskBytesPerToken: number;
  /** model − budget: the target's reference. */
  readonly modelMinusBudget: number;
  readonly peakRssBytes: number;
  readonly baselineRssBytes: number;
  readonly kvBytes: number;
  /** Least of the pinned layers found in the page cache at the start of a decode step (mincore). */
  readonly pinnedCachedMinBytes: number | undefined;
  /** budget + 10% + KV cache. */
  readonly rssLimitBytes: number;
  readonly msPerToken: number;
}

export interface BatchPoint {
  readonly sequences: number;
  readonly decodeTokensPerSecond: number;
  readonly prefillTokensPerSecond: number;
  readonly runs: readonly number[];
  /** Aggregate decode tokens/s relative to one sequence. */
  readonly speedup: number;
}

export interface ShapeReport {
  readonly shape: ShapeName;
  readonly description: string;
  readonly fileBytes: number;
  /** Weight bytes one forward step reads (layers + head). */
  readonly stepBytes: number;
  readonly layerBytes: number;
  readonly headBytes: number;
  readonly nLayers: number;
  readonly generateSeconds: number;
  readonly ggufSeconds: number | undefined;
  readonly dram: DramProbe | undefined;
  readonly disk: DiskProbe | undefined;
  readonly resident: ResidentSummary | undefined;
  readonly kernels: KernelProbeResult | undefined;
  readonly peers: readonly PeerSummary[];
  readonly stream: StepsSummary | undefined;
  readonly sequential: StepsSummary | undefined;
  readonly sweep: readonly SweepPoint[];
  readonly batch: readonly BatchPoint[];
  /** The automatic memory plan's scenario (auto-plan.ts). */
  readonly auto: AutoSummary | undefined;
  readonly rows: readonly TableRow[];
  readonly notes: readonly string[];
  readonly timelines: readonly { readonly scenario: string; readonly svg: string; readonly trace: string }[];
  /** 1-minute load average of the machine when each scenario started (2 cores: above 2 means contention). */
  readonly loadAverages: Readonly<Record<string, number>>;
  /** Share of the CPUs busy with other work right before each scenario (0..1). */
  readonly otherBusy: Readonly<Record<string, number>>;
}

export interface BenchReport {
  readonly version: 1;
  readonly startedAt: string;
  readonly seconds: number;
  readonly machine: {
    readonly cpu: string;
    readonly cores: number;
    readonly memoryBytes: number;
    readonly node: string;
    readonly platform: string;
    /** What @airllm/kernels' loadBackend picks here (native path or reference). */
    readonly kernels: string;
  };
  readonly options: Record<string, unknown>;
  readonly shapes: readonly ShapeReport[];
  /** Shapes not run, and why (e.g. no room for the model on the scratch disk). */
  readonly skipped: readonly string[];
}

// --- formatting --------------------------------------------------------------------------

export const fmt = {
  gb: (b: number): string => `${round(b / GB, 2)} GB`,
  mb: (b: number): string => `${round(b / MB, 0)} MB`,
  bytes: (b: number): string => (Math.abs(b) >= 1e9 ? fmt.gb(b) : fmt.mb(b)),
  gbps: (b: number): string => `${round(b / GB, 2)} GB/s`,
  tps: (x: number): string => `${round(x, x < 10 ? 2 : 1)} tok/s`,
  ms: (x: number): string => `${round(x, x < 10 ? 2 : 0)} ms`,
  ratio: (x: number): string => (Number.isFinite(x) ? `${round(x, 2)}×` : '—'),
};

const STATUS: Record<Status, string> = { pass: '✅ met', fail: '❌ short', info: '—' };

/** The table of every comparison, one line per (shape, scenario). */
export function markdownTable(rows: readonly TableRow[]): string {
  const head = '| shape | scenario | airllm | compared with | ratio | target | status |\n| --- | --- | --- | --- | --- | --- | --- |';
  const body = rows.map((r) => `| ${r.shape} | ${r.scenario} | ${r.airllm} | ${r.reference} | ${fmt.ratio(r.ratio)} | ${r.target} | ${STATUS[r.status]} |`);
  return [head, ...body].join('\n');
}

/** What a shape's scenarios measured, as far as the table needs it. */
export interface ShapeMeasurements {
  readonly shape: ShapeName;
  readonly stepBytes: number;
  readonly dram: DramProbe | undefined;
  readonly resident: ResidentSummary | undefined;
  readonly peers: readonly PeerSummary[];
  readonly stream: StepsSummary;
  readonly sequential: StepsSummary;
  readonly disk: DiskProbe;
  readonly sweep: readonly SweepPoint[];
  readonly batch: readonly BatchPoint[];
}

/** The table's rows for one shape: every figure against what it is compared with, and its target. */
export function tableRows(m: ShapeMeasurements): TableRow[] {
  const { shape: name, stepBytes, dram, resident, peers, stream, sequential, disk, sweep, batch } = m;
  const rows: TableRow[] = [];
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
    if (stream.verify) {
      const v = stream.verify;
      const r = v.manyMs / v.oneMs;
      rows.push({
        shape: name,
        scenario: `streamed pass verifying ${v.rows} rows (speculative decoding) vs 1 row`,
        airllm: fmt.ms(v.manyMs),
        reference: fmt.ms(v.oneMs),
        ratio: 1 / r,
        target: '≥ 1/1.15 (≤ 1.15 × one row)',
        status: status(r <= 1.15),
      });
    }
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
  return rows;
}

export function markdownReport(r: BenchReport): string {
  const out: string[] = [];
  out.push(`# airllm benchmark, ${r.startedAt}`, '');
  out.push(
    `Machine: ${r.machine.cpu}, ${r.machine.cores} cores, ${fmt.gb(r.machine.memoryBytes)} RAM, Node ${r.machine.node} (${r.machine.platform}); ` +
      `kernels: ${r.machine.kernels}. Run took ${round(r.seconds / 60, 1)} min.`,
    '',
  );
  out.push(`Options: \`${JSON.stringify(r.options)}\``, '');
  out.push('Every ratio compares two figures measured in this run (medians of the runs); higher is better for airllm.', '');
  out.push(markdownTable(r.shapes.flatMap((s) => s.rows)), '');
  for (const k of r.skipped) out.push(`- skipped ${k}`);
  if (r.skipped.length > 0) out.push('');
  for (const s of r.shapes) {
    out.push(`## ${s.shape}: ${s.description}`, '');
    out.push(
      `File ${fmt.gb(s.fileBytes)} (${s.nLayers} layers × ${fmt.mb(s.layerBytes)}, head ${fmt.mb(s.headBytes)}; ${fmt.gb(s.stepBytes)} of weights per forward step), ` +
        `written in ${round(s.generateSeconds, 1)} s` +
        (s.ggufSeconds !== undefined ? `, exported to GGUF in ${round(s.ggufSeconds, 1)} s.` : '.'),
      '',
    );
    if (s.dram) {
      const each = Object.entries(s.dram.byMethod).map(([m, v]) => `${m} ${fmt.gbps(v)}`).join(', ');
      out.push(`- Memory read bandwidth: ${fmt.gbps(s.dram.bytesPerSecond)}, the best round (${s.dram.threads} threads over ${fmt.gb(s.dram.bufferBytes)}; medians: ${each}; ${s.dram.method} rounds ${s.dram.runs.map((x) => round(x / GB, 1)).join(', ')} GB/s).`);
    }
    if (s.disk) {
      out.push(
        `- Cold sequential read of the model file (read(2), 16 MiB chunks, first ${fmt.gb(s.disk.probeBytes)}): best ${fmt.gbps(s.disk.bytesPerSecond)}, median ${fmt.gbps(s.disk.medianBytesPerSecond)} ` +
          `(runs before and after the streaming scenarios: ${s.disk.runs.map((x) => round(x / GB, 2)).join(', ')} GB/s).`,
      );
    }
    const res = s.resident;
    if (res) {
      out.push(
        `- Resident: ${res.runs} runs in all of a ${res.promptTokens}-token prompt and ${res.decodeTokens} decoded tokens (${res.note}); ` +
          `decode runs ${res.decodeRuns.map((x) => round(x, 2)).join(', ')} tok/s, prefill runs ${res.prefillRuns.map((x) => round(x, 1)).join(', ')} tok/s; peak RSS ${fmt.gb(res.peakRssBytes)}.`,
      );
      const b = res.decodeBreakdown;
      if (b) {
        out.push(
          `- Resident decode step, from the trace (${b.steps} steps): ${fmt.ms(b.stepMs)} per token = ${fmt.ms(b.layerComputeMs)} in layers ` +
            `(${fmt.ms(b.perLayerComputeMs)} per layer) + ${fmt.ms(b.headComputeMs)} head + ${fmt.ms(b.loadWaitMs)} load waits + ${fmt.ms(b.outsideMs)} outside the step (dispatch, sampling, embedding).`,
        );
      }
    }
    if (s.kernels) {
      out.push(
        `- Kernels alone, one layer's 7 matmuls on 1 thread: ` +
          s.kernels.layerMatmulMs.map((k) => `${k.backend} ${k.rows} row(s) ${fmt.ms(k.ms)}`).join('; ') +
          `; DRAM floor of one layer ${s.dram ? fmt.ms((s.layerBytes / s.dram.bytesPerSecond) * 1000) : '?'}.`,
      );
    }
    for (const p of s.peers) {
      const best = (xs: readonly number[]): number => Math.max(...xs);
      const bestLine = res
        ? ` Best run of each: decode ${fmt.tps(best(res.decodeRuns))} vs ${fmt.tps(best(p.decodeRuns))} (${fmt.ratio(best(res.decodeRuns) / best(p.decodeRuns))}), ` +
          `prefill ${fmt.tps(best(res.prefillRuns))} vs ${fmt.tps(best(p.prefillRuns))} (${fmt.ratio(best(res.prefillRuns) / best(p.prefillRuns))}).`
        : '';
      out.push(
        `- llama.cpp (node-llama-cpp ${p.version}, ${p.variant}): decode ${fmt.tps(p.decodeTokensPerSecond)}, prefill ${fmt.tps(p.prefillTokensPerSecond)}; ` +
          `peak RSS ${fmt.gb(p.peakRssBytes)}, after load RssAnon ${p.rssAnonAfterLoadBytes !== undefined ? fmt.gb(p.rssAnonAfterLoadBytes) : '?'} / RssFile ${p.rssFileAfterLoadBytes !== undefined ? fmt.gb(p.rssFileAfterLoadBytes) : '?'}; ` +
          `load ${round(p.loadMs / 1000, 1)} s; ${p.repackLogLines} repack log lines; decode runs ${p.decodeRuns.map((x) => round(x, 2)).join(', ')} tok/s; ` +
          `per pair of runs airllm ÷ llama.cpp: decode ${p.pairedDecodeRatios.map((x) => round(x, 2)).join(', ')}, prefill ${p.pairedPrefillRatios.map((x) => round(x, 2)).join(', ')} ` +
          `(other work's CPU share before each pair: ${p.pairedOtherBusy.map((x) => `${Math.round(x * 100)}%`).join(', ')}).` +
          bestLine,
      );
    }
    for (const st of [s.stream, s.sequential]) {
      if (!st) continue;
      out.push(
        `- ${st.mode === 'stream' ? 'Pipelined (stream)' : 'Sequential'}, cold cache each step, budget ${st.budgetBytes !== undefined ? fmt.mb(st.budgetBytes) : 'one segment'} ` +
          `(${fmt.mb(st.pinnedBytes)} pinned, streaming ${fmt.mb(st.streamBytes)} = ${round(st.streamBytes / st.slotBytes, 2)} × the largest streamed segment of ${fmt.mb(st.slotBytes)}): decode ${fmt.ms(st.decodeMsMedian)} per step ` +
          `(thread 0 computing ${fmt.ms(st.decodeComputeMsMedian)}, waiting for loads ${fmt.ms(st.decodeLoadWaitMsMedian)}), ${fmt.bytes(st.diskBytesPerStepMedian)} from disk per step; ` +
          `prompt step of ${st.promptTokens} tokens ${fmt.ms(st.promptMs)} (computing ${fmt.ms(st.promptComputeMs)}); peak RSS ${fmt.gb(st.peakRssBytes)}.` +
          (st.io
            ? ` During the traced decode steps the I/O thread was loading ${fmt.ms(st.io.busyMs)} of ${fmt.ms(st.io.windowMs)} (${round((100 * st.io.busyMs) / st.io.windowMs, 0)}%), ${fmt.bytes(st.io.bytes)} at ${fmt.gbps(st.io.bytesPerSecond)} while loading.`
            : ''),
      );
    }
    for (const p of s.sweep) {
      out.push(
        `- Budget ${Math.round(p.fraction * 100)}% (${fmt.gb(p.budgetBytes)}: ${fmt.gb(p.pinnedBytes)} pinned + ${fmt.mb(p.streamBytes)} for streaming, ${round(p.streamBytes / p.slotBytes, 2)} × a ${fmt.mb(p.slotBytes)} segment): ${fmt.bytes(p.diskBytesPerToken)} from disk per token ` +
          `(model − budget = ${fmt.bytes(p.modelMinusBudget)}), ${fmt.ms(p.msPerToken)} per token, peak RSS ${fmt.gb(p.peakRssBytes)} ` +
          `(Node alone ${fmt.mb(p.baselineRssBytes)}; limit budget + 10% + KV ${fmt.gb(p.rssLimitBytes)})` +
          (p.pinnedCachedMinBytes !== undefined ? `; pinned layers in the page cache at a step's start: at least ${fmt.gb(p.pinnedCachedMinBytes)} of ${fmt.gb(p.pinnedBytes)}.` : '.'),
      );
    }
    if (s.batch.length > 0) {
      out.push(`- Batch decoding, aggregate: ` + s.batch.map((b) => `${b.sequences} seq ${fmt.tps(b.decodeTokensPerSecond)} (${fmt.ratio(b.speedup)})`).join(', ') + '.');
    }
    out.push(
      `- Other work on the machine before each scenario (CPU share over 0.5 s while the benchmark's processes were idle; 1-min load average): ` +
        Object.keys(s.loadAverages)
          .map((k) => `${k} ${s.otherBusy[k] !== undefined ? `${Math.round(s.otherBusy[k]! * 100)}%` : '?'} / ${s.loadAverages[k]}`)
          .join(', ') +
        '.',
    );
    for (const n of s.notes) out.push(`- ${n}`);
    for (const t of s.timelines) out.push(`- Timeline (${t.scenario}): ${t.svg} (Chrome trace: ${t.trace})`);
    const why = diagnosis(s);
    if (why.length > 0) out.push('', `### ${s.shape}: where the time goes`, '', ...why.map((w) => `- ${w}`));
    out.push('');
  }
  return out.join('\n');
}

const pct = (x: number): string => `${Math.round(x * 100)}%`;

/**
 * Where each shortfall comes from, in the run's own figures (trace, kernel probe, I/O thread).
 * Lines state measurements and the arithmetic between them; they do not guess.
 */
export function diagnosis(s: ShapeReport): string[] {
  const out: string[] = [];
  const failed = (prefix: string): boolean => s.rows.some((r) => r.scenario.startsWith(prefix) && r.status === 'fail');
  const res = s.resident;
  const b = res?.decodeBreakdown;
  const threads = 2;
  if (res && b && s.dram && (failed('resident decode') || failed('prefill'))) {
    const probe = s.kernels?.layerMatmulMs.find((k) => k.rows === 1 && k.backend === s.kernels?.preferred);
    const ref = s.kernels?.layerMatmulMs.find((k) => k.rows === 1 && k.backend === 'reference');
    const layerRate = s.layerBytes / (b.perLayerComputeMs / 1000);
    out.push(
      `Resident decode: ${fmt.ms(b.stepMs)} per token = ${s.nLayers} layers × ${fmt.ms(b.perLayerComputeMs)} + head ${fmt.ms(b.headComputeMs)} + load waits ${fmt.ms(b.loadWaitMs)} + ${fmt.ms(b.outsideMs)} between steps. ` +
        `A layer's ${fmt.mb(s.layerBytes)} of weights go through in ${fmt.ms(b.perLayerComputeMs)}: ${fmt.gbps(layerRate)}, ${pct(layerRate / s.dram.bytesPerSecond)} of the measured memory bandwidth.`,
    );
    if (probe) {
      const ideal = probe.ms / threads;
      const share = ideal / b.perLayerComputeMs;
      out.push(
        `The layer's 7 matmuls alone take ${fmt.ms(probe.ms)} on 1 thread with ${probe.backend} (${fmt.gbps(s.layerBytes / (probe.ms / 1000))} per thread), ${fmt.ms(ideal)} if split perfectly over ${threads}: ` +
          (share >= 1
            ? `no less than the layer's whole compute time (${fmt.ms(b.perLayerComputeMs)}; the probe ran in another process, so ±10%): the matmul kernel's own speed is the limit, not barriers, attention or norms.`
            : share >= 0.85
              ? `${pct(share)} of the layer's compute time, so the matmul kernel's own speed is the limit; barriers, attention and norms cost the other ${pct(1 - share)}.`
              : `only ${pct(share)} of the layer's compute time; the remaining ${pct(1 - share)} goes to barriers, attention, norms and uneven splits.`) +
          (ref && Math.abs(ref.ms / threads - b.perLayerComputeMs) / b.perLayerComputeMs < 0.3 ? ` That is the reference (TypeScript) kernels' speed (${fmt.ms(ref.ms)} on 1 thread): the compute workers are not using the native backend.` : ''),
      );
    }
    for (const p of s.peers) {
      out.push(
        `llama.cpp (${p.variant}) decodes at ${fmt.gbps(p.decodeTokensPerSecond * s.stepBytes)} of weights (${pct((p.decodeTokensPerSecond * s.stepBytes) / s.dram.bytesPerSecond)} of memory bandwidth) ` +
          `against airllm's ${fmt.gbps(res.decodeTokensPerSecond * s.stepBytes)}; it holds the weights twice (peak RSS ${fmt.gb(p.peakRssBytes)} against airllm's ${fmt.gb(res.peakRssBytes)}).`,
      );
    }
  }
  const k = s.kernels;
  if (k) {
    const one = k.layerMatmulMs.find((x) => x.rows === 1 && x.backend === k.preferred);
    const many = k.layerMatmulMs.filter((x) => x.rows > 1 && x.backend === k.preferred);
    if (one && many.length > 0) {
      out.push(
        `Batched matmuls (${k.preferred}, one layer, 1 thread): ` +
          many.map((m) => `${m.rows} rows ${fmt.ms(m.ms)} = ${round((one.ms * m.rows) / m.ms, 1)}× faster than ${m.rows} single rows`).join('; ') +
          '. This bounds prefill and batch decoding.',
      );
    }
  }
  const st = s.stream;
  if (st && s.disk && failed('streaming decode')) {
    out.push(
      `Streaming decode: the I/O thread was loading ${st.io ? pct(st.io.busyMs / st.io.windowMs) : '?'} of the time at ${st.io ? fmt.gbps(st.io.bytesPerSecond) : '?'} while loading, against ${fmt.gbps(s.disk.bytesPerSecond)} for a plain read; ` +
        `compute threads waited ${fmt.ms(st.decodeLoadWaitMsMedian)} and computed ${fmt.ms(st.decodeComputeMsMedian)} per step.`,
    );
  }
  const seq = s.sequential;
  if (st && seq && failed('pipelined vs sequential')) {
    out.push(
      `Pipelined prompt step: ${fmt.ms(st.promptMs)} against ${fmt.ms(seq.promptMs)} sequential; computing took ${fmt.ms(st.promptComputeMs)} while loads ran alongside against ${fmt.ms(seq.promptComputeMs)} alone ` +
        `(${st.promptComputeMs > 1.1 * seq.promptComputeMs ? 'the prefetch thread takes CPU from the 2 compute threads on 2 cores' : 'compute was not slowed by the overlap'}).`,
    );
  }
  for (const p of s.sweep) {
    const pctB = Math.round(p.fraction * 100);
    if (p.diskBytesPerToken > 1.05 * p.modelMinusBudget) {
      const streamed = s.stepBytes - p.pinnedBytes;
      const lost = p.pinnedCachedMinBytes !== undefined ? p.pinnedBytes - p.pinnedCachedMinBytes : undefined;
      out.push(
        `Budget ${pctB}%: streaming (${fmt.mb(p.streamBytes)}: one ${fmt.mb(p.slotBytes)} segment + the prefetch window + what whole layers leave) comes out of the budget, so ${fmt.gb(p.pinnedBytes)} is pinned and a step streams model − pinned = ${fmt.gb(streamed)} ` +
          `(model − budget + streaming); ${fmt.gb(p.diskBytesPerToken)} came from disk` +
          (p.diskBytesPerToken <= streamed
            ? ', less than that because the streamed pages held between steps were still in the page cache.'
            : `, more than that: pinned layers were read again` +
              (lost !== undefined && lost > 0
                ? ` (at the start of a step up to ${fmt.gb(lost)} of them was missing from the page cache: they are mapped, not locked, and the kernel reclaims their pages when streaming fills memory).`
                : '.')),
      );
    }
    if (p.peakRssBytes > p.rssLimitBytes) {
      out.push(`Budget ${pctB}%: peak RSS ${fmt.gb(p.peakRssBytes)} is Node itself (${fmt.mb(p.baselineRssBytes)}) plus ${fmt.gb(p.peakRssBytes - p.baselineRssBytes)} for the engine, against a budget of ${fmt.gb(p.budgetBytes)}.`);
    }
  }
  return out;
}
