/**
 * A client for a Hugging Face-style model hub: the URLs and headers huggingface_hub relies on, so
 * the same code talks to huggingface.co, a mirror (`HF_ENDPOINT`) or a test server.
 *
 * - `HEAD <hub>/<repo>/resolve/<revision>/<path>`: `X-Repo-Commit` (the commit the revision
 *   points at), `X-Linked-Etag` / `X-Linked-Size` for LFS files (the sha256 and size of the
 *   content; the response itself is a 302 to a CDN, which we do not follow for metadata), or
 *   `ETag` (the git blob sha1) and `Content-Length` for files stored in git.
 * - `GET /api/models/<repo>/revision/<revision>`: `sha`, the commit.
 * - `GET /api/models/<repo>/tree/<commit>`: `[{ type, path, size, oid, lfs?: { oid, size } }]`,
 *   paginated with `Link: <…>; rel="next"`.
 * - File bytes: `GET …/resolve/<commit>/<path>` (pinned to the commit, so a branch moving during
 *   a pull cannot mix versions), following redirects, with `Range: bytes=<n>-` to resume.
 *
 * Redirects are followed here rather than by fetch so that the `Authorization` header only ever
 * goes to the hub's own origin, never to the CDN a file redirects to (its URL is signed).
 */
import { HubAuthError, HubHttpError, HubNotFoundError } from '../errors.js';
import { DEFAULT_REVISION, isPlainRepoPath, type HubSpec } from './spec.js';

export const DEFAULT_ENDPOINT = 'https://huggingface.co';

/** Bounds on what the hub's JSON answers may make us hold in memory. */
export const HUB_LIMITS = Object.freeze({
  jsonBytes: 64 << 20,
  treeEntries: 100_000,
  redirects: 10,
});

export interface HubClientOptions {
  /** Hub base URL. Default: $AIRLLM_HUB, else $HF_ENDPOINT, else https://huggingface.co. */
  endpoint?: string;
  /** Sent as `Authorization: Bearer <token>` to the hub's origin. Default: $HF_TOKEN. */
  token?: string;
  /** A request (or a download) that receives nothing for this long is abandoned. Default 60 s. */
  stallTimeoutMs?: number;
  /** Cancels every request of this client. */
  signal?: AbortSignal;
  /** Tries after no answer or a 5xx/408/429, for metadata and downloads alike. Default 5. */
  retries?: number;
  /** First wait before a retry, doubled each time up to 30 s. Default 1000 ms. */
  retryDelayMs?: number;
  /** Told before each metadata retry (downloads report theirs as pull events). */
  onMetadataRetry?: (what: string, attempt: number, reason: string, delayMs: number) => void;
}

export type ChecksumAlgorithm = 'sha256' | 'git-sha1';

/** One file of a repository at one commit, with what the hub says its bytes are. */
export interface RemoteFile {
  readonly repo: string;
  readonly revision: string;
  readonly commit: string;
  readonly path: string;
  readonly size: number;
  /** sha256 of the content for LFS files; the git blob sha1 for files stored in git. */
  readonly checksum: { readonly algorithm: ChecksumAlgorithm; readonly hex: string };
  /** The resolve URL pinned to `commit`. */
  readonly url: string;
}

export function defaultEndpoint(env: NodeJS.ProcessEnv = process.env): string {
  return env.AIRLLM_HUB || env.HF_ENDPOINT || DEFAULT_ENDPOINT;
}

/** `hf:owner/repo@rev/path` naming a remote file in errors. */
export function remoteName(repo: string, revision: string, path?: string): string {
  return `hf:${repo}${revision === DEFAULT_REVISION ? '' : `@${encodeURIComponent(revision)}`}${path === undefined ? '' : `/${path}`}`;
}

/** `W/"abc"` or `"abc"` → `abc` (lower case). */
export function normalizeEtag(etag: string | null): string | undefined {
  if (etag === null) return undefined;
  return etag.trim().replace(/^W\//, '').replace(/^"|"$/g, '').toLowerCase();
}

export function checksumOf(etag: string | undefined): RemoteFile['checksum'] | undefined {
  if (etag === undefined) return undefined;
  if (/^[0-9a-f]{64}$/.test(etag)) return { algorithm: 'sha256', hex: etag };
  if (/^[0-9a-f]{40}$/.test(etag)) return { algorithm: 'git-sha1', hex: etag };
  return undefined;
}

const COMMIT_RE = /^[0-9a-f]{40}$/;

/** Arms a timer that aborts the request when nothing arrives for `ms`; `touch()` on progress. */
export class Watchdog {
  readonly #controller = new AbortController();
  readonly #ms: number;
  readonly #outer: AbortSignal | undefined;
  readonly #onOuterAbort = (): void => this.#controller.abort(this.#outer?.reason);
  #timer: NodeJS.Timeout | undefined;
  stalled = false;

  constructor(ms: number, outer?: AbortSignal) {
    this.#ms = ms;
    this.#outer = outer;
    if (outer?.aborted) this.#controller.abort(outer.reason);
    else outer?.addEventListener('abort', this.#onOuterAbort, { once: true });
    this.touch();
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  touch(): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.stalled = true;
      this.#controller.abort(new Error(`nothing received for ${this.#ms} ms`));
    }, this.#ms);
  }

  stop(): void {
    clearTimeout(this.#timer);
    this.#outer?.removeEventListener('abort', this.#onOuterAbort);
  }
}

function errnoOf(e: unknown): string {
  const cause = (e as { cause?: { code?: unknown } } | undefined)?.cause;
  const code = (cause?.code ?? (e as { code?: unknown } | undefined)?.code) as string | undefined;
  return typeof code === 'string' ? code : (e as Error | undefined)?.name ?? 'network error';
}

/** A wait that an abort ends early (rejecting with the signal's reason). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = (): void => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** The wait before retry `attempt` (1-based): `first`, doubled each time, at most 30 s. */
export function retryDelay(first: number, attempt: number): number {
  return Math.min(30_000, first * 2 ** (attempt - 1));
}

/** Errors of requests that never got an answer (refused, reset, timed out). */
const networkErrors = new WeakSet<Error>();

/** True when trying again may help: no answer at all, or HTTP 5xx, 408 or 429. */
export function isTransient(e: unknown): boolean {
  if (!(e instanceof HubHttpError)) return false;
  if (networkErrors.has(e)) return true;
  const status = e.actual;
  return typeof status === 'number' && (status >= 500 || status === 408 || status === 429);
}

export class HubClient {
  readonly endpoint: string;
  readonly #origin: string;
  readonly #token: string | undefined;
  readonly stallTimeoutMs: number;
  readonly signal: AbortSignal | undefined;
  readonly #options: HubClientOptions;

  constructor(options: HubClientOptions = {}) {
    this.#options = options;
    const endpoint = (options.endpoint ?? defaultEndpoint()).replace(/\/+$/, '');
    let url: URL;
    try {
      url = new URL(endpoint);
    } catch {
      throw new HubHttpError('hub endpoint is not a URL', { field: 'endpoint', expected: 'http(s)://host[:port][/prefix]', actual: endpoint });
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new HubHttpError('hub endpoint must be http or https', { field: 'endpoint', actual: endpoint });
    }
    this.endpoint = endpoint;
    this.#origin = url.origin;
    this.#token = options.token ?? (process.env.HF_TOKEN || undefined);
    this.stallTimeoutMs = options.stallTimeoutMs ?? 60_000;
    this.signal = options.signal;
  }

  resolveUrl(repo: string, revision: string, path: string): string {
    return `${this.endpoint}/${repo}/resolve/${encodeURIComponent(revision)}/${path.split('/').map(encodeURIComponent).join('/')}`;
  }

  #headers(url: string, extra: Record<string, string>): Record<string, string> {
    const h: Record<string, string> = { 'accept-encoding': 'identity', 'user-agent': 'airllm', ...extra };
    if (this.#token !== undefined && new URL(url).origin === this.#origin) h.authorization = `Bearer ${this.#token}`;
    return h;
  }

  /**
   * One request with redirects followed by hand (see the file comment). `stopAt` may end the
   * chain at a redirect (metadata HEADs stop at the hub's own 302 to the CDN). Network failures
   * become HubHttpError with the error code in `actual`.
   */
  async request(
    url: string,
    init: { method?: 'GET' | 'HEAD'; headers?: Record<string, string>; signal?: AbortSignal; stopAt?: (r: Response) => boolean; what: string },
  ): Promise<Response> {
    let current = url;
    for (let hop = 0; ; hop++) {
      let res: Response;
      try {
        res = await fetch(current, { method: init.method ?? 'GET', headers: this.#headers(current, init.headers ?? {}), redirect: 'manual', signal: init.signal });
      } catch (e) {
        if (init.signal?.aborted && this.signal?.aborted) throw this.signal.reason ?? e;
        // fetch says only "fetch failed"; the cause says why (refused, reset, a blocked port…).
        const why = ((e as { cause?: Error }).cause?.message || (e as Error).message) ?? 'network error';
        const err = new HubHttpError(`cannot reach the hub (${why})`, { field: init.what, actual: errnoOf(e) });
        networkErrors.add(err);
        throw err;
      }
      const location = res.headers.get('location');
      if (res.status < 300 || res.status > 399 || location === null || init.stopAt?.(res)) return res;
      await res.body?.cancel();
      if (hop >= HUB_LIMITS.redirects) throw new HubHttpError(`more than ${HUB_LIMITS.redirects} redirects`, { field: init.what, actual: res.status });
      current = new URL(location, current).href;
    }
  }

  /** A non-2xx answer as the typed error it means (404 → not found, 401/403 → auth, …). */
  async statusError(res: Response, what: string, url: string): Promise<Error> {
    await res.body?.cancel().catch(() => undefined);
    const code = res.headers.get('x-error-code');
    const hubMessage = res.headers.get('x-error-message');
    const suffix = `${hubMessage ? `: ${hubMessage}` : ''} (${url})`;
    if (res.status === 401 || res.status === 403) {
      const hint = code === 'GatedRepo'
        ? 'gated repository: accept its terms on the hub, then set HF_TOKEN'
        : this.#token === undefined
          ? 'the repository is private or does not exist: set HF_TOKEN for a private one'
          : 'the hub refused the token in HF_TOKEN, or the repository does not exist';
      return new HubAuthError(`${hint}${suffix}`, { field: what, actual: res.status });
    }
    if (res.status === 404) {
      const kind = code === 'RepoNotFound' ? 'no such repository' : code === 'RevisionNotFound' ? 'no such revision' : code === 'EntryNotFound' ? 'no such file in the repository' : 'not found';
      return new HubNotFoundError(`${kind} on the hub${suffix}`, { field: what, actual: 404 });
    }
    return new HubHttpError(`the hub answered HTTP ${res.status}${suffix}`, { field: what, actual: res.status });
  }

  /** `fn` again after a transient failure, as `retries` and `retryDelayMs` say. */
  async #retrying<T>(what: string, fn: () => Promise<T>): Promise<T> {
    const retries = this.#options.retries ?? 5;
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (e) {
        if (!isTransient(e) || attempt > retries) throw e;
        const delayMs = retryDelay(this.#options.retryDelayMs ?? 1000, attempt);
        const err = e as HubHttpError;
        this.#options.onMetadataRetry?.(what, attempt, typeof err.actual === 'string' ? `${err.reason} (${err.actual})` : err.reason, delayMs);
        await sleep(delayMs, this.signal);
      }
    }
  }

  /** HEAD the resolve URL of a file: its commit, size and checksum. */
  async fileInfo(spec: Pick<HubSpec, 'repo' | 'revision'>, path: string): Promise<RemoteFile> {
    const what = remoteName(spec.repo, spec.revision, path);
    return this.#retrying(what, () => this.#fileInfo(spec, path, what));
  }

  async #fileInfo(spec: Pick<HubSpec, 'repo' | 'revision'>, path: string, what: string): Promise<RemoteFile> {
    const url = this.resolveUrl(spec.repo, spec.revision, path);
    const dog = new Watchdog(this.stallTimeoutMs, this.signal);
    let res: Response;
    try {
      // A redirect that carries the hub's file headers is the file's own (to its CDN): stop
      // there, as huggingface_hub does. Other redirects (a renamed repository) are followed.
      res = await this.request(url, { method: 'HEAD', signal: dog.signal, what, stopAt: (r) => r.headers.has('x-repo-commit') || r.headers.has('x-linked-etag') });
    } catch (e) {
      throw this.#stalled(e, dog, what);
    } finally {
      dog.stop();
    }
    if (res.status >= 400) throw await this.statusError(res, what, url);
    const commit = res.headers.get('x-repo-commit')?.toLowerCase();
    if (commit === undefined || !COMMIT_RE.test(commit)) {
      throw new HubHttpError(`the server did not answer like a model hub (no X-Repo-Commit header) (${url})`, { field: what, actual: commit ?? 'none' });
    }
    const redirected = res.status >= 300;
    const checksum = checksumOf(normalizeEtag(res.headers.get('x-linked-etag') ?? res.headers.get('etag')));
    if (checksum === undefined) {
      throw new HubHttpError(`the hub gave no sha256 or git sha1 for the file (X-Linked-Etag / ETag) (${url})`, { field: what, actual: res.headers.get('x-linked-etag') ?? res.headers.get('etag') ?? 'none' });
    }
    const sizeText = res.headers.get('x-linked-size') ?? (redirected ? null : res.headers.get('content-length'));
    const size = sizeText === null ? NaN : Number(sizeText);
    if (!Number.isSafeInteger(size) || size < 0 || !/^\d+$/.test(sizeText ?? '')) {
      throw new HubHttpError(`the hub gave no usable file size (X-Linked-Size / Content-Length) (${url})`, { field: what, actual: sizeText ?? 'none' });
    }
    return { repo: spec.repo, revision: spec.revision, commit, path, size, checksum, url: this.resolveUrl(spec.repo, commit, path) };
  }

  /** The commit a revision points at. */
  async commitOf(repo: string, revision: string): Promise<string> {
    const url = `${this.endpoint}/api/models/${repo}/revision/${encodeURIComponent(revision)}`;
    const what = remoteName(repo, revision);
    const info = await this.getJson(url, what);
    const sha = (info as { sha?: unknown } | null)?.sha;
    if (typeof sha !== 'string' || !COMMIT_RE.test(sha)) {
      throw new HubHttpError(`the hub's model info has no commit sha (${url})`, { field: `${what} sha`, actual: String(sha) });
    }
    return sha;
  }

  /** The files in one folder of the repository at `commit` (default: the top), with sizes and checksums. */
  async listFiles(repo: string, revision: string, commit: string, dir?: string): Promise<RemoteFile[]> {
    const what = remoteName(repo, revision, dir);
    const out: RemoteFile[] = [];
    const sub = dir === undefined ? '' : `/${dir.split('/').map(encodeURIComponent).join('/')}`;
    let url: string | undefined = `${this.endpoint}/api/models/${repo}/tree/${commit}${sub}`;
    while (url !== undefined) {
      const { json, next } = await this.#getJsonPage(url, what);
      if (!Array.isArray(json)) throw new HubHttpError(`the hub's tree listing is not a JSON array (${url})`, { field: what });
      for (const e of json as unknown[]) {
        const entry = e as { type?: unknown; path?: unknown; size?: unknown; oid?: unknown; lfs?: { oid?: unknown; size?: unknown } | null };
        if (entry?.type !== 'file') continue;
        const path = entry.path;
        const lfs = entry.lfs ?? undefined;
        const size = lfs !== undefined ? lfs.size : entry.size;
        const checksum = checksumOf(typeof (lfs !== undefined ? lfs.oid : entry.oid) === 'string' ? String(lfs !== undefined ? lfs.oid : entry.oid).toLowerCase() : undefined);
        // Paths become paths under the cache folder: the server gets no say outside it.
        if (typeof path !== 'string' || !isPlainRepoPath(path) || typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0 || checksum === undefined) {
          throw new HubHttpError(`the hub's tree listing has an unusable entry (${url})`, { field: what, actual: JSON.stringify(e).slice(0, 200) });
        }
        if (lfs !== undefined && checksum.algorithm !== 'sha256') {
          throw new HubHttpError(`an LFS entry's oid is not a sha256 (${url})`, { field: `${what}/${path}`, actual: String(lfs.oid) });
        }
        out.push({ repo, revision, commit, path, size, checksum, url: this.resolveUrl(repo, commit, path) });
        if (out.length > HUB_LIMITS.treeEntries) throw new HubHttpError('the repository lists too many files', { field: what, expected: `≤ ${HUB_LIMITS.treeEntries}` });
      }
      url = next;
    }
    return out;
  }

  /** GET a JSON document of at most HUB_LIMITS.jsonBytes. */
  async getJson(url: string, what: string): Promise<unknown> {
    return (await this.#getJsonPage(url, what)).json;
  }

  async #getJsonPage(url: string, what: string): Promise<{ json: unknown; next?: string }> {
    return this.#retrying(what, () => this.#getJsonPageOnce(url, what));
  }

  async #getJsonPageOnce(url: string, what: string): Promise<{ json: unknown; next?: string }> {
    const dog = new Watchdog(this.stallTimeoutMs, this.signal);
    try {
      const res = await this.request(url, { signal: dog.signal, what, headers: { accept: 'application/json' } });
      if (res.status >= 300) throw await this.statusError(res, what, url);
      const chunks: Uint8Array[] = [];
      let n = 0;
      for await (const chunk of res.body ?? []) {
        dog.touch();
        n += (chunk as Uint8Array).length;
        if (n > HUB_LIMITS.jsonBytes) {
          await res.body?.cancel().catch(() => undefined);
          throw new HubHttpError('the hub sent a JSON answer larger than allowed', { field: what, expected: `≤ ${HUB_LIMITS.jsonBytes} bytes`, actual: `> ${HUB_LIMITS.jsonBytes}` });
        }
        chunks.push(chunk as Uint8Array);
      }
      let json: unknown;
      try {
        json = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch (e) {
        throw new HubHttpError(`the hub's answer is not JSON (${(e as Error).message}) (${url})`, { field: what });
      }
      const link = res.headers.get('link');
      const m = link === null ? null : /<([^>]+)>\s*;\s*rel="?next"?/.exec(link);
      return { json, next: m === null ? undefined : new URL(m[1]!, url).href };
    } catch (e) {
      throw this.#stalled(e, dog, what);
    } finally {
      dog.stop();
    }
  }

  #stalled(e: unknown, dog: Watchdog, what: string): unknown {
    if (dog.stalled) return new HubHttpError(`the hub sent nothing for ${this.stallTimeoutMs} ms`, { field: what, actual: 'stalled' });
    return e;
  }
}
