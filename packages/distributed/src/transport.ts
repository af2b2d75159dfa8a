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
import { isIP } from 'node:net';
import * as tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { SplitError, TlsConfigError } from './errors.js';
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
    let settled = false;
    const done = (err?: Error): void => {
      if (settled) return;
      settled = true;
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
    const onError = (e: grpc.ServiceError): void => {
      const plain = `${grpc.status[e.code] ?? e.code}: ${e.details || e.message}`;
      const target = clientTargets.get(client);
      // grpc-js reports most TLS failures as "Failed to connect": ask the TLS layer itself why.
      if (e.code !== grpc.status.UNAVAILABLE || !target) return done(new Error(plain));
      call.off('error', onError);
      call.on('error', () => {});
      void diagnoseTls(target.host, target.port, target.tls, Math.min(timeoutMs, 5_000), target.role).then((why) => done(new Error(why ? `TLS: ${why}` : plain)));
    };
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

// ---- TLS ----

/**
 * TLS of a client: the root towards its workers, or a worker towards the next worker on the
 * relay. PEM text or bytes, as node:tls takes them.
 */
export interface ClientTls {
  /** The CA certificate(s) that signed the workers' certificates (default: the system's CAs). */
  ca?: string | Buffer;
  /** This node's certificate and key, sent to workers that require one (mutual TLS). */
  cert?: string | Buffer;
  key?: string | Buffer;
}

/** TLS of a worker's server. */
export interface ServerTls {
  cert: string | Buffer;
  key: string | Buffer;
  /** With it, a client must present a certificate signed by one of these CAs (mutual TLS). */
  clientCa?: string | Buffer;
}

const buf = (b: string | Buffer): Buffer => (typeof b === 'string' ? Buffer.from(b) : b);

/**
 * Check PEM material before a server or channel is built on it: grpc-js would otherwise fail at
 * the first connection with "Failed to connect". Throws TlsConfigError naming the part.
 */
export function checkTls(t: { cert?: string | Buffer; key?: string | Buffer; ca?: string | Buffer }, what: { cert: string; key: string; ca: string }): void {
  if ((t.cert === undefined) !== (t.key === undefined)) throw new TlsConfigError(`${t.cert === undefined ? what.cert : what.key} is needed with ${t.cert === undefined ? what.key : what.cert}`);
  if (t.ca !== undefined) {
    try {
      tls.createSecureContext({ ca: t.ca });
    } catch (e) {
      throw new TlsConfigError(`${what.ca}: not a PEM certificate (${(e as Error).message})`);
    }
    if (!/-----BEGIN CERTIFICATE-----/.test(buf(t.ca).toString('latin1'))) throw new TlsConfigError(`${what.ca}: no PEM certificate in it`);
  }
  if (t.cert !== undefined && t.key !== undefined) {
    try {
      tls.createSecureContext({ cert: t.cert });
    } catch (e) {
      throw new TlsConfigError(`${what.cert}: not a PEM certificate (${(e as Error).message})`);
    }
    try {
      tls.createSecureContext({ key: t.key });
    } catch (e) {
      throw new TlsConfigError(`${what.key}: not a PEM private key (${(e as Error).message})`);
    }
    try {
      tls.createSecureContext({ cert: t.cert, key: t.key });
    } catch (e) {
      throw new TlsConfigError(`${what.key} does not belong to ${what.cert} (${(e as Error).message})`);
    }
  }
}

export function serverCredentials(t: ServerTls | undefined): grpc.ServerCredentials {
  if (!t) return grpc.ServerCredentials.createInsecure();
  checkTls({ cert: t.cert, key: t.key, ca: t.clientCa }, { cert: 'TLS certificate', key: 'TLS key', ca: 'TLS client CA' });
  return grpc.ServerCredentials.createSsl(t.clientCa === undefined ? null : buf(t.clientCa), [{ cert_chain: buf(t.cert), private_key: buf(t.key) }], t.clientCa !== undefined);
}

/** Who a client is, for the advice in a TLS diagnosis: the root, or a worker's relay. */
export type ClientRole = 'root' | 'relay';

const ADVICE: Record<ClientRole, { ca: string; cert: string; refused: string; plain: string }> = {
  root: {
    ca: '--worker-tls-ca must be the CA certificate that signed it',
    cert: 'give --tls-cert and --tls-key',
    refused: "--tls-cert must be signed by the CA in the worker's --tls-client-ca",
    plain: 'start it with --tls-cert and --tls-key, or leave out --worker-tls-ca',
  },
  relay: {
    ca: '--tls-ca of the worker that relays, default its --tls-client-ca, must be the CA certificate that signed it',
    cert: "the worker that relays presents its own --tls-cert, which must be signed by the CA in the next worker's --tls-client-ca",
    refused: "the worker that relays presents its own --tls-cert, which must be signed by the CA in the next worker's --tls-client-ca",
    plain: 'with TLS on one worker, every worker needs --tls-cert and --tls-key',
  },
};

/** The address a client was made for, so a failed connection can be diagnosed (openStream). */
const clientTargets = new WeakMap<grpc.Client, { host: string; port: number; tls: ClientTls | undefined; role: ClientRole }>();

/** SNI sent instead of an IP literal (see newClient). */
const IP_SNI = 'airllm-worker.invalid';

/**
 * A gRPC client for a worker at `address` ("host:port"), over TLS when `t` is given.
 *
 * The worker's certificate must name the host as written in the address (an IP address needs an
 * IP subjectAltName). grpc-js sends the host as the TLS server name (SNI), which Node warns about
 * for an IP literal (DEP0123, not allowed by RFC 6066); for an IP we send a fixed name instead and
 * check the certificate against the IP ourselves.
 */
export function newClient(address: string, t: ClientTls | undefined, options: grpc.ChannelOptions, role: ClientRole = 'root'): grpc.Client {
  const a = parseAddress(address);
  const { host, port } = a;
  let creds = grpc.credentials.createInsecure();
  let opts = options;
  if (t) {
    checkTls(t, { cert: 'TLS certificate', key: 'TLS key', ca: 'worker TLS CA' });
    const ca = t.ca === undefined ? null : buf(t.ca);
    const key = t.key === undefined ? null : buf(t.key);
    const cert = t.cert === undefined ? null : buf(t.cert);
    if (isIP(host)) {
      creds = grpc.credentials.createSsl(ca, key, cert, { checkServerIdentity: (_name, c) => tls.checkServerIdentity(host, c) });
      opts = { ...options, 'grpc.ssl_target_name_override': IP_SNI };
    } else {
      creds = grpc.credentials.createSsl(ca, key, cert);
    }
  }
  const client = new grpc.Client(a.address, creds, opts);
  clientTargets.set(client, { host, port, tls: t, role });
  return client;
}

/**
 * Why a connection to host:port fails at the TLS layer, in words, or undefined when TLS is not
 * the problem (or the host cannot be reached at all, which the caller's own error says).
 * A second, short connection with node:tls: it sees the alert, the verification error or the
 * close that grpc-js folds into "Failed to connect".
 */
export function diagnoseTls(host: string, port: number, t: ClientTls | undefined, timeoutMs: number, role: ClientRole = 'root'): Promise<string | undefined> {
  const advice = ADVICE[role];
  return new Promise((resolve) => {
    let finished = false;
    const socket = tls.connect({
      host,
      port,
      servername: isIP(host) ? undefined : host,
      ALPNProtocols: ['h2'],
      ca: t?.ca,
      cert: t?.cert,
      key: t?.key,
      // Without TLS of our own, only "does it speak TLS at all" is asked.
      rejectUnauthorized: t !== undefined,
      checkServerIdentity: (_name, c) => tls.checkServerIdentity(host, c),
    });
    const finish = (why: string | undefined): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(why);
    };
    const timer = setTimeout(() => finish(undefined), timeoutMs);
    socket.on('secureConnect', () => {
      if (!t) return finish(role === 'root' ? 'the worker uses TLS: give --worker-tls-ca with the CA certificate that signed its certificate' : `the next worker uses TLS, this one does not: ${advice.plain}`);
      // A server that accepts us starts HTTP/2 at once (its SETTINGS frame); one that refuses
      // our client certificate closes the connection, with or without an alert.
      socket.on('data', () => finish(undefined));
      const refused = (): void =>
        finish(t.cert === undefined ? `the worker closed the connection after the TLS handshake: it requires a client certificate (${advice.cert})` : `the worker did not accept the client certificate (${advice.refused})`);
      socket.on('end', refused);
      socket.on('close', refused);
    });
    socket.on('error', (e: NodeJS.ErrnoException) => finish(describeTlsFailure(e, host, t, role)));
  });
}

function describeTlsFailure(e: NodeJS.ErrnoException, host: string, t: ClientTls | undefined, role: ClientRole): string | undefined {
  const advice = ADVICE[role];
  const code = e.code ?? '';
  const text = e.message.replace(/^.*SSL routines:[^:]*:/s, '').replace(/:\.\.\/deps.*$/s, '').trim();
  if (!t || ['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN'].includes(code)) return undefined;
  if (/WRONG_VERSION_NUMBER|PACKET_LENGTH_TOO_LONG|ECONNRESET/.test(code) || /wrong version number|packet length too long/.test(e.message)) {
    return `the worker does not use TLS (${advice.plain})`;
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return `the worker's certificate does not name ${host}: ${e.message}`;
  if (/CERTIFICATE_REQUIRED/.test(code)) return `the worker requires a client certificate (${advice.cert})`;
  if (/ALERT/.test(code)) return `the worker did not accept the client certificate: ${text} (${t.cert === undefined ? advice.cert : advice.refused})`;
  if (/CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)/.test(code)) return `the worker's certificate is not trusted: ${e.message} (${advice.ca})`;
  return `${code || 'TLS error'}: ${text}`;
}

/**
 * grpc-js prints some failures on stderr itself ("E No address added out of total 1 resolved")
 * before the call that failed rejects; a command that reports that rejection as its own error
 * turns those lines off, unless GRPC_VERBOSITY (or GRPC_NODE_VERBOSITY) asks for them.
 */
export function quietGrpcLog(env: NodeJS.ProcessEnv = process.env): void {
  if (env.GRPC_VERBOSITY === undefined && env.GRPC_NODE_VERBOSITY === undefined) grpc.setLogVerbosity(grpc.logVerbosity.NONE);
}
