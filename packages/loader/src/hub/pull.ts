/**
 * `pullModel(spec)`: a model from the hub into the cache, and `resolveHubModel(spec)`: the cached
 * model of a spec, pulled first when the cache does not have it (what `-m hf:…` uses).
 *
 * A file spec (`hf:owner/repo/file.gguf`, `…/model.m`) is downloaded as is; for a `.m` model the
 * repository's tokenizer `.t` comes along (`<same name>.t`, else the repository's only `.t`).
 * A repository spec (`hf:owner/repo`) must be a Transformers safetensors checkpoint: its
 * config.json, tokenizer files and weight shards are downloaded and converted by @airllm/format's
 * importer to `<cache>/<owner>/<repo>.m` + `.t`; the shards are removed afterwards unless
 * `keepSource`. The converted model counts as present only once `<repo>.m.pull.json` exists,
 * which is written after both files are in place.
 */
import { mkdir, readFile, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, posix } from 'node:path';
import { fileError, FloatType, FormatError, floatTypeName, UnsupportedModelError } from '@airllm/format';
import { hfConfigToHeader, importHf, listSafetensorsShards, writeFileAtomic } from '@airllm/format/convert';
import { HubNotFoundError } from '../errors.js';
import { HubClient, remoteName, type HubClientOptions, type RemoteFile } from './client.js';
import { downloadFile, readPullRecord, RECORD_SUFFIX, writePullRecord, type DownloadOptions, type PullEvent } from './download.js';
import { acquireLock } from './lock.js';
import { cachedFilePath, convertedModelPath, defaultCacheDir, parseHubSpec, type HubSpec } from './spec.js';

export interface PullOptions extends HubClientOptions, DownloadOptions {
  /** The model cache folder. Default: defaultCacheDir() ($AIRLLM_HOME/models, ~/.cache/airllm/models). */
  cacheDir?: string;
  /** Weight type of a converted safetensors repository. Default Q40. */
  dtype?: FloatType;
  /** Keep a converted repository's safetensors shards in the cache. Default false. */
  keepSource?: boolean;
}

export interface PulledFile {
  readonly path: string;
  readonly dest: string;
  readonly size: number;
  readonly checksum: RemoteFile['checksum'];
  readonly status: 'cached' | 'downloaded';
  readonly resumedFrom: number;
}

export interface PullResult {
  readonly spec: HubSpec;
  readonly commit: string;
  /** The model file to run (the file itself, or the converted `.m`). */
  readonly modelPath: string;
  /** Its tokenizer, when the pull found or made one. */
  readonly tokenizerPath?: string;
  readonly files: readonly PulledFile[];
  /** Set when a safetensors repository was converted by this pull. */
  readonly converted?: { readonly dtype: string };
}

/** What `<repo>.m.pull.json` holds for a converted repository. */
export interface ConvertedRecord {
  readonly source: 'hf';
  readonly endpoint: string;
  readonly repo: string;
  readonly revision: string;
  readonly commit: string;
  readonly dtype: string;
  /** File names next to the record. */
  readonly model: string;
  readonly tokenizer: string;
  readonly files: readonly { readonly path: string; readonly size: number; readonly checksum: RemoteFile['checksum'] }[];
  readonly convertedAt: string;
}

/** Files besides the weights that a Transformers checkpoint's tokenizer and config may need. */
const CHECKPOINT_FILES = new Set([
  'config.json',
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'added_tokens.json',
  'chat_template.jinja',
  'tokenizer.model',
  'vocab.json',
  'merges.txt',
  'model.safetensors.index.json',
]);

function spec0(spec: string | HubSpec): HubSpec {
  return typeof spec === 'string' ? parseHubSpec(spec) : spec;
}

/** Pull a model into the cache (checking the hub for a newer version of what is cached). */
export async function pullModel(specIn: string | HubSpec, options: PullOptions = {}): Promise<PullResult> {
  const spec = spec0(specIn);
  const retries = options.retries ?? 5;
  const client = new HubClient({
    ...options,
    onMetadataRetry: (file, attempt, reason, delayMs) => options.onEvent?.({ type: 'retry', file, attempt, retries, reason, delayMs }),
  });
  const cacheDir = options.cacheDir ?? defaultCacheDir();
  return spec.file === undefined ? pullRepository(client, spec, cacheDir, options) : pullFile(client, spec, cacheDir, options);
}

/**
 * The local model of a spec: from the cache when it is there (no network), else pulled.
 * `pulled` says which.
 */
export async function resolveHubModel(specIn: string | HubSpec, options: PullOptions = {}): Promise<{ modelPath: string; tokenizerPath?: string; pulled: boolean }> {
  const spec = spec0(specIn);
  const cacheDir = options.cacheDir ?? defaultCacheDir();
  const cached = await cachedModel(spec, cacheDir);
  if (cached !== undefined) return { ...cached, pulled: false };
  const r = await pullModel(spec, options);
  return { modelPath: r.modelPath, tokenizerPath: r.tokenizerPath, pulled: true };
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** The cached model of a spec, if complete. */
export async function cachedModel(spec: HubSpec, cacheDir: string): Promise<{ modelPath: string; tokenizerPath?: string } | undefined> {
  if (spec.file !== undefined) {
    // A cached file is complete by construction: it only ever appears by a verified rename.
    const path = cachedFilePath(cacheDir, spec);
    if (!(await exists(path))) return undefined;
    const tok = (await readPullRecord(path))?.tokenizer;
    const tokenizerPath = tok !== undefined && (await exists(join(dirname(path), tok))) ? join(dirname(path), tok) : undefined;
    return { modelPath: path, tokenizerPath };
  }
  const model = convertedModelPath(cacheDir, spec);
  const record = await readConvertedRecord(model);
  if (record === undefined) return undefined;
  const tokenizerPath = join(dirname(model), record.tokenizer);
  if (!(await exists(model)) || !(await exists(tokenizerPath))) return undefined;
  return { modelPath: model, tokenizerPath };
}

async function readConvertedRecord(model: string): Promise<ConvertedRecord | undefined> {
  try {
    const j = JSON.parse(await readFile(model + RECORD_SUFFIX, 'utf8')) as ConvertedRecord;
    return typeof j.commit === 'string' && typeof j.tokenizer === 'string' && typeof j.dtype === 'string' ? j : undefined;
  } catch {
    return undefined;
  }
}

function pulled(remote: RemoteFile, r: { dest: string; status: 'cached' | 'downloaded'; resumedFrom: number }): PulledFile {
  return { path: remote.path, dest: r.dest, size: remote.size, checksum: remote.checksum, status: r.status, resumedFrom: r.resumedFrom };
}

async function pullFile(client: HubClient, spec: HubSpec, cacheDir: string, options: PullOptions): Promise<PullResult> {
  const remote = await client.fileInfo(spec, spec.file!);
  const dest = cachedFilePath(cacheDir, spec);
  const files = [pulled(remote, await downloadFile(client, remote, dest, options))];
  let tokenizerPath: string | undefined;
  if (spec.file!.endsWith('.m')) {
    const tok = await findTokenizer(client, spec, remote.commit);
    if (tok !== undefined) {
      const tokDest = cachedFilePath(cacheDir, spec, tok.path);
      files.push(pulled(tok, await downloadFile(client, tok, tokDest, options)));
      tokenizerPath = tokDest;
      const record = await readPullRecord(dest);
      if (record !== undefined) await writePullRecord(dest, { ...record, tokenizer: posix.relative(posix.dirname(spec.file!), tok.path) });
    }
  }
  return { spec, commit: remote.commit, modelPath: dest, tokenizerPath, files };
}

/** A `.m` model's tokenizer in its repository: `<same name>.t`, else the only `.t` in its folder. */
async function findTokenizer(client: HubClient, spec: HubSpec, commit: string): Promise<RemoteFile | undefined> {
  const file = spec.file!;
  const dir = posix.dirname(file);
  let listing: RemoteFile[];
  try {
    listing = await client.listFiles(spec.repo, spec.revision, commit, dir === '.' ? undefined : dir);
  } catch (e) {
    // A server that only serves files (no tree API) just gives no tokenizer.
    if (e instanceof HubNotFoundError) return undefined;
    throw e;
  }
  const ts = listing.filter((f) => f.path.endsWith('.t') && posix.dirname(f.path) === dir);
  return ts.find((f) => f.path === file.slice(0, -2) + '.t') ?? (ts.length === 1 ? ts[0] : undefined);
}

async function pullRepository(client: HubClient, spec: HubSpec, cacheDir: string, options: PullOptions): Promise<PullResult> {
  const emit = options.onEvent ?? (() => undefined);
  const dtype = options.dtype ?? FloatType.Q40;
  const dtypeName = floatTypeName(dtype).toLowerCase();
  const commit = await client.commitOf(spec.repo, spec.revision);
  const listing = await client.listFiles(spec.repo, spec.revision, commit);
  const byPath = new Map(listing.map((f) => [f.path, f]));
  const what = remoteName(spec.repo, spec.revision);
  const config = byPath.get('config.json');
  if (config === undefined) {
    const ggufs = listing.filter((f) => /\.(gguf|m)$/.test(f.path)).map((f) => f.path);
    const hint = ggufs.length > 0 ? `; name one of its files instead, e.g. ${remoteName(spec.repo, spec.revision, ggufs[0])}` : '';
    throw new UnsupportedModelError(`the repository has no config.json, so it is not a Transformers checkpoint${hint}`, { field: what });
  }
  const model = convertedModelPath(cacheDir, spec);
  const tokenizer = model.slice(0, -2) + '.t';
  try {
    await mkdir(dirname(model), { recursive: true });
  } catch (e) {
    throw fileError(e, dirname(model), 'create the cache folder');
  }
  const lock = await acquireLock(model + '.lock', { staleMs: options.lockStaleMs, signal: options.signal, onWait: (holder) => emit({ type: 'wait', file: basename(model), lock: model + '.lock', holder }) });
  try {
    const record = await readConvertedRecord(model);
    if (record !== undefined && record.commit === commit && record.dtype === dtypeName && (await exists(model)) && (await exists(tokenizer))) {
      return { spec, commit, modelPath: model, tokenizerPath: tokenizer, files: [] };
    }
    const get = async (remote: RemoteFile): Promise<PulledFile> => pulled(remote, await downloadFile(client, remote, cachedFilePath(cacheDir, spec, remote.path), options));
    const files: PulledFile[] = [];
    // config.json first: a model the converter cannot take is refused before any weight moves.
    files.push(await get(config));
    const configPath = files[0]!.dest;
    try {
      hfConfigToHeader(JSON.parse(await readFile(configPath, 'utf8')), dtype);
    } catch (e) {
      throw e instanceof FormatError ? e.withPath(configPath) : new UnsupportedModelError(`config.json is not valid JSON (${(e as Error).message})`, { path: configPath });
    }
    if (!byPath.has('tokenizer.json')) throw new UnsupportedModelError('the repository has no tokenizer.json (tokenizer.model alone is not supported)', { field: `${what}/tokenizer.json` });
    for (const f of listing) if (CHECKPOINT_FILES.has(f.path) && f.path !== 'config.json') files.push(await get(f));
    // Weight shards: those the index names when there is one (a repository may hold both a
    // sharded and a consolidated copy), else every top-level *.safetensors.
    const dir = dirname(configPath);
    let shards: string[];
    if (byPath.has('model.safetensors.index.json')) {
      shards = (await listSafetensorsShards(dir)).map((p) => basename(p));
    } else {
      shards = listing.filter((f) => f.path.endsWith('.safetensors') && !f.path.includes('/')).map((f) => f.path);
    }
    if (shards.length === 0) throw new UnsupportedModelError('the repository has no *.safetensors weights', { field: what });
    const shardFiles = shards.map((s) => {
      const f = byPath.get(s);
      if (f === undefined) throw new HubNotFoundError('model.safetensors.index.json names a shard the repository does not have', { field: `${what}/${s}` });
      return f;
    });
    for (const f of shardFiles) files.push(await get(f));

    // The record goes first and comes back last: a crash mid-conversion leaves no record, so
    // the half-replaced pair is never taken for a model.
    await rm(model + RECORD_SUFFIX, { force: true });
    await importHf({ dir, model, tokenizerOut: tokenizer }, { dtype, overwrite: true, onProgress: (done, total) => emit({ type: 'convert', done, total }) });
    const converted: ConvertedRecord = {
      source: 'hf',
      endpoint: client.endpoint,
      repo: spec.repo,
      revision: spec.revision,
      commit,
      dtype: dtypeName,
      model: basename(model),
      tokenizer: basename(tokenizer),
      files: files.map((f) => ({ path: f.path, size: f.size, checksum: f.checksum })),
      convertedAt: new Date().toISOString(),
    };
    await writeFileAtomic(model + RECORD_SUFFIX, new TextEncoder().encode(`${JSON.stringify(converted, null, 2)}\n`), { overwrite: true });
    if (!options.keepSource) {
      for (const f of shardFiles) {
        const p = cachedFilePath(cacheDir, spec, f.path);
        await rm(p, { force: true });
        await rm(p + RECORD_SUFFIX, { force: true });
      }
    }
    return { spec, commit, modelPath: model, tokenizerPath: tokenizer, files, converted: { dtype: dtypeName } };
  } finally {
    await lock.release();
  }
}
