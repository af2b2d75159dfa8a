/**
 * TLS between the nodes, with certificates made here by `openssl` and real `airllm worker` and
 * `airllm generate` processes: a cluster CA signs the workers' and the root's certificates,
 * another CA stands for a stranger.
 */
import { execFile, execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, countingProxy, FIXTURES, startWorker, STORIES, STORIES_TOKENIZER, tempDir, type WorkerProcess } from './helpers.js';

const run = promisify(execFile);
const EXPECTED = (JSON.parse(readFileSync(join(FIXTURES, 'reference_llama2c_stories260k.json'), 'utf8')) as { bos_only: { generated_tokens: number[] } }).bos_only.generated_tokens;
const TOKEN = 'tls-secret';
/** The first bytes of every plaintext HTTP/2 connection (RFC 9113 §3.4). */
const H2_PREFACE = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n';

async function airllm(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [CLI, ...args], { timeout: 60_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof err.code === 'number' ? err.code : -1, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

/** One `airllm:` line on stderr and a non-zero exit. */
function oneLineError(r: { code: number; stderr: string }, pattern: RegExp): void {
  expect(r.code, r.stderr).not.toBe(0);
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^airllm: /);
  expect(lines[0]).toMatch(pattern);
}

/** A CA, and certificates it signs (EC P-256, valid two days), as PEM files in `dir`. */
function makeCerts(dir: string): Record<string, string> {
  const ssl = (...args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  const ca = (name: string): void => ssl('req', '-x509', ...key, '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '2', '-subj', `/CN=${name}`);
  const leaf = (name: string, signer: string, san?: string): void => {
    ssl('req', ...key, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    const ext: string[] = [];
    if (san !== undefined) {
      writeFileSync(join(dir, `${name}.ext`), `subjectAltName=${san}\n`);
      ext.push('-extfile', `${name}.ext`);
    }
    ssl('x509', '-req', '-in', `${name}.csr`, '-CA', `${signer}.crt`, '-CAkey', `${signer}.key`, '-CAcreateserial', '-out', `${name}.crt`, '-days', '2', ...ext);
  };
  ca('cluster-ca');
  ca('stranger-ca');
  leaf('worker', 'cluster-ca', 'IP:127.0.0.1');
  leaf('root', 'cluster-ca');
  leaf('stranger', 'stranger-ca');
  const f = (n: string): string => join(dir, n);
  return {
    ca: f('cluster-ca.crt'),
    strangerCa: f('stranger-ca.crt'),
    workerCert: f('worker.crt'),
    workerKey: f('worker.key'),
    rootCert: f('root.crt'),
    rootKey: f('root.key'),
    strangerCert: f('stranger.crt'),
    strangerKey: f('stranger.key'),
  };
}

describe('TLS between root and workers (real processes, certificates from openssl)', () => {
  const tmp = tempDir('airllm-tls-');
  let c: Record<string, string>;
  /** Server TLS only; mutual TLS (client certificates required); plaintext; TLS without a CA for its relay. */
  let tlsOnly: WorkerProcess, mutual: WorkerProcess, plain: WorkerProcess, noRelayCa: WorkerProcess;
  const base = ['generate', '-m', STORIES, '-t', STORIES_TOKENIZER, '--threads', '1', '--worker-token', TOKEN];

  beforeAll(async () => {
    expect(execFileSync('openssl', ['version'], { encoding: 'utf8' })).toMatch(/^OpenSSL /);
    c = makeCerts(tmp.dir);
    const serverTls = ['--token', TOKEN, '--tls-cert', c.workerCert!, '--tls-key', c.workerKey!];
    [tlsOnly, mutual, plain, noRelayCa] = await Promise.all([
      startWorker(STORIES, [...serverTls, '--tls-ca', c.ca!]),
      startWorker(STORIES, [...serverTls, '--tls-client-ca', c.ca!]),
      startWorker(STORIES, ['--token', TOKEN]),
      startWorker(STORIES, serverTls),
    ]);
  }, 60_000);
  afterAll(async () => {
    await Promise.all([tlsOnly, mutual, plain, noRelayCa].map((w) => w?.stop()));
    tmp.cleanup();
  });

  it("mutual TLS on every hop (the relay between the workers too) gives llama2.c's tokens, with nothing readable on the wire", async () => {
    // Proxies in front of both workers see every byte: root → worker 1, worker 1 → worker 2 (the
    // root names the proxy as worker 2, so the relay goes through it), root ↔ worker 2.
    const p1 = await countingProxy(tlsOnly.port, { capture: true });
    const p2 = await countingProxy(mutual.port, { capture: true });
    try {
      const workers = `127.0.0.1:${p1.port},127.0.0.1:${p2.port}`;
      const r = await airllm([...base, '--workers', workers, '--split', '1-2,3-4', '-n', '256', '--json', '--worker-tls-ca', c.ca!, '--tls-cert', c.rootCert!, '--tls-key', c.rootKey!]);
      // Nothing on stderr: no warning either (Node's DEP0123 for an IP address as TLS server name).
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect((JSON.parse(r.stdout) as { tokens: number[] }).tokens).toEqual(EXPECTED);
      expect(tlsOnly.stderr()).toContain(`next 127.0.0.1:${p2.port}`);
      for (const p of [p1, p2]) {
        const wire = p.captured();
        expect(wire.length).toBeGreaterThan(10_000);
        // TLS records (a handshake first), never the plaintext HTTP/2 preface, nor the token.
        expect(wire[0]).toBe(0x16);
        expect(wire.includes(H2_PREFACE)).toBe(false);
        expect(wire.includes(TOKEN)).toBe(false);
      }
    } finally {
      await p1.close();
      await p2.close();
    }
    // The same capture of a plaintext worker does see the preface: the check above can fail.
    const p3 = await countingProxy(plain.port, { capture: true });
    try {
      const r = await airllm([...base, '--workers', `127.0.0.1:${p3.port}`, '-n', '4']);
      expect(r.code, r.stderr).toBe(0);
      expect(p3.captured().subarray(0, H2_PREFACE.length).toString('latin1')).toBe(H2_PREFACE);
    } finally {
      await p3.close();
    }
  }, 120_000);

  it('a plaintext root is refused by a TLS worker, a TLS root by a plaintext worker, each with a clear error', async () => {
    oneLineError(await airllm([...base, '--workers', tlsOnly.address, '-n', '4']), new RegExp(`^airllm: worker ${tlsOnly.address}: cannot open a session: TLS: the worker uses TLS: give --worker-tls-ca`));
    oneLineError(await airllm([...base, '--workers', plain.address, '-n', '4', '--worker-tls-ca', c.ca!]), new RegExp(`^airllm: worker ${plain.address}: cannot open a session: TLS: the worker does not use TLS`));
  }, 60_000);

  it('the root refuses a worker whose certificate another CA signed', async () => {
    oneLineError(
      await airllm([...base, '--workers', tlsOnly.address, '-n', '4', '--worker-tls-ca', c.strangerCa!]),
      /cannot open a session: TLS: the worker's certificate is not trusted: .*\(--worker-tls-ca must be the CA certificate that signed it\)$/,
    );
  }, 60_000);

  it('a worker with --tls-client-ca refuses a root without a client certificate or with one another CA signed', async () => {
    oneLineError(await airllm([...base, '--workers', mutual.address, '-n', '4', '--worker-tls-ca', c.ca!]), /cannot open a session: TLS: the worker requires a client certificate \(give --tls-cert and --tls-key\)$/);
    oneLineError(
      await airllm([...base, '--workers', mutual.address, '-n', '4', '--worker-tls-ca', c.ca!, '--tls-cert', c.strangerCert!, '--tls-key', c.strangerKey!]),
      /cannot open a session: TLS: the worker did not accept the client certificate \(--tls-cert must be signed by the CA in the worker's --tls-client-ca\)$/,
    );
  }, 60_000);

  it('the token is still checked over TLS', async () => {
    const r = await airllm(['generate', '-m', STORIES, '-t', STORIES_TOKENIZER, '--threads', '1', '--worker-token', 'wrong', '--workers', mutual.address, '-n', '4', '--worker-tls-ca', c.ca!, '--tls-cert', c.rootCert!, '--tls-key', c.rootKey!]);
    oneLineError(r, new RegExp(`^airllm: worker ${mutual.address}: cannot open a session: UNAUTHENTICATED: missing or wrong token$`));
  }, 60_000);

  it('a worker that cannot check the next worker names the hop and the flag to fix', async () => {
    // noRelayCa has no --tls-ca or --tls-client-ca: it checks the next worker against the system's CAs.
    const r = await airllm([...base, '--workers', `${noRelayCa.address},${mutual.address}`, '--split', '1-2,3-4', '-n', '4', '--worker-tls-ca', c.ca!, '--tls-cert', c.rootCert!, '--tls-key', c.rootKey!]);
    oneLineError(r, new RegExp(`^airllm: worker ${noRelayCa.address}: cannot reach the next hop ${mutual.address}: TLS: the worker's certificate is not trusted: .*--tls-ca of the worker that relays`));
  }, 60_000);

  it('bad TLS flags are one-line errors naming the file or the missing half', async () => {
    const worker = (...extra: string[]): Promise<{ code: number; stdout: string; stderr: string }> => airllm(['worker', '-m', STORIES, '--port', '0', ...extra]);
    oneLineError(await worker('--tls-cert', c.workerCert!), /^airllm: --tls-cert needs --tls-key$/);
    oneLineError(await worker('--tls-cert', c.workerCert!, '--tls-key', c.rootKey!), new RegExp(`^airllm: --tls-key ${c.rootKey} does not belong to --tls-cert ${c.workerCert} \\(.*key values mismatch\\)$`));
    oneLineError(await worker('--tls-cert', join(tmp.dir, 'none.crt'), '--tls-key', c.workerKey!), /^airllm: --tls-cert .*none\.crt: no such file$/);
    oneLineError(await worker('--tls-cert', tmp.dir, '--tls-key', c.workerKey!), /^airllm: --tls-cert .*: is a directory$/);
    oneLineError(await worker('--tls-cert', c.workerKey!, '--tls-key', c.workerKey!), /^airllm: --tls-cert .*worker\.key: not a PEM certificate/);
    oneLineError(await worker('--tls-client-ca', c.ca!), /^airllm: --tls-client-ca needs --tls-cert and --tls-key$/);
    oneLineError(await airllm([...base, '--workers', plain.address, '--tls-cert', c.rootCert!, '--tls-key', c.rootKey!]), /^airllm: --tls-cert and --tls-key need --worker-tls-ca/);
    oneLineError(await airllm([...base, '--worker-tls-ca', c.ca!]), /^airllm: --worker-tls-ca, --tls-cert and --tls-key are for --workers$/);
  }, 120_000);
});

describe('airllm worker on a busy port', () => {
  it("says so in one airllm: line, without grpc-js's own log line", async () => {
    const busy = createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', () => r()));
    const port = (busy.address() as { port: number }).port;
    try {
      const r = await airllm(['worker', '-m', STORIES, '--port', String(port)]);
      expect(r.stdout).toBe('');
      oneLineError(r, new RegExp(`^airllm: cannot listen on 127\\.0\\.0\\.1:${port}: address already in use`));
    } finally {
      await new Promise<void>((r) => busy.close(() => r()));
    }
  }, 60_000);
});
