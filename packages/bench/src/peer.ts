/**
 * llama.cpp for side-by-side measurements: node-llama-cpp installed on demand into the
 * harness's own folder (default ~/.cache/airllm-bench/node-llama-cpp), never a dependency of
 * any airllm package.
 *
 * The install takes node-llama-cpp and only this platform's prebuilt CPU binary package
 * (`--omit=optional` skips the CUDA/Vulkan builds, hundreds of MB), with `--ignore-scripts`:
 * its postinstall would try to download or compile llama.cpp when no prebuilt binary fits,
 * which the benchmark must never do (and this machine cannot).
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { PeerUnavailableError } from './errors.js';

/** The version the harness was written and checked against (DESIGN.md's figures: 3.22). */
export const PEER_VERSION = '3.22.1';

export function defaultPeerDir(): string {
  return process.env.AIRLLM_BENCH_PEER_DIR ?? join(homedir(), '.cache', 'airllm-bench', 'node-llama-cpp');
}

/** node-llama-cpp's prebuilt CPU binary package for this platform. */
export function prebuiltPackage(): string {
  const key = `${process.platform}-${process.arch}`;
  const names: Record<string, string> = {
    'linux-x64': 'linux-x64',
    'linux-arm64': 'linux-arm64',
    'linux-arm': 'linux-armv7l',
    'darwin-arm64': 'mac-arm64-metal',
    'darwin-x64': 'mac-x64',
    'win32-x64': 'win-x64',
    'win32-arm64': 'win-arm64',
  };
  const n = names[key];
  if (n === undefined) throw new PeerUnavailableError(`node-llama-cpp has no prebuilt binary for ${key}`);
  return `@node-llama-cpp/${n}`;
}

export function installedPeerVersion(dir: string): string | undefined {
  try {
    const pkg = JSON.parse(readFileSync(join(dir, 'node_modules', 'node-llama-cpp', 'package.json'), 'utf8')) as { version?: string };
    const bin = prebuiltPackage();
    if (!existsSync(join(dir, 'node_modules', ...bin.split('/'), 'package.json'))) return undefined;
    return pkg.version;
  } catch {
    return undefined;
  }
}

/** Make sure node-llama-cpp@version is installed in `dir`; resolves with the installed version. */
export async function ensurePeer(dir: string, version: string, log: (line: string) => void): Promise<string> {
  const have = installedPeerVersion(dir);
  if (have === version) return have;
  mkdirSync(dir, { recursive: true });
  const manifest = join(dir, 'package.json');
  if (!existsSync(manifest)) writeFileSync(manifest, JSON.stringify({ name: 'airllm-bench-peer', private: true }, null, 2) + '\n');
  const args = ['install', '--prefix', dir, '--no-audit', '--no-fund', '--ignore-scripts', '--omit=optional', `node-llama-cpp@${version}`, `${prebuiltPackage()}@${version}`];
  log(`installing node-llama-cpp@${version} into ${dir} (npm ${args.slice(1, 7).join(' ')} …)`);
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  await new Promise<void>((resolve, reject) => {
    execFile(npm, args, { cwd: dir, timeout: 10 * 60_000, maxBuffer: 16 << 20 }, (err, _stdout, stderr) => {
      if (err) reject(new PeerUnavailableError(`npm install of node-llama-cpp@${version} failed: ${err.message}\n${stderr.slice(-2000)}`, {}, { cause: err }));
      else resolve();
    });
  });
  const got = installedPeerVersion(dir);
  if (got === undefined) throw new PeerUnavailableError(`node-llama-cpp is still missing from ${dir} after npm install`);
  return got;
}
