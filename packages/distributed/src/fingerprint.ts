/**
 * What identifies a model file across machines: a CRC-32 of every region of it (the header, the
 * embedding, each layer, the final norm, the classifier), so a worker whose copy differs anywhere,
 * even inside one layer, is refused, and the error names the region.
 *
 * Cost: every byte of the file is read once. CRC-32 is zlib's (in Node since 20.15 / 22.2),
 * SIMD-accelerated, several GB/s on one core, so the read is the cost, not the sum (README:
 * "Model fingerprint"). The sums are kept in a small cache keyed by the file's device, inode,
 * size and modification time, so each node reads a file once, not at every start.
 *
 * CRC-32 guards against accidents (another fine-tune, a corrupted or edited copy), not against
 * a peer that lies: a peer that lies can send any activations anyway; the token and TLS decide
 * who is a peer.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { crc32 } from 'node:zlib';
import { readAnyModelFile, type WeightsLayout } from '@airllm/format';
import type { ModelFingerprint } from './protocol.js';

/** Bytes read at a time (two buffers: the next read runs while the CRC of this one is taken). */
const CHUNK = 8 << 20;
/** Cache files written by this version; others are recomputed. */
const CACHE_VERSION = 1;

/** A named part of the model file: its byte ranges, in the order they are summed. */
export interface Region {
  name: string;
  extents: { offset: number; length: number }[];
}

/** The regions of a model file: the header, then each layer and each tensor outside the layers. */
export function fingerprintRegions(layout: WeightsLayout): Region[] {
  const regions: Region[] = [{ name: 'header', extents: [{ offset: 0, length: layout.dataOffset }] }];
  for (const t of layout.tensors) {
    const name = t.layer >= 0 ? `layer ${t.layer}` : t.name;
    const last = regions[regions.length - 1]!;
    const extent = { offset: t.offset, length: t.byteLength };
    if (last.name === name) last.extents.push(extent);
    else regions.push({ name, extents: [extent] });
  }
  return regions;
}

export interface FingerprintOptions {
  /** Where sums are cached (default: $AIRLLM_HOME/checksums, else $XDG_CACHE_HOME/airllm/checksums, else ~/.cache/airllm/checksums); null: no cache. */
  cacheDir?: string | null;
  /** Called before the file is read (no valid cache entry), with the bytes to read. */
  onRead?: (bytes: number) => void;
}

export function defaultChecksumDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.AIRLLM_HOME) return join(env.AIRLLM_HOME, 'checksums');
  return join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'airllm', 'checksums');
}

interface CacheEntry {
  version: number;
  path: string;
  dev: string;
  ino: string;
  size: string;
  mtimeNs: string;
  regions: { name: string; bytes: number; crc: number }[];
}

/**
 * The model's fingerprint: file size, a CRC-32 per region, and a SHA-256 over those (one value
 * to compare and show). Reads the whole file unless the cache holds the sums for this very file.
 */
export async function modelFingerprint(path: string, options: FingerprintOptions = {}): Promise<ModelFingerprint> {
  const { layout } = readAnyModelFile(path);
  const regions = fingerprintRegions(layout);
  const cacheDir = options.cacheDir === undefined ? defaultChecksumDir() : options.cacheDir;
  const st = statSync(path, { bigint: true });
  const key = { path: resolve(path), dev: String(st.dev), ino: String(st.ino), size: String(st.size), mtimeNs: String(st.mtimeNs) };
  const cacheFile = cacheDir === null ? undefined : join(cacheDir, `${key.dev}-${key.ino}.json`);
  let sums = cacheFile === undefined ? undefined : readCache(cacheFile, key, regions);
  if (sums === undefined) {
    options.onRead?.(layout.fileSize);
    sums = await regionCrcs(path, regions);
    if (cacheFile !== undefined) writeCache(cacheFile, key, regions, sums);
  }
  return { fileSize: layout.fileSize, hash: combine(layout.fileSize, sums), regions: sums };
}

function combine(fileSize: number, sums: Uint32Array): Uint8Array {
  const h = createHash('sha256');
  const head = Buffer.alloc(8);
  head.writeDoubleLE(fileSize);
  h.update(head);
  h.update(Buffer.from(sums.buffer, sums.byteOffset, sums.byteLength));
  return new Uint8Array(h.digest());
}

/** CRC-32 of every region, reading the file once in 8 MiB chunks, the next read overlapping the sum. */
async function regionCrcs(path: string, regions: readonly Region[]): Promise<Uint32Array> {
  const fh = await open(path, 'r');
  try {
    const bufs = [Buffer.allocUnsafe(CHUNK), Buffer.allocUnsafe(CHUNK)];
    const pieces: { region: number; offset: number; length: number }[] = [];
    regions.forEach((r, region) => {
      for (const e of r.extents) for (let o = 0; o < e.length; o += CHUNK) pieces.push({ region, offset: e.offset + o, length: Math.min(CHUNK, e.length - o) });
    });
    const read = async (i: number): Promise<Buffer> => {
      const p = pieces[i]!;
      const b = bufs[i % 2]!;
      let done = 0;
      while (done < p.length) {
        const { bytesRead } = await fh.read(b, done, p.length - done, p.offset + done);
        if (bytesRead === 0) throw new Error(`${path}: file ends at byte ${p.offset + done}, inside ${regions[p.region]!.name}`);
        done += bytesRead;
      }
      return b.subarray(0, p.length);
    };
    const sums = new Uint32Array(regions.length);
    let next = pieces.length > 0 ? read(0) : undefined;
    for (let i = 0; i < pieces.length; i++) {
      const data = await next!;
      next = i + 1 < pieces.length ? read(i + 1) : undefined;
      const r = pieces[i]!.region;
      sums[r] = crc32(data, sums[r]);
    }
    return sums;
  } finally {
    await fh.close();
  }
}

function readCache(file: string, key: Omit<CacheEntry, 'version' | 'regions'>, regions: readonly Region[]): Uint32Array | undefined {
  let e: Partial<CacheEntry>;
  try {
    e = JSON.parse(readFileSync(file, 'utf8')) as Partial<CacheEntry>;
  } catch {
    return undefined;
  }
  if (e.version !== CACHE_VERSION || e.dev !== key.dev || e.ino !== key.ino || e.size !== key.size || e.mtimeNs !== key.mtimeNs) return undefined;
  const r = e.regions;
  const bytes = (x: Region): number => x.extents.reduce((n, ext) => n + ext.length, 0);
  if (!Array.isArray(r) || r.length !== regions.length || r.some((x, i) => x.name !== regions[i]!.name || x.bytes !== bytes(regions[i]!) || !Number.isInteger(x.crc) || x.crc < 0 || x.crc > 0xffffffff)) {
    return undefined;
  }
  return Uint32Array.from(r.map((x) => x.crc));
}

/** Best effort: a cache that cannot be written only means reading the file again next time. */
function writeCache(file: string, key: Omit<CacheEntry, 'version' | 'regions'>, regions: readonly Region[], sums: Uint32Array): void {
  const entry: CacheEntry = {
    version: CACHE_VERSION,
    ...key,
    regions: regions.map((r, i) => ({ name: r.name, bytes: r.extents.reduce((n, e) => n + e.length, 0), crc: sums[i]! })),
  };
  try {
    mkdirSync(join(file, '..'), { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(entry));
    renameSync(tmp, file);
  } catch {
    // Read-only home, full disk: the sums are still right for this run.
  }
}

export function sameFingerprint(a: ModelFingerprint, b: ModelFingerprint): boolean {
  return a.fileSize === b.fileSize && Buffer.from(a.hash).equals(Buffer.from(b.hash));
}

export function describeFingerprint(f: ModelFingerprint): string {
  return `${f.fileSize} bytes, ${Buffer.from(f.hash).toString('hex').slice(0, 16)}…`;
}

/**
 * What differs between the root's fingerprint and this node's, by region name ("layer 3, wcls"),
 * or undefined when the two cannot be compared region by region (another size or shape).
 */
export function differingRegions(theirs: ModelFingerprint, mine: ModelFingerprint, regions: readonly Region[]): string | undefined {
  if (theirs.fileSize !== mine.fileSize || theirs.regions.length !== mine.regions.length || mine.regions.length !== regions.length) return undefined;
  const names = regions.filter((_, i) => theirs.regions[i] !== mine.regions[i]).map((r) => r.name);
  if (names.length === 0) return undefined;
  return names.length <= 4 ? names.join(', ') : `${names.slice(0, 4).join(', ')} and ${names.length - 4} more`;
}
