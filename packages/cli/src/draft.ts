/**
 * Speculative decoding flags shared by generate, chat and serve: `--draft ngram|<model.m>` and
 * `--draft-max <n>`, and the draft model they open beside the target.
 */
import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import { checkDraftModel, type LayerWiseInferenceEngine, type SequenceOptions } from '@airllm/engine';
import { CliError } from './errors.js';
import { parseInteger, tokenizerCandidates } from './model-options.js';

export interface DraftCliOptions {
  draft?: string;
  draftMax?: string;
}

export function addDraftOptions(cmd: Command): Command {
  return cmd
    .option('--draft <ngram|model.m>', 'speculative decoding: "ngram" (prompt lookup, no extra model) or a small draft model with the same vocabulary, kept resident')
    .option('--draft-max <n>', 'tokens drafted per pass at most (default 8, at most --batch-size − 1)');
}

/** What a generation passes to the engine for the draft flags, and the draft model to clean up. */
export interface OpenDraft {
  options: Pick<SequenceOptions, 'draft' | 'draftMax'>;
  /** A one-line description for stderr, or undefined without a draft. */
  describe: string | undefined;
  cleanup(): Promise<void>;
}

/**
 * Open what --draft names for `target` (initialized): nothing, prompt lookup, or a draft model,
 * resident, with the target's context length and KV cache slots, refused when its vocabulary
 * differs (DraftModelError).
 */
export async function openDraft(o: DraftCliOptions, target: LayerWiseInferenceEngine): Promise<OpenDraft> {
  // One pass verifies the last token and the drafts: they must fit a step.
  const draftMax = parseInteger(o.draftMax, '--draft-max', 0, target.batchSize - 1);
  if (o.draft === undefined) {
    if (draftMax !== undefined) throw new CliError('--draft-max needs --draft', 2);
    return { options: {}, describe: undefined, cleanup: async () => {} };
  }
  if (o.draft === 'ngram') return { options: { draft: 'ngram', draftMax }, describe: 'draft: ngram (prompt lookup)', cleanup: async () => {} };
  if (!existsSync(o.draft)) throw new CliError(`--draft ${o.draft}: no such file (give "ngram" or a draft model .m file)`, 2);
  const tokenizerPath = tokenizerCandidates(o.draft).find((c) => existsSync(c));
  const { LayerWiseInferenceEngine } = await import('@airllm/engine');
  const { readModelFile } = await import('@airllm/format');
  // Past the draft model's own context it proposes nothing; the target goes on alone.
  const maxSeqLen = Math.min(target.maxSeqLen, readModelFile(o.draft).layout.config.maxSeqLen);
  const draft = new LayerWiseInferenceEngine(o.draft, {
    mode: 'resident',
    maxSeqLen,
    maxSequences: target.maxSequences,
    batchSize: Math.max(target.maxSequences, Math.min(128, maxSeqLen)),
    threads: target.threads,
    ...(tokenizerPath !== undefined ? { tokenizerPath } : {}),
  });
  try {
    await draft.initialize({ warmup: true });
    checkDraftModel(target, draft);
  } catch (e) {
    await draft.cleanup();
    throw e;
  }
  return { options: { draft, draftMax }, describe: `draft: ${o.draft}`, cleanup: () => draft.cleanup() };
}
