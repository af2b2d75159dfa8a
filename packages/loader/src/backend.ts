import { NativeAddonError } from './errors.js';
import { loadNative, type NativeAddon } from './native.js';

/**
 * How weights reach memory:
 * - `mmap`: the native addon maps the file into one SharedArrayBuffer; views are zero-copy and
 *   every thread shares the same pages.
 * - `read`: pure JS; segments are read (pread) into SharedArrayBuffer slots. Chosen
 *   automatically when the addon cannot be loaded.
 */
export type BackendKind = 'mmap' | 'read';
export type BackendChoice = BackendKind | 'auto';

/** Environment override for tests and users: `AIRLLM_LOADER_BACKEND=mmap|read|auto`. */
export const BACKEND_ENV = 'AIRLLM_LOADER_BACKEND';

/**
 * The backend a residency mode uses unless the environment names one: `stream` reads its
 * segments explicitly (the `read` backend, through the addon's parallel and O_DIRECT reads when
 * it loads: faulting a file larger than RAM in through the mapping read at 0.60–0.86 of
 * read(2), and pages of a mapping cost page-cache churn the explicit reads avoid), the other
 * modes map the file.
 */
export function backendForMode(mode: 'resident' | 'stream' | 'sequential'): BackendChoice {
  const env = process.env[BACKEND_ENV];
  if (env === 'mmap' || env === 'read' || env === 'auto') return env;
  return mode === 'stream' ? 'read' : 'auto';
}

let warned = false;

/** Resolve a requested backend (option, else env, else auto) to the one used. */
export function resolveBackend(requested?: BackendChoice): { kind: BackendKind; addon?: NativeAddon } {
  const env = process.env[BACKEND_ENV];
  const choice: BackendChoice =
    requested ?? (env === 'mmap' || env === 'read' || env === 'auto' ? env : 'auto');
  if (choice === 'read') return { kind: 'read' };
  const r = loadNative();
  if ('addon' in r) return { kind: 'mmap', addon: r.addon };
  if (choice === 'mmap') {
    throw new NativeAddonError(`native mmap addon unavailable: ${r.error.message}`, {
      field: 'backend',
      expected: 'mmap',
    });
  }
  if (!warned) {
    warned = true;
    // The one log line the fallback promises: stderr, once per thread.
    process.stderr.write(
      `@airllm/loader: native mmap addon unavailable (${r.error.message.split('\n')[0]}); ` +
        'using the pread fallback (weights are copied into SharedArrayBuffer slots)\n',
    );
  }
  return { kind: 'read' };
}
