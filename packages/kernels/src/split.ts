/**
 * The `index`-th of `parts` even, contiguous ranges covering [0, n). Range boundaries are
 * multiples of `align` (except the end, n), so each thread's rows start on an aligned row;
 * the remainder is spread one aligned unit at a time over the first ranges.
 */
export function splitRange(n: number, parts: number, index: number, align = 1): [start: number, end: number] {
  if (parts < 1 || index < 0 || index >= parts) throw new RangeError(`bad split ${index} of ${parts}`);
  const units = Math.ceil(n / align);
  const base = Math.floor(units / parts);
  const extra = units % parts;
  const startUnit = index * base + Math.min(index, extra);
  const endUnit = startUnit + base + (index < extra ? 1 : 0);
  return [Math.min(n, startUnit * align), Math.min(n, endUnit * align)];
}
