/**
 * The gRPC side: one service with two bidirectional-stream methods, defined by hand (no
 * protobuf codegen) with our own serialize/deserialize functions over protocol.ts messages.
 *
 * - `Session`: root ↔ worker. The root assigns the worker its layers and sends it activations
 *   (when the worker is first in a chain); the worker answers requests and, when it is last in a
 *   chain, returns the activations on this stream.
 * - `Relay`: worker → next worker. Only activations travel on it (and errors back).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { SplitError } from './errors.js';
import { decodeMessage, encodeMessage, GRPC_MESSAGE_PREFIX, MessageType, type MalformedMessage, type Message, type TransportCounters } from './protocol.js';

export const SERVICE_NAME = 'airllm.distributed.Pipeline';
export const SESSION_PATH = `/${SERVICE_NAME}/Session`;
export const RELAY_PATH = `/${SERVICE_NAME}/Relay`;
/** Request metadata: the shared secret, and (Relay only) the session the stream belongs to. */
export const TOKEN_HEADER = 'x-airllm-token';
export const SESSION_HEADER = 'x-airllm-session';
/** Response metadata a worker sends when it accepts a stream (a refusal ends it with a status). */
export const ACCEPTED_HEADER = 'x-airllm-accepted';

export type Decoded = Message | MalformedMessage;

export interface Codec {
  serialize(m: Message): Buffer;
  deserialize(b: Buffer): Decoded;
}

/** Serialize/deserialize that count every message into `counters` (the transport's own figures). */
export function countingCodec(counters: TransportCounters): Codec {
  return {
    serialize(m) {
      const b = encodeMessage(m);
      counters.bytesSent += b.length + GRPC_MESSAGE_PREFIX;
      counters.messagesSent++;
      if (m.type === MessageType.Activations) counters.activationBytesSent += b.length + GRPC_MESSAGE_PREFIX;
      return b;
    },
    deserialize(b) {
      counters.bytesReceived += b.length + GRPC_MESSAGE_PREFIX;
      counters.messagesReceived++;
      return decodeMessage(b);
    },
  };
}

export function serviceDefinition(codec: Codec): grpc.ServiceDefinition {
  const method = (path: string): grpc.MethodDefinition<Message, Message> => ({
    path,
    requestStream: true,
    responseStream: true,
    requestSerialize: codec.serialize,
    // grpc-js types the deserialized request as the request type; malformed ones are handled.
    requestDeserialize: codec.deserialize as (b: Buffer) => Message,
    responseSerialize: codec.serialize,
    responseDeserialize: codec.deserialize as (b: Buffer) => Message,
  });
  return { Session: method(SESSION_PATH), Relay: method(RELAY_PATH) };
}

/** Keepalive: a peer whose machine vanished (no TCP reset) is noticed within time + timeout. */
export interface KeepaliveOptions {
  keepaliveTimeMs: number;
  keepaliveTimeoutMs: number;
}

export function channelOptions(maxMessageBytes: number, k: KeepaliveOptions): grpc.ChannelOptions {
  return {
    'grpc.max_receive_message_length': maxMessageBytes,
    'grpc.max_send_message_length': maxMessageBytes,
    'grpc.keepalive_time_ms': k.keepaliveTimeMs,
    'grpc.keepalive_timeout_ms': k.keepaliveTimeoutMs,
    'grpc.keepalive_permit_without_calls': 1,
    // A stream that broke is a failed node, handled by the root; never replay messages.
    'grpc.enable_retries': 0,
  };
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

/**
 * Whether the request carries the shared token. Compares SHA-256 digests with timingSafeEqual,
 * so the time taken does not depend on how much of the token (or its length) was right.
 */
export function tokenMatches(expected: string | undefined, metadata: grpc.Metadata): boolean {
  if (expected === undefined) return true;
  const got = metadata.get(TOKEN_HEADER);
  const value = got.length === 1 && typeof got[0] === 'string' ? got[0] : '';
  const ok = timingSafeEqual(digest(expected), digest(value));
  return ok && got.length === 1;
}

export function requestMetadata(token: string | undefined, session?: Uint8Array): grpc.Metadata {
  const md = new grpc.Metadata();
  if (token !== undefined) md.set(TOKEN_HEADER, token);
  if (session) md.set(SESSION_HEADER, Buffer.from(session).toString('hex'));
  return md;
}

export type ClientStream = grpc.ClientDuplexStream<Message, Decoded>;
export type ServerStream = grpc.ServerDuplexStream<Decoded, Message>;

/** Open a bidi stream on `client`; resolves once the worker accepted it (ACCEPTED_HEADER). */
export function openStream(client: grpc.Client, path: string, codec: Codec, metadata: grpc.Metadata, timeoutMs: number): Promise<ClientStream> {
  const call = client.makeBidiStreamRequest(path, codec.serialize, codec.deserialize, metadata, {}) as ClientStream;
  return new Promise((resolve, reject) => {
    const done = (err?: Error): void => {
      clearTimeout(timer);
      call.off('metadata', onMeta);
      call.off('error', onError);
      if (err) {
        // Keep an 'error' listener: a late status must not become an uncaught exception.
        call.on('error', () => {});
        call.cancel();
        reject(err);
      } else resolve(call);
    };
    const onMeta = (md: grpc.Metadata): void => {
      if (md.get(ACCEPTED_HEADER)[0] === '1') done();
    };
    const onError = (e: grpc.ServiceError): void => done(new Error(`${grpc.status[e.code] ?? e.code}: ${e.details || e.message}`));
    const timer = setTimeout(() => done(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    call.on('metadata', onMeta);
    call.on('error', onError);
  });
}

export interface Address {
  host: string;
  port: number;
  /** "host:port" as grpc-js takes it ("[::1]:port" for IPv6). */
  address: string;
}

/** "host:port", "[v6]:port" → parts; a typed error naming the entry otherwise. */
export function parseAddress(text: string): Address {
  const s = text.trim();
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 1 && port <= 65535)) throw new SplitError(`worker address "${text}": expected host:port (e.g. 192.168.1.5:9100)`);
  const host = m[1] ?? m[2]!;
  return { host, port, address: m[1] !== undefined ? `[${host}]:${port}` : `${host}:${port}` };
}

/** End a client stream and tolerate a late error status. */
export function closeClientStream(call: ClientStream | undefined): void {
  if (!call) return;
  // Our handlers would take the cancellation for a failure of the peer.
  for (const ev of ['data', 'end', 'error', 'metadata', 'status']) call.removeAllListeners(ev);
  call.on('error', () => {});
  call.cancel();
}
