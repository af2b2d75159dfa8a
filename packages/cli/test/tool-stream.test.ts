import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseToolCalls, type ParsedToolCall, type ToolCallStyle } from '@airllm/engine';
import { ToolStream } from '../src/server/tool-stream.js';

/**
 * Streaming a tool-calling answer piece by piece gives the calls and the content that parsing
 * the whole answer at once gives, wherever the pieces are cut.
 */
const answers: [ToolCallStyle, string][] = [
  ['hermes', 'Let me check.\n<tool_call>\n{"name": "get_time", "arguments": {"city": "Oslo"}}\n</tool_call>\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "days": 2}}\n</tool_call>'],
  ['hermes', 'No calls here, only a < and a <tool and text.'],
  ['hermes', 'A broken one: <tool_call>{"name": oops}</tool_call> and after it <tool_call>\n{"name": "f", "arguments": {}}\n</tool_call> the end'],
  ['hermes', 'An unclosed call at the end <tool_call>\n{"name": "f", "arguments": {"a": [1, 2]}}'],
  ['llama3', '{"name": "get_time", "parameters": {"city": "Rome"}}'],
  ['llama3', 'The answer is 42, {"not": "a call"}.'],
  ['llama3', '  {"half": '],
];

function stream(style: ToolCallStyle, pieces: string[]): { content: string; calls: ParsedToolCall[] } {
  let content = '';
  const calls: ParsedToolCall[] = [];
  const ts = new ToolStream(style, '', (t) => (content += t), (c) => calls.push(c));
  for (const p of pieces) ts.push(p);
  ts.end();
  expect(ts.calls).toBe(calls.length);
  return { content, calls };
}

describe('ToolStream', () => {
  it('any cut of the answer into pieces gives the whole answer\'s calls and content', () => {
    for (const [style, text] of answers) {
      const whole = parseToolCalls(style, text);
      fc.assert(
        fc.property(fc.uniqueArray(fc.integer({ min: 1, max: text.length - 1 }), { maxLength: 12 }), (cuts) => {
          const at = [0, ...cuts.sort((a, b) => a - b), text.length];
          const got = stream(style, at.slice(1).map((end, i) => text.slice(at[i], end)));
          expect(got.calls).toEqual(whole.calls);
          expect(style === 'hermes' ? got.content.trim() : got.content).toBe(whole.content);
        }),
        { numRuns: 100, seed: 7 },
      );
    }
  });

  it('content before a call is sent before the call ends', () => {
    const sent: string[] = [];
    const ts = new ToolStream('hermes', '', (t) => sent.push(`content:${t}`), (c) => sent.push(`call:${c.name}`));
    ts.push('Sure. <tool');
    expect(sent).toEqual(['content:Sure. ']);
    ts.push('_call>{"name": "f", "arguments": {}}</tool_call>');
    expect(sent).toEqual(['content:Sure. ', 'call:f']);
  });
});
