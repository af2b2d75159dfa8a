/**
 * Test-only builders (not part of the public API in `index.ts`; other packages' tests import
 * them from `@airllm/format/testing`).
 */
export { rawModelHeader, legacyTokenizerBytes, concatBytes } from './bytes.js';
export { type Llama2cWeights, readLegacyLlama2c, writeVersionedLlama2c, llama2cQuantizeQ80 } from './llama2c.js';
export { TINY_LLAMA31, TINY_QWEN3, TINY_QWEN3_MOE, withDtype, type TinyModel, tinyTensorValues, writeTinyModel } from './tiny-models.js';
export { Rng } from '../rng.js';
export { scatteredLayout } from './scattered.js';
export { type StDtype, type StTensor, roundTo, safetensorsBytes, type TinyHfCheckpoint, type TinyHfOptions, tinyHfCheckpoint, writeHfDir, GT, type GgufKv, type GgufTensorSpec, ggufBytes } from './converters.js';
export { checkErrorFamily, type ErrorFamilyCheck } from './errors.js';
