// The certificate reader is strict DER (X.690 10, 11) over RFC 5280 4.1: one table test per
// refused encoding, each made by re-encoding a real certificate with exactly one fault.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CertificateFormatError, parseCertificate, pemToDer, type CertFormatReason } from '../src/trust/certificate.js';
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

test.run();
