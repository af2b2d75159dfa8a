/**
 * A JSON schema, in the subset OpenAI's structured outputs document, compiled into the nodes the
 * grammar walks: objects (`properties`, `required`, `additionalProperties: false`), arrays
 * (`items`), strings, numbers, integers, booleans, null, `enum`, `anyOf`, `$ref` into `$defs` /
 * `definitions` (recursion allowed). Any other keyword is refused, naming it and where it is.
 */
import type { ErrorDetails } from '@airllm/format';
import { EngineError } from '../errors.js';

/** A JSON schema as parsed from JSON (`true`/`{}`: any value). */
export type JsonSchema = boolean | { readonly [keyword: string]: unknown };

/** A schema keyword outside the supported subset, or a malformed one. */
export class JsonSchemaError extends EngineError {
  static override readonly code = 'AIRLLM_JSON_SCHEMA';
  constructor(
    readonly keyword: string,
    readonly at: string,
    reason: string,
  ) {
    super(reason, { field: keyword, schemaPath: at });
  }

  protected static override describe(reason: string, d: ErrorDetails): string {
    return `JSON schema keyword "${d.field}" at ${d.schemaPath}: ${reason}`;
  }
}

/** A property of an object node: its name as JSON string bytes without the quotes. */
export interface PropNode {
  readonly name: string;
  readonly key: Uint8Array;
  readonly required: boolean;
  node: SchemaNode;
}

export type SchemaNode =
  | { readonly kind: 'any' }
  /** props undefined: any keys with any values. */
  | { readonly kind: 'object'; readonly props: readonly PropNode[] | undefined }
  | { readonly kind: 'array'; items: SchemaNode }
  | { readonly kind: 'string' }
  | { readonly kind: 'number'; readonly integer: boolean }
  /** One JSON text (an enum value, true, false, null). */
  | { readonly kind: 'literal'; readonly text: Uint8Array }
  | { readonly kind: 'anyOf'; alts: SchemaNode[] }
  | { readonly kind: 'ref'; target: SchemaNode | undefined };

/** A compiled schema: its root and the fewest bytes a value of each node takes. */
export interface CompiledSchema {
  readonly root: SchemaNode;
  readonly minBytes: ReadonlyMap<SchemaNode, number>;
}

/** Most digits in one run of a number (integer part, fraction); exponents take at most 2. */
export const MAX_DIGITS = 15;

const ANNOTATIONS = new Set(['$schema', '$id', '$comment', 'title', 'description', 'default', 'examples', 'strict']);
const utf8 = new TextEncoder();

/**
 * Compile `schema` (throws JsonSchemaError). `additionalProperties` absent on an object with
 * `properties` is taken as false: only the listed properties are generated, which the schema
 * allows. An object schema without `properties` is any object. Integer `minimum`/`maximum` are
 * accepted when they hold every integer of MAX_DIGITS digits (what zod writes for `.int()`),
 * since numbers are generated with at most that many digits.
 */
export function compileJsonSchema(schema: JsonSchema): CompiledSchema {
  const all: SchemaNode[] = [];
  const refs = new Map<string, SchemaNode>();
  const add = <N extends SchemaNode>(n: N): N => {
    all.push(n);
    return n;
  };

  function resolve(ref: string, at: string): SchemaNode {
    const known = refs.get(ref);
    if (known) return known;
    if (ref !== '#' && !/^#\/(\$defs|definitions)\/[^/]+$/.test(ref)) throw new JsonSchemaError('$ref', at, `only "#" and "#/$defs/<name>" (or "#/definitions/<name>") are supported, got ${JSON.stringify(ref)}`);
    let target: unknown = schema;
    if (ref !== '#') {
      const [, group, name] = ref.split('/');
      const defs = typeof schema === 'object' ? (schema[group!] as Record<string, unknown> | undefined) : undefined;
      target = defs?.[decodeURIComponent(name!).replace(/~1/g, '/').replace(/~0/g, '~')];
      if (target === undefined) throw new JsonSchemaError('$ref', at, `${ref} is not defined`);
    }
    const node = add<SchemaNode>({ kind: 'ref', target: undefined });
    refs.set(ref, node);
    (node as { target: SchemaNode | undefined }).target = compile(target, ref);
    return node;
  }

  function compile(s: unknown, at: string): SchemaNode {
    if (s === true) return add({ kind: 'any' });
    if (typeof s !== 'object' || s === null || Array.isArray(s)) throw new JsonSchemaError('type', at, `a schema must be an object or true, got ${JSON.stringify(s)}`);
    const o = s as Record<string, unknown>;
    const known = new Set([...ANNOTATIONS, 'type', 'properties', 'required', 'additionalProperties', 'items', 'enum', 'const', 'anyOf', '$ref', '$defs', 'definitions', 'minimum', 'maximum']);
    for (const k of Object.keys(o)) if (!known.has(k)) throw new JsonSchemaError(k, at, 'is not supported (supported: type, properties, required, additionalProperties: false, items, enum, const, anyOf, $ref, $defs)');
    for (const group of ['$defs', 'definitions']) {
      const defs = o[group];
      if (defs === undefined) continue;
      if (typeof defs !== 'object' || defs === null || Array.isArray(defs)) throw new JsonSchemaError(group, at, 'must be an object of schemas');
      // Definitions are compiled when referenced; check them all the same, so a bad one is named.
      if (at === '#') for (const name of Object.keys(defs)) resolve(`#/${group}/${encodeURIComponent(name)}`, `#/${group}`);
    }
    if (o.$ref !== undefined) {
      if (typeof o.$ref !== 'string') throw new JsonSchemaError('$ref', at, 'must be a string');
      const others = Object.keys(o).filter((k) => !ANNOTATIONS.has(k) && k !== '$ref' && k !== '$defs' && k !== 'definitions');
      if (others.length > 0) throw new JsonSchemaError(others[0]!, at, 'cannot stand beside $ref');
      return resolve(o.$ref, at);
    }
    const values = o.const !== undefined ? [o.const] : (o.enum as unknown[] | undefined);
    if (values !== undefined) {
      if (!Array.isArray(values) || values.length === 0) throw new JsonSchemaError('enum', at, 'must be a non-empty array');
      return add({ kind: 'anyOf', alts: values.map((v) => add({ kind: 'literal', text: utf8.encode(JSON.stringify(v)) })) });
    }
    if (o.anyOf !== undefined) {
      if (!Array.isArray(o.anyOf) || o.anyOf.length === 0) throw new JsonSchemaError('anyOf', at, 'must be a non-empty array of schemas');
      if (o.type !== undefined) throw new JsonSchemaError('type', at, 'cannot stand beside anyOf (put it in each alternative)');
      return add({ kind: 'anyOf', alts: o.anyOf.map((a, i) => compile(a, `${at}/anyOf/${i}`)) });
    }
    const t = o.type;
    if (t === undefined) {
      const typed = ['properties', 'required', 'additionalProperties', 'items', 'minimum', 'maximum'].find((k) => k in o);
      if (typed) throw new JsonSchemaError(typed, at, 'needs a "type"');
      return add({ kind: 'any' });
    }
    const types = Array.isArray(t) ? t : [t];
    if (types.length === 0) throw new JsonSchemaError('type', at, 'must not be empty');
    const nodes = types.map((ty) => typed(o, ty, at));
    return nodes.length === 1 ? nodes[0]! : add({ kind: 'anyOf', alts: nodes });
  }

  function typed(o: Record<string, unknown>, type: unknown, at: string): SchemaNode {
    const only = (allowed: string[]): void => {
      for (const k of ['properties', 'required', 'additionalProperties', 'items', 'minimum', 'maximum']) {
        if (k in o && !allowed.includes(k)) throw new JsonSchemaError(k, at, `does not apply to type ${JSON.stringify(type)}`);
      }
    };
    switch (type) {
      case 'string':
        only([]);
        return add({ kind: 'string' });
      case 'boolean':
        only([]);
        return add({ kind: 'anyOf', alts: [add({ kind: 'literal', text: utf8.encode('true') }), add({ kind: 'literal', text: utf8.encode('false') })] });
      case 'null':
        only([]);
        return add({ kind: 'literal', text: utf8.encode('null') });
      case 'number':
      case 'integer': {
        only(['minimum', 'maximum']);
        const bound = 10 ** MAX_DIGITS - 1;
        if (o.minimum !== undefined && !(typeof o.minimum === 'number' && o.minimum <= -bound)) throw new JsonSchemaError('minimum', at, `only bounds that hold every ${MAX_DIGITS}-digit number are supported (≤ -${bound}), got ${JSON.stringify(o.minimum)}`);
        if (o.maximum !== undefined && !(typeof o.maximum === 'number' && o.maximum >= bound)) throw new JsonSchemaError('maximum', at, `only bounds that hold every ${MAX_DIGITS}-digit number are supported (≥ ${bound}), got ${JSON.stringify(o.maximum)}`);
        return add({ kind: 'number', integer: type === 'integer' });
      }
      case 'array': {
        only(['items']);
        const node = add<SchemaNode>({ kind: 'array', items: { kind: 'any' } });
        (node as { items: SchemaNode }).items = o.items === undefined ? add({ kind: 'any' }) : compile(o.items, `${at}/items`);
        return node;
      }
      case 'object':
        only(['properties', 'required', 'additionalProperties']);
        return object(o, at);
      default:
        throw new JsonSchemaError('type', at, `unknown type ${JSON.stringify(type)} (supported: object, array, string, number, integer, boolean, null)`);
    }
  }

  function object(o: Record<string, unknown>, at: string): SchemaNode {
    const props = o.properties;
    const extra = o.additionalProperties;
    if (props === undefined) {
      if (o.required !== undefined && !(Array.isArray(o.required) && o.required.length === 0)) throw new JsonSchemaError('required', at, 'names properties but there are no "properties"');
      if (extra !== undefined && extra !== true && extra !== false && !(typeof extra === 'object' && extra !== null && Object.keys(extra).length === 0)) {
        throw new JsonSchemaError('additionalProperties', at, 'only false (or true without "properties") is supported');
      }
      return add({ kind: 'object', props: extra === false ? [] : undefined });
    }
    if (extra !== undefined && extra !== false) throw new JsonSchemaError('additionalProperties', at, 'only false is supported beside "properties"');
    if (typeof props !== 'object' || props === null || Array.isArray(props)) throw new JsonSchemaError('properties', at, 'must be an object of schemas');
    const required = o.required ?? [];
    if (!Array.isArray(required) || !required.every((r) => typeof r === 'string')) throw new JsonSchemaError('required', at, 'must be an array of property names');
    for (const r of required) if (!(r in props)) throw new JsonSchemaError('required', at, `names ${JSON.stringify(r)}, which is not in "properties"`);
    const list: PropNode[] = Object.entries(props).map(([name, s]) => ({
      name,
      key: utf8.encode(JSON.stringify(name).slice(1, -1)),
      required: required.includes(name),
      node: compile(s, `${at}/properties/${name}`),
    }));
    return add({ kind: 'object', props: list });
  }

  const root = compile(schema, '#');
  const minBytes = minimumBytes(all);
  if (!Number.isFinite(minBytes.get(root))) throw new JsonSchemaError('$ref', '#', 'the schema has no finite value (a required property refers back to itself on every path)');
  return { root, minBytes };
}

/** The fewest bytes of a JSON text for each node (a fixed point: recursive refs start at ∞). */
function minimumBytes(nodes: readonly SchemaNode[]): Map<SchemaNode, number> {
  const m = new Map<SchemaNode, number>(nodes.map((n) => [n, Number.POSITIVE_INFINITY]));
  const of = (n: SchemaNode): number => m.get(n) ?? Number.POSITIVE_INFINITY;
  for (let changed = true; changed; ) {
    changed = false;
    for (const n of nodes) {
      let v: number;
      switch (n.kind) {
        case 'any':
        case 'number':
          v = 1;
          break;
        case 'string':
        case 'array':
          v = 2;
          break;
        case 'literal':
          v = n.text.length;
          break;
        case 'anyOf':
          v = Math.min(...n.alts.map(of));
          break;
        case 'ref':
          v = of(n.target!);
          break;
        case 'object': {
          const req = (n.props ?? []).filter((p) => p.required);
          v = 2 + req.reduce((s, p) => s + propBytes(p, of(p.node)), 0) + Math.max(0, req.length - 1);
          break;
        }
      }
      if (v < of(n)) {
        m.set(n, v);
        changed = true;
      }
    }
  }
  return m;
}

/** Bytes of `"key":value` with the value's fewest bytes. */
export function propBytes(p: PropNode, valueBytes: number): number {
  return p.key.length + 3 + valueBytes;
}
