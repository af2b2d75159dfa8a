/**
 * Hidden-state rows on the wire: F32 (the exact bits, little-endian like the model files) or
 * Q80 (34 bytes per 32 values, dllama's activation format; lossy, see README).
 */
import { dequantizeQ80, quantizeQ80 } from '@airllm/format';
import { rowBytes, type WireType } from './protocol.js';

/** Concatenate `hidden` (each n·dim floats) into one payload. */
export function encodeRows(hidden: readonly Float32Array[], wire: WireType, dim: number): Uint8Array {
  const total = hidden.reduce((n, h) => n + h.length / dim, 0);
  const out = new Uint8Array(total * rowBytes(wire, dim));
  let off = 0;
  for (const h of hidden) {
    if (wire === 'f32') {
      out.set(new Uint8Array(h.buffer, h.byteOffset, h.byteLength), off);
      off += h.byteLength;
    } else {
      const n = (h.length / 32) * 34;
      quantizeQ80(h, out.subarray(off, off + n));
      off += n;
    }
  }
  return out;
}

/** Split a payload back into one Float32Array per run of `rows[i]` rows. */
export function decodeRows(payload: Uint8Array, rows: readonly number[], wire: WireType, dim: number): Float32Array[] {
  const rb = rowBytes(wire, dim);
  let off = 0;
  return rows.map((n) => {
    const bytes = payload.subarray(off, off + n * rb);
    off += n * rb;
    const out = new Float32Array(n * dim);
    // Copy through bytes: the payload sits at any offset of a network buffer (not 4-aligned).
    if (wire === 'f32') new Uint8Array(out.buffer).set(bytes);
    else dequantizeQ80(bytes, out);
    return out;
  });
}
