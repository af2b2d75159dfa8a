import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { nativeAddon } from '../src/native.js';

/** A temp dir removed after the test file (also if a test fails). */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), `airllm-loader-${prefix}-`));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * Backends under test. The mmap backend must be present unless the run explicitly forces the
 * fallback (AIRLLM_LOADER_BACKEND=read): a missing addon fails the suite instead of hiding.
 */
export const BACKENDS: ('mmap' | 'read')[] = process.env.AIRLLM_LOADER_BACKEND === 'read' ? ['read'] : ['mmap', 'read'];

export function addon() {
  const a = nativeAddon();
  if (a === undefined) throw new Error('native addon not built: run npm install (node-gyp) in packages/loader');
  return a;
}

export const MiB = 1 << 20;
export const GiB = 1 << 30;

/**
 * Poll until `check` holds; fail after `ms`. For what another thread reports in its own time
 * (load events, segment states): a fixed sleep would depend on the machine's speed.
 */
export async function until(check: () => boolean, what: string, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((res) => setTimeout(res, 5));
  }
}
