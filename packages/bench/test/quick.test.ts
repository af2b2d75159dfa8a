/**
 * The harness end to end in --quick mode (what CI runs to keep it working): the real CLI in a
 * child process, without llama.cpp (CI must not download anything at test time). Checks that
 * the table, the JSON and the timelines are written and that the figures are sane.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BenchReport } from '../src/report.js';

const pkg = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const main = join(pkg, 'dist', 'main.js');

let out: string;
let scratch: string;
let report: BenchReport;
let stdout: string;
let stderr: string;

beforeAll(async () => {
  if (!existsSync(main)) throw new Error(`${main} is missing: run npx tsc -b first`);
  out = mkdtempSync(join(tmpdir(), 'airllm-bench-test-out-'));
  scratch = mkdtempSync(join(tmpdir(), 'airllm-bench-test-tmp-'));
  ({ stdout, stderr } = await new Promise<{ stdout: string; stderr: string }>((res, rej) =>
    execFile(process.execPath, [main, '--quick', '--no-peer', '--json', '--out', out, '--dir', scratch], { timeout: 180_000, maxBuffer: 64 << 20 }, (err, so, se) =>
      err ? rej(new Error(`bench failed: ${err.message}\n${se}`)) : res({ stdout: so, stderr: se }),
    ),
  ));
  report = JSON.parse(stdout) as BenchReport;
}, 200_000);

afterAll(() => {
  rmSync(out, { recursive: true, force: true });
  rmSync(scratch, { recursive: true, force: true });
});

describe('npm run bench -- --quick --no-peer', () => {
  it('writes report.md, report.json, timelines and traces into one results folder', () => {
    const dirs = readdirSync(out);
    expect(dirs).toHaveLength(1);
    expect(dirs[0]).toMatch(/^bench-\d{4}-\d\d-\d\dT/);
    const dir = join(out, dirs[0]!);
    const files = readdirSync(dir).sort();
    expect(files).toEqual(
      ['report.json', 'report.md', 'timeline-mini-resident.svg', 'timeline-mini-sequential.svg', 'timeline-mini-stream.svg', 'trace-mini-resident.json', 'trace-mini-sequential.json', 'trace-mini-stream.json'].sort(),
    );
    expect(JSON.parse(readFileSync(join(dir, 'report.json'), 'utf8'))).toEqual(report);
    const md = readFileSync(join(dir, 'report.md'), 'utf8');
    expect(md).toContain('| shape | scenario | airllm | compared with | ratio | target | status |');
    expect(md).toContain('| mini | resident decode vs DRAM floor |');
    expect(md).toContain('| mini | streaming decode (cold cache) vs disk floor |');
    expect(md).toContain('| mini | streamed pass verifying 9 rows (speculative decoding) vs 1 row |');
    for (const s of ['resident', 'stream', 'sequential']) {
      const svg = readFileSync(join(dir, `timeline-mini-${s}.svg`), 'utf8');
      expect(svg.startsWith('<svg')).toBe(true);
      expect(svg.trim().endsWith('</svg>')).toBe(true);
      expect(svg).toContain('>compute 0</text>');
      expect(svg).toContain('>compute 1</text>');
      // Every layer of the model drawn, and the head.
      for (let l = 0; l < 6; l++) expect(svg).toContain(`<title>layer ${l}: `);
      expect(svg).toContain('<title>head: ');
      const trace = JSON.parse(readFileSync(join(dir, `trace-mini-${s}.json`), 'utf8')) as { traceEvents: { cat: string }[] };
      expect(trace.traceEvents.some((e) => e.cat === 'compute')).toBe(true);
      if (s !== 'resident') {
        expect(svg).toContain('>prefetch (I/O)</text>');
        expect(trace.traceEvents.some((e) => e.cat === 'load-prefetch' || e.cat === 'load-demand')).toBe(true);
      }
    }
    // The leftover model files are gone.
    expect(readdirSync(scratch)).toEqual([]);
  });

  it('measures every scenario with sane figures and finite ratios', () => {
    expect(report.shapes).toHaveLength(1);
    const s = report.shapes[0]!;
    expect(s.shape).toBe('mini');
    expect(s.dram!.bytesPerSecond).toBeGreaterThan(1e8);
    expect(s.disk!.bytesPerSecond).toBeGreaterThan(1e6);
    const r = s.resident!;
    expect(r.decodeTokensPerSecond).toBeGreaterThan(0);
    expect(r.prefillTokensPerSecond).toBeGreaterThan(0);
    expect(r.peakRssBytes).toBeGreaterThan(s.stepBytes);
    expect(r.decodeBreakdown!.perLayerComputeMs).toBeGreaterThan(0);
    expect(s.kernels!.layerMatmulMs.every((k) => k.ms > 0)).toBe(true);
    expect(s.batch.map((b) => b.sequences)).toEqual([1, 4, 16]);
    expect(s.batch.every((b) => b.decodeTokensPerSecond > 0)).toBe(true);
    for (const st of [s.stream!, s.sequential!]) {
      expect(st.decodeMsMedian).toBeGreaterThan(0);
      expect(st.decodeSteps).toBeGreaterThanOrEqual(2);
      expect(st.pinnedBytes).toBe(0);
    }
    const v = s.stream!.verify!;
    expect(v.rows).toBe(9);
    expect(v.manyRuns).toHaveLength(2);
    expect(v.oneRuns).toHaveLength(2);
    expect(Math.min(v.manyMs, v.oneMs)).toBeGreaterThan(0);
    expect(s.rows.length).toBeGreaterThanOrEqual(4);
    for (const row of s.rows) {
      expect(Number.isFinite(row.ratio), row.scenario).toBe(true);
      expect(row.ratio, row.scenario).toBeGreaterThan(0);
    }
    expect(stderr).toContain('[mini');
  });

  it('runs the automatic plan: half the model as budget streams it, pinning part, against read(2) of the same file', () => {
    const s = report.shapes[0]!;
    const a = s.auto!;
    expect(a.budgetBytes).toBe(Math.floor(0.5 * s.stepBytes));
    expect(a.mode).toBe('stream');
    expect(a.memoryPlan).toMatch(/^airllm: memory plan: stream, .* \(model [\d.]+ GB > the weight budget [\d.]+ GB given\)$/);
    expect(a.pinnedBytes).toBeGreaterThan(0);
    expect(a.pinnedBytes).toBeLessThan(a.budgetBytes!);
    expect(a.warmupMs).toBeGreaterThan(0);
    expect(a.firstTokenAtMs).toBeGreaterThan(a.readyAtMs);
    expect(a.disk.runs.length).toBe(4);
    expect(a.freshMemoryBytesPerSecond).toBeGreaterThan(1e6);
    // A cold step reads what is not pinned (less what the prefetcher holds for the next pass).
    expect(a.diskBytesPerStepMedian).toBeLessThan(1.1 * (s.stepBytes - a.pinnedBytes));
    const names = s.rows.map((r) => r.scenario);
    expect(names).toContain(`auto plan (--max-memory ${Math.round((a.budgetBytes! / 1e9) * 100) / 100} GB): decode s/token vs (model − pinned) ÷ disk`);
    expect(names).toContain('auto: pinning throughput vs disk');
    expect(names).toContain('auto: cold first token from process start');
  });

  it('reads from disk what is not pinned, each step (cold cache), and pins more for larger budgets', () => {
    const s = report.shapes[0]!;
    // Each step starts with the file evicted from the page cache, except pages still mapped: the
    // pinned layers and the (at most `slots`) layers the prefetcher already holds for the next
    // pass. So a step reads between (streamed − slots) and the streamed bytes.
    const bounds = (pinned: number, slots: number, slotBytes: number): [number, number] => [0.95 * (s.stepBytes - pinned - slots * slotBytes), 1.1 * (s.stepBytes - pinned)];
    const st = s.stream!;
    const [lo, hi] = bounds(st.pinnedBytes, st.slots, st.slotBytes);
    expect(st.diskBytesPerStepMedian).toBeGreaterThan(lo);
    expect(st.diskBytesPerStepMedian).toBeLessThan(hi);
    // Sequential mode: one slot, no prefetch, so nothing is held between steps.
    expect(s.sequential!.diskBytesPerStepMedian).toBeGreaterThan(0.95 * s.stepBytes);
    expect(s.sequential!.diskBytesPerStepMedian).toBeLessThan(1.1 * s.stepBytes);
    expect(s.sweep.length).toBeGreaterThanOrEqual(2);
    for (const p of s.sweep) {
      expect(p.pinnedBytes).toBeLessThanOrEqual(p.budgetBytes);
      const [plo, phi] = bounds(p.pinnedBytes, p.slots, p.slotBytes);
      expect(p.diskBytesPerToken).toBeGreaterThan(plo);
      expect(p.diskBytesPerToken).toBeLessThan(phi);
      expect(p.peakRssBytes).toBeGreaterThan(p.baselineRssBytes);
      // Stream mode reads pinned layers into the process's own memory (the read backend), not
      // the page cache: there are no file pages of them to count, and the disk bytes above
      // show they are not read again.
      expect(p.pinnedCachedMinBytes).toBeUndefined();
    }
    const pinned = s.sweep.map((p) => p.pinnedBytes);
    expect(pinned).toEqual([...pinned].sort((a, b) => a - b));
    expect(pinned.at(-1)!).toBeGreaterThan(pinned[0]!);
  });
});
