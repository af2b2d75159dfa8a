/** Small output helpers shared by commands: aligned tables, byte sizes, JSON on stdout. */

/** Left-aligned columns separated by two spaces; numeric-looking cells are right-aligned. */
export function table(rows: readonly (readonly (string | number)[])[], indent = ''): string {
  const cells = rows.map((r) => r.map(String));
  const widths: number[] = [];
  for (const r of cells) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  const numeric = widths.map((_, i) => cells.slice(1).every((r) => r[i] === undefined || /^-?[\d.,]+$/.test(r[i]!)));
  return cells
    .map(
      (r) =>
        indent +
        r
          .map((c, i) => (numeric[i] ? c.padStart(widths[i]!) : i === r.length - 1 ? c : c.padEnd(widths[i]!)))
          .join('  ')
          .trimEnd(),
    )
    .join('\n');
}

/** 290656 → "283.8 KiB"; exact byte counts are printed next to it where they matter. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[u]}`;
}

export function writeOut(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

let wroteJsonDocument = false;

/** Exactly one JSON document on stdout, on one line (`jq` or a line reader takes it as is). */
export function writeJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
  wroteJsonDocument = true;
}

/** Whether this run printed its JSON document already (an error after it goes inside it instead). */
export function wroteJson(): boolean {
  return wroteJsonDocument;
}
