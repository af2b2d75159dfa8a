import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ArchType, FloatType, HeaderKey, type HeaderValues } from '@airllm/format';
import { generateSyntheticModel } from '@airllm/format/convert';
import { TINY_LLAMA31, TINY_QWEN3, TINY_QWEN3_MOE, withDtype } from '@airllm/format/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const here = dirname(fileURLToPath(import.meta.url));
const BIN = resolve(here, '../bin/airllm.js');
const FIXTURES = resolve(here, '../../..', '../shared/fixtures');
const Q40 = join(FIXTURES, 'dllama_model_stories260k_hidden192_q40.m');
const F32 = join(FIXTURES, 'dllama_model_stories260k_hidden192_f32.m');
const TOK = join(FIXTURES, 'dllama_tokenizer_stories260k.t');

function airllm(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A failure: one `airllm:` line on stderr, non-zero exit, no stack trace. */
function expectOneLineError(r: ReturnType<typeof airllm>, pattern: RegExp): void {
  expect(r.code).not.toBe(0);
  expect(r.code).not.toBeNull();
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^airllm: /);
  expect(lines[0]).toMatch(pattern);
  expect(r.stderr).not.toMatch(/^\s+at /m);
  expect(r.stdout).not.toMatch(/^\s+at /m);
}

interface InspectJson {
  headerSize: number;
  header: Record<string, { key: number; value: number; present: boolean; stored: number | null; name?: string }>;
  arch: string;
  weightType: string;
  derived: { headDim: number; qDim: number; kvDim: number; ffDim: number };
  layerBytes: number;
  layers: { layer: number; offset: number; size: number }[];
  tensors: { name: string; kind: string; layer: number; expert: number; dtype: string; shape: number[]; offset: number; byteLength: number }[];
  fileSize: { expected: number; actual: number; ok: boolean };
}

function inspectJson(path: string): InspectJson {
  const r = airllm('inspect', path, '--json');
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as InspectJson;
}

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'airllm-cli-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('airllm inspect on the official fixtures', () => {
  it('--json: one JSON object with header values, every tensor and the size check (Q40 worked numbers)', () => {
    const j = inspectJson(Q40);
    expect(j.headerSize).toBe(96);
    expect(j.header.dim).toEqual({ key: 2, value: 64, present: true, stored: 64 });
    expect(j.header.hidden_dim!.value).toBe(192);
    expect(j.header.version).toEqual({ key: 0, value: 0, present: false, stored: null });
    expect(j.header.head_dim).toMatchObject({ value: 8, present: false });
    expect(j.header.arch_type).toMatchObject({ value: 0xabcd00, name: 'LLAMA', present: true });
    expect(j.header.weights_float_type).toMatchObject({ value: 2, name: 'Q40' });
    expect(j.header.norm_epsilon).toMatchObject({ value: 5, present: false, name: '1e-5' });
    expect(j.header.rope_theta).toMatchObject({ value: 10000, present: false });
    expect(Object.keys(j.header)).toHaveLength(22);
    expect(j.derived).toEqual({ headDim: 8, qDim: 64, kvDim: 32, ffDim: 192 });
    expect(j.layerBytes).toBe(28160);
    expect(j.layers).toEqual([0, 1, 2, 3, 4].map((l) => ({ layer: l, offset: 96 + 131072 + l * 28160, size: 28160 })));
    expect(j.tensors).toHaveLength(1 + 5 * 9 + 2);
    const t = Object.fromEntries(j.tensors.map((x) => [x.name, x]));
    expect(t['embedding']).toMatchObject({ offset: 96, byteLength: 131072, dtype: 'F32', shape: [512, 64] });
    expect(t['layers.0.q']).toMatchObject({ offset: 131168, byteLength: 2304, dtype: 'Q40', shape: [64, 64], layer: 0, expert: -1 });
    expect(t['layers.4.w2']).toMatchObject({ shape: [64, 192], byteLength: 6912 });
    expect(t['final_norm']).toMatchObject({ offset: 271968, byteLength: 256 });
    expect(t['wcls']).toMatchObject({ offset: 272224, byteLength: 18432, dtype: 'Q40' });
    expect(j.fileSize).toEqual({ expected: 290656, actual: 290656, ok: true });
  });

  it('--json on the F32 fixture', () => {
    const j = inspectJson(F32);
    expect(j.layerBytes).toBe(197120);
    expect(j.fileSize).toEqual({ expected: 1248096, actual: 1248096, ok: true });
    expect(j.weightType).toBe('F32');
  });

  it('human output: named header values, derived sizes, one row per layer, the size check', () => {
    const r = airllm('inspect', Q40);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const out = r.stdout;
    expect(out).toMatch(/arch_type\s+1\s+11259136\s+LLAMA/);
    expect(out).toMatch(/weights_float_type\s+13\s+2\s+Q40/);
    expect(out).toMatch(/rope_type\s+18\s+0\s+LLAMA, default/);
    expect(out).toMatch(/head_dim 8, qDim 64, kvDim 32, FFN width 192/);
    for (let l = 0; l < 5; l++) expect(out).toMatch(new RegExp(`layer ${l}\\s+${131168 + l * 28160}\\s+28160`));
    expect(out).toMatch(/final_norm\s+271968\s+256/);
    expect(out).toMatch(/wcls\s+272224\s+18432/);
    expect(out).toMatch(/file size\s+expected 290656 .*actual 290656: OK/);
  });
});

/** FORMAT.md §b.3, computed here independently of the layout code. */
function expectedLayout(v: HeaderValues) {
  const K = HeaderKey;
  const bytes = (dt: number, n: number) => [4 * n, 2 * n, (n / 32) * 18, (n / 32) * 34][dt]!;
  const WT = v[K.WeightsFloatType]!;
  const D = v[K.Dim]!;
  const V = v[K.VocabSize]!;
  const hd = v[K.HeadDim] || D / v[K.NHeads]!;
  const qDim = hd * v[K.NHeads]!;
  const kvDim = hd * v[K.NKvHeads]!;
  const E = v[K.NExperts] ?? 0;
  const moe = v[K.ArchType] === ArchType.QWEN3_MOE;
  const ff = moe ? v[K.MoeHiddenDim]! : v[K.HiddenDim]!;
  const qwen = v[K.ArchType] !== ArchType.LLAMA;
  const attn = bytes(WT, qDim * D) + 2 * bytes(WT, kvDim * D) + bytes(WT, D * qDim);
  const ffn = E > 0 ? 4 * E * D + E * 3 * bytes(WT, ff * D) : 3 * bytes(WT, ff * D);
  const layer = attn + ffn + (qwen ? 8 * hd : 0) + 8 * D;
  const header = 8 + 8 * Object.keys(v).length;
  const start = header + 4 * V * D;
  const fileSize = start + v[K.NLayers]! * layer + 4 * D + bytes(WT, V * D);
  return { hd, qDim, kvDim, ff, layer, start, fileSize };
}

describe('airllm inspect on other architectures (files built from FORMAT.md)', () => {
  const cases: [string, HeaderValues][] = [
    ['qwen3-q40', withDtype(TINY_QWEN3, FloatType.Q40)],
    ['qwen3_moe-q40', withDtype(TINY_QWEN3_MOE, FloatType.Q40)],
    ['qwen3_moe-f32', withDtype(TINY_QWEN3_MOE, FloatType.F32)],
    ['llama31-q80', withDtype(TINY_LLAMA31, FloatType.Q80)],
  ];
  for (const [name, values] of cases) {
    it(name, async () => {
      const path = join(dir, `${name}.m`);
      await generateSyntheticModel(path, values, { seed: 1 });
      const j = inspectJson(path);
      const x = expectedLayout(values);
      expect(j.derived).toEqual({ headDim: x.hd, qDim: x.qDim, kvDim: x.kvDim, ffDim: x.ff });
      expect(j.layerBytes).toBe(x.layer);
      j.layers.forEach((l, i) => expect(l).toEqual({ layer: i, offset: x.start + i * x.layer, size: x.layer }));
      expect(j.fileSize).toEqual({ expected: x.fileSize, actual: x.fileSize, ok: true });
      const l1 = j.tensors.filter((t) => t.layer === 1);
      const arch = values[HeaderKey.ArchType];
      if (arch !== ArchType.LLAMA) {
        expect(l1.find((t) => t.kind === 'q_norm')).toMatchObject({ shape: [x.hd], dtype: 'F32', byteLength: 4 * x.hd });
        expect(l1.find((t) => t.kind === 'k_norm')).toMatchObject({ shape: [x.hd], dtype: 'F32' });
        // Qwen3 always uses the FALCON rope pairing, whatever the file says.
        expect(j.header.rope_type).toMatchObject({ value: 1, name: 'FALCON', present: false });
        expect(j.header.norm_epsilon).toMatchObject({ value: 6, name: '1e-6' });
      } else {
        expect(l1.some((t) => t.kind === 'q_norm')).toBe(false);
        expect(j.header.rope_type).toMatchObject({ value: 2, name: 'LLAMA3_1', present: true });
        expect(j.header.rope_scaling_factor).toMatchObject({ value: 8, present: true });
        expect(j.header.rope_scaling_orig_max_seq_len).toMatchObject({ value: 32, present: true });
      }
      if (arch === ArchType.QWEN3_MOE) {
        const E = values[HeaderKey.NExperts]!;
        expect(l1.find((t) => t.kind === 'moe_gate')).toMatchObject({ shape: [E, 64], dtype: 'F32' });
        const experts = l1.filter((t) => t.expert >= 0);
        expect(experts).toHaveLength(3 * E);
        expect(experts.find((t) => t.expert === E - 1 && t.kind === 'w2')).toMatchObject({ shape: [64, x.ff], name: `layers.1.experts.${E - 1}.w2` });
      }
      // Tensors are back to back and end at the file size.
      j.tensors.forEach((t, i) => i > 0 && expect(t.offset).toBe(j.tensors[i - 1]!.offset + j.tensors[i - 1]!.byteLength));
      expect(j.tensors.at(-1)!.offset + j.tensors.at(-1)!.byteLength).toBe(x.fileSize);
    });
  }
});

describe('airllm inspect on bad files', () => {
  it('a truncated model still shows its header, marks the mismatch and exits non-zero', () => {
    const path = join(dir, 'truncated.m');
    writeFileSync(path, readFileSync(Q40).subarray(0, 200000));
    let r = airllm('inspect', path);
    expectOneLineError(r, /truncated\.m.*90656 bytes shorter/);
    expect(r.stdout).toMatch(/dim\s+2\s+64/);
    expect(r.stdout).toMatch(/expected 290656 .*actual 200000: MISMATCH \(90656 bytes missing\)/);
    r = airllm('inspect', path, '--json');
    expectOneLineError(r, /shorter/);
    expect((JSON.parse(r.stdout) as InspectJson).fileSize).toEqual({ expected: 290656, actual: 200000, ok: false });
  });

  it('trailing bytes', () => {
    const path = join(dir, 'long.m');
    writeFileSync(path, Buffer.concat([readFileSync(Q40), Buffer.alloc(3)]));
    const r = airllm('inspect', path, '--json');
    expectOneLineError(r, /3 bytes after the last tensor/);
    expect((JSON.parse(r.stdout) as InspectJson).fileSize.ok).toBe(false);
  });

  it('non-models, corrupted headers, missing paths, directories: one line, nothing on stdout', () => {
    const write = (name: string, bytes: Uint8Array) => {
      const p = join(dir, name);
      writeFileSync(p, bytes);
      return p;
    };
    const q40 = readFileSync(Q40);
    const oldMagic = Buffer.from(q40.subarray(0, 96));
    oldMagic.writeInt32LE(0xabcd00, 0);
    const badKey = Buffer.from(q40);
    badKey.writeInt32LE(99, 8 + 8 * 3);
    const cases: [string, RegExp][] = [
      [TOK, /dllama_tokenizer_stories260k\.t.*field magic, byte offset 0: not a Distributed-Llama model file/],
      [write('empty.m', new Uint8Array(0)), /empty\.m.*too short/],
      [write('garbage.m', new Uint8Array(1000).fill(0x5a)), /garbage\.m.*not a Distributed-Llama model/],
      [write('old.m', oldMagic), /old\.m.*old Distributed-Llama model format/],
      [write('badkey.m', badKey), /badkey\.m.*field key 99, byte offset 32: unsupported header key/],
      [write('header-cut.m', q40.subarray(0, 60)), /header-cut\.m.*byte offset 60: header is cut short/],
      [join(dir, 'does-not-exist.m'), /does-not-exist\.m: no such file/],
      [dir, /is a directory/],
    ];
    for (const [path, pattern] of cases) {
      for (const json of [[], ['--json']]) {
        const r = airllm('inspect', path, ...json);
        expectOneLineError(r, pattern);
        expect(r.stdout).toBe('');
      }
    }
  });

  it('usage errors use the same one-line form; --debug adds the stack', () => {
    expectOneLineError(airllm('inspect'), /missing required argument 'model'/);
    expectOneLineError(airllm('inspect', Q40, '--jsn'), /unknown option '--jsn'/);
    expectOneLineError(airllm('no-such-command'), /unknown command/);
    const r = airllm('inspect', join(dir, 'nope.m'), '--debug');
    expect(r.code).not.toBe(0);
    expect(r.stderr.split('\n')[0]).toMatch(/^airllm: .*no such file/);
    expect(r.stderr).toMatch(/^\s+at /m);
  });
});
