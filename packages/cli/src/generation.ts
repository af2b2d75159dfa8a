/** Running one generation to its end, the way every command and the server need it. */
import type { GenerateOptions, GenerationResult, LayerWiseInferenceEngine } from '@airllm/engine';

/**
 * Generate, handing each piece of text to `onText`, and always drive the engine's generator to
 * its end: a caller that stops early does so through `options.signal` (the engine then ends the
 * generation with finishReason "cancelled" at the next token). Leaving the iteration early
 * instead (break / return()) would strand the engine's inner batch generator while it holds the
 * engine's lock, and every later generation would wait forever. If `onText` throws, the
 * generation is cancelled, drained, and the error rethrown.
 */
export async function runGeneration(
  engine: LayerWiseInferenceEngine,
  prompt: string | readonly number[],
  options: GenerateOptions,
  onText?: (text: string) => void,
): Promise<GenerationResult> {
  const own = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, own.signal]) : own.signal;
  const gen = engine.generate(prompt, { ...options, signal });
  let failure: { error: unknown } | undefined;
  const emit = (text: string): void => {
    if (!text || !onText || failure) return;
    try {
      onText(text);
    } catch (error) {
      failure = { error };
      own.abort();
    }
  };
  let r = await gen.next();
  while (!r.done) {
    emit(r.value.text);
    r = await gen.next();
  }
  // generate() yields the text it held back as a possible stop string (or half a character) when
  // the answer ends otherwise, so the pieces already add up to r.value.text.
  if (failure) throw failure.error;
  return r.value;
}
