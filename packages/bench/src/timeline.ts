/**
 * An SVG timeline of the layer pipeline from the engine's trace: one lane per compute thread
 * (compute per layer, waits for a layer to become resident) and one for the prefetch thread
 * (loads), on a shared time axis. Plain SVG with no script or external reference, so any
 * browser or image viewer shows it.
 */
import type { TraceEvent } from '@airllm/engine';
import { round } from './stats.js';

export interface TimelineOptions {
  readonly title: string;
  readonly subtitle?: string;
  /** Window in trace µs; events outside are clipped. */
  readonly start: number;
  readonly end: number;
  readonly nLayers: number;
  readonly width?: number;
}

const COLORS = {
  computeEven: '#43a047',
  computeOdd: '#81c784',
  head: '#7e57c2',
  wait: '#e53935',
  prefetchEven: '#1e88e5',
  prefetchOdd: '#64b5f6',
  demand: '#fb8c00',
  harness: '#9e9e9e',
};

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** A tick step of 1, 2 or 5 × 10^k ms giving about `n` ticks over `span` ms. */
function tickStep(spanMs: number, n: number): number {
  const raw = spanMs / n;
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

function laneName(tid: number | string): string {
  if (typeof tid === 'number') return `compute ${tid}`;
  if (tid === 'prefetch') return 'prefetch (I/O)';
  if (tid === 'harness') return 'bench harness';
  return String(tid);
}

function segmentOf(e: TraceEvent): number {
  const a = e.args as { segment?: number } | undefined;
  if (a?.segment !== undefined) return a.segment;
  const m = /layer (\d+)/.exec(e.name);
  return m ? Number(m[1]) : -1;
}

export function renderTimeline(events: readonly TraceEvent[], o: TimelineOptions): string {
  const width = o.width ?? 1400;
  const left = 120;
  const right = 20;
  const top = o.subtitle ? 62 : 44;
  const laneH = 26;
  const laneGap = 10;
  const spanUs = Math.max(1, o.end - o.start);
  const plotW = width - left - right;
  const x = (us: number): number => left + ((us - o.start) / spanUs) * plotW;
  const inWindow = events.filter((e) => e.ph === 'X' && e.ts + (e.dur ?? 0) > o.start && e.ts < o.end);
  const tids = [...new Set(inWindow.map((e) => e.tid))].sort((a, b) => {
    if (typeof a === 'number' && typeof b === 'number') return a - b;
    if (typeof a === 'number') return -1;
    if (typeof b === 'number') return 1;
    return String(a).localeCompare(String(b));
  });
  const laneY = new Map(tids.map((t, i) => [t, top + i * (laneH + laneGap)]));
  const axisY = top + tids.length * (laneH + laneGap) + 4;
  const legendY = axisY + 40;
  const height = legendY + 30;
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="DejaVu Sans, Arial, sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${left}" y="22" font-size="16" font-weight="bold">${esc(o.title)}</text>`,
  );
  if (o.subtitle) parts.push(`<text x="${left}" y="42" fill="#444">${esc(o.subtitle)}</text>`);
  for (const [tid, y] of laneY) {
    parts.push(`<rect x="${left}" y="${y}" width="${plotW}" height="${laneH}" fill="#f3f3f3"/>`);
    parts.push(`<text x="${left - 8}" y="${y + laneH / 2 + 4}" text-anchor="end">${esc(laneName(tid))}</text>`);
  }
  // Time axis.
  const spanMs = spanUs / 1000;
  const step = tickStep(spanMs, 10);
  parts.push(`<line x1="${left}" y1="${axisY}" x2="${left + plotW}" y2="${axisY}" stroke="#333"/>`);
  for (let t = 0; t <= spanMs + 1e-9; t += step) {
    const xx = x(o.start + t * 1000);
    parts.push(`<line x1="${round(xx, 1)}" y1="${axisY}" x2="${round(xx, 1)}" y2="${axisY + 5}" stroke="#333"/>`);
    parts.push(`<line x1="${round(xx, 1)}" y1="${top}" x2="${round(xx, 1)}" y2="${axisY}" stroke="#000" stroke-opacity="0.08"/>`);
    parts.push(`<text x="${round(xx, 1)}" y="${axisY + 18}" text-anchor="middle">${round(t, step < 1 ? 2 : 0)}</text>`);
  }
  parts.push(`<text x="${left - 8}" y="${axisY + 18}" text-anchor="end" fill="#444">time (ms)</text>`);
  // Spans: waits drawn over the lane's background, compute and loads as blocks with layer numbers.
  for (const e of inWindow) {
    const y = laneY.get(e.tid);
    if (y === undefined) continue;
    const s = Math.max(e.ts, o.start);
    const f = Math.min(e.ts + (e.dur ?? 0), o.end);
    const x0 = x(s);
    const w = Math.max(0.6, x(f) - x0);
    const seg = segmentOf(e);
    const head = seg === o.nLayers || e.name.includes('head');
    let fill: string;
    if (e.cat === 'compute') fill = head ? COLORS.head : seg % 2 === 0 ? COLORS.computeEven : COLORS.computeOdd;
    else if (e.cat === 'load-wait') fill = COLORS.wait;
    else if (e.cat === 'load-demand') fill = COLORS.demand;
    else if (e.cat === 'load-prefetch') fill = seg % 2 === 0 ? COLORS.prefetchEven : COLORS.prefetchOdd;
    else fill = COLORS.harness;
    const inset = e.cat === 'load-wait' ? 6 : 2;
    const tip = `${e.name}: ${round((e.dur ?? 0) / 1000, 2)} ms`;
    parts.push(`<rect x="${round(x0, 2)}" y="${y + inset}" width="${round(w, 2)}" height="${laneH - 2 * inset}" fill="${fill}"><title>${esc(tip)}</title></rect>`);
    const label = head ? 'H' : seg >= 0 ? String(seg) : '';
    if (e.cat !== 'load-wait' && label && w >= 7 * label.length + 4) {
      parts.push(`<text x="${round(x0 + w / 2, 1)}" y="${y + laneH / 2 + 4}" text-anchor="middle" font-size="10" fill="#fff">${label}</text>`);
    }
  }
  // Legend.
  const legend: [string, string][] = [
    [COLORS.computeEven, 'compute (layer n)'],
    [COLORS.head, 'compute head (norm + classifier)'],
    [COLORS.wait, 'waiting for a layer to be resident'],
    [COLORS.prefetchEven, 'prefetch load'],
    [COLORS.demand, 'demand load'],
  ];
  if (inWindow.some((e) => e.cat === 'harness')) legend.push([COLORS.harness, 'cache eviction by the harness (not timed)']);
  let lx = left;
  for (const [c, t] of legend) {
    parts.push(`<rect x="${lx}" y="${legendY - 10}" width="12" height="12" fill="${c}"/>`);
    parts.push(`<text x="${lx + 17}" y="${legendY}">${esc(t)}</text>`);
    lx = round(lx + 17 + t.length * 6.6 + 24, 1);
  }
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
