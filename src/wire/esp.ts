// ESP packet layout for AES-GCM in tunnel mode (RFC 4303, RFC 4106), inner packet IPv6:
//
//   esp+0   SPI                       (4)  \
//   esp+4   Sequence Number, low 32   (4)   > AAD = SPI | Seq high 32 | Seq low 32 (ESN, RFC 4106 5)
//   esp+8   IV                        (8)  nonce = salt (4) | IV (8)  (RFC 4106 3.1, 4)
//   esp+16  IPv6 packet | padding 1,2,3.. | pad length | next header 41   (encrypted)
//   ...     ICV                       (16)
//
// Our sender's IV is the 64-bit sequence number, so it never repeats under a key while the
// sequence number does not (which the SA enforces). A receiver takes the IV from the
// packet: other senders choose theirs otherwise (Linux XORs the sequence number with a
// random per-SA value), which RFC 4106 3.1 allows.

export const ESP_OFF_SPI = 0;
export const ESP_OFF_SEQ = 4;
export const ESP_OFF_IV = 8;
export const ESP_HLEN = 16; // SPI + sequence + IV
export const ESP_ICV_LEN = 16;
export const ESP_SALT_LEN = 4;
export const ESP_NEXT_HEADER_IPV6 = 41;
/** A dummy packet (RFC 4303 2.6): the receiver discards it. Ours name a pair on a spare SA (src/switch/bind-probe.ts). */
export const ESP_NEXT_HEADER_DUMMY = 59;
/** readEspTrailer's answer for a dummy packet. */
export const ESP_DUMMY = -3;

/** Bytes of padding so that (payload + pad + 2) is a multiple of 4 (RFC 4303 2.4). */
export function espPadLength(payloadLen: number): number {
  return (4 - ((payloadLen + 2) & 3)) & 3;
}

/** Encrypted length for a payload: payload, padding, pad length, next header. */
export function espPlaintextLength(payloadLen: number): number {
  return payloadLen + espPadLength(payloadLen) + 2;
}

/** Total ESP bytes after the outer IPv4 header for a payload. */
export function espLength(payloadLen: number): number {
  return ESP_HLEN + espPlaintextLength(payloadLen) + ESP_ICV_LEN;
}

/** Largest inner packet that fits `room` bytes of ESP (room = underlay MTU - outer IPv4 header). */
export function espMaxPayload(room: number): number {
  return ((room - ESP_HLEN - ESP_ICV_LEN) & ~3) - 2;
}

/** Write padding, pad length and next header after a payload ending at `end`; returns the new end. */
export function writeEspTrailer(buf: Uint8Array, end: number, payloadLen: number, nextHeader = ESP_NEXT_HEADER_IPV6): number {
  const pad = espPadLength(payloadLen);
  for (let k = 1; k <= pad; k++) buf[end++] = k;
  buf[end++] = pad;
  buf[end++] = nextHeader;
  return end;
}

/**
 * Check the decrypted trailer of a plaintext ending at `end`: padding 1,2,3.. (RFC 4303 2.4)
 * and next header. Returns the payload length, or -1 for a bad trailer, ESP_DUMMY for a dummy
 * packet (next header 59), -2 for any other next header than IPv6.
 */
export function readEspTrailer(buf: Uint8Array, start: number, end: number): number {
  const payloadLen = espPayloadLength(buf, start, end);
  if (payloadLen < 0 || buf[end - 1] === ESP_NEXT_HEADER_IPV6) return payloadLen;
  return buf[end - 1] === ESP_NEXT_HEADER_DUMMY ? ESP_DUMMY : -2;
}

/** The payload length of a decrypted plaintext whose padding is valid, whatever its next header; else -1. */
export function espPayloadLength(buf: Uint8Array, start: number, end: number): number {
  if (end - start < 2) return -1;
  const pad = buf[end - 2];
  const payloadLen = end - start - 2 - pad;
  if (payloadLen < 0) return -1;
  for (let k = 1; k <= pad; k++) if (buf[start + payloadLen + k - 1] !== k) return -1;
  return payloadLen;
}
