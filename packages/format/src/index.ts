export * from './errors.js';
export { f16ToF32, f32ToF16, f16Table32, roundToF16 } from './f16.js';
export {
  FloatType,
  DTYPES,
  Q_BLOCK,
  Q40_BLOCK_BYTES,
  Q80_BLOCK_BYTES,
  type DTypeInfo,
  dtypeInfo,
  floatTypeName,
  parseFloatType,
  byteSize,
  checkedAdd,
  checkedMul,
  quantizeQ40,
  dequantizeQ40,
  quantizeQ80,
  dequantizeQ80,
  roundHalfEven,
} from './dtypes.js';
export {
  MODEL_MAGIC,
  OLD_MODEL_MAGICS,
  HeaderKey,
  HEADER_KEY_NAMES,
  ArchType,
  RopeType,
  HiddenAct,
  NORM_EPSILON_CODES,
  LIMITS,
  type ModelHeader,
  type HeaderValues,
  archName,
  parseModelHeader,
  writeModelHeader,
  headerValues,
  CONVERT_LLAMA_KEY_ORDER,
} from './header.js';
export { type TensorKind, type TensorInfo, type LayerInfo, type ModelLayout, buildModelLayout, layerTensor } from './layout.js';
export {
  MAX_MODEL_HEADER_BYTES,
  type ModelFileInfo,
  type OffsetDims,
  readModelFile,
  checkFileSize,
  openForRead,
  readAt,
  LayerOffsetCalculator,
} from './model-file.js';
export {
  TOKENIZER_MAGIC,
  TOKENIZER_MAGIC_LEGACY,
  TokenizerKey,
  TOKENIZER_LIMITS,
  type TokenizerData,
  parseTokenizer,
  writeTokenizer,
} from './tokenizer-file.js';
export { ModelFileWriter, type ModelWriterOptions, type ProgressCallback } from './model-writer.js';
export { generateSyntheticModel, type SyntheticModelOptions } from './synthetic.js';
export {
  LLAMA2C_MAGIC,
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
export { PARTIAL_SUFFIX, writeFileAtomic } from './fs-util.js';
