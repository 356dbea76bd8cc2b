// Reading an Ed25519 X.509 certificate (RFC 5280, RFC 8410) on the verifier's miss path.
//
// A strict DER reader (der.ts) takes out exactly what verification needs: the TBS bytes and
// signature, issuer and subject Names, validity, the key, subjectAltName IP addresses and
// URIs, BasicConstraints and KeyUsage. It refuses anything else that is critical, any field
// RFC 5280 4.1 does not have, and any encoding DER does not allow (X.690 10, 11). It replaces
// @peculiar/x509's parser here because that one costs ~650 µs a certificate against ~15 µs
// (bench/verify.ts); @peculiar/x509 still builds every certificate (pki.ts), and
// parseCertificateX509 below, the reference reading of the same fields with it, is checked
// against this reader in test/pki.test.ts.

import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createHash, createPublicKey, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import {
  T_BIT_STRING, T_BOOLEAN, T_INTEGER, T_OCTET_STRING, T_SEQUENCE, T_SET, bad, checkBitString, checkInteger, checkSetOrder,
  children, expect, oidText, only, readBoolean, readOid, readString, readTime, smallInteger, tlv, type Tlv,
} from './der.js';
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

export { CertificateFormatError, type CertFormatReason } from './der.js';

const PEM_CERT = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----/g;

/** Exactly one PEM CERTIFICATE block to DER. */
export function pemToDer(text: string): Buffer {
  const blocks = [...text.matchAll(PEM_CERT)];
  if (blocks.length !== 1) bad('pem', `expected one PEM certificate, found ${blocks.length}`);
  return Buffer.from(blocks[0][1].replace(/\s+/g, ''), 'base64');
}

// Tags of RFC 5280 4.1 beyond the universal ones (der.ts).
const T_VERSION = 0xa0; // [0] EXPLICIT Version
const T_ISSUER_UID = 0x81; // [1] IMPLICIT UniqueIdentifier (BIT STRING)
const T_SUBJECT_UID = 0x82; // [2] IMPLICIT UniqueIdentifier
const T_EXTENSIONS = 0xa3; // [3] EXPLICIT Extensions
const T_SAN_URI = 0x86; // [6] IMPLICIT IA5String
const T_SAN_IP = 0x87; // [7] IMPLICIT OCTET STRING
/** GeneralName's alternatives [0] to [8] (RFC 5280 4.2.1.6), constructed where their type is. */
const GENERAL_NAME_TAGS = new Set([0xa0, 0x81, 0x82, 0xa3, 0xa4, 0xa5, 0x86, 0x87, 0x88]);

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

/** An attribute value in a DN string (RFC 4514 section 2.4). */
function escapeDn(v: string): string {
  return v.replace(/[,+"\\<>;]/g, '\\$&').replace(/^[ #]/, '\\$&').replace(/ $/, '\\ ');
}

interface NameParts {
  readonly text: string;
  readonly cn: string | undefined;
  readonly o: string | undefined;
}

/**
 * Name ::= SEQUENCE OF RelativeDistinguishedName, RDN ::= SET SIZE (1..MAX) OF
 * AttributeTypeAndValue { type OID, value } (RFC 5280 4.1.2.4).
 */
function readName(buf: Buffer, name: Tlv, what: string): NameParts {
  const parts: string[] = [];
  let cn: string | undefined;
  let o: string | undefined;
  for (const rdn of children(buf, name)) {
    const atvs = children(buf, expect(rdn, T_SET, what));
    if (atvs.length === 0) bad('structure', `${what}: an empty RelativeDistinguishedName`);
    checkSetOrder(buf, atvs, what);
    for (const atv of atvs) {
      const f = children(buf, expect(atv, T_SEQUENCE, what));
      if (f.length !== 2) bad('structure', `${what}: attribute is not a type and a value`);
      const [type, value] = f;
      const oid = readOid(buf, type, what);
      const v = readString(buf, value, what);
      parts.push(`${NAME_TYPES[oid] ?? oidText(buf.subarray(type.body, type.end))}=${escapeDn(v)}`);
      if (oid === OID_CN) {
        if (cn !== undefined) bad('structure', `${what} has two CN attributes`);
        cn = v;
      } else if (oid === OID_O) {
        if (o !== undefined) bad('structure', `${what} has two O attributes`);
        o = v;
      }
    }
  }
  return { text: parts.join(', '), cn, o };
}

interface Extensions {
  ipAddresses: string[];
  uris: string[];
  isCa: boolean;
  keyUsage: number;
}

/** subjectAltName ::= GeneralNames, SEQUENCE SIZE (1..MAX) OF GeneralName (RFC 5280 4.2.1.6). */
function readSan(buf: Buffer, inner: Tlv, ext: Extensions): void {
  const names = children(buf, expect(inner, T_SEQUENCE, 'subjectAltName'));
  if (names.length === 0) bad('structure', 'subjectAltName is empty');
  for (const n of names) {
    if (!GENERAL_NAME_TAGS.has(n.tag)) bad('structure', `subjectAltName entry with tag 0x${n.tag.toString(16)} is not a GeneralName`);
    if (n.tag === T_SAN_IP) {
      const len = n.end - n.body;
      if (len === 4) ext.ipAddresses.push(formatIpv4(buf.readUInt32BE(n.body)));
      else if (len === 16) ext.ipAddresses.push(formatIpv6(buf, n.body));
      else bad('structure', `subjectAltName IP address of ${len} bytes`);
    } else if (n.tag === T_SAN_URI) {
      ext.uris.push(buf.toString('latin1', n.body, n.end)); // IA5String, read as readString reads one
    }
  }
}

/** BasicConstraints ::= SEQUENCE { cA BOOLEAN DEFAULT FALSE, pathLenConstraint INTEGER (0..MAX) OPTIONAL } (RFC 5280 4.2.1.9). */
function readBasicConstraints(buf: Buffer, inner: Tlv, ext: Extensions): void {
  const f = children(buf, expect(inner, T_SEQUENCE, 'basicConstraints'));
  let k = 0;
  if (f[k]?.tag === T_BOOLEAN) {
    ext.isCa = readBoolean(buf, f[k++], 'basicConstraints cA');
    if (!ext.isCa) bad('default-encoded', 'basicConstraints cA FALSE is encoded; DER leaves out a DEFAULT value (X.690 11.5)');
  }
  if (f[k]?.tag === T_INTEGER) smallInteger(buf, f[k++], 'pathLenConstraint');
  if (k !== f.length) bad('structure', 'basicConstraints has fields besides cA and pathLenConstraint');
}

/**
 * Extensions ::= SEQUENCE SIZE (1..MAX) OF Extension { extnID OID, critical BOOLEAN DEFAULT
 * FALSE, extnValue OCTET STRING holding one DER value } (RFC 5280 4.1, 4.2).
 */
function readExtensions(buf: Buffer, wrapper: Tlv): Extensions {
  const ext: Extensions = { ipAddresses: [], uris: [], isCa: false, keyUsage: 0 };
  const seen = new Set<string>();
  const list = children(buf, expect(only(buf, wrapper, 'extensions'), T_SEQUENCE, 'extensions'));
  if (list.length === 0) bad('structure', 'empty extensions');
  for (const e of list) {
    const f = children(buf, expect(e, T_SEQUENCE, 'extension'));
    const oidT = f[0] ?? bad('structure', 'extension without OID');
    const oid = readOid(buf, oidT, 'extnID');
    if (seen.has(oid)) bad('structure', `extension ${oidText(buf.subarray(oidT.body, oidT.end))} appears twice`);
    seen.add(oid);
    let k = 1;
    let critical = false;
    if (f[k]?.tag === T_BOOLEAN) {
      critical = readBoolean(buf, f[k++], 'critical');
      if (!critical) bad('default-encoded', 'extension critical FALSE is encoded; DER leaves out a DEFAULT value (X.690 11.5)');
    }
    const value = expect(f[k++] ?? bad('structure', 'extension without value'), T_OCTET_STRING, 'extnValue');
    if (k !== f.length) bad('structure', 'extension has fields after extnValue');
    const inner = only(buf, value, 'extnValue');
    switch (oid) {
      case OID_SAN:
        readSan(buf, inner, ext);
        break;
      case OID_BASIC_CONSTRAINTS:
        readBasicConstraints(buf, inner, ext);
        break;
      case OID_KEY_USAGE: {
        expect(inner, T_BIT_STRING, 'keyUsage');
        checkBitString(buf, inner, 'keyUsage', true);
        // Bit i (0 = the first byte's top bit) is flag 1 << i: digitalSignature(0) ... decipherOnly(8).
        for (let i = 0; i < (inner.end - inner.body - 1) * 8 && i < 9; i++) {
          if (buf[inner.body + 1 + (i >> 3)] & (0x80 >> (i & 7))) ext.keyUsage |= 1 << i;
        }
        break;
      }
      case OID_SKI:
        expect(inner, T_OCTET_STRING, 'subjectKeyIdentifier'); // RFC 5280 4.2.1.2
        break;
      case OID_AKI:
        expect(inner, T_SEQUENCE, 'authorityKeyIdentifier'); // RFC 5280 4.2.1.1
        break;
      default:
        if (critical) bad('unsupported', `unknown critical extension ${oidText(buf.subarray(oidT.body, oidT.end))}`);
    }
  }
  return ext;
}

/** Parse a PEM (or DER) Ed25519 certificate. Throws CertificateFormatError, and nothing else. */
export function parseCertificate(input: string | Buffer): ParsedCertificate {
  const der = typeof input === 'string' ? pemToDer(input) : input;
  // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue } (RFC 5280 4.1)
  const outer = expect(tlv(der, 0, der.length), T_SEQUENCE, 'Certificate');
  if (outer.end !== der.length) bad('structure', 'trailing bytes after the certificate');
  const [tbsT, algT, sigT, extra] = children(der, outer);
  if (!tbsT || !algT || !sigT || extra) bad('structure', 'Certificate is not tbsCertificate, signatureAlgorithm, signatureValue');
  expect(tbsT, T_SEQUENCE, 'tbsCertificate');
  if (!der.subarray(algT.start, algT.end).equals(ALG_ED25519)) bad('unsupported', 'certificate is not signed with Ed25519');
  expect(sigT, T_BIT_STRING, 'signatureValue');
  if (sigT.end - sigT.body !== ED25519_SIG_LEN + 1 || der[sigT.body] !== 0) bad('unsupported', 'Ed25519 signature is not 64 bytes');

  // TBSCertificate ::= SEQUENCE { [0] version DEFAULT v1, serialNumber, signature, issuer, validity,
  //   subject, subjectPublicKeyInfo, [1] issuerUniqueID, [2] subjectUniqueID, [3] extensions }
  const f = children(der, tbsT);
  let k = 0;
  let version = 1;
  if (f[k]?.tag === T_VERSION) {
    const v = smallInteger(der, only(der, f[k++], 'version'), 'version');
    if (v === 0) bad('default-encoded', 'version v1 is encoded; DER leaves out a DEFAULT value (X.690 11.5)');
    if (v > 2) bad('unsupported', `certificate version ${v + 1}`);
    version = v + 1;
  }
  checkInteger(der, f[k++] ?? bad('structure', 'no serialNumber'), 'serialNumber');
  const innerAlg = f[k++] ?? bad('structure', 'no signature algorithm');
  if (!der.subarray(innerAlg.start, innerAlg.end).equals(ALG_ED25519)) bad('unsupported', 'tbsCertificate signature algorithm is not Ed25519');
  const issuerT = expect(f[k++] ?? bad('structure', 'no issuer'), T_SEQUENCE, 'issuer');
  const validityT = expect(f[k++] ?? bad('structure', 'no validity'), T_SEQUENCE, 'validity');
  const subjectT = expect(f[k++] ?? bad('structure', 'no subject'), T_SEQUENCE, 'subject');
  const spkiT = expect(f[k++] ?? bad('structure', 'no subjectPublicKeyInfo'), T_SEQUENCE, 'subjectPublicKeyInfo');
  // The optional fields, each at most once and in this order (RFC 5280 4.1.2.8, 4.1.2.9).
  for (const [tag, what] of [[T_ISSUER_UID, 'issuerUniqueID'], [T_SUBJECT_UID, 'subjectUniqueID']] as const) {
    if (f[k]?.tag !== tag) continue;
    if (version < 2) bad('structure', `${what} in a version 1 certificate`);
    checkBitString(der, f[k++], what, false);
  }
  let extT: Tlv | undefined;
  if (f[k]?.tag === T_EXTENSIONS) {
    if (version < 3) bad('structure', `extensions in a version ${version} certificate`);
    extT = f[k++];
  }
  if (k !== f.length) bad('structure', 'tbsCertificate has fields after its last known one');

  const validity = children(der, validityT);
  if (validity.length !== 2) bad('structure', 'validity is not notBefore and notAfter');
  const spki = der.subarray(spkiT.start, spkiT.end);
  if (spki.length !== SPKI_ED25519_PREFIX.length + 32 || !spki.subarray(0, SPKI_ED25519_PREFIX.length).equals(SPKI_ED25519_PREFIX)) {
    bad('unsupported', 'certificate key is not Ed25519');
  }
  const subject = readName(der, subjectT, 'subject');
  const issuer = readName(der, issuerT, 'issuer');
  const ext = extT ? readExtensions(der, extT) : { ipAddresses: [], uris: [], isCa: false, keyUsage: 0 };
  const notBefore = readTime(der, validity[0]);
  const notAfter = readTime(der, validity[1]);
  // From the JWK form: ~5 µs, where Node's SPKI DER decoder takes ~65 µs.
  const x = spki.subarray(SPKI_ED25519_PREFIX.length).toString('base64url');
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x }, format: 'jwk' });
  } catch (e) {
    bad('unsupported', `certificate key: ${(e as Error).message}`);
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
    notBefore,
    notAfter,
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
