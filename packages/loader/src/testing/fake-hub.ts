/**
 * Test-only: a local HTTP server laid out like the Hugging Face hub (the URLs and headers
 * huggingface_hub relies on), with faults on demand. Not exported from index.ts; tests import it
 * from `@airllm/loader/testing`.
 *
 * - `HEAD|GET /<owner>/<repo>/resolve/<revision|commit>/<path>`: `X-Repo-Commit`; an LFS file
 *   answers 302 to `/cdn/<sha256>` with `X-Linked-Etag` (sha256) and `X-Linked-Size`; a file
 *   stored in git is served directly with `ETag` = its git blob sha1. 404 with `X-Error-Code`
 *   RepoNotFound / RevisionNotFound / EntryNotFound; 401 for a private repository without the token.
 * - `GET /cdn/<sha256>` (on a second server with `cdn: 'separate'`, so redirects cross origins):
 *   the bytes, with `Range` → 206.
 * - `GET /api/models/<repo>[/revision/<rev>]` → `{ id, sha, siblings }`;
 *   `GET /api/models/<repo>/tree/<rev>[/<dir>]` → entries with `oid`, `size`, `lfs: { oid, size }`,
 *   paginated with a `Link: <…>; rel="next"` header.
 *
 * Every commit a repository had stays resolvable, so a test can move `main` under a download;
 * `renamed` makes old repository ids answer 307 to the new one, as the hub does.
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeHubFile {
  path: string;
  content: Uint8Array;
  /** Stored with LFS (default: .safetensors, .gguf, .m, .bin, .t files). */
  lfs?: boolean;
  /** For an LFS file: the size the metadata claims (default: the true size). */
  announcedSize?: number;
}

export interface FakeHubRepoSpec {
  id: string;
  files: FakeHubFile[];
  /** Needs `Authorization: Bearer <token>` (the hub's token option). */
  private?: boolean;
}

/** A misbehaviour applied to the next `times` (default 1) content responses of `path`. */
export interface FakeHubFault {
  path: string;
  kind:
    | 'drop' // close the connection once `at` bytes of the file have been sent
    | 'stall' // stop sending at `at` bytes and keep the connection open
    | 'hold' // stop sending at `at` bytes until release() is called
    | 'ignore-range' // answer a Range request with 200 and the whole file
    | 'corrupt' // flip the byte at `at` (the metadata keeps the true checksum)
    | 'extra' // send `count` bytes beyond the file, announced in Content-Length
    | 'short-length' // announce and send `count` bytes fewer
    | 'short-chunked' // send `count` bytes fewer without a Content-Length
    | 'status'; // answer HTTP `status` (default 503) on the resolve URL, HEAD included
  at?: number;
  count?: number;
  status?: number;
  /** Only requests with this method (default: any; the content faults only ever apply to GET). */
  method?: 'GET' | 'HEAD';
  times?: number;
}

export interface FakeHubRequest {
  server: 'hub' | 'cdn';
  method: string;
  path: string;
  range?: string;
  authorization?: string;
  status: number;
  /** Repository path of the file whose content this request got, if any. */
  file?: string;
  /** Bytes of file content written to the connection (the body, not headers). */
  bodyBytes: number;
}

interface StoredFile {
  path: string;
  content: Uint8Array;
  lfs: boolean;
  announcedSize: number;
  sha256: string;
  gitSha1: string;
}

interface Commit {
  sha: string;
  files: Map<string, StoredFile>;
}

interface Repo {
  id: string;
  private: boolean;
  commits: Map<string, Commit>;
  main: string;
}

export function sha256Hex(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/** git's blob id of a file: sha1 over "blob <size>\0" + content. */
export function gitBlobSha1(b: Uint8Array): string {
  return createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
}

function store(f: FakeHubFile): StoredFile {
  const lfs = f.lfs ?? /\.(safetensors|gguf|m|bin|t)$/.test(f.path);
  return { path: f.path, content: f.content, lfs, announcedSize: f.announcedSize ?? f.content.length, sha256: sha256Hex(f.content), gitSha1: gitBlobSha1(f.content) };
}

function commitOf(files: Map<string, StoredFile>, salt: number): Commit {
  const h = createHash('sha1').update(String(salt));
  for (const f of [...files.values()].sort((a, b) => a.path.localeCompare(b.path))) h.update(`${f.path}\0${f.sha256}\0`);
  return { sha: h.digest('hex'), files };
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

export class FakeHub {
  readonly requests: FakeHubRequest[] = [];
  readonly #repos = new Map<string, Repo>();
  readonly #blobs = new Map<string, StoredFile>();
  readonly #faults: FakeHubFault[] = [];
  #held: (() => void)[] = [];
  readonly #token: string | undefined;
  readonly #pageSize: number;
  #salt = 0;
  #hub!: Server;
  #cdn: Server | undefined;
  url = '';
  cdnUrl = '';

  private constructor(options: { token?: string; treePageSize?: number }) {
    this.#token = options.token;
    this.#pageSize = options.treePageSize ?? 1000;
  }

  /** Old repository ids that answer 307 to the new one's URL (a renamed repository). */
  readonly #renamed = new Map<string, string>();

  static async start(options: { repos: FakeHubRepoSpec[]; token?: string; cdn?: 'same' | 'separate'; treePageSize?: number; renamed?: Record<string, string> }): Promise<FakeHub> {
    const hub = new FakeHub(options);
    for (const [from, to] of Object.entries(options.renamed ?? {})) hub.#renamed.set(from, to);
    for (const r of options.repos) hub.addRepo(r);
    hub.#hub = createServer((req, res) => hub.#handle('hub', req, res));
    hub.url = await listen(hub.#hub);
    if (options.cdn === 'separate') {
      hub.#cdn = createServer((req, res) => hub.#handle('cdn', req, res));
      hub.cdnUrl = await listen(hub.#cdn);
    } else {
      hub.cdnUrl = hub.url;
    }
    return hub;
  }

  addRepo(spec: FakeHubRepoSpec): string {
    const files = new Map(spec.files.map((f) => [f.path, store(f)]));
    const c = commitOf(files, this.#salt++);
    this.#repos.set(spec.id, { id: spec.id, private: spec.private ?? false, commits: new Map([[c.sha, c]]), main: c.sha });
    for (const f of files.values()) this.#blobs.set(f.sha256, f);
    return c.sha;
  }

  /** Change (or add) a file on main: a new commit; the old ones stay resolvable. */
  setFile(repoId: string, file: FakeHubFile): string {
    const repo = this.#repos.get(repoId)!;
    const files = new Map(repo.commits.get(repo.main)!.files);
    const f = store(file);
    files.set(f.path, f);
    this.#blobs.set(f.sha256, f);
    const c = commitOf(files, this.#salt++);
    repo.commits.set(c.sha, c);
    repo.main = c.sha;
    return c.sha;
  }

  commit(repoId: string): string {
    return this.#repos.get(repoId)!.main;
  }

  fault(f: FakeHubFault): void {
    this.#faults.push({ times: 1, ...f });
  }

  /** Let responses stopped by a 'hold' fault go on. */
  release(): void {
    const held = this.#held;
    this.#held = [];
    for (const go of held) go();
  }

  /** Bytes of `path`'s content written over all requests. */
  bytesServed(path: string): number {
    return this.requests.reduce((n, r) => n + (r.file === path ? r.bodyBytes : 0), 0);
  }

  /** The content requests (GETs that got file bytes) for `path`. */
  contentRequests(path: string): FakeHubRequest[] {
    return this.requests.filter((r) => r.file === path && r.method === 'GET');
  }

  async close(): Promise<void> {
    for (const s of [this.#hub, this.#cdn]) {
      if (s === undefined) continue;
      s.closeAllConnections();
      await new Promise<void>((resolve) => s.close(() => resolve()));
    }
  }

  #takeFault(path: string, method: string, status: boolean): FakeHubFault | undefined {
    const i = this.#faults.findIndex((f) => f.path === path && (f.kind === 'status') === status && (f.method === undefined || f.method === method));
    if (i < 0) return undefined;
    const f = this.#faults[i]!;
    f.times = (f.times ?? 1) - 1;
    if (f.times <= 0) this.#faults.splice(i, 1);
    return f;
  }

  #handle(server: 'hub' | 'cdn', req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const entry: FakeHubRequest = { server, method: req.method ?? 'GET', path: url.pathname, range: req.headers.range, authorization: req.headers.authorization, status: 0, bodyBytes: 0 };
    this.requests.push(entry);
    res.on('finish', () => (entry.status = res.statusCode));
    res.on('close', () => (entry.status ||= res.statusCode));
    const segs = url.pathname.split('/').slice(1).map(decodeURIComponent);
    try {
      if (segs[0] === 'cdn' && segs.length === 2) {
        const blob = this.#blobs.get(segs[1]!);
        if (blob === undefined) return this.#error(res, 404, 'EntryNotFound');
        return this.#sendContent(req, res, blob, entry, {});
      }
      if (server === 'cdn') return this.#error(res, 404, 'EntryNotFound');
      // Like the hub for a renamed repository: a relative redirect to the same path under the new name.
      const api = segs[0] === 'api' && segs[1] === 'models';
      const id = api ? `${segs[2]}/${segs[3]}` : `${segs[0]}/${segs[1]}`;
      const to = this.#renamed.get(id);
      if (to !== undefined) {
        const rest = segs.slice(api ? 4 : 2).map(encodeURIComponent).join('/');
        res.writeHead(307, { location: `${api ? '/api/models/' : '/'}${to}${rest === '' ? '' : `/${rest}`}${url.search}` });
        res.end();
        return;
      }
      if (segs[0] === 'api' && segs[1] === 'models') return this.#api(req, res, segs.slice(2), url);
      if (segs[2] === 'resolve' && segs.length >= 5) return this.#resolve(req, res, segs, entry);
      this.#error(res, 404, 'RepoNotFound');
    } catch (e) {
      res.statusCode = 500;
      res.end(String(e));
    }
  }

  #error(res: ServerResponse, status: number, code: string, headers: Record<string, string> = {}): void {
    res.writeHead(status, { 'x-error-code': code, 'x-error-message': code, 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify({ error: code }));
  }

  /** The repo and commit of `owner/name` at `rev`, or an error already sent. */
  #lookup(req: IncomingMessage, res: ServerResponse, id: string, rev: string): { repo: Repo; commit: Commit } | undefined {
    const repo = this.#repos.get(id);
    const authorized = this.#token !== undefined && req.headers.authorization === `Bearer ${this.#token}`;
    // Like the hub: a private repository and a missing one look alike to the unauthorized.
    if (repo === undefined || (repo.private && !authorized)) {
      this.#error(res, repo === undefined && authorized ? 404 : 401, 'RepoNotFound');
      return undefined;
    }
    const sha = rev === 'main' ? repo.main : rev;
    const commit = repo.commits.get(sha);
    if (commit === undefined) {
      this.#error(res, 404, 'RevisionNotFound');
      return undefined;
    }
    return { repo, commit };
  }

  #resolve(req: IncomingMessage, res: ServerResponse, segs: string[], entry: FakeHubRequest): void {
    const found = this.#lookup(req, res, `${segs[0]}/${segs[1]}`, segs[3]!);
    if (found === undefined) return;
    const path = segs.slice(4).join('/');
    const file = found.commit.files.get(path);
    if (file === undefined) return this.#error(res, 404, 'EntryNotFound', { 'x-repo-commit': found.commit.sha });
    const failure = this.#takeFault(path, req.method ?? 'GET', true);
    if (failure !== undefined) return this.#error(res, failure.status ?? 503, 'ServiceUnavailable');
    const common = { 'x-repo-commit': found.commit.sha, 'accept-ranges': 'bytes' };
    if (file.lfs) {
      res.writeHead(302, {
        ...common,
        location: `${this.cdnUrl}/cdn/${file.sha256}?sig=${found.commit.sha.slice(0, 8)}`,
        'x-linked-etag': `"${file.sha256}"`,
        'x-linked-size': String(file.announcedSize),
        etag: `"${file.gitSha1}"`,
        'content-length': '0',
      });
      res.end();
      return;
    }
    this.#sendContent(req, res, file, entry, { ...common, etag: `"${file.gitSha1}"` });
  }

  #api(req: IncomingMessage, res: ServerResponse, segs: string[], url: URL): void {
    const id = `${segs[0]}/${segs[1]}`;
    const kind = segs[2];
    const rev = kind === undefined ? 'main' : segs[3] ?? 'main';
    const found = this.#lookup(req, res, id, rev);
    if (found === undefined) return;
    const { commit } = found;
    if (kind === undefined || kind === 'revision') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ id, sha: commit.sha, siblings: [...commit.files.keys()].map((rfilename) => ({ rfilename })) }));
      return;
    }
    if (kind !== 'tree') return this.#error(res, 404, 'EntryNotFound');
    const dir = segs.slice(4).join('/');
    const prefix = dir === '' ? '' : `${dir}/`;
    const entries: unknown[] = [];
    const dirs = new Set<string>();
    for (const f of [...commit.files.values()].sort((a, b) => a.path.localeCompare(b.path))) {
      if (!f.path.startsWith(prefix)) continue;
      const rest = f.path.slice(prefix.length);
      const slash = rest.indexOf('/');
      if (slash >= 0) {
        const d = prefix + rest.slice(0, slash);
        if (!dirs.has(d)) entries.push({ type: 'directory', oid: gitBlobSha1(new TextEncoder().encode(d)), size: 0, path: d });
        dirs.add(d);
        continue;
      }
      entries.push({
        type: 'file',
        oid: f.gitSha1,
        size: f.lfs ? 134 : f.content.length,
        path: f.path,
        ...(f.lfs ? { lfs: { oid: f.sha256, size: f.announcedSize, pointerSize: 134 } } : {}),
      });
    }
    if (dir !== '' && entries.length === 0) return this.#error(res, 404, 'EntryNotFound');
    const cursor = Number(url.searchParams.get('cursor') ?? 0);
    const page = entries.slice(cursor, cursor + this.#pageSize);
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (cursor + this.#pageSize < entries.length) headers.link = `<${this.url}${url.pathname}?cursor=${cursor + this.#pageSize}>; rel="next"`;
    res.writeHead(200, headers);
    res.end(JSON.stringify(page));
  }

  #sendContent(req: IncomingMessage, res: ServerResponse, file: StoredFile, entry: FakeHubRequest, headers: Record<string, string>): void {
    entry.file = file.path;
    const fault = req.method === 'HEAD' ? undefined : this.#takeFault(file.path, 'GET', false);
    let content = file.content;
    if (fault?.kind === 'corrupt') {
      content = Uint8Array.from(content);
      const at = fault.at ?? content.length >> 1;
      content[at] = content[at]! ^ 0xff;
    }
    const size = content.length;
    let start = 0;
    let status = 200;
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (range !== null && fault?.kind !== 'ignore-range') {
      start = Number(range[1]);
      if (start >= size) {
        res.writeHead(416, { ...headers, 'content-range': `bytes */${size}` });
        res.end();
        return;
      }
      status = 206;
    }
    let body = content.subarray(start);
    let length: number | undefined = body.length;
    if (fault?.kind === 'extra') {
      const extra = new Uint8Array(fault.count ?? 100).fill(7);
      body = Buffer.concat([body, extra]);
      length = body.length;
    } else if (fault?.kind === 'short-length') {
      body = body.subarray(0, Math.max(0, body.length - (fault.count ?? 100)));
      length = body.length;
    } else if (fault?.kind === 'short-chunked') {
      body = body.subarray(0, Math.max(0, body.length - (fault.count ?? 100)));
      length = undefined;
    }
    const h: Record<string, string> = { ...headers, 'content-type': 'application/octet-stream', 'accept-ranges': 'bytes', etag: headers.etag ?? `"${file.sha256}"` };
    if (length !== undefined) h['content-length'] = String(length);
    if (status === 206) h['content-range'] = `bytes ${start}-${size - 1}/${size}`;
    res.writeHead(status, h);
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    // Where (in the body) the connection dies or stalls.
    let cut = fault?.kind === 'drop' || fault?.kind === 'stall' || fault?.kind === 'hold' ? Math.max(0, (fault.at ?? size >> 1) - start) : Infinity;
    let pos = 0;
    const CHUNK = 64 << 10;
    // 'drop' ends the connection after what was written has gone out (a FIN mid-body, as when a
    // proxy or the network gives up); 'stall' writes nothing more and leaves it open.
    const pump = (): void => {
      while (pos < body.length) {
        if (pos >= cut) {
          if (fault!.kind === 'drop') res.socket?.end();
          if (fault!.kind === 'hold') {
            this.#held.push(() => {
              cut = Infinity;
              pump();
            });
          }
          return;
        }
        const end = Math.min(body.length, pos + CHUNK, cut);
        const ok = res.write(body.subarray(pos, end));
        entry.bodyBytes += end - pos;
        pos = end;
        if (!ok) {
          res.once('drain', pump);
          return;
        }
      }
      res.end();
    };
    pump();
  }
}
