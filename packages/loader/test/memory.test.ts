import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { availableMemory, cgroupRoom, parseMeminfo, readSystemMemory } from '@airllm/loader';

const GiB = 2 ** 30;
let roots: string[] = [];
afterEach(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
  roots = [];
});

/** A fake root holding the given files (paths relative to it). */
function fakeRoot(files: Record<string, string>): string {
  const root = mkdtempSync(join(tmpdir(), 'airllm-mem-'));
  roots.push(root);
  for (const [p, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, p)), { recursive: true });
    writeFileSync(join(root, p), text);
  }
  return root;
}

const MEMINFO = `MemTotal:       24683784 kB\nMemFree:         1000000 kB\nMemAvailable:   20000000 kB\nBuffers:           12 kB\n`;

describe('system memory figures', () => {
  it('reads MemAvailable and MemTotal in bytes', () => {
    expect(parseMeminfo(MEMINFO)).toEqual({ memAvailable: 20000000 * 1024, memTotal: 24683784 * 1024 });
    expect(parseMeminfo('')).toEqual({ memAvailable: undefined, memTotal: undefined });
  });

  it('without a cgroup limit, MemAvailable is the figure', () => {
    const root = fakeRoot({ 'proc/meminfo': MEMINFO, 'proc/self/cgroup': '0::/user.slice\n', 'sys/fs/cgroup/user.slice/memory.max': 'max\n' });
    const m = readSystemMemory(root);
    expect(m.cgroup).toBeUndefined();
    expect(availableMemory(m)).toEqual({ bytes: 20000000 * 1024, source: 'MemAvailable' });
  });

  it('a lower cgroup v2 memory.max wins, counting inactive page cache as reclaimable', () => {
    const root = fakeRoot({
      'proc/meminfo': MEMINFO,
      'proc/self/cgroup': '0::/a/b\n',
      'sys/fs/cgroup/a/memory.max': String(8 * GiB),
      'sys/fs/cgroup/a/memory.current': String(3 * GiB),
      'sys/fs/cgroup/a/memory.stat': `anon 1\ninactive_file ${1 * GiB}\nactive_file 5\n`,
      'sys/fs/cgroup/a/b/memory.max': 'max',
    });
    const m = readSystemMemory(root);
    expect(m.cgroup).toMatchObject({ version: 2, limit: 8 * GiB, usage: 3 * GiB, inactiveFile: 1 * GiB });
    expect(cgroupRoom(m.cgroup!)).toBe(6 * GiB);
    expect(availableMemory(m)).toEqual({ bytes: 6 * GiB, source: 'cgroup v2 memory.max' });
  });

  it('in a container (cgroup path not under the mount) the mount root limit applies', () => {
    const root = fakeRoot({
      'proc/meminfo': MEMINFO,
      'proc/self/cgroup': '0::/../host/path\n',
      'sys/fs/cgroup/memory.max': String(4 * GiB),
      'sys/fs/cgroup/memory.current': String(1 * GiB),
    });
    expect(availableMemory(readSystemMemory(root))).toEqual({ bytes: 3 * GiB, source: 'cgroup v2 memory.max' });
  });

  it('reads a cgroup v1 memory.limit_in_bytes; v1 "no limit" is ignored', () => {
    const files = {
      'proc/meminfo': MEMINFO,
      'proc/self/cgroup': '5:devices:/\n4:memory:/job/x\n0::/\n',
      'sys/fs/cgroup/memory/job/x/memory.limit_in_bytes': String(2 * GiB),
      'sys/fs/cgroup/memory/job/x/memory.usage_in_bytes': String(GiB / 2),
      'sys/fs/cgroup/memory/job/x/memory.stat': `cache 5\ntotal_inactive_file ${GiB / 4}\n`,
      'sys/fs/cgroup/memory/job/memory.limit_in_bytes': '9223372036854771712',
    };
    expect(availableMemory(readSystemMemory(fakeRoot(files)))).toEqual({ bytes: 2 * GiB - GiB / 4, source: 'cgroup v1 memory.limit_in_bytes' });
  });

  it('a cgroup limit above MemAvailable leaves MemAvailable; nothing known gives undefined', () => {
    const root = fakeRoot({ 'proc/meminfo': MEMINFO, 'proc/self/cgroup': '0::/\n', 'sys/fs/cgroup/memory.max': String(64 * GiB) });
    expect(availableMemory(readSystemMemory(root))?.source).toBe('MemAvailable');
    expect(availableMemory(readSystemMemory(fakeRoot({})))).toBeUndefined();
  });

  it('this machine: a positive figure no larger than MemTotal', () => {
    const m = readSystemMemory();
    const a = availableMemory(m);
    if (process.platform !== 'linux') return expect(a).toBeUndefined();
    expect(a!.bytes).toBeGreaterThan(0);
    expect(a!.bytes).toBeLessThanOrEqual(m.memTotal!);
  });
});
