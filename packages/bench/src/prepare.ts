/** Phase 1 of a shape: the synthetic model and its tokenizer, and the llama.cpp peer with the same weights as GGUF. */
import { writeFileSync } from 'node:fs';
import { exportGguf, generateSyntheticModel } from '@airllm/format/convert';
import { ensurePeer } from './peer.js';
import { fmt } from './report.js';
import { memAvailable, type ShapeRun } from './shape-run.js';
import { round } from './stats.js';
import { syntheticTokenizer } from './tokenizer.js';
import { freeBytes } from './workdir.js';

export interface PreparedModel {
  generateSeconds: number;
  /** Resident, llama.cpp and batch scenarios need the model in RAM. */
  fitsInRam: boolean;
}

/** Write the model and its tokenizer into the scratch directory. */
export async function prepareModel(run: ShapeRun): Promise<PreparedModel> {
  const { layout, log } = run;
  log(`writing ${run.shape.description}: ${fmt.gb(layout.fileSize)} to ${run.modelPath}`);
  const t = performance.now();
  await generateSyntheticModel(run.modelPath, run.shape.header, { seed: run.o.seed });
  const generateSeconds = (performance.now() - t) / 1000;
  writeFileSync(run.tokPath, syntheticTokenizer(layout.header.vocabSize));
  log(`written in ${round(generateSeconds, 1)} s`);
  const avail = memAvailable();
  const fitsInRam = layout.fileSize < 0.7 * avail;
  if (!fitsInRam) run.notes.push(`resident, llama.cpp and batch scenarios skipped: the model (${fmt.gb(layout.fileSize)}) does not fit in 70% of available memory (${fmt.gb(avail)})`);
  return { generateSeconds, fitsInRam };
}

export interface PreparedPeer {
  /** The same weights as GGUF, when llama.cpp is ready to run. */
  ggufPath: string | undefined;
  ggufSeconds: number | undefined;
}

/** Install llama.cpp (node-llama-cpp) on demand and export the model to GGUF for it; a failure is a note, not an error. */
export async function preparePeer(run: ShapeRun, fitsInRam: boolean): Promise<PreparedPeer> {
  const { o, layout, log, notes } = run;
  if (!o.peer) {
    notes.push('llama.cpp not run (--no-peer)');
    return { ggufPath: undefined, ggufSeconds: undefined };
  }
  if (!fitsInRam) return { ggufPath: undefined, ggufSeconds: undefined };
  if (freeBytes(run.work.path) < layout.fileSize + (1 << 30)) {
    notes.push(`llama.cpp skipped: no room for the GGUF copy (${fmt.gb(layout.fileSize)}) next to the model`);
    return { ggufPath: undefined, ggufSeconds: undefined };
  }
  try {
    await ensurePeer(o.peerDir, o.peerVersion, log);
    const ggufPath = run.work.file('model.gguf');
    const t = performance.now();
    await exportGguf(run.modelPath, ggufPath, { tokenizerPath: run.tokPath, fsync: false, name: `airllm bench ${run.name}` });
    const ggufSeconds = (performance.now() - t) / 1000;
    log(`GGUF export in ${round(ggufSeconds, 1)} s`);
    return { ggufPath, ggufSeconds };
  } catch (e) {
    notes.push(`llama.cpp skipped: ${(e as Error).message.split('\n')[0]}`);
    log(`llama.cpp unavailable: ${(e as Error).message}`);
    return { ggufPath: undefined, ggufSeconds: undefined };
  }
}
