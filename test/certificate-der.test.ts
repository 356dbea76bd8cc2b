// The certificate reader is strict DER (X.690 10, 11) over RFC 5280 4.1: one table test per
// refused encoding, each made by re-encoding a real certificate with exactly one fault; then
// seeded property tests: random bytes and mutated real certificates make it throw nothing
// but CertificateFormatError, and whatever it accepts OpenSSL (node:crypto X509Certificate)
// accepts too, with the same subject, issuer, subjectAltName and validity.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CertificateFormatError, parseCertificate, pemToDer, type CertFormatReason, type ParsedCertificate } from '../src/trust/certificate.js';
import { parseIpv6Address } from '../src/base/address.js';
import { at, cloneDer, decodeDer, encodeDer, type DerNode, type LengthForm } from './der-tree.js';

const LAB = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'lab', 'pki');
const labPem = (path: string): string => readFileSync(join(LAB, path), 'utf8');

const VM = pemToDer(labPem('vms/db1.crt'));
const CA = pemToDer(labPem('ca.crt'));

// ---------------------------------------------------------------------------------------
// Table tests: one fault each

// Paths in a certificate tree: Certificate { tbsCertificate { [0] version, serial, alg,
// issuer, validity, subject, spki, [3] extensions }, alg, signature }.
const TBS = 0;
const VERSION = [TBS, 0];
const SERIAL = [TBS, 1];
const VALIDITY = [TBS, 4];
const SUBJECT = [TBS, 5];

const OID_HEX = { basicConstraints: '551d13', keyUsage: '551d0f', subjectAltName: '551d11' } as const;

/** The Extension SEQUENCE with this extnID. */
function extension(t: DerNode, name: keyof typeof OID_HEX): DerNode {
  const list = at(t, TBS, 7, 0).children!;
  const e = list.find((x) => x.children![0].body!.toString('hex') === OID_HEX[name]);
  if (!e) throw new Error(`test: no ${name} extension`);
  return e;
}

/** Replace an extension's extnValue (the last field) with these DER bytes. */
function setExtnValue(e: DerNode, der: number[]): void {
  e.children![e.children!.length - 1].body = Buffer.from(der);
}

interface Case {
  readonly name: string;
  readonly base?: Buffer;
  readonly edit: (t: DerNode) => void;
  readonly reason: CertFormatReason;
}

const form = (path: number[], f: LengthForm) => (t: DerNode) => {
  at(t, ...path).form = f;
};

const CASES: Case[] = [
  // Lengths (X.690 10.1, 8.1.3.5).
  { name: 'a length of 128 or more with a leading zero length octet', edit: form([], 'padded'), reason: 'length-not-minimal' },
  { name: 'a length below 128 in the long form', edit: form(VALIDITY, 'long'), reason: 'length-not-minimal' },
  { name: 'a length below 128 in the long form with a leading zero', edit: form(SERIAL, 'padded'), reason: 'length-not-minimal' },
  { name: 'an indefinite length on a constructed element', edit: form(VALIDITY, 'indefinite'), reason: 'indefinite-length' },
  { name: 'an indefinite length on the certificate itself', edit: form([], 'indefinite'), reason: 'indefinite-length' },
  // BOOLEAN (X.690 8.2.1, 11.1) and DEFAULT values (11.5).
  { name: 'a critical flag that is a BOOLEAN of no octets', edit: (t) => (extension(t, 'keyUsage').children![1].body = Buffer.alloc(0)), reason: 'boolean' },
  { name: 'a critical flag that is a BOOLEAN of two octets', edit: (t) => (extension(t, 'keyUsage').children![1].body = Buffer.from([0xff, 0xff])), reason: 'boolean' },
  { name: 'a critical flag TRUE written 0x01 (BER, not DER)', edit: (t) => (extension(t, 'keyUsage').children![1].body = Buffer.from([0x01])), reason: 'boolean' },
  { name: 'a basicConstraints cA TRUE written 0x01', base: CA, edit: (t) => setExtnValue(extension(t, 'basicConstraints'), [0x30, 0x06, 0x01, 0x01, 0x01, 0x02, 0x01, 0x00]), reason: 'boolean' },
  { name: 'a basicConstraints cA that is a BOOLEAN of two octets', base: CA, edit: (t) => setExtnValue(extension(t, 'basicConstraints'), [0x30, 0x04, 0x01, 0x02, 0xff, 0xff]), reason: 'boolean' },
  {
    name: 'a critical flag FALSE written out although it is the DEFAULT',
    edit: (t) => extension(t, 'subjectAltName').children!.splice(1, 0, { tag: 0x01, body: Buffer.from([0x00]) }),
    reason: 'default-encoded',
  },
  { name: 'a basicConstraints cA FALSE written out', edit: (t) => setExtnValue(extension(t, 'basicConstraints'), [0x30, 0x03, 0x01, 0x01, 0x00]), reason: 'default-encoded' },
  { name: 'a version v1 written out', edit: (t) => (at(t, ...VERSION, 0).body = Buffer.from([0x00])), reason: 'default-encoded' },
  // INTEGER (X.690 8.3.2).
  { name: 'a serial number with a redundant leading zero octet', edit: (t) => (at(t, ...SERIAL).body = Buffer.from([0x00, 0x37, 0xec])), reason: 'integer' },
  { name: 'a serial number with a redundant leading 0xff octet', edit: (t) => (at(t, ...SERIAL).body = Buffer.from([0xff, 0x87])), reason: 'integer' },
  { name: 'a serial number with no octets', edit: (t) => (at(t, ...SERIAL).body = Buffer.alloc(0)), reason: 'integer' },
  { name: 'a version with a redundant leading zero octet', edit: (t) => (at(t, ...VERSION, 0).body = Buffer.from([0x00, 0x02])), reason: 'integer' },
  { name: 'a negative path length', base: CA, edit: (t) => setExtnValue(extension(t, 'basicConstraints'), [0x30, 0x06, 0x01, 0x01, 0xff, 0x02, 0x01, 0xff]), reason: 'integer' },
  // OBJECT IDENTIFIER (X.690 8.19.2).
  { name: 'an attribute type whose subidentifier starts with 0x80', edit: (t) => (at(t, ...SUBJECT, 0, 0, 0).body = Buffer.from([0x55, 0x04, 0x80, 0x0a])), reason: 'oid' },
  { name: 'an extnID that ends inside a subidentifier', edit: (t) => (extension(t, 'subjectAltName').children![0].body = Buffer.from([0x55, 0x1d, 0x91])), reason: 'oid' },
  // BIT STRING (X.690 11.2).
  { name: 'a keyUsage with a trailing zero bit', edit: (t) => setExtnValue(extension(t, 'keyUsage'), [0x03, 0x02, 0x06, 0x80]), reason: 'bit-string' },
  { name: 'a keyUsage whose unused bits are not zero', edit: (t) => setExtnValue(extension(t, 'keyUsage'), [0x03, 0x02, 0x07, 0x81]), reason: 'bit-string' },
  { name: 'a keyUsage that counts more than 7 unused bits', edit: (t) => setExtnValue(extension(t, 'keyUsage'), [0x03, 0x02, 0x08, 0x00]), reason: 'bit-string' },
  // Tags (X.690 8.1.2.4), SET OF order (11.6), strings, times.
  { name: 'an element in the high-tag-number form', edit: (t) => at(t, TBS).children!.push({ tag: 0xbf, body: Buffer.from([0x1f]) }), reason: 'tag' },
  {
    name: 'a multi-valued RDN whose attributes are out of DER order',
    edit: (t) => (at(t, ...SUBJECT).children = [{ tag: 0x31, children: [at(t, ...SUBJECT, 0, 0), at(t, ...SUBJECT, 1, 0)] }]), // O=blue (30 0b) before CN=db1 (30 0a)
    reason: 'set-order',
  },
  { name: 'a UTF8String that is not UTF-8', edit: (t) => Object.assign(at(t, ...SUBJECT, 1, 0, 1), { tag: 0x0c, body: Buffer.from([0x64, 0x62, 0xc3]) }), reason: 'string' },
  { name: 'a validity time in month 13', edit: (t) => (at(t, ...VALIDITY, 0).body = Buffer.from('261324143640Z')), reason: 'time' },
  { name: 'a validity time on 29 February of a year that is not leap', edit: (t) => (at(t, ...VALIDITY, 0).body = Buffer.from('270229000000Z')), reason: 'time' },
  { name: 'a UTCTime without seconds', edit: (t) => (at(t, ...VALIDITY, 0).body = Buffer.from('2611241436Z')), reason: 'time' },
  { name: 'a GeneralizedTime with a fraction of a second', edit: (t) => Object.assign(at(t, ...VALIDITY, 1), { tag: 0x18, body: Buffer.from('20361123143640.5Z') }), reason: 'time' },
  // Structure (RFC 5280 4.1).
  { name: 'a field after the extensions of tbsCertificate', edit: (t) => at(t, TBS).children!.push({ tag: 0x05, body: Buffer.alloc(0) }), reason: 'structure' },
  { name: 'extensions in a certificate without a version (v1)', edit: (t) => at(t, TBS).children!.splice(0, 1), reason: 'structure' },
  { name: 'bytes after the value inside an extnValue', edit: (t) => setExtnValue(extension(t, 'basicConstraints'), [0x30, 0x00, 0x05, 0x00]), reason: 'structure' },
  { name: 'a validity with three times', edit: (t) => at(t, ...VALIDITY).children!.push(cloneDer(at(t, ...VALIDITY, 1))), reason: 'structure' },
  { name: 'an attribute with a third element', edit: (t) => at(t, ...SUBJECT, 1, 0).children!.push({ tag: 0x05, body: Buffer.alloc(0) }), reason: 'structure' },
  { name: 'an empty RDN', edit: (t) => at(t, ...SUBJECT).children!.push({ tag: 0x31, children: [] }), reason: 'structure' },
  { name: 'a subjectAltName entry that is not a GeneralName', edit: (t) => setExtnValue(extension(t, 'subjectAltName'), [0x30, 0x02, 0x05, 0x00]), reason: 'structure' },
];

test('the test re-encoder gives back the certificate unchanged when nothing is edited', () => {
  for (const der of [VM, CA]) {
    assert.ok(encodeDer(decodeDer(der).node).equals(der));
    parseCertificate(encodeDer(decodeDer(der).node));
  }
});

for (const c of CASES) {
  test(`${c.name} is refused as ${c.reason}`, () => {
    const tree = cloneDer(decodeDer(c.base ?? VM).node);
    c.edit(tree);
    const der = encodeDer(tree);
    let err: unknown;
    try {
      parseCertificate(der);
    } catch (e) {
      err = e;
    }
    assert.instance(err, CertificateFormatError, 'refused with the reader\'s own error');
    const e = err as CertificateFormatError;
    assert.is(e.code, 'NVI_ERR_CERT_FORMAT');
    assert.is(e.reason, c.reason, e.message);
  });
}

test('more than three length octets are refused as too long', () => {
  const der = Buffer.concat([Buffer.from([0x30, 0x84, 0x00, 0x00, 0x01, 0xa9]), VM.subarray(4)]);
  assert.throws(() => parseCertificate(der), (e: unknown) => e instanceof CertificateFormatError && e.reason === 'length-too-long');
});

test('what the table refuses in the VM certificate is each time a single edit of one that is read', () => {
  // The same edits with DER values are read: the faults above, not the edits, are refused.
  const ok: [string, (t: DerNode) => void][] = [
    ['critical TRUE as 0xff', (t) => (extension(t, 'keyUsage').children![1].body = Buffer.from([0xff]))],
    ['a serial with a needed leading zero', (t) => (at(t, ...SERIAL).body = Buffer.from([0x00, 0x87]))],
    ['a multi-valued RDN in DER order', (t) => (at(t, ...SUBJECT).children = [{ tag: 0x31, children: [at(t, ...SUBJECT, 1, 0), at(t, ...SUBJECT, 0, 0)] }])],
    ['a keyUsage whose last used bit is set', (t) => setExtnValue(extension(t, 'keyUsage'), [0x03, 0x02, 0x06, 0xc0])],
    ['a validity time on 29 February of a leap year', (t) => (at(t, ...VALIDITY, 0).body = Buffer.from('280229000000Z'))],
  ];
  for (const [name, edit] of ok) {
    const tree = cloneDer(decodeDer(VM).node);
    edit(tree);
    try {
      parseCertificate(encodeDer(tree));
    } catch (e) {
      assert.unreachable(`${name}: ${(e as Error).message}`);
    }
  }
});

test('a GeneralizedTime before the year 100 is read as that year, not as 19xx', () => {
  const tree = cloneDer(decodeDer(VM).node);
  Object.assign(at(tree, ...VALIDITY, 0), { tag: 0x18, body: Buffer.from('00050301120000Z') });
  assert.is(parseCertificate(encodeDer(tree)).notBefore, Date.parse('0005-03-01T12:00:00Z'));
});

// ---------------------------------------------------------------------------------------
// Property tests against OpenSSL

const SEED = 0x5eed_2025;

/** The reason of the last refusal refusesWithItsOwnError saw. */
let lastReason: CertFormatReason | undefined;

function refusesWithItsOwnError(input: Buffer | string): ParsedCertificate | null {
  try {
    return parseCertificate(input);
  } catch (e) {
    if (e instanceof CertificateFormatError) {
      lastReason = e.reason;
      return null;
    }
    throw new Error(`threw ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`);
  }
}

test('random bytes and random PEM text make the reader throw nothing but its own error', () => {
  const header = fc.constantFrom([], [0x30], [0x30, 0x82, 0x01, 0xa9], [0x30, 0x82, 0x01, 0xa9, 0x30, 0x82, 0x01, 0x5b]);
  fc.assert(
    fc.property(header, fc.uint8Array({ maxLength: 600 }), (h, body) => {
      assert.is(refusesWithItsOwnError(Buffer.concat([Buffer.from(h), body])), null);
      return true;
    }),
    { seed: SEED, numRuns: 3000 },
  );
  fc.assert(
    fc.property(fc.string({ maxLength: 400 }), (s) => {
      assert.is(refusesWithItsOwnError(`-----BEGIN CERTIFICATE-----\n${s}\n-----END CERTIFICATE-----\n`), null);
      assert.is(refusesWithItsOwnError(s), null);
      return true;
    }),
    { seed: SEED, numRuns: 1000 },
  );
});

/** Offsets of the length octet of every element a lenient walk finds. */
function lengthOffsets(buf: Buffer): number[] {
  const out: number[] = [];
  const walk = (off: number, limit: number, depth: number): void => {
    while (off + 2 <= limit && depth < 12) {
      const tag = buf[off];
      let len = buf[off + 1];
      let body = off + 2;
      if (len & 0x80) {
        const n = len & 0x7f;
        if (n === 0 || n > 3 || body + n > limit) return;
        len = 0;
        for (let k = 0; k < n; k++) len = len * 256 + buf[body + k];
        body += n;
      }
      if (body + len > limit) return;
      out.push(off + 1);
      if (tag & 0x20) walk(body, body + len, depth + 1);
      off = body + len;
    }
  };
  walk(0, buf.length, 0);
  return out;
}

type Mutation =
  | { kind: 'flip'; at: number; bit: number }
  | { kind: 'set'; at: number; value: number }
  | { kind: 'insert'; at: number; bytes: Uint8Array }
  | { kind: 'delete'; at: number; count: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'length'; which: number; delta: number; value: number | null };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 4 }) }),
  fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), count: fc.integer({ min: 1, max: 4 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('length' as const), which: fc.nat(), delta: fc.integer({ min: -2, max: 2 }), value: fc.option(fc.integer({ min: 0, max: 255 })) }),
);

function mutate(der: Buffer, m: Mutation): Buffer {
  const b = Buffer.from(der);
  if (b.length === 0) return b;
  const p = m.kind === 'length' ? 0 : m.at % b.length;
  switch (m.kind) {
    case 'flip':
      b[p] ^= 1 << m.bit;
      return b;
    case 'set':
      b[p] = m.value;
      return b;
    case 'insert':
      return Buffer.concat([b.subarray(0, p), m.bytes, b.subarray(p)]);
    case 'delete':
      return Buffer.concat([b.subarray(0, p), b.subarray(p + m.count)]);
    case 'truncate':
      return b.subarray(0, p);
    case 'length': {
      const offs = lengthOffsets(b);
      if (offs.length === 0) return b;
      let q = offs[m.which % offs.length];
      if (b[q] & 0x80) q += b[q] & 0x7f; // the last octet of a long-form length
      b[q] = m.value ?? (b[q] + m.delta) & 0xff;
      return b;
    }
  }
}

/** A whole-element re-encoding fault: one element (in tree order) gets a BER length form. */
const reencodeArb = fc.oneof(
  { arbitrary: fc.constant(null), weight: 3 },
  { arbitrary: fc.record({ which: fc.nat(), form: fc.constantFrom<LengthForm>('long', 'padded', 'indefinite') }), weight: 1 },
);

function reencode(der: Buffer, r: { which: number; form: LengthForm }): Buffer {
  const tree = decodeDer(der).node;
  const all: DerNode[] = [];
  const walk = (n: DerNode): void => {
    all.push(n);
    n.children?.forEach(walk);
  };
  walk(tree);
  const n = all[r.which % all.length];
  n.form = r.form === 'indefinite' && !n.children ? 'long' : r.form; // indefinite exists for constructed only
  return encodeDer(tree);
}

// How OpenSSL shows what the reader exposes (node:crypto X509Certificate, Node 20).

/** "Nov 24 14:36:40 2026 GMT" (ASN1_TIME_print) to ms, or NaN. */
function opensslTime(s: string): number {
  const m = /^(\w{3}) +(\d+) (\d\d):(\d\d):(\d\d) (\d+) GMT$/.exec(s);
  if (!m) return NaN;
  const month = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'].indexOf(m[1]);
  const d = new Date(Date.UTC(2000, month, Number(m[2]), Number(m[3]), Number(m[4]), Number(m[5])));
  d.setUTCFullYear(Number(m[6]));
  return d.getTime();
}

/** Split on `sep` outside backslash escapes and double quotes. */
function splitOutside(s: string, sep: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '\\') {
      cur += s.slice(i, i + 2);
      i++;
    } else if (s[i] === '"') {
      quoted = !quoted;
      cur += s[i];
    } else if (!quoted && s.startsWith(sep, i)) {
      out.push(cur);
      cur = '';
      i += sep.length - 1;
    } else {
      cur += s[i];
    }
  }
  out.push(cur);
  return out;
}

/** The reader's DN text as OpenSSL prints it: one "type=value" per attribute, control characters as \XX. */
function dnAsOpenssl(ours: string): [string, string][] {
  if (ours === '') return [];
  return splitOutside(ours, ', ').map((part) => {
    const eq = part.indexOf('=');
    const value = part.slice(eq + 1).replace(/[\x00-\x1f\x7f]/g, (c) => `\\${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`);
    return [part.slice(0, eq), value];
  });
}

function dnOfOpenssl(text: string | undefined): [string, string][] {
  if (!text) return [];
  return text.split('\n').flatMap((line) => splitOutside(line, ' + ')).map((part) => {
    const eq = part.indexOf('=');
    return [part.slice(0, eq), part.slice(eq + 1)];
  });
}

function sameDn(ours: string, theirs: string | undefined, what: string): void {
  const a = dnAsOpenssl(ours);
  const b = dnOfOpenssl(theirs);
  assert.is(a.length, b.length, `${what}: ${JSON.stringify(ours)} vs ${JSON.stringify(theirs)}`);
  a.forEach(([type, value], k) => {
    // A type the reader prints as a dotted OID, OpenSSL may know by a short name.
    if (!/^\d+(\.\d+)+$/.test(type)) assert.is(type, b[k][0], `${what} type ${k}`);
    assert.is(value, b[k][1], `${what} value ${k}`);
  });
}

/** IP addresses and URIs out of OpenSSL's subjectAltName text; other kinds of names are left out. */
function sanOfOpenssl(text: string | undefined): { ips: string[]; uris: string[] } {
  const ips: string[] = [];
  const uris: string[] = [];
  for (const entry of text ? splitOutside(text, ', ') : []) {
    const value = (v: string): string => (v.startsWith('"') ? (JSON.parse(v) as string) : v);
    if (entry.startsWith('IP Address:')) ips.push(value(entry.slice('IP Address:'.length)));
    else if (entry.startsWith('URI:')) uris.push(value(entry.slice('URI:'.length)));
  }
  return { ips, uris };
}

/** The reader's canonical IP text as OpenSSL prints it: IPv6 as 8 upper-case groups without zero compression. */
function ipAsOpenssl(ip: string): string {
  if (!ip.includes(':')) return ip;
  const b = parseIpv6Address(ip);
  return Array.from({ length: 8 }, (_, k) => b.readUInt16BE(2 * k).toString(16).toUpperCase()).join(':');
}

function sameFields(p: ParsedCertificate, x: X509Certificate): void {
  sameDn(p.subject, x.subject, 'subject');
  sameDn(p.issuer, x.issuer, 'issuer');
  assert.is(p.notBefore, opensslTime(x.validFrom), `notBefore ${x.validFrom}`);
  assert.is(p.notAfter, opensslTime(x.validTo), `notAfter ${x.validTo}`);
  const san = sanOfOpenssl(x.subjectAltName);
  assert.equal(p.ipAddresses.map(ipAsOpenssl), san.ips, `SAN IP addresses: ${x.subjectAltName}`);
  assert.equal(p.uris, san.uris, `SAN URIs: ${x.subjectAltName}`);
}

/** db1's certificate with names and times that test how each side prints them (its signature no longer verifies: neither side checks it). */
function edited(der: Buffer, edit: (t: DerNode) => void): Buffer {
  const tree = decodeDer(der).node;
  edit(tree);
  return encodeDer(tree);
}
const utf8 = (s: string): DerNode => ({ tag: 0x0c, body: Buffer.from(s, 'utf8') });
const atv = (oid: number[], value: DerNode): DerNode => ({ tag: 0x30, children: [{ tag: 0x06, body: Buffer.from(oid) }, value] });
const OID_CN = [0x55, 0x04, 0x03];
const OID_O = [0x55, 0x04, 0x0a];
const OID_SERIAL_NUMBER = [0x55, 0x04, 0x05]; // 2.5.4.5: the reader prints it dotted, OpenSSL by name

const BASES: Buffer[] = [
  CA,
  VM,
  ...['hosts/h1.crt', 'hosts/h2.crt', 'vms/sensor1.crt', 'vms/vault1.crt', 'vms/web1.crt', 'vms/web2.crt', 'vms/web3.crt'].map((f) => pemToDer(labPem(f))),
  // Escapes (RFC 4514 and OpenSSL's), a control character, UTF-8, a Latin-1 URI, GeneralizedTime after 2049.
  edited(VM, (t) => {
    at(t, ...SUBJECT).children = [
      { tag: 0x31, children: [atv(OID_O, utf8('tenant, with "quotes"; <and> \\ more'))] },
      { tag: 0x31, children: [atv(OID_CN, utf8(' #vm-ü\tx+y '))] },
    ];
    setExtnValue(extension(t, 'subjectAltName'), [...encodeDer({ tag: 0x30, children: [
      { tag: 0x87, body: Buffer.from([10, 77, 0, 1]) },
      { tag: 0x86, body: Buffer.from('urn:nvi-switch:vm:tenant, with "quotes":vm-\xfc', 'latin1') },
    ] })]);
    Object.assign(at(t, ...VALIDITY, 1), { tag: 0x18, body: Buffer.from('20800101000000Z') });
  }),
  // A multi-valued RDN (in DER order) and an attribute type OpenSSL knows by a name the reader does not.
  edited(VM, (t) => {
    at(t, ...SUBJECT).children = [
      { tag: 0x31, children: [atv(OID_SERIAL_NUMBER, { tag: 0x13, body: Buffer.from('42') })] },
      { tag: 0x31, children: [atv(OID_CN, { tag: 0x13, body: Buffer.from('db1') }), atv(OID_O, { tag: 0x13, body: Buffer.from('blue') })] },
    ];
  }),
];

test('every base certificate is read, by the reader and by OpenSSL, with the same fields', () => {
  for (const der of BASES) sameFields(parseCertificate(der), new X509Certificate(der));
});

test('mutated certificates make the reader throw nothing but its own error, and what it reads OpenSSL reads the same', () => {
  const seen = { inputs: 0, ours: 0, openssl: 0, both: 0 };
  /** Why the reader refused what OpenSSL read. */
  const stricter = new Map<string, number>();
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: BASES.length - 1 }),
      reencodeArb,
      fc.array(mutationArb, { minLength: 0, maxLength: 3 }),
      (base, re, mutations) => {
        let der = BASES[base];
        if (re !== null) der = reencode(der, re);
        for (const m of mutations) der = mutate(der, m);
        if (der.equals(BASES[base])) return true; // no change: nothing to learn
        seen.inputs++;
        const ours = refusesWithItsOwnError(der);
        let theirs: X509Certificate | null = null;
        try {
          theirs = new X509Certificate(der);
        } catch {
          theirs = null;
        }
        if (ours) seen.ours++;
        if (theirs) seen.openssl++;
        if (ours === null) {
          if (theirs) stricter.set(lastReason!, (stricter.get(lastReason!) ?? 0) + 1);
          return true;
        }
        assert.ok(theirs, `the reader accepts what OpenSSL refuses: ${der.toString('hex')}`);
        seen.both++;
        sameFields(ours, theirs!);
        return true;
      },
    ),
    { seed: SEED, numRuns: 10000 },
  );
  const why = [...stricter].sort((a, b) => b[1] - a[1]).map(([r, n]) => `${r} ${n}`).join(', ');
  console.log(`      mutated inputs ${seen.inputs}: read by the reader ${seen.ours}, by OpenSSL ${seen.openssl}, by both ${seen.both}; read by OpenSSL only: ${why}`);
  assert.ok(seen.ours >= 100, `too few mutated inputs were read (${seen.ours}) for the comparison to mean much`);
  assert.ok(seen.openssl > seen.ours, 'OpenSSL reads BER the reader refuses');
});

test.run();
