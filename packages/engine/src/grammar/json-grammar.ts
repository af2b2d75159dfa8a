/**
 * A byte-level pushdown automaton for the JSON texts a compiled schema allows. A state is a set
 * of stacks (alternatives of anyOf and enum stay open side by side until a byte rules them out);
 * a stack is an immutable linked list of frames, so a walk over the vocabulary can branch from
 * any state without copying. Each stack knows the fewest bytes that complete it, which lets a
 * generation that is running out of tokens be steered to a closing brace in time.
 */
import { MAX_DIGITS, propBytes, type CompiledSchema, type PropNode, type SchemaNode } from './schema.js';

type ObjState = 'open' | 'key' | 'colon' | 'after' | 'comma';
type ArrState = 'open' | 'after' | 'comma';

/** Number states: what was read so far. 2, 3, 5 and 8 are complete numbers. */
const enum Num {
  Start,
  Sign,
  Zero,
  Int,
  Dot,
  Frac,
  E,
  ESign,
  Exp,
}

type Frame =
  /** A value not begun (whitespace may come first). */
  | { readonly t: 'value'; readonly node: SchemaNode }
  | { readonly t: 'lit'; readonly text: Uint8Array; readonly pos: number }
  /** Inside a string: esc -1 after a backslash, k > 0 hex digits of \u to come; utf8: continuation bytes to come. */
  | { readonly t: 'str'; readonly esc: number; readonly utf8: number }
  | { readonly t: 'num'; readonly st: Num; readonly integer: boolean; readonly digits: number }
  /**
   * An object; props undefined: free keys (a string frame above it while in 'key'). With
   * props: `used` marks the properties written, `cands`/`kpos` the names still matching the key
   * being written, `cur` the property whose value comes next.
   */
  | {
      readonly t: 'obj';
      readonly props: readonly PropNode[] | undefined;
      readonly st: ObjState;
      readonly used: readonly boolean[];
      readonly cands: readonly number[];
      readonly kpos: number;
      readonly cur: number;
    }
  | { readonly t: 'arr'; readonly items: SchemaNode; readonly st: ArrState }
  /** The whole text is complete. */
  | { readonly t: 'end' };

/** One alternative: frames from the innermost (`f`) outwards. */
export class Stack {
  /** Fewest bytes that complete this stack (computed once; -1 until then). */
  min = -1;
  /** `ws`: whitespace bytes just read between tokens of the JSON text (at most MAX_WS). */
  constructor(
    readonly f: Frame,
    readonly up: Stack | null,
    readonly ws = 0,
  ) {}
}

/**
 * Most whitespace bytes in a row between two tokens of the text: enough for indented JSON, and
 * a model that knows no JSON cannot spend its tokens on blank lines.
 */
export const MAX_WS = 12;

const ANY: SchemaNode = { kind: 'any' };
const TRUE: SchemaNode = { kind: 'literal', text: new TextEncoder().encode('true') };
const FALSE: SchemaNode = { kind: 'literal', text: new TextEncoder().encode('false') };
const NULL: SchemaNode = { kind: 'literal', text: new TextEncoder().encode('null') };
const STR: Frame = { t: 'str', esc: 0, utf8: 0 };
const STR_ESC: Frame = { t: 'str', esc: -1, utf8: 0 };
const STR_HEX: Frame[] = [0, 1, 2, 3, 4].map((esc) => ({ t: 'str', esc, utf8: 0 }));
const STR_UTF8: Frame[] = [0, 1, 2, 3].map((utf8) => ({ t: 'str', esc: 0, utf8 }));
const END = new Stack({ t: 'end' }, null);
END.min = 0;

const isWs = (b: number): boolean => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
const isDigit = (b: number): boolean => b >= 0x30 && b <= 0x39;
const isHex = (b: number): boolean => isDigit(b) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);
const numComplete = (st: Num): boolean => st === Num.Zero || st === Num.Int || st === Num.Frac || st === Num.Exp;
/** Bytes that may follow a backslash in a JSON string. */
const ESCAPES = new Set([0x22, 0x5c, 0x2f, 0x62, 0x66, 0x6e, 0x72, 0x74]);

/** The number frame after byte `b`, or undefined when `b` cannot continue the number. */
function numNext(st: Num, integer: boolean, digits: number, b: number): Frame | undefined {
  const to = (s: Num, d: number): Frame => ({ t: 'num', st: s, integer, digits: d });
  const digit = isDigit(b);
  switch (st) {
    case Num.Start:
    case Num.Sign:
      if (b === 0x2d && st === Num.Start) return to(Num.Sign, 0);
      if (b === 0x30) return to(Num.Zero, 1);
      return digit ? to(Num.Int, 1) : undefined;
    case Num.Zero:
    case Num.Int:
      if (digit) return st === Num.Int && digits < MAX_DIGITS ? to(Num.Int, digits + 1) : undefined;
      if (integer) return undefined;
      if (b === 0x2e) return to(Num.Dot, 0);
      return b === 0x65 || b === 0x45 ? to(Num.E, 0) : undefined;
    case Num.Dot:
      return digit ? to(Num.Frac, 1) : undefined;
    case Num.Frac:
      if (digit) return digits < MAX_DIGITS ? to(Num.Frac, digits + 1) : undefined;
      return b === 0x65 || b === 0x45 ? to(Num.E, 0) : undefined;
    case Num.E:
    case Num.ESign:
      if ((b === 0x2b || b === 0x2d) && st === Num.E) return to(Num.ESign, 0);
      return digit ? to(Num.Exp, 1) : undefined;
    case Num.Exp:
      // At most two exponent digits: 1e99 at most, never Infinity.
      return digit && digits < 2 ? to(Num.Exp, digits + 1) : undefined;
  }
}

export class JsonGrammar {
  readonly #minBytes: ReadonlyMap<SchemaNode, number>;
  readonly #root: SchemaNode;

  constructor(schema: CompiledSchema) {
    this.#minBytes = schema.minBytes;
    this.#root = schema.root;
  }

  /** The state before any byte. */
  initial(): Stack[] {
    return [new Stack({ t: 'value', node: this.#root }, null)];
  }

  /** The state after byte `b` (empty: `b` leaves the grammar). */
  feed(stacks: readonly Stack[], b: number): Stack[] {
    const out: Stack[] = [];
    for (const s of stacks) this.#step(s, b, out);
    return out;
  }

  /** The text so far is a complete value. */
  accepting(stacks: readonly Stack[]): boolean {
    return stacks.some((s) => s === END || (s.up === null && s.f.t === 'num' && numComplete(s.f.st)));
  }

  /** Complete, and no byte may follow. */
  ended(stacks: readonly Stack[]): boolean {
    return stacks.length > 0 && stacks.every((s) => s === END);
  }

  /** Fewest bytes that complete any of the stacks. */
  minRemaining(stacks: readonly Stack[]): number {
    let m = Number.POSITIVE_INFINITY;
    for (const s of stacks) m = Math.min(m, this.#min(s));
    return m;
  }

  /** The top frame is a string between characters: every plain text byte keeps the state as it is. */
  inPlainString(stacks: readonly Stack[]): boolean {
    return stacks.length === 1 && stacks[0]!.f === STR;
  }

  #min(s: Stack): number {
    if (s.min < 0) s.min = this.#frameMin(s.f) + (s.up ? this.#min(s.up) : 0);
    return s.min;
  }

  #bytes(n: SchemaNode): number {
    return this.#minBytes.get(n) ?? 1;
  }

  #frameMin(f: Frame): number {
    switch (f.t) {
      case 'end':
        return 0;
      case 'value':
        return this.#bytes(f.node);
      case 'lit':
        return f.text.length - f.pos;
      case 'str':
        return (f.esc < 0 ? 1 : f.esc) + f.utf8 + 1;
      case 'num':
        return numComplete(f.st) ? 0 : 1;
      case 'arr':
        return f.st === 'comma' ? this.#bytes(f.items) + 1 : 1;
      case 'obj':
        return f.props ? this.#objMin(f) : { open: 1, key: 3, colon: 3, after: 1, comma: 5 }[f.st];
    }
  }

  /** Required properties not yet written (but `skip`): their fewest bytes and their count. */
  #missing(f: Extract<Frame, { t: 'obj' }>, skip: number): { bytes: number; count: number } {
    let bytes = 0;
    let count = 0;
    f.props!.forEach((p, i) => {
      if (p.required && !f.used[i] && i !== skip) {
        bytes += propBytes(p, this.#bytes(p.node));
        count++;
      }
    });
    return { bytes, count };
  }

  #objMin(f: Extract<Frame, { t: 'obj' }>): number {
    const props = f.props!;
    switch (f.st) {
      case 'open': {
        const m = this.#missing(f, -1);
        return m.bytes + Math.max(0, m.count - 1) + 1;
      }
      case 'after': {
        const m = this.#missing(f, -1);
        return m.bytes + m.count + 1;
      }
      case 'comma': {
        const m = this.#missing(f, -1);
        if (m.count > 0) return m.bytes + m.count - 1 + 1;
        let best = Number.POSITIVE_INFINITY;
        props.forEach((p, i) => {
          if (!f.used[i]) best = Math.min(best, propBytes(p, this.#bytes(p.node)));
        });
        return best + 1;
      }
      case 'colon': {
        const m = this.#missing(f, f.cur);
        return 1 + this.#bytes(props[f.cur]!.node) + m.bytes + m.count + 1;
      }
      case 'key': {
        let best = Number.POSITIVE_INFINITY;
        for (const c of f.cands) {
          const p = props[c]!;
          const m = this.#missing(f, c);
          best = Math.min(best, p.key.length - f.kpos + 2 + this.#bytes(p.node) + m.bytes + m.count + 1);
        }
        return best;
      }
    }
  }

  #step(s: Stack, b: number, out: Stack[]): void {
    const f = s.f;
    switch (f.t) {
      case 'end':
        return;
      case 'value':
        if (isWs(b)) this.#space(s, out);
        else this.#start(s.up, f.node, b, out);
        return;
      case 'lit':
        if (f.text[f.pos] !== b) return;
        if (f.pos + 1 === f.text.length) this.#done(s.up, out);
        else out.push(new Stack({ t: 'lit', text: f.text, pos: f.pos + 1 }, s.up));
        return;
      case 'str':
        this.#string(s, f, b, out);
        return;
      case 'num': {
        const next = numNext(f.st, f.integer, f.digits, b);
        if (next) out.push(new Stack(next, s.up));
        else if (numComplete(f.st)) {
          // The byte after a number belongs to what encloses it.
          const after: Stack[] = [];
          this.#done(s.up, after);
          for (const a of after) this.#step(a, b, out);
        }
        return;
      }
      case 'arr':
        this.#array(s, f, b, out);
        return;
      case 'obj':
        this.#object(s, f, b, out);
        return;
    }
  }

  #string(s: Stack, f: Extract<Frame, { t: 'str' }>, b: number, out: Stack[]): void {
    if (f.esc < 0) {
      if (ESCAPES.has(b)) out.push(new Stack(STR, s.up));
      else if (b === 0x75) out.push(new Stack(STR_HEX[4]!, s.up));
    } else if (f.esc > 0) {
      if (isHex(b)) out.push(new Stack(STR_HEX[f.esc - 1]!, s.up));
    } else if (f.utf8 > 0) {
      if (b >= 0x80 && b <= 0xbf) out.push(new Stack(STR_UTF8[f.utf8 - 1]!, s.up));
    } else if (b === 0x22) this.#done(s.up, out);
    else if (b === 0x5c) out.push(new Stack(STR_ESC, s.up));
    else if (b < 0x20) return;
    else if (b < 0x80) out.push(s);
    else if (b >= 0xc2 && b <= 0xdf) out.push(new Stack(STR_UTF8[1]!, s.up));
    else if (b >= 0xe0 && b <= 0xef) out.push(new Stack(STR_UTF8[2]!, s.up));
    else if (b >= 0xf0 && b <= 0xf4) out.push(new Stack(STR_UTF8[3]!, s.up));
  }

  /** A value of `node` begins with byte `b`, inside `up`. */
  #start(up: Stack | null, node: SchemaNode, b: number, out: Stack[]): void {
    switch (node.kind) {
      case 'ref':
        this.#start(up, node.target!, b, out);
        return;
      case 'anyOf':
        for (const a of node.alts) this.#start(up, a, b, out);
        return;
      case 'any':
        if (b === 0x7b) out.push(new Stack({ t: 'obj', props: undefined, st: 'open', used: [], cands: [], kpos: 0, cur: -1 }, up));
        else if (b === 0x5b) out.push(new Stack({ t: 'arr', items: ANY, st: 'open' }, up));
        else if (b === 0x22) out.push(new Stack(STR, up));
        else if (b === 0x74 || b === 0x66 || b === 0x6e) this.#start(up, b === 0x74 ? TRUE : b === 0x66 ? FALSE : NULL, b, out);
        else this.#start(up, { kind: 'number', integer: false }, b, out);
        return;
      case 'object':
        if (b === 0x7b) out.push(new Stack({ t: 'obj', props: node.props, st: 'open', used: node.props ? node.props.map(() => false) : [], cands: [], kpos: 0, cur: -1 }, up));
        return;
      case 'array':
        if (b === 0x5b) out.push(new Stack({ t: 'arr', items: node.items, st: 'open' }, up));
        return;
      case 'string':
        if (b === 0x22) out.push(new Stack(STR, up));
        return;
      case 'number': {
        const next = numNext(Num.Start, node.integer, 0, b);
        if (next) out.push(new Stack(next, up));
        return;
      }
      case 'literal':
        if (node.text[0] !== b) return;
        if (node.text.length === 1) this.#done(up, out);
        else out.push(new Stack({ t: 'lit', text: node.text, pos: 1 }, up));
        return;
    }
  }

  /** A value inside `up` is complete. */
  #done(up: Stack | null, out: Stack[]): void {
    if (up === null) out.push(END);
    else if (up.f.t === 'obj' && up.f.st === 'key') out.push(new Stack({ ...up.f, st: 'colon' }, up.up));
    else out.push(up);
  }

  /** Whitespace between tokens: the same frame, one more byte of the run. */
  #space(s: Stack, out: Stack[]): void {
    if (s.ws < MAX_WS) out.push(new Stack(s.f, s.up, s.ws + 1));
  }

  #array(s: Stack, f: Extract<Frame, { t: 'arr' }>, b: number, out: Stack[]): void {
    if (isWs(b)) {
      this.#space(s, out);
      return;
    }
    if (f.st === 'after') {
      if (b === 0x2c) out.push(new Stack({ ...f, st: 'comma' }, s.up));
      else if (b === 0x5d) this.#done(s.up, out);
      return;
    }
    if (f.st === 'open' && b === 0x5d) {
      this.#done(s.up, out);
      return;
    }
    this.#start(new Stack({ ...f, st: 'after' }, s.up), f.items, b, out);
  }

  #object(s: Stack, f: Extract<Frame, { t: 'obj' }>, b: number, out: Stack[]): void {
    const props = f.props;
    if (f.st === 'key') {
      // Matching a listed name (free keys are a string frame above this one).
      if (b === 0x22) {
        const c = f.cands.find((i) => props![i]!.key.length === f.kpos);
        if (c !== undefined) out.push(new Stack({ ...f, st: 'colon', cands: [], kpos: 0, cur: c }, s.up));
        return;
      }
      const cands = f.cands.filter((i) => props![i]!.key[f.kpos] === b);
      if (cands.length > 0) out.push(new Stack({ ...f, cands, kpos: f.kpos + 1 }, s.up));
      return;
    }
    if (isWs(b)) {
      this.#space(s, out);
      return;
    }
    const unused = props ? props.flatMap((_, i) => (f.used[i] ? [] : [i])) : [];
    const closable = !props || props.every((p, i) => !p.required || f.used[i]);
    switch (f.st) {
      case 'open':
      case 'comma':
        if (b === 0x22) {
          if (!props) out.push(new Stack(STR, new Stack({ ...f, st: 'key' }, s.up)));
          else if (unused.length > 0) out.push(new Stack({ ...f, st: 'key', cands: unused, kpos: 0 }, s.up));
        } else if (b === 0x7d && f.st === 'open' && closable) this.#done(s.up, out);
        return;
      case 'after':
        if (b === 0x2c && (!props || unused.length > 0)) out.push(new Stack({ ...f, st: 'comma' }, s.up));
        else if (b === 0x7d && closable) this.#done(s.up, out);
        return;
      case 'colon': {
        if (b !== 0x3a) return;
        const used = props ? f.used.map((u, i) => u || i === f.cur) : f.used;
        const parent = new Stack({ ...f, st: 'after', used, cur: -1 }, s.up);
        out.push(new Stack({ t: 'value', node: props ? props[f.cur]!.node : ANY }, parent));
        return;
      }
    }
  }
}
