import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../src/config/config.js';
import { deriveIdentity } from '../src/trust/identity.js';
import {
  checkAnchor,
  createCa,
  generateKey,
  hostUri,
  isIssuedBy,
  loadAnchor,
  loadVmCredentials,
  parseCertificate,
  readHostCertificate,
  readPrivateKey,
  spkiDer,
  vmUri,
  writePrivateKey,
} from '../src/trust/pki.js';
import { formatIpv6 } from '../src/base/address.js';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';
import { parseCertificateX509 } from '../src/trust/certificate.js';
import { CERT_VALIDITY, DAY, T0, hostRecord, makePki, makeVm } from './pki-fixture.js';

const pki = await makePki();

test('the CA is a self-signed CA allowed to sign certificates', () => {
  const ca = pki.ca.parsed;
  assert.ok(ca.isCa);
  assert.ok(ca.keyUsage & 32, 'keyCertSign');
  assert.ok(ca.keyUsage & 64, 'cRLSign');
  assert.ok(isIssuedBy(ca, ca));
  checkAnchor(ca);
});

test('a host certificate names the host and its underlay address, issued by the CA', async () => {
  const h = parseCertificate((await hostRecord(pki.ca, 'h7', '10.77.0.7')).certificate);
  assert.is(h.commonName, 'h7');
  assert.equal(h.ipAddresses, ['10.77.0.7']);
  assert.equal(h.uris, [hostUri('h7')]);
  assert.not.ok(h.isCa);
  assert.is(h.keyUsage, 1); // digitalSignature
  assert.ok(isIssuedBy(h, pki.ca.parsed));
});

test('a VM certificate names the VM, its tenant and its identity', () => {
  const v = parseCertificate(pki.web1.certificate);
  assert.is(v.commonName, 'web1');
  assert.is(v.organization, 'blue');
  assert.equal(v.ipAddresses, [pki.web1.identity]);
  assert.equal(v.uris, [vmUri('blue', 'web1')]);
  assert.ok(spkiDer(pki.web1.key).equals(v.spki));
  assert.is(v.notBefore, CERT_VALIDITY.notBefore);
  assert.is(v.notAfter, CERT_VALIDITY.notAfter);
});

test('a certificate is not issued by another CA with the same name', async () => {
  const other = await createCa({ name: 'test CA', validity: CERT_VALIDITY });
  assert.ok(other.parsed.subjectDer.equals(pki.ca.parsed.subjectDer));
  assert.not.ok(isIssuedBy(parseCertificate(pki.web1.certificate), other.parsed));
});

test('a certificate with a flipped bit in its signed part does not verify', () => {
  const der = Buffer.from(parseCertificate(pki.web1.certificate).der);
  der[der.length - 100] ^= 1; // inside the extensions, still parseable or not: never issued
  let issued = false;
  try {
    issued = isIssuedBy(parseCertificate(der), pki.ca.parsed);
  } catch {
    issued = false;
  }
  assert.not.ok(issued);
});

test('parsing refuses text with no certificate, two certificates, or truncated DER', () => {
  assert.throws(() => parseCertificate('hello'), /expected one PEM certificate, found 0/);
  assert.throws(() => parseCertificate(pki.web1.certificate + pki.web2.certificate), /found 2/);
  const der = parseCertificate(pki.web1.certificate).der;
  assert.throws(() => parseCertificate(der.subarray(0, der.length - 1)), /DER/);
});

test('a private key is written readable by its owner only and reads back', () => {
  const dir = mkdtempSync(join(tmpdir(), 'nvi-pki-'));
  const path = join(dir, 'vms', 'x.key');
  const key = generateKey().privateKey;
  writePrivateKey(path, key);
  assert.is(statSync(path).mode & 0o777, 0o600);
  assert.ok(spkiDer(readPrivateKey(path)).equals(spkiDer(key)));
});

test('validity is kept in whole seconds', async () => {
  const ca = await createCa({ validity: { notBefore: T0 + 999, notAfter: T0 + 3_600_999 } });
  assert.is(ca.parsed.notBefore, T0);
  assert.is(ca.parsed.notAfter, T0 + 3_600_000);
});

function fieldsOf(pem: string) {
  const p = parseCertificate(pem);
  return {
    subject: p.subject,
    issuer: p.issuer,
    commonName: p.commonName,
    organization: p.organization,
    notBefore: p.notBefore,
    notAfter: p.notAfter,
    ipAddresses: p.ipAddresses,
    uris: p.uris,
    isCa: p.isCa,
    keyUsage: p.keyUsage,
  };
}

test('the DER reader reads the same fields as @peculiar/x509 for CA, host and VM certificates', async () => {
  const late = await createCa({ name: 'CA until 2080', validity: { notBefore: T0, notAfter: Date.parse('2080-01-01T00:00:00Z') } }); // GeneralizedTime
  const pems = [
    pki.ca.certificate,
    late.certificate,
    pki.web1.certificate,
    (await hostRecord(pki.ca, 'h1', '10.77.0.1')).certificate,
    (await makeVm(pki.ca, 'vm-ü', { tenant: 'tenant, with comma', validity: { notBefore: T0, notAfter: T0 + 40 * 365 * DAY } })).certificate,
  ];
  for (const pem of pems) assert.equal(fieldsOf(pem), parseCertificateX509(pem));
});

test('a certificate with an unknown critical extension is refused', async () => {
  const key = await webcrypto.subtle.importKey('pkcs8', new Uint8Array(pki.ca.privateKey.export({ type: 'pkcs8', format: 'der' })), { name: 'Ed25519' }, false, ['sign']);
  const cert = await x509.X509CertificateGenerator.create({
    subject: 'CN=odd',
    issuer: pki.ca.parsed.issuer,
    notBefore: new Date(T0),
    notAfter: new Date(T0 + DAY),
    publicKey: new Uint8Array(spkiDer(generateKey().publicKey)),
    signingKey: key as CryptoKey,
    extensions: [new x509.Extension('1.2.3.4', true, new Uint8Array([5, 0]))],
  });
  assert.throws(() => parseCertificate(cert.toString('pem')), /unknown critical extension 1.2.3.4/);
});

test('a certificate with an RSA or EC key is refused', async () => {
  const ec = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: 'CN=ec',
    notBefore: new Date(T0),
    notAfter: new Date(T0 + DAY),
    keys: ec as CryptoKeyPair,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams,
  });
  assert.throws(() => parseCertificate(cert.toString('pem')), /not signed with Ed25519/);
});

// The lab in nvi-switch.yaml, generated with `nvi-switch ca init | host enroll | vm create`.
const here = dirname(fileURLToPath(import.meta.url));
const cfg = loadConfig(resolve(here, '../../nvi-switch.yaml'));

test('every lab certificate chains to the lab CA and every lab VM identity derives from its key', () => {
  const anchor = parseCertificate(loadAnchor(cfg.pkiDir));
  for (const h of cfg.hosts.values()) {
    const cert = parseCertificate(readHostCertificate(cfg.pkiDir, h.name)!);
    assert.ok(isIssuedBy(cert, anchor), h.name);
    assert.equal(cert.ipAddresses, [h.addressText], h.name);
  }
  for (const vm of cfg.vms.values()) {
    const creds = loadVmCredentials(cfg.pkiDir, cfg.hosts.get(vm.host)!.keyDir, vm.name);
    const cert = parseCertificate(creds.certificate);
    assert.ok(isIssuedBy(cert, anchor), vm.name);
    assert.equal(cert.ipAddresses, [vm.identityText], vm.name);
    const prefix = cfg.tenants.get(vm.tenant)!.prefix;
    assert.is(formatIpv6(deriveIdentity(prefix, spkiDer(creds.privateKey))), vm.identityText, vm.name);
  }
});

test.run();
