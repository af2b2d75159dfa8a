/**
 * `hf:` model specs and where their files live in the model cache.
 *
 *   hf:<owner>/<repo>[@<revision>]/<path>   one file of a repository (a .gguf, a .m, …)
 *   hf:<owner>/<repo>[@<revision>]          a safetensors repository, converted to .m + .t
 *
 * A revision is a branch, tag or commit (default `main`); one that contains `/` (`refs/pr/1`) is
 * written percent-encoded (`@refs%2Fpr%2F1`).
 *
 * Cache layout (a folder people may look into):
 *
 *   <cache>/<owner>/<repo>/<path>            a file as the repository has it (mirror)
 *   <cache>/<owner>/<repo>.m, <repo>.t       a safetensors repository converted
 *   <cache>/<owner>/<repo>@<revision>/…      the same for a revision other than main
 *
 * Next to a file while it is pulled: `<file>.partial` (the bytes so far), `<file>.partial.json`
 * (which remote version they belong to) and `<file>.lock`; after it is verified, `<file>.pull.json`
 * records where it came from.
 */
import { homedir } from 'node:os';
import { join } from 'node:path';
import { HubSpecError } from '../errors.js';

export const HUB_SPEC_PREFIX = 'hf:';
export const DEFAULT_REVISION = 'main';

export interface HubSpec {
  /** `owner/name`. */
  readonly repo: string;
  readonly owner: string;
  readonly name: string;
  readonly revision: string;
  /** Path of one file inside the repository; undefined for a whole safetensors repository. */
  readonly file?: string;
  /** The spec as written. */
  readonly text: string;
}

/** Limits from the hub's own naming rules (huggingface_hub validate_repo_id). */
const NAME_MAX = 96;
const PATH_MAX = 1024;
const SEGMENT_MAX = 255;
const REVISION_MAX = 255;
const FORM = 'hf:<owner>/<repo>[@<revision>][/<file>]';

export function isHubSpec(text: string): boolean {
  return text.startsWith(HUB_SPEC_PREFIX);
}

function fail(text: string, reason: string, field: string, actual?: string): never {
  throw new HubSpecError(`${reason} in model spec "${text}"`, { field, expected: FORM, actual });
}

/** Alphanumerics, `-`, `_`, `.`; no `--` or `..`; `-` and `.` neither first nor last. */
function checkName(text: string, part: string, value: string): void {
  if (value === '') fail(text, `empty ${part}`, part);
  if (value.length > NAME_MAX) fail(text, `${part} longer than ${NAME_MAX} characters`, part, value);
  if (!/^[A-Za-z0-9_.-]+$/.test(value) || /--|\.\./.test(value) || /^[-.]|[-.]$/.test(value)) {
    fail(text, `${part} may only hold letters, digits, "_", and single "-" or "." inside`, part, value);
  }
}

/** True for characters a path or revision must not contain (control characters, backslash). */
function hasBadChar(s: string): boolean {
  return /[\u0000-\u001f\u007f\\]/.test(s);
}

/**
 * True for a path inside a repository that is safe to use under the cache folder: plain
 * segments, nothing that climbs out (`..`), no backslashes or control characters.
 */
export function isPlainRepoPath(path: string): boolean {
  return path !== '' && path.length <= PATH_MAX && !hasBadChar(path) && path.split('/').every((seg) => seg !== '' && seg !== '.' && seg !== '..' && seg.length <= SEGMENT_MAX);
}

export function parseHubSpec(text: string): HubSpec {
  if (!isHubSpec(text)) fail(text, `not an ${HUB_SPEC_PREFIX} spec`, 'prefix');
  const rest = text.slice(HUB_SPEC_PREFIX.length);
  const slash = rest.indexOf('/');
  if (slash < 0) fail(text, 'no repository name', 'repo');
  const owner = rest.slice(0, slash);
  const afterOwner = rest.slice(slash + 1);
  const end = afterOwner.indexOf('/');
  const repoPart = end < 0 ? afterOwner : afterOwner.slice(0, end);
  const file = end < 0 ? undefined : afterOwner.slice(end + 1);
  const at = repoPart.indexOf('@');
  const name = at < 0 ? repoPart : repoPart.slice(0, at);
  checkName(text, 'owner', owner);
  checkName(text, 'repository name', name);
  let revision = DEFAULT_REVISION;
  if (at >= 0) {
    const raw = repoPart.slice(at + 1);
    try {
      revision = decodeURIComponent(raw);
    } catch {
      fail(text, 'revision is not valid percent-encoding', 'revision', raw);
    }
    if (revision === '' || revision.length > REVISION_MAX || hasBadChar(revision) || revision.split('/').some((s) => s === '' || s === '.' || s === '..')) {
      fail(text, 'unusable revision', 'revision', raw);
    }
  }
  if (file !== undefined) {
    if (file === '') fail(text, 'empty file path after the repository', 'file');
    if (file.length > PATH_MAX || hasBadChar(file)) fail(text, 'unusable file path', 'file', file);
    // The path becomes a path under the cache folder: nothing may climb out of it.
    if (!isPlainRepoPath(file)) fail(text, 'file path segments must be plain names', 'file', file);
  }
  return { repo: `${owner}/${name}`, owner, name, revision, file, text };
}

/** The spec written back in canonical form (revision shown only when not main). */
export function formatHubSpec(spec: Pick<HubSpec, 'owner' | 'name' | 'revision' | 'file'>): string {
  const rev = spec.revision === DEFAULT_REVISION ? '' : `@${encodeURIComponent(spec.revision)}`;
  return `${HUB_SPEC_PREFIX}${spec.owner}/${spec.name}${rev}${spec.file === undefined ? '' : `/${spec.file}`}`;
}

/**
 * The model cache folder: `$AIRLLM_HOME/models`, else `$XDG_CACHE_HOME/airllm/models`, else
 * `~/.cache/airllm/models`.
 */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.AIRLLM_HOME) return join(env.AIRLLM_HOME, 'models');
  return join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'airllm', 'models');
}

/** `<cache>/<owner>/<repo>[@<revision>]`: the repository's files as it has them. */
export function repoCacheDir(cacheDir: string, spec: Pick<HubSpec, 'owner' | 'name' | 'revision'>): string {
  const leaf = spec.revision === DEFAULT_REVISION ? spec.name : `${spec.name}@${encodeURIComponent(spec.revision)}`;
  return join(cacheDir, spec.owner, leaf);
}

/** Where a file spec's file lives in the cache. */
export function cachedFilePath(cacheDir: string, spec: HubSpec, file = spec.file): string {
  if (file === undefined) throw new HubSpecError('the spec names no file', { field: 'file', actual: spec.text });
  return join(repoCacheDir(cacheDir, spec), ...file.split('/'));
}

/** Where a safetensors repository's converted model goes: `<cache>/<owner>/<repo>[@<revision>].m`. */
export function convertedModelPath(cacheDir: string, spec: Pick<HubSpec, 'owner' | 'name' | 'revision'>): string {
  return `${repoCacheDir(cacheDir, spec)}.m`;
}
