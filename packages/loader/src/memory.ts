import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * How much memory this process may still take, from /proc/meminfo and the memory cgroup it
 * runs in (v2 `memory.max`, v1 `memory.limit_in_bytes`). Linux only: elsewhere every figure is
 * undefined and callers decide without one.
 */

/** A memory cgroup limit on this process (its own cgroup or the tightest of its ancestors). */
export interface CgroupMemory {
  readonly version: 1 | 2;
  /** The cgroup directory the figures were read from. */
  readonly path: string;
  /** memory.max (v2) / memory.limit_in_bytes (v1). */
  readonly limit: number;
  /** memory.current (v2) / memory.usage_in_bytes (v1): includes the group's page cache. */
  readonly usage: number;
  /** inactive_file of memory.stat (v1: total_inactive_file): page cache the kernel reclaims first. */
  readonly inactiveFile: number;
}

export interface SystemMemory {
  /** /proc/meminfo MemAvailable: what can be allocated without swapping (page cache counts). */
  readonly memAvailable: number | undefined;
  readonly memTotal: number | undefined;
  /** The cgroup limit leaving the least room, if any level has a limit. */
  readonly cgroup: CgroupMemory | undefined;
}

/** Bytes available, and which figure said so. */
export interface AvailableMemory {
  readonly bytes: number;
  /** 'MemAvailable', 'cgroup v2 memory.max' or 'cgroup v1 memory.limit_in_bytes'. */
  readonly source: string;
}

function read(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** A cgroup file holding one byte count; "max" and v1's "no limit" (≥ 2^62) are undefined. */
function bytesIn(path: string): number | undefined {
  const t = read(path)?.trim();
  if (t === undefined || !/^\d+$/.test(t)) return undefined;
  const v = Number(t);
  return v >= 2 ** 62 ? undefined : v;
}

/** One `name value` line of a memory.stat file. */
function statField(path: string, name: string): number {
  const m = new RegExp(`^${name} (\\d+)$`, 'm').exec(read(path) ?? '');
  return m ? Number(m[1]) : 0;
}

/** MemAvailable / MemTotal from the text of /proc/meminfo, in bytes. */
export function parseMeminfo(text: string): { memAvailable: number | undefined; memTotal: number | undefined } {
  const kb = (name: string): number | undefined => {
    const m = new RegExp(`^${name}:\\s*(\\d+) kB`, 'm').exec(text);
    return m ? Number(m[1]) * 1024 : undefined;
  };
  return { memAvailable: kb('MemAvailable'), memTotal: kb('MemTotal') };
}

/** Room left under a cgroup limit: the limit less what the group uses beyond reclaimable cache. */
export function cgroupRoom(c: CgroupMemory): number {
  return Math.max(0, c.limit - Math.max(0, c.usage - c.inactiveFile));
}

/** `dir` and its ancestors up to (and including) `mount`. */
function upTo(mount: string, rel: string): string[] {
  const parts = rel.split('/').filter((p) => p !== '' && p !== '.' && p !== '..');
  const out: string[] = [];
  for (let n = parts.length; n >= 0; n--) out.push(join(mount, ...parts.slice(0, n)));
  return out;
}

/** The limited level of this process's memory cgroup hierarchy that leaves the least room. */
function readCgroup(root: string): CgroupMemory | undefined {
  const lines = (read(join(root, 'proc/self/cgroup')) ?? '').split('\n');
  let best: CgroupMemory | undefined;
  const consider = (c: CgroupMemory): void => {
    if (best === undefined || cgroupRoom(c) < cgroupRoom(best)) best = c;
  };
  for (const line of lines) {
    const [, controllers, rel] = /^\d+:([^:]*):(.*)$/.exec(line) ?? [];
    if (rel === undefined) continue;
    if (controllers === '') {
      // v2 (unified). Inside a container the path may be the host's: then only the mount's own
      // files (the container's limit) exist.
      for (const mount of [join(root, 'sys/fs/cgroup'), join(root, 'sys/fs/cgroup/unified')]) {
        for (const dir of upTo(mount, rel)) {
          const limit = bytesIn(join(dir, 'memory.max'));
          if (limit === undefined) continue;
          consider({ version: 2, path: dir, limit, usage: bytesIn(join(dir, 'memory.current')) ?? 0, inactiveFile: statField(join(dir, 'memory.stat'), 'inactive_file') });
        }
      }
    } else if (controllers!.split(',').includes('memory')) {
      for (const mount of new Set([join(root, 'sys/fs/cgroup/memory'), join(root, 'sys/fs/cgroup', controllers!)])) {
        for (const dir of upTo(mount, rel)) {
          const limit = bytesIn(join(dir, 'memory.limit_in_bytes'));
          if (limit === undefined) continue;
          consider({ version: 1, path: dir, limit, usage: bytesIn(join(dir, 'memory.usage_in_bytes')) ?? 0, inactiveFile: statField(join(dir, 'memory.stat'), 'total_inactive_file') });
        }
      }
    }
  }
  return best;
}

/**
 * Read this machine's memory figures. `root` prefixes every path (`/` by default; tests point it
 * at a directory holding `proc/meminfo`, `proc/self/cgroup` and `sys/fs/cgroup/…`).
 */
export function readSystemMemory(root = '/'): SystemMemory {
  const { memAvailable, memTotal } = parseMeminfo(read(join(root, 'proc/meminfo')) ?? '');
  return { memAvailable, memTotal, cgroup: readCgroup(root) };
}

/** The lower of MemAvailable and the room under the cgroup limit; undefined when neither is known. */
export function availableMemory(m: SystemMemory): AvailableMemory | undefined {
  let best: AvailableMemory | undefined = m.memAvailable === undefined ? undefined : { bytes: m.memAvailable, source: 'MemAvailable' };
  if (m.cgroup !== undefined) {
    const room = cgroupRoom(m.cgroup);
    if (best === undefined || room < best.bytes) {
      best = { bytes: room, source: m.cgroup.version === 2 ? 'cgroup v2 memory.max' : 'cgroup v1 memory.limit_in_bytes' };
    }
  }
  return best;
}
