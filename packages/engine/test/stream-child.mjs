// Child process for stream.test.ts: runs the engine in stream mode on the given model and
// prints one JSON line with memory figures and the trace, so the parent measures a clean
// process (its own peak RSS, not vitest's).
import { LayerWiseInferenceEngine } from '@airllm/engine';
import { memoryStatus, resetPeakRss } from '@airllm/loader';

const [model, budget, mode] = [process.argv[2], Number(process.argv[3]), process.argv[4]];
const before = memoryStatus();
resetPeakRss();
const engine = new LayerWiseInferenceEngine(model, { mode, maxMemory: budget, threads: 2, maxSeqLen: 64, batchSize: 8, trace: true });
await engine.initialize();
const ids = [];
for await (const t of engine.generate([1, 5, 9, 13], { maxTokens: 4, temperature: 0, stopAtEos: false })) ids.push(t.token);
const after = memoryStatus();
const stats = engine.residencyStats();
const events = engine.trace.events.map((e) => ({ name: e.name, cat: e.cat, tid: e.tid, ts: e.ts, dur: e.dur, args: e.args }));
await engine.cleanup();
console.log(JSON.stringify({ ids, before, after, plannedBytes: stats.plannedBytes, pinnedBytes: stats.pinnedBytes, slots: stats.slots, slotBytes: stats.slotBytes, events }));
