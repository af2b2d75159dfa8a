export { DistributedEngine, type DistributedOptions, type PipelineNode, type TransportStats } from './root.js';
export { PipelineWorker, type WorkerOptions } from './worker.js';
export { planByBytes, parseSplit, type LayerRange, type SplitModel } from './split.js';
export { modelFingerprint } from './fingerprint.js';
export { checkTls, quietGrpcLog, type ClientTls, type ServerTls } from './transport.js';
export { type WireType, type TransportCounters, MAX_WIRE_ROWS, rowBytes } from './protocol.js';
export * from './errors.js';
