export {
  LayerWiseInferenceEngine,
  type EngineOptions,
  type InitializeOptions,
  type GenerateOptions,
  type BeginSequenceOptions,
  type GeneratedToken,
  type GenerationResult,
  type GenerationStats,
  type FinishReason,
  type MemoryMode,
} from './engine.js';
export {
  planMemory,
  describeMemoryPlan,
  kvCacheBytes,
  workingBytes,
  HEADROOM_FRACTION,
  HEADROOM_MIN_BYTES,
  RUNTIME_BYTES,
  THREAD_BYTES,
  type MemoryPlan,
  type MemoryPlanInput,
} from './memory-plan.js';
export { Sequence, type SequenceOptions, type ForwardItem } from './sequence.js';
export type { LayerRunner, ModelForward } from './runner.js';
export type { KvHistory } from './history.js';
export type { Matrix, LayerWeights, HeadWeights } from './weights.js';
export { BatchScheduler, type SequenceJob, type SequenceResult, type SequenceTimings, type SchedulerStats } from './scheduler.js';
export { Tokenizer, TokenDecoder, type TokenizerKind, type TokenizerAlgorithm, type TokenizerOptions, type EncodeOptions } from './tokenizer.js';
export { loadTokenizer, defaultTokenizerPath, type LoadTokenizerOptions } from './tokenizer-load.js';
export { Sampler, type SamplingOptions } from './sampler.js';
export { compileJsonSchema, JsonSchemaError, type JsonSchema, type CompiledSchema } from './grammar/schema.js';
export { JsonConstraint } from './grammar/constraint.js';
export { VocabIndex } from './grammar/vocab-index.js';
export { tokenLogprob, MAX_TOP_LOGPROBS, type TokenLogprob, type IdLogprob } from './logprobs.js';
export { verifyDraft, lookup, NgramDrafter, DEFAULT_DRAFT_MAX, type Draft, type Drafter, type Verdict } from './speculative.js';
export { ModelDrafter, checkDraftModel } from './draft-model.js';
export { Trace, type TraceEvent } from './trace.js';
export type { ActivationMode } from './shared.js';
export * from './errors.js';
export * from './chat.js';
export { toolCallStyle, toolCallSchema, forcedCallPrefix, parseToolCalls, type ToolCallStyle, type ToolFunction, type ParsedToolCall } from './tools.js';
