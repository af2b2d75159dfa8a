/**
 * @airllm/format/convert: models into and out of the `.m` format. Importers from llama2.c
 * checkpoints, Hugging Face directories (safetensors + tokenizer.json) and GGUF files, the
 * exporter to GGUF, the streaming `.m` writer they share, and the synthetic-model generator the
 * benchmarks use. Each importer writes a `.m` and a `.t` without holding the model in memory.
 */
export { ModelFileWriter, type ModelWriterOptions, type ProgressCallback } from './model-writer.js';
export { LOCK_SUFFIX, removePartialFilesSync, writeFileAtomic } from './fs-util.js';
export { generateSyntheticModel, type SyntheticModelOptions } from './synthetic.js';
export {
  LLAMA2_CHAT_TEMPLATE,
  type Llama2cCheckpoint,
  type Llama2cTensor,
  type Llama2cImportOptions,
  type Llama2cImportResult,
  parseLlama2cHeader,
  readLlama2cCheckpoint,
  importLlama2cModel,
  convertLlama2cTokenizer,
  importLlama2c,
} from './import-llama2c.js';
export { type HfTokenizerStyle, type HfTokenizerInput, type HfTokenizerResult, convertHfTokenizer } from './hf-tokenizer.js';
export {
  HF_MODEL_TYPES,
  type HfModelPlan,
  type HfImportOptions,
  type HfImportResult,
  hfConfigToHeader,
  listSafetensorsShards,
  convertHfTokenizerDir,
  importHfModel,
  importHf,
} from './import-hf.js';
export { type GgufImportOptions, type GgufImportResult, type RequantizationError, defaultModelDtype, importGgufModel, importGguf } from './import-gguf.js';
export { type GgufExportOptions, type GgufExportResult, findBytePieces, exportGguf } from './export-gguf.js';
