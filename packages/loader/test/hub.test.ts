import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { hostname } from 'node:os';
import { afterEach, describe, expect, it } from 'vitest';
import {
  ChecksumMismatchError,
  DiskFullError,
  DownloadSizeError,
  HubAuthError,
  HubClient,
  HubHttpError,
  HubNotFoundError,
  HubSpecError,
  cachedFilePath,
  convertedModelPath,
  downloadFile,
  formatHubSpec,
  parseHubSpec,
  pullModel,
  resolveHubModel,
  type PullEvent,
} from '../src/index.js';
import { FakeHub, gitBlobSha1, type FakeHubFile } from '../src/testing/index.js';
import { tempDir } from './helpers.js';

const root = tempDir('hub');
let n = 0;
/** A fresh cache folder per test. */
function cacheDir(): string {
  const d = join(root, `cache-${n++}`);
  mkdirSync(d, { recursive: true });
  return d;
}

/** Deterministic bytes that differ at every offset (so a shifted resume cannot pass unseen). */
function pattern(size: number, seed = 1): Uint8Array {
  const out = new Uint8Array(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const MB = 1 << 20;

let hub: FakeHub | undefined;
afterEach(async () => {
  await hub?.close();
  hub = undefined;
});

async function startHub(files: FakeHubFile[], options: { cdn?: 'same' | 'separate'; token?: string; private?: boolean; treePageSize?: number } = {}): Promise<FakeHub> {
  hub = await FakeHub.start({ repos: [{ id: 'acme/tiny', files, private: options.private }], cdn: options.cdn, token: options.token, treePageSize: options.treePageSize });
  return hub;
}

function events(): { list: PullEvent[]; onEvent: (e: PullEvent) => void } {
  const list: PullEvent[] = [];
  return { list, onEvent: (e) => list.push(e) };
}

/** Files the pull left next to `dest` besides the file and its record. */
function leftovers(dest: string): string[] {
  const dir = join(dest, '..');
  const base = dest.slice(dir.length + 1);
  return readdirSync(dir).filter((f) => f.startsWith(base) && f !== base && f !== `${base}.pull.json`);
}

describe('hf: specs', () => {
  it('reads files, repositories and revisions, and maps them into the cache', () => {
    const s = parseHubSpec('hf:TheBloke/Llama-2-7B-GGUF/llama-2-7b.Q4_0.gguf');
    expect(s).toMatchObject({ owner: 'TheBloke', name: 'Llama-2-7B-GGUF', repo: 'TheBloke/Llama-2-7B-GGUF', revision: 'main', file: 'llama-2-7b.Q4_0.gguf' });
    expect(parseHubSpec('hf:a/b')).toMatchObject({ repo: 'a/b', revision: 'main', file: undefined });
    const pr = parseHubSpec('hf:a/b@refs%2Fpr%2F1/sub/x.m');
    expect(pr).toMatchObject({ revision: 'refs/pr/1', file: 'sub/x.m' });
    expect(formatHubSpec(pr)).toBe('hf:a/b@refs%2Fpr%2F1/sub/x.m');
    expect(cachedFilePath('/c', s)).toBe('/c/TheBloke/Llama-2-7B-GGUF/llama-2-7b.Q4_0.gguf');
    expect(cachedFilePath('/c', pr)).toBe('/c/a/b@refs%2Fpr%2F1/sub/x.m');
    expect(convertedModelPath('/c', parseHubSpec('hf:a/b'))).toBe('/c/a/b.m');
    expect(convertedModelPath('/c', parseHubSpec('hf:a/b@v1.0'))).toBe('/c/a/b@v1.0.m');
  });

  it.each([
    ['hf:', 'repo'],
    ['hf:owner', 'repo'],
    ['hf:owner/', 'repository name'],
    ['hf:/repo', 'owner'],
    ['hf:own--er/x', 'owner'],
    ['hf:o/-x', 'repository name'],
    ['hf:o/x./f', 'repository name'],
    ['hf:o/r/', 'file'],
    ['hf:o/r/../../etc/passwd', 'file'],
    ['hf:o/r/a//b.gguf', 'file'],
    ['hf:o/r/a\\b.gguf', 'file'],
    ['hf:o/r@/f.gguf', 'revision'],
    ['hf:o/r@%zz/f.gguf', 'revision'],
    ['hf:o/r@a%2F..%2Fb/f.gguf', 'revision'],
    ['o/r/f.gguf', 'prefix'],
  ])('refuses %s naming the %s', (text, field) => {
    let err: unknown;
    try {
      parseHubSpec(text);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(HubSpecError);
    expect((err as HubSpecError).code).toBe('AIRLLM_HUB_SPEC');
    expect((err as HubSpecError).field).toBe(field);
    expect((err as Error).message).toContain(text);
  });
});

describe('hub metadata', () => {
  it('HEAD gives commit, size and checksum: sha256 for LFS, the git blob sha1 (as `git hash-object` computes it) otherwise', async () => {
    const big = pattern(300_000);
    const small = new TextEncoder().encode('{"model_type": "llama"}\n');
    const h = await startHub([{ path: 'w.gguf', content: big }, { path: 'config.json', content: small }]);
    const client = new HubClient({ endpoint: h.url });
    const lfs = await client.fileInfo(parseHubSpec('hf:acme/tiny'), 'w.gguf');
    expect(lfs).toMatchObject({ commit: h.commit('acme/tiny'), size: big.length, checksum: { algorithm: 'sha256', hex: sha256(big) } });
    expect(lfs.url).toBe(`${h.url}/acme/tiny/resolve/${h.commit('acme/tiny')}/w.gguf`);
    const git = await client.fileInfo(parseHubSpec('hf:acme/tiny'), 'config.json');
    const reference = execFileSync('git', ['hash-object', '--stdin'], { input: small }).toString().trim();
    expect(git.checksum).toEqual({ algorithm: 'git-sha1', hex: reference });
    expect(gitBlobSha1(small)).toBe(reference);
    // The HEAD stopped at the hub's 302: the CDN was not asked for anything.
    expect(h.requests.filter((r) => r.path.startsWith('/cdn/'))).toHaveLength(0);
  });

  it('404s and 401s are typed errors naming the repository, revision or file', async () => {
    const h = await startHub([{ path: 'w.gguf', content: pattern(10) }]);
    const client = new HubClient({ endpoint: h.url, token: undefined });
    const fail = async (spec: string): Promise<Error> => {
      const s = parseHubSpec(spec);
      return client.fileInfo(s, s.file!).then(() => new Error('resolved'), (e: Error) => e);
    };
    const missingFile = await fail('hf:acme/tiny/nope.gguf');
    expect(missingFile).toBeInstanceOf(HubNotFoundError);
    expect(missingFile.message).toMatch(/^field hf:acme\/tiny\/nope\.gguf: no such file in the repository on the hub/);
    const missingRev = await fail('hf:acme/tiny@v9/w.gguf');
    expect(missingRev).toBeInstanceOf(HubNotFoundError);
    expect(missingRev.message).toContain('no such revision');
    // Without a token the hub does not say whether a repository exists.
    const missingRepo = await fail('hf:acme/none/w.gguf');
    expect(missingRepo).toBeInstanceOf(HubAuthError);
    expect(missingRepo.message).toContain('private or does not exist');
  });

  it('a private repository needs HF_TOKEN; with it, the file comes, and the token never goes to the CDN', async () => {
    const content = pattern(200_000);
    const h = await startHub([{ path: 'w.gguf', content }], { cdn: 'separate', token: 'sekret', private: true });
    const spec = 'hf:acme/tiny/w.gguf';
    const denied = await pullModel(spec, { endpoint: h.url, token: undefined, cacheDir: cacheDir() }).catch((e: Error) => e);
    expect(denied).toBeInstanceOf(HubAuthError);
    expect((denied as HubAuthError).actual).toBe(401);
    const dir = cacheDir();
    const r = await pullModel(spec, { endpoint: h.url, token: 'sekret', cacheDir: dir });
    expect(Buffer.compare(readFileSync(r.modelPath), content)).toBe(0);
    const hubReqs = h.requests.filter((q) => q.server === 'hub' && q.status !== 401);
    const cdnReqs = h.requests.filter((q) => q.server === 'cdn');
    expect(hubReqs.length).toBeGreaterThan(0);
    expect(hubReqs.every((q) => q.authorization === 'Bearer sekret')).toBe(true);
    expect(cdnReqs.length).toBe(1);
    expect(cdnReqs[0]!.authorization).toBeUndefined();
  });

  it('a tree listing naming a path outside the repository is refused before anything is written', async () => {
    const { createServer } = await import('node:http');
    const sha = 'a'.repeat(40);
    const srv = createServer((req, res) => {
      res.setHeader('content-type', 'application/json');
      if (req.url!.includes('/revision/')) return res.end(JSON.stringify({ sha }));
      res.end(JSON.stringify([
        { type: 'file', path: 'config.json', size: 2, oid: 'b'.repeat(40) },
        { type: 'file', path: '../../escape.safetensors', size: 10, oid: 'c'.repeat(40), lfs: { oid: 'd'.repeat(64), size: 10, pointerSize: 100 } },
      ]));
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    try {
      const dir = cacheDir();
      const e = await pullModel('hf:acme/evil', { endpoint: `http://127.0.0.1:${(srv.address() as { port: number }).port}`, cacheDir: dir }).catch((x: Error) => x);
      expect(e).toBeInstanceOf(HubHttpError);
      expect((e as Error).message).toContain("the hub's tree listing has an unusable entry");
      expect((e as Error).message).toContain('escape.safetensors');
      expect(readdirSync(dir)).toEqual([]);
    } finally {
      srv.closeAllConnections();
      await new Promise((r) => srv.close(r));
    }
  });

  it('a renamed repository (the hub’s relative 307) is followed for metadata, listings and bytes', async () => {
    const content = pattern(70_000, 91);
    hub = await FakeHub.start({ repos: [{ id: 'acme/tiny', files: [{ path: 'w.m', content }, { path: 'w.t', content: pattern(100, 92) }] }], renamed: { 'acme/old-name': 'acme/tiny' } });
    const r = await pullModel('hf:acme/old-name/w.m', { endpoint: hub.url, cacheDir: cacheDir() });
    expect(Buffer.compare(readFileSync(r.modelPath), content)).toBe(0);
    expect(r.tokenizerPath).toMatch(/acme\/old-name\/w\.t$/);
    expect(hub.requests.filter((q) => q.status === 307).map((q) => q.method)).toEqual(['HEAD', 'GET', 'GET', 'GET']);
  });

  it('a hub that cannot be reached is a HubHttpError with the network error code', async () => {
    const { createServer } = await import('node:net');
    // A port that was free a moment ago: nothing listens there.
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as { port: number }).port;
    await new Promise((r) => probe.close(r));
    const ev = events();
    const e = await pullModel('hf:acme/tiny/w.gguf', { endpoint: `http://127.0.0.1:${port}`, cacheDir: cacheDir(), retries: 2, retryDelayMs: 10, onEvent: ev.onEvent }).catch((x: Error) => x);
    expect(e).toBeInstanceOf(HubHttpError);
    expect((e as HubHttpError).actual).toBe('ECONNREFUSED');
    // No answer at all is worth retrying (the hub may be restarting).
    expect(ev.list.filter((x) => x.type === 'retry').map((x) => (x as { attempt: number }).attempt)).toEqual([1, 2]);
    expect((e as Error).message).toMatch(/^field hf:acme\/tiny\/w\.gguf: cannot reach the hub/);
  });

  it('a server that is not a hub (no X-Repo-Commit) is named as such', async () => {
    const { createServer } = await import('node:http');
    const srv = createServer((_req, res) => res.end('hello'));
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    try {
      const port = (srv.address() as { port: number }).port;
      const e = await pullModel('hf:acme/tiny/w.gguf', { endpoint: `http://127.0.0.1:${port}`, cacheDir: cacheDir() }).catch((x: Error) => x);
      expect(e).toBeInstanceOf(HubHttpError);
      expect((e as Error).message).toContain('X-Repo-Commit');
    } finally {
      srv.closeAllConnections();
      await new Promise((r) => srv.close(r));
    }
  });
});

describe('downloads', () => {
  const SIZE = 3 * MB + 12346;

  it('an LFS file through a 302 to the CDN: the exact bytes, a record, nothing else left behind', async () => {
    const content = pattern(SIZE);
    const h = await startHub([{ path: 'dir/w.gguf', content }], { cdn: 'separate' });
    const dir = cacheDir();
    const ev = events();
    const r = await pullModel('hf:acme/tiny/dir/w.gguf', { endpoint: h.url, cacheDir: dir, onEvent: ev.onEvent });
    expect(r.modelPath).toBe(join(dir, 'acme', 'tiny', 'dir', 'w.gguf'));
    expect(Buffer.compare(readFileSync(r.modelPath), content)).toBe(0);
    expect(r.files[0]).toMatchObject({ status: 'downloaded', resumedFrom: 0, size: SIZE });
    const record = JSON.parse(readFileSync(`${r.modelPath}.pull.json`, 'utf8')) as Record<string, unknown>;
    expect(record).toMatchObject({ repo: 'acme/tiny', revision: 'main', commit: h.commit('acme/tiny'), path: 'dir/w.gguf', size: SIZE, checksum: { algorithm: 'sha256', hex: sha256(content) } });
    expect(leftovers(r.modelPath)).toEqual([]);
    const last = ev.list.filter((e) => e.type === 'progress').at(-1);
    expect(last).toEqual({ type: 'progress', file: 'dir/w.gguf', done: SIZE, total: SIZE });
    // Pulling again asks the hub (HEAD) but moves no bytes.
    const before = h.bytesServed('dir/w.gguf');
    const again = await pullModel('hf:acme/tiny/dir/w.gguf', { endpoint: h.url, cacheDir: dir });
    expect(again.files[0]!.status).toBe('cached');
    expect(h.bytesServed('dir/w.gguf')).toBe(before);
  });

  it('a connection dropped at 50 % is resumed with a Range request from exactly where it broke', async () => {
    const content = pattern(SIZE, 7);
    const h = await startHub([{ path: 'w.gguf', content }]);
    h.fault({ path: 'w.gguf', kind: 'drop', at: SIZE / 2 });
    const ev = events();
    const r = await pullModel('hf:acme/tiny/w.gguf', { endpoint: h.url, cacheDir: cacheDir(), retryDelayMs: 10, onEvent: ev.onEvent });
    expect(Buffer.compare(readFileSync(r.modelPath), content)).toBe(0);
    const gets = h.contentRequests('w.gguf');
    expect(gets.map((g) => g.range)).toEqual([undefined, `bytes=${SIZE / 2}-`]);
    expect(gets.map((g) => g.status)).toEqual([200, 206]);
    // Half, then the other half: no byte sent twice.
    expect(h.bytesServed('w.gguf')).toBe(SIZE);
    expect(ev.list.filter((e) => e.type === 'retry')).toMatchObject([{ attempt: 1, at: SIZE / 2 }]);
  });

  it('after a drop with no retries left, the next pull resumes the partial file', async () => {
    const content = pattern(SIZE, 9);
    const h = await startHub([{ path: 'w.gguf', content }]);
    h.fault({ path: 'w.gguf', kind: 'drop', at: SIZE / 2 });
    const dir = cacheDir();
    const first = await pullModel('hf:acme/tiny/w.gguf', { endpoint: h.url, cacheDir: dir, retries: 0 }).catch((e: Error) => e);
    expect(first).toBeInstanceOf(HubHttpError);
    expect((first as Error).message).toContain(`w.gguf.partial, field hf:acme/tiny/w.gguf: download cut off at ${SIZE / 2} of ${SIZE} bytes after 0 retries`);
    expect((first as Error).message).toContain('run the pull again to resume');
    const dest = cachedFilePath(dir, parseHubSpec('hf:acme/tiny/w.gguf'));
    expect(existsSync(dest)).toBe(false);
    expect(statSync(`${dest}.partial`).size).toBe(SIZE / 2);
    expect(existsSync(`${dest}.lock`)).toBe(false);
    const r = await pullModel('hf:acme/tiny/w.gguf', { endpoint: h.url, cacheDir: dir });
    expect(r.files[0]).toMatchObject({ status: 'downloaded', resumedFrom: SIZE / 2 });
    expect(Buffer.compare(readFileSync(dest), content)).toBe(0);
    expect(h.contentRequests('w.gguf').map((g) => g.range)).toEqual([undefined, `bytes=${SIZE / 2}-`]);
    expect(leftovers(dest)).toEqual([]);
  });

  it('a 503 is retried, for the metadata and for the bytes; one that persists ends as a HubHttpError with the status', async () => {
    const content = pattern(200_000, 15);
    const h = await startHub([{ path: 'w.gguf', content }]);
    h.fault({ path: 'w.gguf', kind: 'status', method: 'HEAD' });
    h.fault({ path: 'w.gguf', kind: 'status', method: 'GET', status: 502 });
    const ev = events();
    const r = await pullModel('hf:acme/tiny/w.gguf', { endpoint: h.url, cacheDir: cacheDir(), retryDelayMs: 10, onEvent: ev.onEvent });
    expect(Buffer.compare(readFileSync(r.modelPath), content)).toBe(0);
    const resolves = h.requests.filter((q) => q.path.includes('/resolve/'));
    expect(resolves.map((q) => [q.method, q.status])).toEqual([['HEAD', 503], ['HEAD', 302], ['GET', 502], ['GET', 302]]);
    const retries = ev.list.filter((e) => e.type === 'retry');
    expect(retries).toMatchObject([{ file: 'hf:acme/tiny/w.gguf', attempt: 1, delayMs: 10 }, { file: 'w.gguf', attempt: 1, at: 0 }]);
    expect(retries[0]).not.toHaveProperty('at');

    h.fault({ path: 'w.gguf', kind: 'status', times: 10 });
    const e = await pullModel('hf:acme/tiny/w.gguf', { endpoint: h.url, cacheDir: cacheDir(), retries: 2, retryDelayMs: 10 }).catch((x: Error) => x);
    expect(e).toBeInstanceOf(HubHttpError);
    expect((e as HubHttpError).actual).toBe(503);
    expect((e as Error).message).toContain('the hub answered HTTP 503');
  });

  it('a stalled connection is abandoned after the stall timeout and resumed', async () => {
    const content = pattern(SIZE, 11);
    const h = await startHub([{ path: 'w.gguf', content }]);
    h.fault({ path: 'w.gguf', kind: 'stall', at: SIZE / 2 });
    const r = await pullModel('hf:acme/tiny/w.gguf', { endpoint: h.url, cacheDir: cacheDir(), retryDelayMs: 10, stallTimeoutMs: 400 });
    expect(Buffer.compare(readFileSync(r.modelPath), content)).toBe(0);
    expect(h.contentRequests('w.gguf').map((g) => g.range)).toEqual([undefined, `bytes=${SIZE / 2}-`]);
  });

  it('a server that ignores Range sends the whole file again, and the download starts over', async () => {
    const content = pattern(SIZE, 13);
    const h = await startHub([{ path: 'w.gguf', content }]);
    h.fault({ path: 'w.gguf', kind: 'drop', at: SIZE / 2 });
    h.fault({ path: 'w.gguf', kind: 'ignore-range' });
    const ev = events();
    const r = await pullModel('hf:acme/tiny/w.gguf', { endpoint: h.url, cacheDir: cacheDir(), retryDelayMs: 10, onEvent: ev.onEvent });
    expect(Buffer.compare(readFileSync(r.modelPath), content)).toBe(0);
    expect(h.contentRequests('w.gguf').map((g) => [g.range, g.status])).toEqual([[undefined, 200], [`bytes=${SIZE / 2}-`, 200]]);
    expect(ev.list.some((e) => e.type === 'restart' && /ignored the range/.test(e.reason))).toBe(true);
  });

  it('a partial of an older version is not resumed when the file changed on the hub', async () => {
    const v1 = pattern(SIZE, 21);
    const v2 = pattern(SIZE, 22);
    const h = await startHub([{ path: 'w.gguf', content: v1 }]);
    h.fault({ path: 'w.gguf', kind: 'drop', at: SIZE / 2 });
    const dir = cacheDir();
    await expect(pullModel('hf:acme/tiny/w.gguf', { endpoint: h.url, cacheDir: dir, retries: 0 })).rejects.toBeInstanceOf(HubHttpError);
    const c2 = h.setFile('acme/tiny', { path: 'w.gguf', content: v2 });
    const ev = events();
    const r = await pullModel('hf:acme/tiny/w.gguf', { endpoint: h.url, cacheDir: dir, onEvent: ev.onEvent });
    expect(r.commit).toBe(c2);
    expect(Buffer.compare(readFileSync(r.modelPath), v2)).toBe(0);
    expect(h.contentRequests('w.gguf').map((g) => g.range)).toEqual([undefined, undefined]);
    expect(ev.list.some((e) => e.type === 'restart' && /another version/.test(e.reason))).toBe(true);
  });

  it('bytes are fetched at the commit the metadata named, even if main moves meanwhile', async () => {
    const v1 = pattern(100_000, 31);
    const h = await startHub([{ path: 'w.gguf', content: v1 }]);
    const client = new HubClient({ endpoint: h.url });
    const remote = await client.fileInfo(parseHubSpec('hf:acme/tiny'), 'w.gguf');
    h.setFile('acme/tiny', { path: 'w.gguf', content: pattern(100_000, 32) });
    const dest = join(cacheDir(), 'w.gguf');
    await downloadFile(client, remote, dest);
    expect(Buffer.compare(readFileSync(dest), v1)).toBe(0);
  });

  it('a file whose bytes do not match the hub’s sha256 is refused and discarded', async () => {
    const content = pattern(SIZE, 41);
    const h = await startHub([{ path: 'w.gguf', content }]);
    h.fault({ path: 'w.gguf', kind: 'corrupt', at: 1000 });
    const corrupted = Uint8Array.from(content);
    corrupted[1000] = corrupted[1000]! ^ 0xff;
    const dir = cacheDir();
    const e = await pullModel('hf:acme/tiny/w.gguf', { endpoint: h.url, cacheDir: dir }).catch((x: Error) => x);
    expect(e).toBeInstanceOf(ChecksumMismatchError);
    const c = e as ChecksumMismatchError;
    expect(c.code).toBe('AIRLLM_CHECKSUM');
    expect(c.expected).toBe(sha256(content));
    expect(c.actual).toBe(sha256(corrupted));
    const dest = cachedFilePath(dir, parseHubSpec('hf:acme/tiny/w.gguf'));
    expect(c.path).toBe(dest);
    expect(c.message).toContain('hf:acme/tiny/w.gguf');
    expect(readdirSync(join(dest, '..'))).toEqual([]);
    // One response, all of it wrong: nothing to blame on a resume, so no second download.
    expect(h.contentRequests('w.gguf')).toHaveLength(1);
  });

  it('when a resumed download fails the checksum, the old bytes may be at fault: it downloads once more from zero', async () => {
    const content = pattern(SIZE, 43);
    const h = await startHub([{ path: 'w.gguf', content }]);
    h.fault({ path: 'w.gguf', kind: 'drop', at: SIZE / 2 });
    const dir = cacheDir();
    await expect(pullModel('hf:acme/tiny/w.gguf', { endpoint: h.url, cacheDir: dir, retries: 0 })).rejects.toBeInstanceOf(HubHttpError);
    // Damage the partial on disk (a bad sector, a stray write): the resume cannot see it.
    const partial = `${cachedFilePath(dir, parseHubSpec('hf:acme/tiny/w.gguf'))}.partial`;
    const bytes = readFileSync(partial);
    bytes[100] = bytes[100]! ^ 1;
    writeFileSync(partial, bytes);
    const ev = events();
    const r = await pullModel('hf:acme/tiny/w.gguf', { endpoint: h.url, cacheDir: dir, onEvent: ev.onEvent });
    expect(Buffer.compare(readFileSync(r.modelPath), content)).toBe(0);
    expect(h.contentRequests('w.gguf').map((g) => g.range)).toEqual([undefined, `bytes=${SIZE / 2}-`, undefined]);
    expect(ev.list.some((e) => e.type === 'restart' && /checksum did not match after a resume/.test(e.reason))).toBe(true);
  });

  it('a git-stored file is checked by its blob sha1 too', async () => {
    const content = new TextEncoder().encode(JSON.stringify({ a: 1, pad: 'x'.repeat(5000) }));
    const h = await startHub([{ path: 'config.json', content }]);
    h.fault({ path: 'config.json', kind: 'corrupt', at: 10 });
    const e = await pullModel('hf:acme/tiny/config.json', { endpoint: h.url, cacheDir: cacheDir() }).catch((x: Error) => x);
    expect(e).toBeInstanceOf(ChecksumMismatchError);
    expect((e as ChecksumMismatchError).expected).toBe(gitBlobSha1(content));
    const r = await pullModel('hf:acme/tiny/config.json', { endpoint: h.url, cacheDir: cacheDir() });
    expect(Buffer.compare(readFileSync(r.modelPath), content)).toBe(0);
  });

  it.each([
    ['extra', 'more'],
    ['short-length', 'fewer'],
    ['short-chunked', 'fewer'],
  ] as const)('a server that sends %s bytes is refused: %s bytes than announced, and no partial is kept', async (kind, word) => {
    const content = pattern(SIZE, 51);
    const h = await startHub([{ path: 'w.gguf', content }]);
    h.fault({ path: 'w.gguf', kind, count: 1000 });
    const dir = cacheDir();
    const e = await pullModel('hf:acme/tiny/w.gguf', { endpoint: h.url, cacheDir: dir }).catch((x: Error) => x);
    expect(e).toBeInstanceOf(DownloadSizeError);
    expect((e as Error).message).toContain(`${word} bytes than`);
    expect((e as Error).message).toContain('hf:acme/tiny/w.gguf');
    const dest = cachedFilePath(dir, parseHubSpec('hf:acme/tiny/w.gguf'));
    expect(readdirSync(join(dest, '..'))).toEqual([]);
  });

  it('metadata announcing more than the disk holds is refused before a byte is written', async () => {
    const h = await startHub([{ path: 'huge.gguf', content: pattern(1000), announcedSize: 2 ** 52 }]);
    const dir = cacheDir();
    const e = await pullModel('hf:acme/tiny/huge.gguf', { endpoint: h.url, cacheDir: dir }).catch((x: Error) => x);
    expect(e).toBeInstanceOf(DiskFullError);
    expect((e as DiskFullError).code).toBe('AIRLLM_DISK_FULL');
    expect((e as Error).message).toMatch(/huge\.gguf\.partial: not enough free space/);
    expect(h.contentRequests('huge.gguf')).toHaveLength(0);
    const dest = cachedFilePath(dir, parseHubSpec('hf:acme/tiny/huge.gguf'));
    expect(existsSync(dest)).toBe(false);
    expect(existsSync(`${dest}.partial`)).toBe(false);
  });
});

describe('concurrent pulls', () => {
  it('two pulls of one file at once: one downloads, the other waits and finds it done', async () => {
    const content = pattern(4 * MB, 61);
    const h = await startHub([{ path: 'w.gguf', content }]);
    // The first download stops at 1 MiB until the second pull says it is waiting for the lock.
    h.fault({ path: 'w.gguf', kind: 'hold', at: MB });
    const dir = cacheDir();
    const b = events();
    const first = pullModel('hf:acme/tiny/w.gguf', { endpoint: h.url, cacheDir: dir });
    while (h.contentRequests('w.gguf').length === 0) await new Promise((r) => setTimeout(r, 10));
    const second = pullModel('hf:acme/tiny/w.gguf', {
      endpoint: h.url,
      cacheDir: dir,
      onEvent: (e) => {
        b.onEvent(e);
        if (e.type === 'wait') h.release();
      },
    });
    const [ra, rb] = await Promise.all([first, second]);
    expect(Buffer.compare(readFileSync(ra.modelPath), content)).toBe(0);
    expect([ra.files[0]!.status, rb.files[0]!.status]).toEqual(['downloaded', 'cached']);
    expect(b.list.filter((e) => e.type === 'wait')).toHaveLength(1);
    expect(h.bytesServed('w.gguf')).toBe(content.length);
  });

  it('a lock left by a process that died is taken over', async () => {
    const content = pattern(100_000, 71);
    const h = await startHub([{ path: 'w.gguf', content }]);
    const dir = cacheDir();
    const dest = cachedFilePath(dir, parseHubSpec('hf:acme/tiny/w.gguf'));
    mkdirSync(join(dest, '..'), { recursive: true });
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    writeFileSync(`${dest}.lock`, JSON.stringify({ pid: Number(dead.stdout), host: hostname(), id: 'x' }));
    const r = await pullModel('hf:acme/tiny/w.gguf', { endpoint: h.url, cacheDir: dir });
    expect(Buffer.compare(readFileSync(r.modelPath), content)).toBe(0);
    expect(existsSync(`${dest}.lock`)).toBe(false);
  });
});

describe('.m models and resolveHubModel', () => {
  it('a .m file brings the repository’s tokenizer; resolving again uses the cache without the network', async () => {
    const m = pattern(50_000, 81);
    const t = pattern(3_000, 82);
    const h = await startHub([
      { path: 'dllama_model_x_q40.m', content: m },
      { path: 'dllama_tokenizer_x.t', content: t },
      { path: 'README.md', content: new TextEncoder().encode('# x') },
    ], { treePageSize: 1 });
    const dir = cacheDir();
    const first = await resolveHubModel('hf:acme/tiny/dllama_model_x_q40.m', { endpoint: h.url, cacheDir: dir });
    expect(first.pulled).toBe(true);
    expect(first.tokenizerPath).toBe(join(dir, 'acme', 'tiny', 'dllama_tokenizer_x.t'));
    expect(Buffer.compare(readFileSync(first.modelPath), m)).toBe(0);
    expect(Buffer.compare(readFileSync(first.tokenizerPath!), t)).toBe(0);
    // The tree listing came in pages of one entry.
    expect(h.requests.filter((r) => r.path.includes('/tree/')).length).toBe(3);
    const count = h.requests.length;
    const second = await resolveHubModel('hf:acme/tiny/dllama_model_x_q40.m', { endpoint: h.url, cacheDir: dir });
    expect(second).toEqual({ modelPath: first.modelPath, tokenizerPath: first.tokenizerPath, pulled: false });
    expect(h.requests.length).toBe(count);
  });

  it('a repository without config.json is not taken for a checkpoint, and the message names a file to pull instead', async () => {
    const h = await startHub([{ path: 'x.Q4_0.gguf', content: pattern(100) }]);
    const e = await pullModel('hf:acme/tiny', { endpoint: h.url, cacheDir: cacheDir() }).catch((x: Error) => x);
    expect((e as { code?: string }).code).toBe('AIRLLM_UNSUPPORTED_MODEL');
    expect((e as Error).message).toContain('hf:acme/tiny/x.Q4_0.gguf');
  });
});
