// Reading an Ed25519 X.509 certificate (RFC 5280, RFC 8410) on the verifier's miss path.
//
// A bounds-checked DER reader takes out exactly what verification needs: the TBS bytes and
// signature, issuer and subject Names, validity, the key, subjectAltName IP addresses and
// URIs, BasicConstraints and KeyUsage. It refuses anything else that is critical. It replaces
// @peculiar/x509's parser here because that one costs ~650 µs a certificate against ~15 µs
// (bench/verify.ts); @peculiar/x509 still builds every certificate (pki.ts), and
// parseCertificateX509 below, the reference reading of the same fields with it, is checked
// against this reader in test/pki.test.ts.

import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createHash, createPublicKey, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { NviError } from '../base/errors.js';
import { formatIpv6, parseIpv6Address } from '../base/address.js';
import { formatIpv4, parseIpv4Address } from '../base/address.js';

export interface ParsedCertificate {
  readonly der: Buffer;
  /** SHA-256 of the DER, hex: the key of the verifier's certificate cache. */
  readonly fingerprint: string;
  /** The signed part (tbsCertificate), its issuer and subject Names (DER) and the signature. */
  readonly tbs: Buffer;
  readonly issuerDer: Buffer;
  readonly subjectDer: Buffer;
  readonly signature: Buffer;
  /** Distinguished names as text, most significant first: "O=blue, CN=web1". */
  readonly subject: string;
  readonly issuer: string;
  readonly commonName: string | undefined;
  readonly organization: string | undefined;
  /** ms since 1970. */
  readonly notBefore: number;
  readonly notAfter: number;
  /** subjectAltName entries; IP addresses in canonical text (RFC 5952 for IPv6). */
  readonly ipAddresses: readonly string[];
  readonly uris: readonly string[];
  readonly spki: Buffer;
  readonly publicKey: KeyObject;
  readonly isCa: boolean;
  /** KeyUsage bits as x509.KeyUsageFlags (digitalSignature = 1, keyCertSign = 32, cRLSign = 64), 0 when absent. */
  readonly keyUsage: number;
}

export const KU_DIGITAL_SIGNATURE = 1;
export const KU_KEY_CERT_SIGN = 32;
export const KU_CRL_SIGN = 64;

/** Thrown by parseCertificate; the verifier turns it into VerifyMalformed. */
export class CertificateFormatError extends NviError {
  constructor(message: string) {
    super('NVI_ERR_CERT_FORMAT', message);
  }
}

function bad(message: string): never {
  throw new CertificateFormatError(message);
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----/g;

/** Exactly one PEM CERTIFICATE block to DER. */
export function pemToDer(text: string): Buffer {
  const blocks = [...text.matchAll(PEM_CERT)];
  if (blocks.length !== 1) bad(`expected one PEM certificate, found ${blocks.length}`);
  return Buffer.from(blocks[0][1].replace(/\s+/g, ''), 'base64');
}

// DER tags.
const T_BOOLEAN = 0x01;
const T_INTEGER = 0x02;
const T_BIT_STRING = 0x03;
const T_OCTET_STRING = 0x04;
const T_OID = 0x06;
const T_UTF8 = 0x0c;
const T_PRINTABLE = 0x13;
const T_IA5 = 0x16;
const T_UTC_TIME = 0x17;
const T_GENERALIZED_TIME = 0x18;
const T_SEQUENCE = 0x30;
const T_SET = 0x31;
const T_VERSION = 0xa0; // [0] EXPLICIT
const T_EXTENSIONS = 0xa3; // [3] EXPLICIT
const T_SAN_URI = 0x86; // [6] IMPLICIT IA5String
const T_SAN_IP = 0x87; // [7] IMPLICIT OCTET STRING

/** AlgorithmIdentifier for Ed25519, parameters absent (RFC 8410 section 3). */
const ALG_ED25519 = Buffer.from('300506032b6570', 'hex');
/** SubjectPublicKeyInfo of an Ed25519 key, up to the 32 key bytes (RFC 8410 section 4). */
const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
const ED25519_SIG_LEN = 64;

const OID_CN = '550403';
const OID_O = '55040a';
const OID_SAN = '551d11';
const OID_BASIC_CONSTRAINTS = '551d13';
const OID_KEY_USAGE = '551d0f';
/** Non-critical extensions we know and do not need. */
const OID_SKI = '551d0e';
const OID_AKI = '551d23';

const NAME_TYPES: Record<string, string> = {
  '550403': 'CN',
  '550406': 'C',
  '550407': 'L',
  '550408': 'ST',
  '55040a': 'O',
  '55040b': 'OU',
};

/** One DER element: its tag, where it starts, where its contents start and where it ends. */
interface Tlv {
  readonly tag: number;
  readonly start: number;
  readonly body: number;
  readonly end: number;
}

function tlv(buf: Buffer, off: number, limit: number): Tlv {
  if (off + 2 > limit) bad('DER truncated');
  const tag = buf[off];
  let len = buf[off + 1];
  let body = off + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 3 || body + n > limit) bad('DER length not supported');
    len = 0;
    for (let k = 0; k < n; k++) len = len * 256 + buf[body + k];
    body += n;
  }
  if (body + len > limit) bad('DER element runs past its parent');
  return { tag, start: off, body, end: body + len };
}

function expect(t: Tlv, tag: number, what: string): Tlv {
  if (t.tag !== tag) bad(`${what}: expected DER tag 0x${tag.toString(16)}, got 0x${t.tag.toString(16)}`);
  return t;
}

/** The elements inside a constructed element. */
function children(buf: Buffer, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let off = parent.body; off < parent.end; ) {
    const t = tlv(buf, off, parent.end);
    out.push(t);
    off = t.end;
  }
  return out;
}

function hex(buf: Buffer, t: Tlv): string {
  return buf.toString('hex', t.body, t.end);
}

function text(buf: Buffer, t: Tlv, what: string): string {
  if (t.tag === T_UTF8) return buf.toString('utf8', t.body, t.end);
  if (t.tag === T_PRINTABLE || t.tag === T_IA5) return buf.toString('latin1', t.body, t.end);
  bad(`${what}: unsupported string type 0x${t.tag.toString(16)}`);
}

/** Dotted text of an OID's contents (for names we do not know). */
function oidText(bytes: Buffer): string {
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
  return [Math.min(2, Math.floor(first / 40)), first - Math.min(2, Math.floor(first / 40)) * 40, ...parts].join('.');
}

/** An attribute value in a DN string (RFC 4514 section 2.4). */
function escapeDn(v: string): string {
  return v.replace(/[,+"\\<>;]/g, '\\$&').replace(/^[ #]/, '\\$&').replace(/ $/, '\\ ');
}

interface NameParts {
  readonly text: string;
  readonly cn: string | undefined;
  readonly o: string | undefined;
}

/** Name ::= SEQUENCE OF SET OF AttributeTypeAndValue (RFC 5280 4.1.2.4). */
function readName(buf: Buffer, name: Tlv, what: string): NameParts {
  const parts: string[] = [];
  let cn: string | undefined;
  let o: string | undefined;
  for (const rdn of children(buf, name)) {
    expect(rdn, T_SET, what);
    for (const atv of children(buf, rdn)) {
      const [type, value] = children(buf, expect(atv, T_SEQUENCE, what));
      if (!type || !value) bad(`${what}: attribute without type or value`);
      const oid = hex(buf, expect(type, T_OID, what));
      const v = text(buf, value, what);
      parts.push(`${NAME_TYPES[oid] ?? oidText(buf.subarray(type.body, type.end))}=${escapeDn(v)}`);
      if (oid === OID_CN) {
        if (cn !== undefined) bad(`${what} has two CN attributes`);
        cn = v;
      } else if (oid === OID_O) {
        if (o !== undefined) bad(`${what} has two O attributes`);
        o = v;
      }
    }
  }
  return { text: parts.join(', '), cn, o };
}

/** Time ::= UTCTime "YYMMDDHHMMSSZ" | GeneralizedTime "YYYYMMDDHHMMSSZ" (RFC 5280 4.1.2.5). */
function readTime(buf: Buffer, t: Tlv): number {
  const s = buf.toString('latin1', t.body, t.end);
  let m: RegExpExecArray | null;
  let year: number;
  if (t.tag === T_UTC_TIME && (m = /^(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z$/.exec(s))) {
    year = Number(m[1]);
    year += year >= 50 ? 1900 : 2000;
  } else if (t.tag === T_GENERALIZED_TIME && (m = /^(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z$/.exec(s))) {
    year = Number(m[1]);
  } else {
    bad(`validity time ${JSON.stringify(s)} is not UTCTime or GeneralizedTime in UTC`);
  }
  const ms = Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]));
  if (!Number.isFinite(ms)) bad(`validity time ${JSON.stringify(s)} is not a date`);
  return ms;
}

interface Extensions {
  ipAddresses: string[];
  uris: string[];
  isCa: boolean;
  keyUsage: number;
}

/** Extensions ::= SEQUENCE OF Extension { extnID, critical DEFAULT FALSE, extnValue OCTET STRING }. */
function readExtensions(buf: Buffer, wrapper: Tlv): Extensions {
  const ext: Extensions = { ipAddresses: [], uris: [], isCa: false, keyUsage: 0 };
  const seen = new Set<string>();
  const [list] = children(buf, wrapper);
  if (!list) bad('empty extensions');
  for (const e of children(buf, expect(list, T_SEQUENCE, 'extensions'))) {
    const f = children(buf, expect(e, T_SEQUENCE, 'extension'));
    const oid = hex(buf, expect(f[0] ?? bad('extension without OID'), T_OID, 'extension'));
    if (seen.has(oid)) bad(`extension ${oid} appears twice`);
    seen.add(oid);
    let k = 1;
    let critical = false;
    if (f[k]?.tag === T_BOOLEAN) critical = buf[f[k++].body] !== 0;
    const value = expect(f[k] ?? bad('extension without value'), T_OCTET_STRING, 'extnValue');
    const inner = tlv(buf, value.body, value.end);
    switch (oid) {
      case OID_SAN:
        for (const n of children(buf, expect(inner, T_SEQUENCE, 'subjectAltName'))) {
          if (n.tag === T_SAN_IP) {
            const len = n.end - n.body;
            if (len === 4) ext.ipAddresses.push(formatIpv4(buf.readUInt32BE(n.body)));
            else if (len === 16) ext.ipAddresses.push(formatIpv6(buf, n.body));
            else bad(`subjectAltName IP address of ${len} bytes`);
          } else if (n.tag === T_SAN_URI) {
            ext.uris.push(buf.toString('latin1', n.body, n.end));
          }
        }
        break;
      case OID_BASIC_CONSTRAINTS: {
        const bc = children(buf, expect(inner, T_SEQUENCE, 'basicConstraints'));
        ext.isCa = bc[0]?.tag === T_BOOLEAN && buf[bc[0].body] !== 0;
        break;
      }
      case OID_KEY_USAGE: {
        expect(inner, T_BIT_STRING, 'keyUsage');
        // Bit i (0 = the first byte's top bit) is flag 1 << i: digitalSignature(0) ... decipherOnly(8).
        for (let i = 0; i < (inner.end - inner.body - 1) * 8 && i < 9; i++) {
          if (buf[inner.body + 1 + (i >> 3)] & (0x80 >> (i & 7))) ext.keyUsage |= 1 << i;
        }
        break;
      }
      case OID_SKI:
      case OID_AKI:
        break;
      default:
        if (critical) bad(`unknown critical extension ${oidText(buf.subarray(f[0].body, f[0].end))}`);
    }
  }
  return ext;
}

/** Parse a PEM (or DER) Ed25519 certificate. Throws CertificateFormatError. */
export function parseCertificate(input: string | Buffer): ParsedCertificate {
  const der = typeof input === 'string' ? pemToDer(input) : input;
  // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue } (RFC 5280 4.1)
  const outer = expect(tlv(der, 0, der.length), T_SEQUENCE, 'Certificate');
  if (outer.end !== der.length) bad('trailing bytes after the certificate');
  const [tbsT, algT, sigT, extra] = children(der, outer);
  if (!tbsT || !algT || !sigT || extra) bad('Certificate is not tbsCertificate, signatureAlgorithm, signatureValue');
  expect(tbsT, T_SEQUENCE, 'tbsCertificate');
  if (!der.subarray(algT.start, algT.end).equals(ALG_ED25519)) bad('certificate is not signed with Ed25519');
  expect(sigT, T_BIT_STRING, 'signatureValue');
  if (sigT.end - sigT.body !== ED25519_SIG_LEN + 1 || der[sigT.body] !== 0) bad('Ed25519 signature is not 64 bytes');

  // TBSCertificate ::= SEQUENCE { [0] version, serialNumber, signature, issuer, validity, subject, spki, [1], [2], [3] extensions }
  const f = children(der, tbsT);
  let k = 0;
  if (f[k]?.tag === T_VERSION) k++;
  expect(f[k++] ?? bad('no serialNumber'), T_INTEGER, 'serialNumber');
  const innerAlg = f[k++] ?? bad('no signature algorithm');
  if (!der.subarray(innerAlg.start, innerAlg.end).equals(ALG_ED25519)) bad('tbsCertificate signature algorithm is not Ed25519');
  const issuerT = expect(f[k++] ?? bad('no issuer'), T_SEQUENCE, 'issuer');
  const validityT = expect(f[k++] ?? bad('no validity'), T_SEQUENCE, 'validity');
  const subjectT = expect(f[k++] ?? bad('no subject'), T_SEQUENCE, 'subject');
  const spkiT = expect(f[k++] ?? bad('no subjectPublicKeyInfo'), T_SEQUENCE, 'subjectPublicKeyInfo');
  const extT = f.slice(k).find((t) => t.tag === T_EXTENSIONS);

  const [nbT, naT] = children(der, validityT);
  if (!nbT || !naT) bad('validity needs notBefore and notAfter');
  const spki = der.subarray(spkiT.start, spkiT.end);
  if (spki.length !== SPKI_ED25519_PREFIX.length + 32 || !spki.subarray(0, SPKI_ED25519_PREFIX.length).equals(SPKI_ED25519_PREFIX)) {
    bad('certificate key is not Ed25519');
  }
  const subject = readName(der, subjectT, 'subject');
  const issuer = readName(der, issuerT, 'issuer');
  const ext = extT ? readExtensions(der, extT) : { ipAddresses: [], uris: [], isCa: false, keyUsage: 0 };
  // From the JWK form: ~5 µs, where Node's SPKI DER decoder takes ~65 µs.
  const x = spki.subarray(SPKI_ED25519_PREFIX.length).toString('base64url');
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x }, format: 'jwk' });
  } catch (e) {
    bad(`certificate key: ${(e as Error).message}`);
  }
  return {
    der,
    fingerprint: createHash('sha256').update(der).digest('hex'),
    tbs: der.subarray(tbsT.start, tbsT.end),
    issuerDer: der.subarray(issuerT.start, issuerT.end),
    subjectDer: der.subarray(subjectT.start, subjectT.end),
    signature: der.subarray(sigT.body + 1, sigT.end),
    subject: subject.text,
    issuer: issuer.text,
    commonName: subject.cn,
    organization: subject.o,
    notBefore: readTime(der, nbT),
    notAfter: readTime(der, naT),
    ...ext,
    spki,
    publicKey,
  };
}

/** True when `issuer` names and signed `cert`: issuer Name bytes equal, Ed25519 signature over the TBS verifies. */
export function isIssuedBy(cert: ParsedCertificate, issuer: ParsedCertificate): boolean {
  if (!cert.issuerDer.equals(issuer.subjectDer)) return false;
  return cryptoVerify(null, cert.tbs, issuer.publicKey, cert.signature);
}

/** The same fields read with @peculiar/x509: the reference for tests and bench/verify.ts. */
export function parseCertificateX509(pem: string) {
  const cert = new x509.X509Certificate(pem);
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  const canonical = (ip: string): string => (ip.includes(':') ? formatIpv6(parseIpv6Address(ip)) : formatIpv4(parseIpv4Address(ip)));
  return {
    subject: cert.subject,
    issuer: cert.issuer,
    commonName: cert.subjectName.getField('CN')[0],
    organization: cert.subjectName.getField('O')[0],
    notBefore: cert.notBefore.getTime(),
    notAfter: cert.notAfter.getTime(),
    ipAddresses: (san?.names.items ?? []).filter((n) => n.type === 'ip').map((n) => canonical(n.value)),
    uris: (san?.names.items ?? []).filter((n) => n.type === 'url').map((n) => n.value),
    isCa: cert.getExtension(x509.BasicConstraintsExtension)?.ca === true,
    keyUsage: cert.getExtension(x509.KeyUsagesExtension)?.usages ?? 0,
  };
}
