import type { Command } from 'commander';
import type { ModelFileInfo, ModelHeader, TensorInfo } from '@airllm/format';
import { jsonError } from '../errors.js';
import { formatBytes, table, writeJson, writeOut } from '../output.js';
import { ggufToJson, ggufToText } from '../inspect-gguf.js';

/** `airllm inspect model.m|model.gguf [--json]`: header, derived sizes, layer offsets, file-size check. */
export function register(program: Command): void {
  program
    .command('inspect')
    .description('show a .m or GGUF model file: header, derived sizes, per-layer offsets, file-size check')
    .argument('<model>', 'path of a Distributed-Llama .m model file, or a GGUF (as airllm runs it in place)')
    .option('--json', 'print one JSON object (header values, every tensor, the size check)')
    .action(async (model: string, opts: { json?: boolean }) => {
      const format = await import('@airllm/format');
      if (format.modelFileFormat(model) === 'gguf') {
        const info = format.readGgufModel(model);
        if (opts.json) writeJson(ggufToJson(format, info));
        else writeOut(ggufToText(format, info));
        return;
      }
      // A size mismatch still shows the header and layout; the check fails afterwards (with
      // --json, the error is part of the one document).
      const info = format.readModelFile(model, { allowSizeMismatch: true });
      let sizeError: unknown;
      try {
        format.checkFileSize(info.layout, info.actualSize, model);
      } catch (e) {
        sizeError = e;
      }
      if (opts.json) writeJson({ ...(toJson(format, info) as object), ...(sizeError === undefined ? {} : { error: jsonError(sizeError) }) });
      else writeOut(toText(format, info));
      if (sizeError !== undefined) throw sizeError;
    });
}

type Format = typeof import('@airllm/format');

interface KeyReport {
  key: number;
  value: number;
  present: boolean;
  stored: number | null;
  name?: string;
}

/** Every header key with its effective value (defaults and forced values applied). */
function headerReport(F: Format, h: ModelHeader): Record<string, KeyReport> {
  const K = F.HeaderKey;
  const effective: Record<number, number> = {
    [K.Version]: h.version,
    [K.ArchType]: h.archType,
    [K.Dim]: h.dim,
    [K.HiddenDim]: h.hiddenDim,
    [K.NLayers]: h.nLayers,
    [K.NHeads]: h.nHeads,
    [K.NKvHeads]: h.nKvHeads,
    [K.NExperts]: h.nExperts,
    [K.NActiveExperts]: h.nActiveExperts,
    [K.VocabSize]: h.vocabSize,
    [K.MaxSeqLen]: h.maxSeqLen,
    [K.HiddenAct]: h.hiddenAct,
    [K.RopeTheta]: h.ropeTheta,
    [K.WeightsFloatType]: h.weightType,
    [K.RopeScalingFactor]: h.ropeScalingFactor,
    [K.RopeScalingLowFreqFactor]: h.ropeScalingLowFreqFactor,
    [K.RopeScalingHighFreqFactor]: h.ropeScalingHighFreqFactor,
    [K.RopeScalingOrigMaxSeqLen]: h.ropeScalingOrigMaxSeqLen,
    [K.RopeType]: h.ropeType,
    [K.HeadDim]: h.headDim,
    [K.NormEpsilon]: h.normEpsilonCode,
    [K.MoeHiddenDim]: h.moeHiddenDim,
  };
  const stored = new Map<number, number>(h.pairs.map(([k, v]) => [k, v]));
  const names: Record<number, string> = {
    [K.ArchType]: F.archName(h.archType),
    [K.WeightsFloatType]: F.floatTypeName(h.weightType),
    [K.RopeType]: F.RopeType[h.ropeType] ?? String(h.ropeType),
    [K.HiddenAct]: F.HiddenAct[h.hiddenAct] ?? String(h.hiddenAct),
    [K.NormEpsilon]: h.normEpsilon.toExponential(),
  };
  const out: Record<string, KeyReport> = {};
  for (const [id, keyName] of Object.entries(F.HEADER_KEY_NAMES)) {
    const k = Number(id);
    const r: KeyReport = { key: k, value: effective[k]!, present: stored.has(k), stored: stored.get(k) ?? null };
    if (names[k] !== undefined) r.name = names[k];
    out[keyName] = r;
  }
  return out;
}

function toJson(F: Format, info: ModelFileInfo): unknown {
  const { header: h, layout } = info;
  return {
    path: info.path,
    headerSize: h.headerSize,
    pairs: h.pairs.length,
    keyOrder: h.pairs.map(([k]) => F.HEADER_KEY_NAMES[k]),
    header: headerReport(F, h),
    arch: F.archName(h.archType),
    weightType: F.floatTypeName(h.weightType),
    ropeType: F.RopeType[h.ropeType],
    normEpsilon: h.normEpsilon,
    derived: { headDim: h.headDim, qDim: h.qDim, kvDim: h.kvDim, ffDim: h.ffDim },
    layerBytes: layout.layerBytes,
    // A .m layer is one range of the file.
    layers: layout.layers.map((l) => ({ layer: l.layer, offset: l.extents[0]!.offset, size: l.size })),
    tensors: layout.tensors.map((t: TensorInfo) => ({
      name: t.name,
      kind: t.kind,
      layer: t.layer,
      expert: t.expert,
      dtype: F.floatTypeName(t.dtype),
      shape: t.shape,
      offset: t.offset,
      byteLength: t.byteLength,
    })),
    fileSize: { expected: layout.fileSize, actual: info.actualSize, ok: layout.fileSize === info.actualSize },
  };
}

function toText(F: Format, info: ModelFileInfo): string {
  const { header: h, layout } = info;
  const report = headerReport(F, h);
  const lines: string[] = [];
  lines.push(`model  ${info.path}`);
  lines.push(`header  ${h.headerSize} bytes, ${h.pairs.length} key/value pairs`);
  const rows: (string | number)[][] = [['key', 'id', 'value', '']];
  for (const [name, r] of Object.entries(report)) {
    const notes: string[] = [];
    if (r.name !== undefined) notes.push(r.name);
    if (!r.present) notes.push('default');
    else if (r.stored !== r.value) notes.push(`file says ${r.stored}`);
    rows.push([name, r.key, r.value, notes.join(', ')]);
  }
  lines.push(table(rows, '  '));
  lines.push(
    `derived  head_dim ${h.headDim}, qDim ${h.qDim}, kvDim ${h.kvDim}, FFN width ${h.ffDim}` +
      (h.nExperts > 0 ? ` (moe_hidden_dim, ${h.nExperts} experts, ${h.nActiveExperts} active)` : ''),
  );
  lines.push(`tensors  ${layout.tensors.length}, weights ${F.floatTypeName(h.weightType)} (embedding, norms${h.nExperts > 0 ? ', router' : ''} F32)`);
  const lrows: (string | number)[][] = [['', 'offset', 'size', '']];
  const e = layout.embedding;
  lrows.push(['embedding', e.offset, e.byteLength, formatBytes(e.byteLength)]);
  for (const l of layout.layers) lrows.push([`layer ${l.layer}`, l.extents[0]!.offset, l.size, formatBytes(l.size)]);
  for (const t of [layout.finalNorm, layout.wcls]) lrows.push([t.name, t.offset, t.byteLength, formatBytes(t.byteLength)]);
  lines.push(table(lrows, '  '));
  const ok = layout.fileSize === info.actualSize;
  const diff = info.actualSize - layout.fileSize;
  lines.push(
    `file size  expected ${layout.fileSize} (${formatBytes(layout.fileSize)}), actual ${info.actualSize}: ` +
      (ok ? 'OK' : `MISMATCH (${diff < 0 ? `${-diff} bytes missing` : `${diff} extra bytes`})`),
  );
  return lines.join('\n');
}
