/**
 * paths_check.c and kquants_check.c: every compiled CPU path against the scalar path, in C. On this machine it is
 * linked with the objects node-gyp compiled for the addon, so it checks the code that ships. For
 * aarch64 it is cross-compiled and run under qemu-aarch64, the only way the NEON path runs on an
 * x86-64 host; that check is skipped, saying why, only where the cross compiler or qemu is absent.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { nativePaths } from '../src/native.js';

const ROOT = resolve(import.meta.dirname, '..');
/** Each C check and the line it prints when every path matched. */
const CHECKS = [
  { name: 'paths_check', file: join(ROOT, 'test/paths_check.c'), ok: /all paths match the scalar path/ },
  { name: 'kquants_check', file: join(ROOT, 'test/kquants_check.c'), ok: /all equal/ },
];
/** Where node-gyp's make build leaves the addon's object files. */
const OBJECTS = join(ROOT, 'build/Release/obj.target/airllm_kernels/native');
const KERNEL_UNITS = ['ops', 'dllama', 'scalar', 'avx2', 'avx512', 'amx', 'neon', 'kquants', 'kquants_x86'];
/** The units an aarch64 build of the checks needs. */
const ARM_UNITS = ['ops', 'dllama', 'scalar', 'neon', 'kquants', 'kquants_neon'];
const CC = process.env.CC || 'cc';

const dir = mkdtempSync(join(tmpdir(), 'airllm-kernels-paths-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function run(cmd: string, args: string[]): { status: number | null; output: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', cwd: ROOT });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

/** Whether `cmd` can be started at all. */
function present(cmd: string): boolean {
  return spawnSync(cmd, ['--version'], { stdio: 'ignore' }).error === undefined;
}

function expectBuilt(r: { status: number | null; output: string }): void {
  expect(r.status, r.output).toBe(0);
}

function expectAllMatch(r: { status: number | null; output: string }, ok: RegExp): void {
  expect(r.output).not.toMatch(/FAIL/);
  expect(r.output).toMatch(ok);
  expect(r.status, r.output).toBe(0);
}

for (const check of CHECKS) {
  it(`${check.name}: this machine's paths, as compiled into the addon, match the scalar path`, () => {
    const objects = KERNEL_UNITS.map((u) => join(OBJECTS, `${u}.o`));
    const missing = objects.filter((o) => !existsSync(o));
    if (missing.length > 0) throw new Error(`the addon's objects are missing (${missing.join(', ')}): run npm install in packages/kernels`);
    const exe = join(dir, `${check.name}-host`);
    expectBuilt(run(CC, ['-O2', '-ffp-contract=off', '-Inative', check.file, ...objects, '-lm', '-o', exe]));
    const r = run(exe, []);
    expectAllMatch(r, check.ok);
    // Every path the addon offers on this CPU was exercised, the scalar reference aside.
    const checked = [...r.output.matchAll(/^(\w+): checked$/gm)].map((m) => m[1]);
    expect(checked.sort()).toEqual(nativePaths().filter((p) => p !== 'scalar').sort());
  }, 300_000);
}

const CROSS = 'aarch64-linux-gnu-gcc';
const QEMU = 'qemu-aarch64';
const missingArmTools = [CROSS, QEMU].filter((t) => !present(t));
const armSkipped = missingArmTools.length > 0 ? `${missingArmTools.join(' and ')} not found (Debian: apt-get install gcc-aarch64-linux-gnu qemu-user)` : undefined;
if (armSkipped !== undefined) console.warn(`NEON path check skipped: ${armSkipped}`);

// Plain NEON, and the build that compiles neon.c's dot-product kernels (__ARM_FEATURE_DOTPROD).
for (const check of CHECKS) {
  for (const march of ['armv8-a', 'armv8.2-a+dotprod']) {
    it.skipIf(armSkipped !== undefined)(`${check.name}: the NEON path (-march=${march}) matches the scalar path under qemu-aarch64${armSkipped ? ` (skipped: ${armSkipped})` : ''}`, () => {
      const exe = join(dir, `${check.name}-${march}`);
      const sources = ARM_UNITS.map((u) => `native/${u}.c`);
      expectBuilt(run(CROSS, ['-O3', '-ffp-contract=off', `-march=${march}`, '-Inative', check.file, ...sources, '-lm', '-static', '-o', exe]));
      const r = run(QEMU, [exe]);
      expectAllMatch(r, check.ok);
      expect(r.output).toMatch(/^neon( \(dotprod\))?: checked$/m);
    }, 300_000);
  }
}
