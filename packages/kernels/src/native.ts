import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import type { KernelBackend } from './backend.js';
import { referenceBackend } from './reference.js';
import { NativeUnavailableError } from './errors.js';

/**
 * The native backend: the N-API addon built by node-gyp at install (`build/Release`). One binary
 * holds every CPU path (scalar, avx2, avx512, avx512vnni, avx512amx on x86-64; neon on aarch64); the best
 * one the CPU supports is chosen at load, or the one named by `AIRLLM_KERNELS`.
 */

/** CPU paths the addon may offer, best first within each architecture. */
export type NativePath = 'avx512amx' | 'avx512vnni' | 'avx512' | 'avx2' | 'neon' | 'scalar';
export type BackendPreference = 'auto' | 'native' | 'reference' | NativePath;

const OPS = [
  'matmul',
  'matmulQ80',
  'quantizeQ80',
  'dequantizeQ80',
  'rmsnorm',
  'rope',
  'attention',
  'softmax',
  'swiglu',
  'addScaled',
  'argmax',
  'moeRoute',
  'rmsnormDllama',
  'softmaxDllama',
  'attentionDllama',
  'swigluDllama',
  'ropeDllama',
  'moeRouteDllama',
  'matmulF32Dllama',
  'residualQ80',
  'rmsnormQ80',
  'swigluQ80',
] as const satisfies readonly (keyof KernelBackend)[];

type Op = (typeof OPS)[number];

/** What the addon's `create(path)` returns: ops bound to one CPU path. */
export interface AddonOps extends Partial<Pick<KernelBackend, Op>> {
  readonly path: NativePath;
  readonly features: readonly string[];
  /** The path's exp (tests measure its error). */
  readonly vexp?: (out: Float32Array, x: Float32Array, n: number) => void;
}

export interface Addon {
  readonly available: readonly NativePath[];
  create(path: NativePath): AddonOps;
  /** Sum of a buffer read with the widest loads available (memory-bandwidth probe). */
  readSum(buffer: Uint8Array, streams?: number): number;
  /**
   * Test hook: expf (kind 0), sinf (1) or cosf (2) of each x into out, from the C library when
   * `libm`, else from native/dllama.c's versions of glibc's algorithms.
   */
  mathf(kind: 0 | 1 | 2, out: Float32Array, x: Float32Array, libm: boolean): void;
}

/** A native backend and what it is made of. */
export interface NativeBackend extends KernelBackend {
  readonly name: 'native';
  /** The CPU path in use. */
  readonly path: NativePath;
  /** Ops the addon did not provide, served by the reference backend (normally empty). */
  readonly fallbacks: readonly Op[];
  /** Test hook: the path's vectorised exp. */
  readonly vexp: (out: Float32Array, x: Float32Array, n: number) => void;
}

/** The addon node-gyp builds at install; `AIRLLM_KERNELS_ADDON` may name another build. */
function addonFile(): string {
  return (
    process.env.AIRLLM_KERNELS_ADDON ||
    path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../build/Release/airllm_kernels.node')
  );
}

let addon: Addon | undefined;
let addonError: Error | undefined;

/** Loads the addon once per thread; throws NativeUnavailableError saying why it cannot. */
export function loadAddon(): Addon {
  if (addon !== undefined) return addon;
  if (addonError !== undefined) throw addonError;
  const file = addonFile();
  try {
    addon = createRequire(import.meta.url)(file) as Addon;
    return addon;
  } catch (e) {
    const why = e instanceof Error ? e.message.split('\n')[0]! : String(e);
    addonError = new NativeUnavailableError(`native kernels addon not loadable: ${why}`, { path: file });
    throw addonError;
  }
}

/** CPU paths this machine supports, best first (throws if the addon does not load). */
export function nativePaths(): readonly NativePath[] {
  return loadAddon().available;
}

const cache = new Map<NativePath, NativeBackend>();

/**
 * The native backend on `path` (default: `AIRLLM_KERNELS` if it names a path, else the best
 * path this CPU supports). Ops missing from the addon fall back to the reference backend, once,
 * here. Throws NativeUnavailableError if the addon does not load or the path is not supported.
 */
export function nativeBackend(path?: NativePath): NativeBackend {
  const a = loadAddon();
  const envPath = process.env.AIRLLM_KERNELS as NativePath | undefined;
  const chosen = path ?? (envPath !== undefined && a.available.includes(envPath) ? envPath : a.available[0]!);
  const hit = cache.get(chosen);
  if (hit !== undefined) return hit;
  if (!a.available.includes(chosen)) {
    throw new NativeUnavailableError(`CPU path '${chosen}' is not available on this machine`, {
      field: 'path',
      expected: a.available.join('|'),
      actual: chosen,
    });
  }
  const backend = assembleBackend(a.create(chosen));
  cache.set(chosen, backend);
  return backend;
}

/**
 * A frozen KernelBackend from the addon's ops for one path. An op the addon does not provide is
 * taken from the reference backend, here, once (listed in `fallbacks`); the hot path then calls
 * the addon's functions directly, with no wrapper.
 */
export function assembleBackend(ops: AddonOps): NativeBackend {
  const fallbacks: Op[] = [];
  const bound = {} as Record<Op, unknown>;
  for (const op of OPS) {
    const fn = ops[op];
    if (typeof fn === 'function') bound[op] = fn;
    else {
      bound[op] = referenceBackend[op];
      fallbacks.push(op);
    }
  }
  const vexp =
    ops.vexp ??
    ((out: Float32Array, x: Float32Array, n: number): void => {
      for (let i = 0; i < n; i++) out[i] = Math.fround(Math.exp(x[i]!));
    });
  return Object.freeze({
    name: 'native' as const,
    path: ops.path,
    features: Object.freeze([...ops.features]),
    fallbacks: Object.freeze(fallbacks),
    vexp,
    ...(bound as Pick<KernelBackend, Op>),
  });
}

let warned = false;

function warnOnce(message: string): void {
  if (warned) return;
  warned = true;
  process.stderr.write(`@airllm/kernels: ${message}\n`);
}

/**
 * The backend to compute with. `preference` (default: `AIRLLM_KERNELS`, else 'auto'):
 * 'reference' → the TypeScript reference; 'auto'/'native' → the native backend on the best
 * path; a path name → that path (if this CPU lacks it: the best path, with a note on stderr).
 * When the addon cannot be loaded, returns the reference backend and writes ONE line to stderr
 * saying why (once per thread).
 */
export function loadBackend(preference?: BackendPreference): KernelBackend {
  const pref = preference ?? ((process.env.AIRLLM_KERNELS as BackendPreference | undefined) || 'auto');
  if (pref === 'reference') return referenceBackend;
  let paths: readonly NativePath[];
  try {
    paths = nativePaths();
  } catch (e) {
    warnOnce(`using the TypeScript reference backend (${(e as Error).message})`);
    return referenceBackend;
  }
  if (pref === 'auto' || pref === 'native') return nativeBackend(paths[0]);
  if (!paths.includes(pref)) {
    warnOnce(`kernel path '${pref}' is not available on this CPU (${paths.join(', ')}); using '${paths[0]}'`);
    return nativeBackend(paths[0]);
  }
  return nativeBackend(pref);
}

/**
 * Native memory read probe: sums `buffer` (single thread). Used by the benchmarks. With
 * `streams` > 1 (at most 16) the buffer is read as that many equal parts in lockstep, the way
 * the matvec kernels walk several distant weight rows: one core gets more bandwidth from DRAM
 * with a few sequential streams than with one. The checksum depends on `streams`.
 */
export function readSum(buffer: Uint8Array, streams?: number): number {
  return loadAddon().readSum(buffer, streams);
}
