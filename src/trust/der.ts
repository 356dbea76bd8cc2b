// A strict DER reader (ITU-T X.690, sections 8, 10 and 11) for the certificate reader.
//
// Every element is bounds-checked against its parent before a byte of it is read, and every
// encoding that BER allows but DER does not is refused, so that one certificate has exactly
// one encoding and what this reader accepts is a subset of what OpenSSL accepts
// (test/certificate-der.test.ts holds the two against each other). Refusals throw
// CertificateFormatError with code NVI_ERR_CERT_FORMAT and a stable `reason`.

import { NviError } from '../base/errors.js';

/** Why a certificate was refused; stable, tests and traces key on it. */
export type CertFormatReason =
  | 'pem' // not exactly one PEM CERTIFICATE block
  | 'truncated' // an element or its length octets run past the input or their parent
  | 'tag' // high-tag-number form (X.690 8.1.2.4): no certificate field uses it
  | 'indefinite-length' // X.690 10.1: DER uses the definite form only
  | 'length-not-minimal' // X.690 10.1, 8.1.3.5: long form below 128, or a leading zero octet
  | 'length-too-long' // more than 3 length octets (16 MB): no certificate is that large
  | 'boolean' // X.690 8.2.1: one octet; 11.1: FALSE is 0x00, TRUE is 0xFF
  | 'default-encoded' // X.690 11.5: a value equal to its DEFAULT is left out
  | 'integer' // X.690 8.3.2: at least one octet, the first 9 bits not all alike
  | 'bit-string' // X.690 8.6.2, 11.2.1, 11.2.2
  | 'oid' // X.690 8.19.2: each subidentifier in the fewest octets
  | 'set-order' // X.690 11.6: SET OF components in ascending order of their encodings
  | 'string' // a UTF8String that is not UTF-8
  | 'time' // X.690 11.7, 11.8 and RFC 5280 4.1.2.5: YYMMDDHHMMSSZ or YYYYMMDDHHMMSSZ, a real date
  | 'structure' // RFC 5280 4.1: a field missing, repeated, out of order, extra or of the wrong type
  | 'unsupported'; // well formed, but not what nvi-switch certifies (key, signature, critical extension)

/** Thrown by parseCertificate; the verifier turns it into VerifyMalformed. */
export class CertificateFormatError extends NviError {
  constructor(readonly reason: CertFormatReason, message: string) {
    super('NVI_ERR_CERT_FORMAT', message);
  }
}

export function bad(reason: CertFormatReason, message: string): never {
  throw new CertificateFormatError(reason, message);
}

// Universal tags (X.680 8.4) the certificate reader meets, as their identifier octets.
export const T_BOOLEAN = 0x01;
export const T_INTEGER = 0x02;
export const T_BIT_STRING = 0x03;
export const T_OCTET_STRING = 0x04;
export const T_OID = 0x06;
export const T_UTF8 = 0x0c;
export const T_PRINTABLE = 0x13;
export const T_IA5 = 0x16;
export const T_UTC_TIME = 0x17;
export const T_GENERALIZED_TIME = 0x18;
export const T_SEQUENCE = 0x30;
export const T_SET = 0x31;

/** One element: its identifier octet, where it starts, where its contents start and end. */
export interface Tlv {
  readonly tag: number;
  readonly start: number;
  readonly body: number;
  readonly end: number;
}

/** The element at `off`, which must end by `limit`. */
export function tlv(buf: Buffer, off: number, limit: number): Tlv {
  if (off + 2 > limit) bad('truncated', 'DER truncated');
  const tag = buf[off];
  if ((tag & 0x1f) === 0x1f) bad('tag', `DER tag 0x${tag.toString(16)} in the high-tag-number form`);
  let len = buf[off + 1];
  let body = off + 2;
  if (len === 0x80) bad('indefinite-length', 'DER indefinite length (BER only, X.690 10.1)');
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n > 3) bad('length-too-long', `DER length of ${n} octets`);
    if (body + n > limit) bad('truncated', 'DER length truncated');
    if (buf[body] === 0) bad('length-not-minimal', 'DER length with a leading zero octet (X.690 10.1)');
    len = 0;
    for (let k = 0; k < n; k++) len = len * 256 + buf[body + k];
    if (len < 0x80) bad('length-not-minimal', `DER length ${len} in the long form (X.690 10.1)`);
    body += n;
  }
  if (body + len > limit) bad('truncated', 'DER element runs past its parent');
  return { tag, start: off, body, end: body + len };
}

export function expect(t: Tlv, tag: number, what: string): Tlv {
  if (t.tag !== tag) bad('structure', `${what}: expected DER tag 0x${tag.toString(16)}, got 0x${t.tag.toString(16)}`);
  return t;
}

/** The elements inside a constructed element, which they must fill exactly. */
export function children(buf: Buffer, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let off = parent.body; off < parent.end; ) {
    const t = tlv(buf, off, parent.end);
    out.push(t);
    off = t.end;
  }
  return out;
}

/** The one element inside `parent`'s contents (an extnValue, an EXPLICIT tag), filling them. */
export function only(buf: Buffer, parent: Tlv, what: string): Tlv {
  const t = tlv(buf, parent.body, parent.end);
  if (t.end !== parent.end) bad('structure', `${what}: bytes after its value`);
  return t;
}

/** BOOLEAN (X.690 8.2, 11.1): exactly one octet, 0x00 or 0xFF. */
export function readBoolean(buf: Buffer, t: Tlv, what: string): boolean {
  expect(t, T_BOOLEAN, what);
  if (t.end - t.body !== 1) bad('boolean', `${what}: BOOLEAN of ${t.end - t.body} octets`);
  const v = buf[t.body];
  if (v !== 0x00 && v !== 0xff) bad('boolean', `${what}: BOOLEAN 0x${v.toString(16)} is not 0x00 or 0xff (X.690 11.1)`);
  return v === 0xff;
}

/** INTEGER (X.690 8.3.2): one octet at least, and no first octet that only repeats the sign. */
export function checkInteger(buf: Buffer, t: Tlv, what: string): void {
  expect(t, T_INTEGER, what);
  const n = t.end - t.body;
  if (n === 0) bad('integer', `${what}: INTEGER with no content`);
  if (n > 1 && ((buf[t.body] === 0x00 && buf[t.body + 1] < 0x80) || (buf[t.body] === 0xff && buf[t.body + 1] >= 0x80))) {
    bad('integer', `${what}: INTEGER not in the fewest octets (X.690 8.3.2)`);
  }
}

/** A non-negative INTEGER that fits in 31 bits (a version, a path length). */
export function smallInteger(buf: Buffer, t: Tlv, what: string): number {
  checkInteger(buf, t, what);
  if (buf[t.body] >= 0x80) bad('integer', `${what} is negative`);
  if (t.end - t.body > 4 || (t.end - t.body === 4 && buf[t.body] >= 0x80)) bad('integer', `${what} is too large`);
  let v = 0;
  for (let p = t.body; p < t.end; p++) v = v * 256 + buf[p];
  return v;
}

/**
 * BIT STRING (X.690 8.6.2, 11.2): the first octet counts the unused bits of the last (0 to 7,
 * 0 when there is no last), and the unused bits are zero. A named bit list (KeyUsage) also
 * has no trailing zero bits (11.2.2): its last used bit is 1.
 */
export function checkBitString(buf: Buffer, t: Tlv, what: string, named: boolean): void {
  const n = t.end - t.body;
  if (n === 0) bad('bit-string', `${what}: BIT STRING with no content`);
  const unused = buf[t.body];
  if (unused > 7 || (n === 1 && unused !== 0)) bad('bit-string', `${what}: BIT STRING with ${unused} unused bits`);
  if (n === 1) return;
  const last = buf[t.end - 1];
  if ((last & ((1 << unused) - 1)) !== 0) bad('bit-string', `${what}: unused bits of a BIT STRING are not zero (X.690 11.2.1)`);
  if (named && ((last >> unused) & 1) === 0) bad('bit-string', `${what}: named bits with trailing zero bits (X.690 11.2.2)`);
}

/** OBJECT IDENTIFIER (X.690 8.19.2): contents as hex, after checking each subidentifier is minimal. */
export function readOid(buf: Buffer, t: Tlv, what: string): string {
  expect(t, T_OID, what);
  if (t.end === t.body) bad('oid', `${what}: OBJECT IDENTIFIER with no content`);
  let first = true;
  for (let p = t.body; p < t.end; p++) {
    if (first && buf[p] === 0x80) bad('oid', `${what}: OBJECT IDENTIFIER subidentifier with a leading 0x80 (X.690 8.19.2)`);
    first = (buf[p] & 0x80) === 0;
  }
  if (!first) bad('oid', `${what}: OBJECT IDENTIFIER ends inside a subidentifier`);
  return buf.toString('hex', t.body, t.end);
}

/** Dotted text of a checked OID's contents (for names we do not know). */
export function oidText(bytes: Buffer): string {
  const parts: number[] = [];
  let v = 0;
  for (const b of bytes) {
    v = v * 128 + (b & 0x7f);
    if ((b & 0x80) === 0) {
      parts.push(v);
      v = 0;
    }
  }
  const first = parts.shift() ?? 0;
  const arc = Math.min(2, Math.floor(first / 40));
  return [arc, first - arc * 40, ...parts].join('.');
}

/** X.690 11.6: components of a SET OF in ascending order, encodings compared padded with zeros. */
export function checkSetOrder(buf: Buffer, items: readonly Tlv[], what: string): void {
  for (let k = 1; k < items.length; k++) {
    const a = items[k - 1];
    const b = items[k];
    const n = Math.max(a.end - a.start, b.end - b.start);
    for (let i = 0; i < n; i++) {
      const x = a.start + i < a.end ? buf[a.start + i] : 0;
      const y = b.start + i < b.end ? buf[b.start + i] : 0;
      if (x < y) break;
      if (x > y) bad('set-order', `${what}: SET OF components out of order (X.690 11.6)`);
    }
  }
}

const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * A UTF8String, PrintableString or IA5String. UTF-8 must be valid: decoding it leniently
 * would give different bytes the same text (U+FFFD). The one-byte types read as Latin-1, as
 * OpenSSL reads them; their character sets (X.680 41) are a value rule, not an encoding
 * one, and are not checked (@peculiar/x509 writes a non-ASCII URI into an IA5String).
 */
export function readString(buf: Buffer, t: Tlv, what: string): string {
  if (t.tag === T_UTF8) {
    try {
      return UTF8.decode(buf.subarray(t.body, t.end));
    } catch {
      bad('string', `${what}: UTF8String is not UTF-8`);
    }
  }
  if (t.tag !== T_PRINTABLE && t.tag !== T_IA5) bad('structure', `${what}: unsupported string type 0x${t.tag.toString(16)}`);
  return buf.toString('latin1', t.body, t.end);
}

const TIME = /^(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)?Z$/;

/**
 * Time ::= UTCTime "YYMMDDHHMMSSZ" | GeneralizedTime "YYYYMMDDHHMMSSZ" (RFC 5280 4.1.2.5;
 * X.690 11.7 and 11.8: in UTC, seconds present, no fraction), a date that exists. ms since 1970.
 */
export function readTime(buf: Buffer, t: Tlv): number {
  const s = buf.toString('latin1', t.body, t.end);
  const m = TIME.exec(s);
  const utc = t.tag === T_UTC_TIME;
  if (!m || (utc ? s.length !== 13 : t.tag !== T_GENERALIZED_TIME || s.length !== 15)) {
    bad('time', `validity time ${JSON.stringify(s)} is not UTCTime or GeneralizedTime in UTC`);
  }
  // UTCTime: YY MM DD hh mm ss (m[1..6]); GeneralizedTime: YY YY MM DD hh mm ss (m[1..7]).
  const f = (utc ? m.slice(1, 7) : [m[1] + m[2], ...m.slice(3, 8)]).map(Number);
  let year = f[0];
  if (utc) year += year >= 50 ? 1900 : 2000; // RFC 5280 4.1.2.5.1
  const [, month, day, hour, minute, second] = f;
  if (month < 1 || month > 12 || day < 1 || day > daysIn(year, month) || hour > 23 || minute > 59 || second > 59) {
    bad('time', `validity time ${JSON.stringify(s)} is not a date`);
  }
  // Date.UTC maps years 0-99 to 1900-1999: set the year apart.
  const d = new Date(Date.UTC(2000, month - 1, day, hour, minute, second));
  d.setUTCFullYear(year);
  return d.getTime();
}

function daysIn(year: number, month: number): number {
  if (month === 2) return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28;
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;
}
