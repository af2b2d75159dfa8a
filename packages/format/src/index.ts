/**
 * @airllm/format: the byte level of airllm. Distributed-Llama `.m` model files (the header,
 * the layout table, reading one from disk), the dtype table with its reference codecs, `.t`
 * tokenizer files, and the error family every airllm package uses.
 *
 * Converters (Hugging Face, GGUF, llama2.c), the GGUF exporter, the `.m` writer and the
 * synthetic-model generator are `@airllm/format/convert`; test-only builders are
 * `@airllm/format/testing`.
 */
export {
  AirllmError,
  type ErrorDetails,
  fileError,
  FormatError,
  BadMagicError,
  OldFormatError,
  TruncatedError,
  UnknownKeyError,
  InvalidValueError,
  FileSizeMismatchError,
  SizeOverflowError,
  TensorMismatchError,
  UnsupportedModelError,
  MissingTensorError,
  FileAccessError,
  MissingFileError,
  PermissionError,
  NotRegularFileError,
  EmptyFileError,
  IoError,
} from './errors.js';
export {
  FloatType,
  DTYPES,
  type DTypeInfo,
  Q_BLOCK,
  Q40_BLOCK_BYTES,
  Q80_BLOCK_BYTES,
  floatTypeName,
  parseFloatType,
  byteSize,
  quantizeQ40,
  dequantizeQ40,
  quantizeQ80,
  dequantizeQ80,
  MODEL_FILE_FLOAT_TYPES,
  isModelFileFloatType,
} from './dtypes.js';
export { f16ToF32, f32ToF16, f16Table32 } from './f16.js';
export {
  QK_K,
  Q4_K_BLOCK_BYTES,
  Q5_K_BLOCK_BYTES,
  Q6_K_BLOCK_BYTES,
  kScale,
  kMin,
} from './kquants.js';
export {
  HeaderKey,
  HEADER_KEY_NAMES,
  ArchType,
  RopeType,
  HiddenAct,
  type ModelHeader,
  type HeaderValues,
  archName,
  parseModelHeader,
  writeModelHeader,
} from './header.js';
export {
  type TensorKind,
  type TensorInfo,
  type Extent,
  type TensorGroup,
  type LayerInfo,
  type LayerRange,
  type ModelConfig,
  type WeightsLayout,
  type ModelLayout,
  buildModelLayout,
  configFromHeader,
  extentsOf,
  tensorGroup,
  layoutFromTensors,
  findTensor,
  findOptionalTensor,
  layerTensor,
} from './layout.js';
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
export { type TokenizerData, TOKENIZER_MAX_FILE_BYTES, parseTokenizer, readTokenizerFile, writeTokenizer } from './tokenizer-file.js';
export {
  HF_SIDECAR_MAX_BYTES,
  type HfTokenizerSidecar,
  hfSidecarPath,
  parseHfSidecar,
  checkHfSidecarVocab,
} from './hf-sidecar.js';
export { ggufToHfTokenizer, ggufTokenizerToData } from './gguf-tokenizer.js';
export { GgufFile, type GgufHeader } from './gguf.js';
export { GGML_IN_PLACE, IN_PLACE_ARCHS, IN_PLACE_GGML_TYPES, inPlaceDtypeOf } from './gguf-arch.js';
export {
  type ModelFileFormat,
  type GgufModelInfo,
  type AnyModelInfo,
  ggufModelLayout,
  isGgufMagic,
  readGgufModel,
  modelFileFormat,
  readAnyModelFile,
} from './gguf-model.js';
