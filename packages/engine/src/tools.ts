/**
 * Tool calls in the syntax a model's chat template teaches it: Hermes/Qwen3's
 * `<tool_call>{"name": …, "arguments": {…}}</tool_call>` blocks, or Llama 3.1's bare JSON
 * `{"name": …, "parameters": {…}}`. Parsing an answer back into calls, and the prefix and JSON
 * schema that force a call (tool_choice required or named) through constrained sampling.
 */
import type { JsonSchema } from './grammar/schema.js';

/** How a template's model writes a tool call. */
export type ToolCallStyle = 'hermes' | 'llama3';

/** A function the model may call (OpenAI's `tools[i].function`). */
export interface ToolFunction {
  name: string;
  description?: string;
  /** JSON schema of the arguments object (absent: any object). */
  parameters?: JsonSchema;
}

/** A call parsed from an answer: the function's name and its arguments as JSON text. */
export interface ParsedToolCall {
  name: string;
  arguments: string;
}

/** The tool-call syntax a chat template defines, or undefined when it has none. */
export function toolCallStyle(template: string | undefined): ToolCallStyle | undefined {
  if (template === undefined) return undefined;
  if (template.includes('<tool_call>')) return 'hermes';
  if (template.includes('<|python_tag|>') || template.includes('"parameters"')) return 'llama3';
  return undefined;
}

/** What the answer starts with when a call is forced: Hermes opens its tag, Llama 3.1 starts the JSON. */
export function forcedCallPrefix(style: ToolCallStyle): string {
  return style === 'hermes' ? '<tool_call>\n' : '';
}

/** The JSON schema of one call to any of `tools` (the key holding the arguments per style). */
export function toolCallSchema(style: ToolCallStyle, tools: readonly ToolFunction[]): JsonSchema {
  const key = style === 'hermes' ? 'arguments' : 'parameters';
  const one = (t: ToolFunction): JsonSchema => ({
    type: 'object',
    properties: { name: { const: t.name }, [key]: t.parameters ?? { type: 'object' } },
    required: ['name', key],
    additionalProperties: false,
  });
  return tools.length === 1 ? one(tools[0]!) : { anyOf: tools.map(one) };
}

/** A parsed JSON call `{name, arguments|parameters}`, or undefined when `v` is not one. */
function asCall(v: unknown): ParsedToolCall | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const o = v as Record<string, unknown>;
  const args = o.arguments ?? o.parameters ?? {};
  if (typeof o.name !== 'string' || typeof args !== 'object' || args === null) return undefined;
  return { name: o.name, arguments: JSON.stringify(args) };
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

/**
 * The calls in an answer and the text around them. A block that is not a well-formed call is
 * left in the text. `prefix`: what the prompt already wrote of the answer (a forced call's
 * opening tag).
 */
export function parseToolCalls(style: ToolCallStyle, text: string, prefix = ''): { content: string; calls: ParsedToolCall[] } {
  const full = prefix + text;
  const calls: ParsedToolCall[] = [];
  if (style === 'hermes') {
    const content = full.replace(/<tool_call>\s*([\s\S]*?)\s*(?:<\/tool_call>|$)/g, (block, json: string) => {
      const call = asCall(parseJson(json));
      if (!call) return block;
      calls.push(call);
      return '';
    });
    return { content: content.trim(), calls };
  }
  const call = asCall(parseJson(full.trim().replace(/^<\|python_tag\|>/, '')));
  return call ? { content: '', calls: [call] } : { content: full, calls };
}
