/**
 * @airllm/bench: airllm measured against the machine's limits (memory and disk bandwidth) and
 * against llama.cpp, side by side in one run. `npm run bench` runs `dist/main.js`; the CLI's
 * `airllm bench` can call `runBench` directly.
 *
 *   const { report, dir, table } = await runBench({ ...defaultOptions(true), resultsDir, peerDir: defaultPeerDir(), log: console.log });
 */
export { runBench, defaultOptions, type BenchOptions, type BenchOutcome } from './bench.js';
export { parseArgs, USAGE, type ParsedArgs } from './args.js';
export { SHAPES, isShapeName, shapeLayout, bytesPerStep, type ModelShape, type ShapeName } from './shapes.js';
export { probeDram, probeDisk, nativeReadProbeAvailable, type DramProbe, type DiskProbe } from './probes.js';
export { renderTimeline, type TimelineOptions } from './timeline.js';
export { traceSteps, decodeBreakdown, type StepBreakdown, type TraceStep } from './analysis.js';
export { markdownReport, markdownTable, type BenchReport, type ShapeReport, type TableRow } from './report.js';
export { defaultPeerDir, ensurePeer, PEER_VERSION } from './peer.js';
export { syntheticTokenizer } from './tokenizer.js';
export * from './errors.js';
