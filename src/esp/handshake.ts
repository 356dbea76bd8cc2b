// The host-to-host key exchange that plugs an encrypted cable (SDN Algorithm 1 step 6,
// Algorithm 2 step 6): one request, one answer, over UDP between the two switches.
//
//   INIT   initiator -> responder: the pair (src, dst) to plug, an ephemeral X25519 key,
//          a timestamp and a request id, signed by the initiator host's key.
//   ANSWER responder -> initiator: accept with the SPI the responder chose and its own
//          ephemeral key, or refuse with the Drop reason; signed by the responder host's
//          key over the INIT's hash too, so an answer cannot be spliced onto another INIT.
//   NOTIFY responder -> initiator: "I have no SA with this SPI" (after a restart or an
//          eviction), so the initiator plugs again. Unsigned, rate-limited, and it only
//          ever causes a new handshake.
//
// Keys (forward secret: the ephemeral keys are used once): shared = X25519(eph_i, eph_r);
// key || salt = HKDF-SHA256(ikm = shared, salt = SHA-256(INIT),
//                           info = "nvi-switch esp v1" || SPI || src || dst).
// One handshake plugs one direction (src -> dst): each direction is decided, keyed and
// counted on its own, so tenants and even pairs never share a key.

import { createHash, diffieHellman, generateKeyPairSync, hkdfSync, sign, verify, type KeyObject } from 'node:crypto';
import type { EspAlgorithm } from './esp-cipher.js';
import { keyLength } from './esp-cipher.js';
import { x25519PublicKey, x25519Raw } from './x25519.js';

export const KX_VERSION = 1;
export const KX_INIT = 1;
export const KX_ANSWER = 2;
export const KX_NOTIFY = 3;

const SIG_LEN = 64;
const INIT_CONTEXT = Buffer.from('nvi-switch kx init v1\0');
const ANSWER_CONTEXT = Buffer.from('nvi-switch kx answer v1\0');
const ESP_INFO = Buffer.from('nvi-switch esp v1\0');

// INIT layout
const I_OFF_TYPE = 0;
const I_OFF_VERSION = 1;
const I_OFF_ALG = 2;
const I_OFF_ID = 4;
const I_OFF_TIME = 12;
const I_OFF_SRC = 20;
const I_OFF_DST = 36;
const I_OFF_EPH = 52;
const I_OFF_NAME = 84; // u8 length, then the initiator host name

// ANSWER layout
const A_OFF_STATUS = 2;
const A_OFF_ID = 4;
const A_OFF_SPI = 12;
const A_OFF_EPH = 16;
const A_OFF_NAME = 48;

// NOTIFY layout: type, version, reason, 0, SPI (4), time ms (8), host name, signature
const N_OFF_REASON = 2;
const N_OFF_SPI = 4;
const N_OFF_TIME = 8;
const N_OFF_NAME = 16;
const NOTIFY_CONTEXT = Buffer.from('nvi-switch kx notify v1\0');

/** Why a NOTIFY is sent: the SPI is unknown here, or the VM it carried traffic for left this host. */
export const enum NotifyReason {
  UnknownSpi = 0,
  Moved = 1,
}

export interface Notify {
  readonly reason: NotifyReason;
  readonly spi: number;
  readonly timeMs: number;
  readonly host: string;
  readonly signed: Buffer;
  readonly signature: Buffer;
}

export interface Init {
  readonly alg: EspAlgorithm;
  readonly requestId: Buffer; // 8 bytes
  readonly timeMs: number;
  readonly src: Buffer; // 16
  readonly dst: Buffer; // 16
  readonly ephemeral: Buffer; // 32, raw X25519
  readonly host: string;
  /** The whole signed message, for the answer's transcript hash. */
  readonly raw: Buffer;
  readonly signed: Buffer;
  readonly signature: Buffer;
}

export interface Answer {
  /** 0: accepted; else the Drop code of the refusal. */
  readonly status: number;
  readonly requestId: Buffer;
  readonly spi: number;
  readonly ephemeral: Buffer;
  readonly host: string;
  readonly signed: Buffer;
  readonly signature: Buffer;
}

export class KxFormatError extends Error {}

function algCode(alg: EspAlgorithm): number {
  return alg === 'aes-128-gcm' ? 1 : 2;
}

function algOf(code: number): EspAlgorithm {
  if (code === 1) return 'aes-128-gcm';
  if (code === 2) return 'aes-256-gcm';
  throw new KxFormatError(`unknown ESP algorithm ${code}`);
}

function nameBytes(host: string): Buffer {
  const b = Buffer.from(host, 'utf8');
  if (b.length === 0 || b.length > 255) throw new KxFormatError(`host name of ${b.length} bytes`);
  return b;
}

function readName(msg: Buffer, off: number): { name: string; end: number } {
  if (msg.length < off + 1) throw new KxFormatError('truncated before the host name');
  const n = msg[off];
  if (n === 0 || msg.length < off + 1 + n) throw new KxFormatError('truncated host name');
  return { name: msg.toString('utf8', off + 1, off + 1 + n), end: off + 1 + n };
}

export function encodeInit(v: Omit<Init, 'raw' | 'signed' | 'signature'>, hostKey: KeyObject): Buffer {
  const name = nameBytes(v.host);
  const body = Buffer.alloc(I_OFF_NAME + 1 + name.length);
  body[I_OFF_TYPE] = KX_INIT;
  body[I_OFF_VERSION] = KX_VERSION;
  body[I_OFF_ALG] = algCode(v.alg);
  v.requestId.copy(body, I_OFF_ID);
  body.writeUInt32BE(Math.floor(v.timeMs / 2 ** 32), I_OFF_TIME);
  body.writeUInt32BE(v.timeMs % 2 ** 32, I_OFF_TIME + 4);
  v.src.copy(body, I_OFF_SRC);
  v.dst.copy(body, I_OFF_DST);
  v.ephemeral.copy(body, I_OFF_EPH);
  body[I_OFF_NAME] = name.length;
  name.copy(body, I_OFF_NAME + 1);
  const sig = sign(null, Buffer.concat([INIT_CONTEXT, body]), hostKey);
  return Buffer.concat([body, sig]);
}

export function decodeInit(msg: Buffer): Init {
  if (msg.length < I_OFF_NAME + 2 + SIG_LEN) throw new KxFormatError(`INIT of ${msg.length} bytes is too short`);
  if (msg[I_OFF_VERSION] !== KX_VERSION) throw new KxFormatError(`version ${msg[I_OFF_VERSION]}`);
  const { name, end } = readName(msg, I_OFF_NAME);
  if (msg.length !== end + SIG_LEN) throw new KxFormatError('INIT length does not match its host name');
  return {
    alg: algOf(msg[I_OFF_ALG]),
    requestId: Buffer.from(msg.subarray(I_OFF_ID, I_OFF_ID + 8)),
    timeMs: msg.readUInt32BE(I_OFF_TIME) * 2 ** 32 + msg.readUInt32BE(I_OFF_TIME + 4),
    src: Buffer.from(msg.subarray(I_OFF_SRC, I_OFF_SRC + 16)),
    dst: Buffer.from(msg.subarray(I_OFF_DST, I_OFF_DST + 16)),
    ephemeral: Buffer.from(msg.subarray(I_OFF_EPH, I_OFF_EPH + 32)),
    host: name,
    raw: msg,
    signed: Buffer.concat([INIT_CONTEXT, msg.subarray(0, end)]),
    signature: msg.subarray(end),
  };
}

export function encodeAnswer(
  v: Omit<Answer, 'signed' | 'signature'>, init: Buffer, hostKey: KeyObject,
): Buffer {
  const name = nameBytes(v.host);
  const body = Buffer.alloc(A_OFF_NAME + 1 + name.length);
  body[0] = KX_ANSWER;
  body[1] = KX_VERSION;
  body[A_OFF_STATUS] = v.status;
  v.requestId.copy(body, A_OFF_ID);
  body.writeUInt32BE(v.spi >>> 0, A_OFF_SPI);
  v.ephemeral.copy(body, A_OFF_EPH);
  body[A_OFF_NAME] = name.length;
  name.copy(body, A_OFF_NAME + 1);
  const sig = sign(null, Buffer.concat([ANSWER_CONTEXT, transcript(init), body]), hostKey);
  return Buffer.concat([body, sig]);
}

/** Decode an ANSWER; `init` is the INIT it answers (its hash is part of what was signed). */
export function decodeAnswer(msg: Buffer, init: Buffer): Answer {
  if (msg.length < A_OFF_NAME + 2 + SIG_LEN) throw new KxFormatError(`ANSWER of ${msg.length} bytes is too short`);
  if (msg[1] !== KX_VERSION) throw new KxFormatError(`version ${msg[1]}`);
  const { name, end } = readName(msg, A_OFF_NAME);
  if (msg.length !== end + SIG_LEN) throw new KxFormatError('ANSWER length does not match its host name');
  return {
    status: msg[A_OFF_STATUS],
    requestId: Buffer.from(msg.subarray(A_OFF_ID, A_OFF_ID + 8)),
    spi: msg.readUInt32BE(A_OFF_SPI),
    ephemeral: Buffer.from(msg.subarray(A_OFF_EPH, A_OFF_EPH + 32)),
    host: name,
    signed: Buffer.concat([ANSWER_CONTEXT, transcript(init), msg.subarray(0, end)]),
    signature: msg.subarray(end),
  };
}

/** The request id of an ANSWER without checking anything else (to find the INIT it answers). */
export function answerRequestId(msg: Buffer): string | undefined {
  return msg.length >= A_OFF_ID + 8 ? msg.toString('hex', A_OFF_ID, A_OFF_ID + 8) : undefined;
}

/**
 * NOTIFY: "stop sending me `spi`" (unknown here, or its VM moved away), signed by the sending
 * host, so that a forger cannot make a switch drop its SAs.
 */
export function encodeNotify(v: { reason: NotifyReason; spi: number; timeMs: number; host: string }, hostKey: KeyObject): Buffer {
  const name = nameBytes(v.host);
  const body = Buffer.alloc(N_OFF_NAME + 1 + name.length);
  body[0] = KX_NOTIFY;
  body[1] = KX_VERSION;
  body[N_OFF_REASON] = v.reason;
  body.writeUInt32BE(v.spi >>> 0, N_OFF_SPI);
  body.writeBigUInt64BE(BigInt(v.timeMs), N_OFF_TIME);
  body[N_OFF_NAME] = name.length;
  name.copy(body, N_OFF_NAME + 1);
  return Buffer.concat([body, sign(null, Buffer.concat([NOTIFY_CONTEXT, body]), hostKey)]);
}

export function decodeNotify(msg: Buffer): Notify {
  if (msg.length < N_OFF_NAME + 1 || msg[1] !== KX_VERSION) throw new KxFormatError('bad NOTIFY');
  const reason = msg[N_OFF_REASON];
  if (reason !== NotifyReason.UnknownSpi && reason !== NotifyReason.Moved) throw new KxFormatError(`unknown NOTIFY reason ${reason}`);
  const { name, end } = readName(msg, N_OFF_NAME);
  if (msg.length !== end + SIG_LEN) throw new KxFormatError('NOTIFY signature missing or trailing bytes');
  return {
    reason,
    spi: msg.readUInt32BE(N_OFF_SPI),
    timeMs: Number(msg.readBigUInt64BE(N_OFF_TIME)),
    host: name,
    signed: Buffer.concat([NOTIFY_CONTEXT, msg.subarray(0, end)]),
    signature: msg.subarray(end),
  };
}

export function verifySignature(signed: Buffer, signature: Buffer, key: KeyObject): boolean {
  return verify(null, signed, key, signature);
}

function transcript(init: Buffer): Buffer {
  return createHash('sha256').update(init).digest();
}

export interface Ephemeral {
  readonly privateKey: KeyObject;
  readonly publicRaw: Buffer;
}

/** A fresh ephemeral X25519 key pair: the private key and the raw 32-byte public key. */
export function ephemeralKey(): Ephemeral {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  return { privateKey, publicRaw: x25519Raw(publicKey) };
}

/** The X25519 shared secret of our private and their public key; throws for the all-zero one (a low-order key). */
export function x25519Shared(ours: KeyObject, theirsRaw: Buffer): Buffer {
  const shared = diffieHellman({ privateKey: ours, publicKey: x25519PublicKey(theirsRaw) });
  if (shared.every((b) => b === 0)) throw new KxFormatError('X25519 produced the all-zero secret (low-order key)');
  return shared;
}

/** ESP key and salt for the SA `spi` carrying src -> dst, from the shared secret (zeroed here). */
export function espKeyOf(alg: EspAlgorithm, shared: Buffer, init: Buffer, spi: number, src: Buffer, dst: Buffer): { key: Buffer; salt: Buffer } {
  const spiBytes = Buffer.alloc(4);
  spiBytes.writeUInt32BE(spi >>> 0);
  const len = keyLength(alg);
  const okm = Buffer.from(hkdfSync('sha256', shared, transcript(init), Buffer.concat([ESP_INFO, spiBytes, src, dst]), len + 4));
  shared.fill(0);
  return { key: okm.subarray(0, len), salt: okm.subarray(len) };
}
