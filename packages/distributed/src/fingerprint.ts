import { createHash } from 'node:crypto';
import { closeSync } from 'node:fs';
import { openForRead, readAt, readModelFile } from '@airllm/format';
import type { ModelFingerprint } from './protocol.js';

/** Bytes of tensor data hashed at each end of the file. */
const SAMPLE_BYTES = 64 * 1024;

/**
 * What identifies a model file across machines without reading it all: its size and a SHA-256
 * of the header bytes plus the first and last 64 KiB of tensor data. The header alone would not
 * tell two fine-tunes of one architecture apart; the samples cover the embedding and the
 * classifier, which any re-training changes.
 */
export function modelFingerprint(path: string): ModelFingerprint {
  const { layout } = readModelFile(path);
  const { fd, size } = openForRead(path);
  try {
    const h = createHash('sha256');
    h.update(readAt(fd, 0, layout.dataOffset));
    const data = size - layout.dataOffset;
    h.update(readAt(fd, layout.dataOffset, Math.min(SAMPLE_BYTES, data)));
    h.update(readAt(fd, Math.max(layout.dataOffset, size - SAMPLE_BYTES), Math.min(SAMPLE_BYTES, data)));
    return { fileSize: size, hash: new Uint8Array(h.digest()) };
  } finally {
    closeSync(fd);
  }
}

export function sameFingerprint(a: ModelFingerprint, b: ModelFingerprint): boolean {
  return a.fileSize === b.fileSize && Buffer.from(a.hash).equals(Buffer.from(b.hash));
}

export function describeFingerprint(f: ModelFingerprint): string {
  return `${f.fileSize} bytes, ${Buffer.from(f.hash).toString('hex').slice(0, 16)}…`;
}
