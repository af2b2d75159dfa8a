import { dllamaNumerics, type KernelBackend } from '@airllm/kernels';
import { FORWARD, forwardHead, type LayerForward } from './forward.js';
import { SpanKind, type ComputeWorkerData, type StepTask, type ThreadReport } from './shared.js';
import { ThreadState } from './state.js';
import { ThreadWeights } from './weights.js';

/**
 * One compute thread: its view of the run state, its weights, and the architecture's layer
 * function. `run` drives one step: the step's layers in order, each acquired (waiting until
 * resident), computed and released, then the head when the step asks for logits.
 */
export class ComputeThread {
  readonly state: ThreadState;
  readonly weights: ThreadWeights;
  readonly #layer: LayerForward;

  constructor(data: ComputeWorkerData, kernels: KernelBackend) {
    // q80 activations compute with dllama's own arithmetic, so Q40 models give its numbers
    const K = data.config.activations === 'q80' ? dllamaNumerics(kernels) : kernels;
    this.state = new ThreadState(data.config, data.buffers, K, data.spin);
    this.weights = new ThreadWeights(data.weights);
    this.#layer = FORWARD[data.config.model.archType];
  }

  /** Run one step: the task's layers, then the logits it asks for. */
  run(task: StepTask): ThreadReport {
    const s = this.state;
    const W = this.weights;
    s.t = task.thread;
    const spans: number[] = [];
    const clock = (): number => performance.timeOrigin + performance.now();
    try {
      for (let l = task.layers.start; l < task.layers.end; l++) {
        const waitStart = clock();
        const w = W.layer(l);
        const waitEnd = clock();
        this.#layer(s, w, task, l);
        // Every thread has passed the layer's last barrier, so its weights are no longer read.
        if (s.t === 0) W.releaseLayer(l);
        spans.push(SpanKind.LAYER, l, waitStart, waitEnd, clock());
      }
      if (task.logitRows.length > 0) {
        const waitStart = clock();
        const w = W.head();
        const waitEnd = clock();
        forwardHead(s, w, task);
        if (s.t === 0) W.releaseHead();
        spans.push(SpanKind.HEAD, 0, waitStart, waitEnd, clock());
      }
    } catch (e) {
      s.barrier.abort();
      throw e;
    }
    return { thread: s.t, spans };
  }
}
