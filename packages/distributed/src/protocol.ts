/**
 * The wire messages of the pipeline and their binary encoding (no protobuf: every message is a
 * few fixed little-endian fields, and activations are raw F32 or Q80 rows).
 *
 * Every message starts with `u8 type, u8 version` and then `u32 id`: the root numbers each
 * request (an assignment, a batch of activations, a ping) and the answer carries the same id.
 * See README.md for the byte layout of each type.
 *
 * `decodeMessage` never throws: bytes that do not parse become a `malformed` message, so a
 * receiver can answer with an error and keep the stream open (a throwing deserializer would make
 * grpc-js end the call).
 */
import { ProtocolError } from './errors.js';

/** 2: the model fingerprint carries a CRC-32 per region of the file. */
export const PROTOCOL_VERSION = 2;

export const MessageType = {
  Assign: 1,
  Ready: 2,
  SetNext: 3,
  Activations: 4,
  Error: 5,
  Ping: 6,
  Pong: 7,
  Stats: 8,
  StatsReply: 9,
  Calibrate: 10,
  Calibrated: 11,
} as const;
export type MessageTypeId = (typeof MessageType)[keyof typeof MessageType];

/** Codes of Error messages. */
export const ErrorCode = {
  /** The message was malformed or does not fit the assignment; nothing was computed. */
  BadMessage: 1,
  /** Activations or a calibration before any assignment. */
  NotAssigned: 2,
  /** The worker's model file is not the root's. */
  Fingerprint: 3,
  /** The worker could not reach or lost its next hop (named in the text). */
  RelayFailed: 4,
  /** The worker's engine failed on a valid message. */
  Engine: 5,
  /** The assignment cannot be served (bad range, options the engine refuses). */
  BadAssignment: 6,
} as const;

/** Activation encodings on the wire. */
export type WireType = 'f32' | 'q80';
const WIRE_CODES: Record<WireType, number> = { f32: 0, q80: 1 };
const WIRE_NAMES: readonly WireType[] = ['f32', 'q80'];

/** Size of the model fingerprint hash (SHA-256). */
export const FINGERPRINT_HASH_BYTES = 32;
/** Most regions (header, layers, tensors outside them) a fingerprint may list. */
export const MAX_FINGERPRINT_REGIONS = 1 << 16;
export const SESSION_ID_BYTES = 16;
/** Longest next-hop address ("host:port") and error text we accept. */
export const MAX_ADDRESS_BYTES = 255;
export const MAX_TEXT_BYTES = 1024;
/**
 * Rows one activation message may carry at most, whatever the batch size: bounds the message
 * size a worker accepts before it knows its assignment (grpc maxReceiveMessageLength).
 */
export const MAX_WIRE_ROWS = 1024;

export interface ModelFingerprint {
  fileSize: number;
  /** SHA-256 of the file size and the region sums (fingerprint.ts). */
  hash: Uint8Array;
  /** CRC-32 of each region of the file: the header, the embedding, each layer, … (fingerprint.ts). */
  regions: Uint32Array;
}

export interface AssignMessage {
  type: typeof MessageType.Assign;
  id: number;
  fingerprint: ModelFingerprint;
  /** Layers [layerStart, layerEnd) this worker runs. */
  layerStart: number;
  layerEnd: number;
  /** Numerics of the worker's engine (must equal the root's for identical results). */
  activations: WireType;
  /** Encoding of activations on the wire. */
  wire: WireType;
  maxSeqLen: number;
  batchSize: number;
  slots: number;
  sessionId: Uint8Array;
  /** Next hop "host:port", or "" for back to the root. */
  next: string;
}

export interface ReadyMessage {
  type: typeof MessageType.Ready;
  id: number;
}

export interface SetNextMessage {
  type: typeof MessageType.SetNext;
  id: number;
  next: string;
}

/** A run of rows of one sequence: positions pos … pos+rows−1 of KV slot `slot`. */
export interface RowRun {
  slot: number;
  pos: number;
  rows: number;
}

export interface ActivationsMessage {
  type: typeof MessageType.Activations;
  /** The root's sequence id of this micro-batch (kept hop to hop). */
  id: number;
  wire: WireType;
  runs: RowRun[];
  /** Σ rows × rowBytes(wire) bytes: the rows in run order. */
  payload: Uint8Array;
}

export interface ErrorMessage {
  type: typeof MessageType.Error;
  /** Id of the request that failed, or 0 when none (e.g. the next hop was lost). */
  id: number;
  code: number;
  text: string;
}

export interface PingMessage {
  type: typeof MessageType.Ping | typeof MessageType.Pong | typeof MessageType.Stats;
  id: number;
}

export interface StatsReplyMessage {
  type: typeof MessageType.StatsReply;
  id: number;
  stats: TransportCounters;
}

export interface CalibrateMessage {
  type: typeof MessageType.Calibrate;
  id: number;
  /** Rows per step and steps to time. */
  rows: number;
  steps: number;
}

export interface CalibratedMessage {
  type: typeof MessageType.Calibrated;
  id: number;
  /** Median milliseconds to run `rows` rows through one layer. */
  msPerLayer: number;
}

export interface MalformedMessage {
  type: 'malformed';
  /** The id when the bytes got that far, else 0. */
  id: number;
  error: ProtocolError;
}

export type Message =
  | AssignMessage
  | ReadyMessage
  | SetNextMessage
  | ActivationsMessage
  | ErrorMessage
  | PingMessage
  | StatsReplyMessage
  | CalibrateMessage
  | CalibratedMessage;

/** Bytes sent and received by one node's transport (serialized messages + gRPC's 5-byte prefix). */
export interface TransportCounters {
  bytesSent: number;
  bytesReceived: number;
  messagesSent: number;
  messagesReceived: number;
  /** Of bytesSent, the bytes of activation messages. */
  activationBytesSent: number;
}

export function newCounters(): TransportCounters {
  return { bytesSent: 0, bytesReceived: 0, messagesSent: 0, messagesReceived: 0, activationBytesSent: 0 };
}

/** gRPC length-prefixes every message with 5 bytes (1 flag + 4 length). */
export const GRPC_MESSAGE_PREFIX = 5;

/** Bytes of one row of `dim` activations on the wire. */
export function rowBytes(wire: WireType, dim: number): number {
  return wire === 'f32' ? dim * 4 : (dim / 32) * 34;
}

/** Header bytes of an Activations message with `runs` runs (type, version, id, wire, count, runs). */
export function activationsHeaderBytes(runs: number): number {
  return 2 + 4 + 1 + 2 + runs * 12;
}

class Writer {
  readonly buf: Buffer;
  off = 0;
  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }
  u8(v: number): this {
    this.buf.writeUInt8(v, this.off);
    this.off += 1;
    return this;
  }
  u16(v: number): this {
    this.buf.writeUInt16LE(v, this.off);
    this.off += 2;
    return this;
  }
  u32(v: number): this {
    this.buf.writeUInt32LE(v, this.off);
    this.off += 4;
    return this;
  }
  f64(v: number): this {
    this.buf.writeDoubleLE(v, this.off);
    this.off += 8;
    return this;
  }
  bytes(b: Uint8Array): this {
    this.buf.set(b, this.off);
    this.off += b.length;
    return this;
  }
  done(): Buffer {
    if (this.off !== this.buf.length) throw new Error(`internal: wrote ${this.off} of ${this.buf.length} bytes`);
    return this.buf;
  }
}

function encodeText(s: string, max: number): Buffer {
  const b = Buffer.from(s, 'utf8');
  // Cut on a byte count; a broken last character is acceptable in error text, not in addresses
  // (those are checked by the caller).
  return b.length > max ? b.subarray(0, max) : b;
}

function head(type: MessageTypeId, id: number, size: number): Writer {
  return new Writer(size).u8(type).u8(PROTOCOL_VERSION).u32(id);
}

export function encodeMessage(m: Message): Buffer {
  switch (m.type) {
    case MessageType.Assign: {
      const next = encodeText(m.next, MAX_ADDRESS_BYTES);
      const sums = m.fingerprint.regions;
      const w = head(m.type, m.id, 6 + 8 + FINGERPRINT_HASH_BYTES + 4 + 4 * sums.length + 8 + 2 + 12 + SESSION_ID_BYTES + 2 + next.length);
      w.f64(m.fingerprint.fileSize).bytes(m.fingerprint.hash).u32(sums.length);
      for (const crc of sums) w.u32(crc);
      w.u32(m.layerStart).u32(m.layerEnd);
      w.u8(WIRE_CODES[m.activations]).u8(WIRE_CODES[m.wire]).u32(m.maxSeqLen).u32(m.batchSize).u32(m.slots);
      return w.bytes(m.sessionId).u16(next.length).bytes(next).done();
    }
    case MessageType.SetNext: {
      const next = encodeText(m.next, MAX_ADDRESS_BYTES);
      return head(m.type, m.id, 6 + 2 + next.length).u16(next.length).bytes(next).done();
    }
    case MessageType.Activations: {
      const w = head(m.type, m.id, activationsHeaderBytes(m.runs.length) + m.payload.length);
      w.u8(WIRE_CODES[m.wire]).u16(m.runs.length);
      for (const r of m.runs) w.u32(r.slot).u32(r.pos).u32(r.rows);
      return w.bytes(m.payload).done();
    }
    case MessageType.Error: {
      const text = encodeText(m.text, MAX_TEXT_BYTES);
      return head(m.type, m.id, 6 + 2 + 2 + text.length).u16(m.code).u16(text.length).bytes(text).done();
    }
    case MessageType.Ready:
    case MessageType.Ping:
    case MessageType.Pong:
    case MessageType.Stats:
      return head(m.type, m.id, 6).done();
    case MessageType.StatsReply: {
      const s = m.stats;
      return head(m.type, m.id, 6 + 40).f64(s.bytesSent).f64(s.bytesReceived).f64(s.messagesSent).f64(s.messagesReceived).f64(s.activationBytesSent).done();
    }
    case MessageType.Calibrate:
      return head(m.type, m.id, 14).u32(m.rows).u32(m.steps).done();
    case MessageType.Calibrated:
      return head(m.type, m.id, 14).f64(m.msPerLayer).done();
  }
}

/** Reads fields with bounds checks; a short read throws a ProtocolError naming the field. */
class Reader {
  off = 0;
  readonly view: DataView;
  constructor(readonly data: Uint8Array) {
    this.view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  }
  #need(n: number, field: string): void {
    if (this.off + n > this.data.length) throw new ProtocolError(field, 'message ends early', `${this.off + n} bytes`, this.data.length);
  }
  u8(field: string): number {
    this.#need(1, field);
    return this.view.getUint8(this.off++);
  }
  u16(field: string): number {
    this.#need(2, field);
    const v = this.view.getUint16(this.off, true);
    this.off += 2;
    return v;
  }
  u32(field: string): number {
    this.#need(4, field);
    const v = this.view.getUint32(this.off, true);
    this.off += 4;
    return v;
  }
  f64(field: string): number {
    this.#need(8, field);
    const v = this.view.getFloat64(this.off, true);
    this.off += 8;
    return v;
  }
  bytes(n: number, field: string): Uint8Array {
    this.#need(n, field);
    const b = this.data.subarray(this.off, this.off + n);
    this.off += n;
    return b;
  }
  text(max: number, field: string): string {
    const n = this.u16(`${field} length`);
    if (n > max) throw new ProtocolError(field, 'too long', `≤ ${max} bytes`, n);
    return Buffer.from(this.bytes(n, field)).toString('utf8');
  }
  wire(field: string): WireType {
    const c = this.u8(field);
    const w = WIRE_NAMES[c];
    if (w === undefined) throw new ProtocolError(field, 'unknown activation type', '0 (f32) or 1 (q80)', c);
    return w;
  }
  end(): void {
    if (this.off !== this.data.length) throw new ProtocolError('length', 'extra bytes after the message', this.off, this.data.length);
  }
}

/** Parse one message; structural problems give a `malformed` message instead of throwing. */
export function decodeMessage(bytes: Uint8Array): Message | MalformedMessage {
  const r = new Reader(bytes);
  let id = 0;
  try {
    const type = r.u8('type');
    const version = r.u8('version');
    // type, version and id keep their place in every version, so the error can name the id.
    id = r.u32('id');
    if (version !== PROTOCOL_VERSION) throw new ProtocolError('version', 'unsupported protocol version', PROTOCOL_VERSION, version);
    let m: Message;
    switch (type) {
      case MessageType.Assign: {
        const fileSize = r.f64('fileSize');
        const hash = Uint8Array.from(r.bytes(FINGERPRINT_HASH_BYTES, 'fingerprint'));
        const count = r.u32('fingerprint regions');
        if (count > MAX_FINGERPRINT_REGIONS) throw new ProtocolError('fingerprint regions', 'too many', `≤ ${MAX_FINGERPRINT_REGIONS}`, count);
        const regions = new Uint32Array(count);
        for (let i = 0; i < count; i++) regions[i] = r.u32(`fingerprint regions[${i}]`);
        const layerStart = r.u32('layerStart');
        const layerEnd = r.u32('layerEnd');
        const activations = r.wire('activations');
        const wire = r.wire('wire');
        const maxSeqLen = r.u32('maxSeqLen');
        const batchSize = r.u32('batchSize');
        const slots = r.u32('slots');
        const sessionId = Uint8Array.from(r.bytes(SESSION_ID_BYTES, 'sessionId'));
        const next = r.text(MAX_ADDRESS_BYTES, 'next');
        m = { type, id, fingerprint: { fileSize, hash, regions }, layerStart, layerEnd, activations, wire, maxSeqLen, batchSize, slots, sessionId, next };
        break;
      }
      case MessageType.SetNext:
        m = { type, id, next: r.text(MAX_ADDRESS_BYTES, 'next') };
        break;
      case MessageType.Activations: {
        const wire = r.wire('wire');
        const count = r.u16('runs');
        if (count === 0 || count > MAX_WIRE_ROWS) throw new ProtocolError('runs', 'run count out of range', `1..${MAX_WIRE_ROWS}`, count);
        const runs: RowRun[] = [];
        for (let i = 0; i < count; i++) runs.push({ slot: r.u32(`runs[${i}].slot`), pos: r.u32(`runs[${i}].pos`), rows: r.u32(`runs[${i}].rows`) });
        // The payload is the rest; its length is checked against the model by the receiver.
        const payload = r.bytes(bytes.length - r.off, 'payload');
        m = { type, id, wire, runs, payload };
        break;
      }
      case MessageType.Error: {
        const code = r.u16('code');
        m = { type, id, code, text: r.text(MAX_TEXT_BYTES, 'text') };
        break;
      }
      case MessageType.Ready:
      case MessageType.Ping:
      case MessageType.Pong:
      case MessageType.Stats:
        m = { type, id } as ReadyMessage | PingMessage;
        break;
      case MessageType.StatsReply:
        m = {
          type,
          id,
          stats: {
            bytesSent: r.f64('bytesSent'),
            bytesReceived: r.f64('bytesReceived'),
            messagesSent: r.f64('messagesSent'),
            messagesReceived: r.f64('messagesReceived'),
            activationBytesSent: r.f64('activationBytesSent'),
          },
        };
        break;
      case MessageType.Calibrate:
        m = { type, id, rows: r.u32('rows'), steps: r.u32('steps') };
        break;
      case MessageType.Calibrated:
        m = { type, id, msPerLayer: r.f64('msPerLayer') };
        break;
      default:
        throw new ProtocolError('type', 'unknown message type', '1..11', type);
    }
    r.end();
    return m;
  } catch (e) {
    if (e instanceof ProtocolError) return { type: 'malformed', id, error: e };
    throw e;
  }
}

/**
 * Check an Activations message against what the receiver serves: at most `batchSize` rows,
 * every slot < `slots` and used once, positions inside the context, the payload exactly the
 * rows' bytes. Throws a ProtocolError naming the first field that is wrong.
 */
export function checkActivations(
  m: ActivationsMessage,
  limits: { wire: WireType; dim: number; batchSize: number; slots: number; maxSeqLen: number },
): number {
  if (m.wire !== limits.wire) throw new ProtocolError('wire', 'activation type differs from the assignment', limits.wire, m.wire);
  let rows = 0;
  const seen = new Set<number>();
  m.runs.forEach((r, i) => {
    if (r.slot >= limits.slots) throw new ProtocolError(`runs[${i}].slot`, 'slot out of range', `< ${limits.slots}`, r.slot);
    if (seen.has(r.slot)) throw new ProtocolError(`runs[${i}].slot`, 'slot appears twice in one message', undefined, r.slot);
    seen.add(r.slot);
    if (r.rows < 1) throw new ProtocolError(`runs[${i}].rows`, 'a run needs at least one row', '≥ 1', r.rows);
    // pos and rows are u32, so the sum cannot overflow a double.
    if (r.pos + r.rows > limits.maxSeqLen) throw new ProtocolError(`runs[${i}].pos`, 'positions outside the context', `pos + rows ≤ ${limits.maxSeqLen}`, `${r.pos} + ${r.rows}`);
    rows += r.rows;
  });
  if (rows > limits.batchSize) throw new ProtocolError('rows', 'more rows than the batch size', `≤ ${limits.batchSize}`, rows);
  const want = rows * rowBytes(limits.wire, limits.dim);
  if (m.payload.length !== want) throw new ProtocolError('payload', `length does not match ${rows} rows of ${limits.dim} ${limits.wire} values`, want, m.payload.length);
  return rows;
}
