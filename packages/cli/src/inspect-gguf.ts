import type { GgufModelInfo } from '@airllm/format';
import { formatBytes, table } from './output.js';

type Format = typeof import('@airllm/format');

/** Tensors per dtype and their bytes: what a GGUF mixes (a Q4_K_M file holds Q4_K and Q6_K). */
function dtypeCounts(F: Format, info: GgufModelInfo): Record<string, { tensors: number; bytes: number }> {
  const out: Record<string, { tensors: number; bytes: number }> = {};
  // A tied head names the embedding's bytes twice: count each tensor once.
  for (const t of info.layout.tensors) {
    if (t.kind === 'wcls' && info.layout.config.tiedEmbeddings) continue;
    const d = (out[F.floatTypeName(t.dtype)] ??= { tensors: 0, bytes: 0 });
    d.tensors++;
    d.bytes += t.byteLength;
  }
  return out;
}

/** `airllm inspect model.gguf --json`: the model as airllm runs it in place. */
export function ggufToJson(F: Format, info: GgufModelInfo): unknown {
  const { layout, gguf } = info;
  return {
    path: info.path,
    format: 'gguf',
    ggufVersion: gguf.version,
    alignment: gguf.alignment,
    dataOffset: gguf.dataOffset,
    arch: F.archName(layout.config.archType),
    config: layout.config,
    dtypes: dtypeCounts(F, info),
    layerBytes: layout.layerBytes,
    // A GGUF layer may be several ranges of the file (alignment padding is read along).
    layers: layout.layers.map((l) => ({ layer: l.layer, size: l.size, extents: l.extents })),
    head: { size: layout.head.size, extents: layout.head.extents },
    tensors: layout.tensors.map((t) => ({ name: t.name, kind: t.kind, layer: t.layer, expert: t.expert, dtype: F.floatTypeName(t.dtype), shape: t.shape, offset: t.offset, byteLength: t.byteLength })),
    fileSize: { needed: layout.fileSize, actual: info.actualSize, ok: layout.fileSize <= info.actualSize },
  };
}

/** `airllm inspect model.gguf`: architecture, sizes, dtype mix, each layer's file ranges. */
export function ggufToText(F: Format, info: GgufModelInfo): string {
  const { layout, gguf } = info;
  const c = layout.config;
  const lines: string[] = [];
  lines.push(`model  ${info.path}`);
  lines.push(`format  GGUF v${gguf.version}, runs in place (no conversion); ${gguf.tensors.length} tensors, data at ${gguf.dataOffset}, alignment ${gguf.alignment}`);
  lines.push(
    `arch  ${F.archName(c.archType)}: dim ${c.dim}, layers ${c.nLayers}, heads ${c.nHeads} (kv ${c.nKvHeads}), head_dim ${c.headDim}, FFN width ${c.ffDim}` +
      (c.nExperts > 0 ? ` (${c.nExperts} experts, ${c.nActiveExperts} active)` : '') +
      `, vocab ${c.vocabSize}, context ${c.maxSeqLen}, rope theta ${c.rope.theta}${c.tiedEmbeddings ? ', tied embeddings' : ''}`,
  );
  const mix = Object.entries(dtypeCounts(F, info)).map(([d, v]) => `${d} ${v.tensors} (${formatBytes(v.bytes)})`);
  lines.push(`tensor types  ${mix.join(', ')}`);
  const rows: (string | number)[][] = [['', 'ranges', 'first offset', 'size', '']];
  const e = layout.embedding;
  rows.push(['embedding', 1, e.offset, e.byteLength, formatBytes(e.byteLength)]);
  for (const l of layout.layers) rows.push([`layer ${l.layer}`, l.extents.length, l.extents[0]?.offset ?? 0, l.size, formatBytes(l.size)]);
  rows.push(['head', layout.head.extents.length, layout.head.extents[0]?.offset ?? 0, layout.head.size, formatBytes(layout.head.size)]);
  lines.push(table(rows, '  '));
  const ok = layout.fileSize <= info.actualSize;
  lines.push(`file size  tensors end at ${layout.fileSize}, file ${info.actualSize}: ${ok ? 'OK' : 'TRUNCATED'}`);
  return lines.join('\n');
}
