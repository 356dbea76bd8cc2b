// The cloud's PKI: one cloud CA, a certificate per host (CN = host name, SAN IP = underlay
// IPv4) and a certificate per VM (CN = VM, O = tenant, SAN IP = identity IPv6): Cert(V6) of
// the NVI Algorithm, step 4. Ed25519 everywhere: 32-byte keys, 64-byte signatures, and the
// fastest verification of the signature schemes X.509 offers (RFC 8410).
//
// One flat CA, no tenant CAs: the tenant is already fixed by the identity's /64 prefix and
// named in the certificate's O, and a self-certifying identity (identity.ts) cannot be
// re-issued to another key by any CA, so a tenant CA would add a chain step to every miss
// and a key to guard without narrowing what a CA can do wrong.
//
// Building certificates: @peculiar/x509 over Node's own WebCrypto
// (crypto.webcrypto has Ed25519 built in, so @peculiar/webcrypto is not needed).
// Reading and checking certificates on the miss path: certificate.ts (a DER reader, and
// crypto.verify over the TBS bytes: both measured against @peculiar/x509 in bench/verify.ts).
//
// Files under the pki dir, public: ca.crt, hosts/<name>.crt, vms/<name>.crt; the operator's
// ca.key. Private keys live in each host's own key directory (by default keys/<host>/ under
// the pki dir): host.key and vms/<vm>.key for the VMs it runs, nothing else, so a host that
// is broken into gives away only its own VMs. Keys are PKCS#8 PEM, mode 0600.

import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createPrivateKey, createPublicKey, generateKeyPairSync, webcrypto, type KeyObject } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { NviError } from '../base/errors.js';
import { formatIpv6, parseIpv6Address } from '../base/address.js';
import { formatIpv4, parseIpv4Address } from '../base/address.js';
import { KU_KEY_CERT_SIGN, isIssuedBy, parseCertificate, type ParsedCertificate } from './certificate.js';

export { CertificateFormatError, isIssuedBy, parseCertificate, pemToDer, type ParsedCertificate } from './certificate.js';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

export const PKI_ERROR = 'NVI_ERR_PKI';

const DAY_MS = 86_400_000;
/** Lab validity: the CA 20 years, hosts and VMs 10 years (the CLI's defaults). */
export const CA_VALIDITY_DAYS = 7305;
export const LEAF_VALIDITY_DAYS = 3652;

/** The URI subjectAltName that marks a certificate's role: a host cannot pose as a VM. */
export function hostUri(host: string): string {
  return `urn:nvi-switch:host:${host}`;
}
export function vmUri(tenant: string, vm: string): string {
  return `urn:nvi-switch:vm:${tenant}:${vm}`;
}

// ---------------------------------------------------------------------------------------
// Keys

export interface KeyPair {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
}

export function generateKey(): KeyPair {
  return generateKeyPairSync('ed25519');
}

/** SubjectPublicKeyInfo DER of a public or private key: what identities are derived from. */
export function spkiDer(key: KeyObject): Buffer {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  return pub.export({ type: 'spki', format: 'der' });
}

/** Read a PKCS#8 PEM Ed25519 private key. */
export function readPrivateKey(path: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey(readFileSync(path));
  } catch (e) {
    throw new NviError(PKI_ERROR, `cannot read private key ${path}: ${(e as Error).message}`);
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new NviError(PKI_ERROR, `${path} is a ${key.asymmetricKeyType} key; nvi-switch uses Ed25519`);
  }
  return key;
}

/** Write a private key as PKCS#8 PEM readable by its owner only (0600). */
export function writePrivateKey(path: string, key: KeyObject): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  writeFileSync(path, key.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  chmodSync(path, 0o600); // writeFileSync's mode applies only when it creates the file
}

export function writeCertificate(path: string, pem: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  writeFileSync(path, pem, { mode: 0o644 });
}

async function signingKey(key: KeyObject): Promise<CryptoKey> {
  const der = bytes(key.export({ type: 'pkcs8', format: 'der' }));
  return (await webcrypto.subtle.importKey('pkcs8', der, { name: 'Ed25519' }, false, ['sign'])) as CryptoKey;
}

// ---------------------------------------------------------------------------------------
// Issuing

/** The CA's certificate (PEM), key and parsed certificate. */
export interface CaCredentials {
  readonly certificate: string;
  readonly privateKey: KeyObject;
  readonly parsed: ParsedCertificate;
}

/** Validity in ms since the epoch; X.509 keeps whole seconds, so both are floored to them. */
export interface Validity {
  readonly notBefore: number;
  readonly notAfter: number;
}

export function validityFrom(now: number, days: number): Validity {
  return { notBefore: now, notAfter: now + days * DAY_MS };
}

function dates(v: Validity): { notBefore: Date; notAfter: Date } {
  const nb = Math.floor(v.notBefore / 1000) * 1000;
  const na = Math.floor(v.notAfter / 1000) * 1000;
  if (!(na > nb)) throw new NviError(PKI_ERROR, `certificate validity is empty (${new Date(nb).toISOString()} .. ${new Date(na).toISOString()})`);
  return { notBefore: new Date(nb), notAfter: new Date(na) };
}

/** A copy as a plain ArrayBuffer-backed view (the WebCrypto types refuse Buffer's ArrayBufferLike). */
function bytes(buf: Uint8Array): Uint8Array<ArrayBuffer> {
  return new Uint8Array(buf);
}

function pem(cert: x509.X509Certificate): string {
  return `${cert.toString('pem')}\n`;
}

/** A self-signed cloud CA: BasicConstraints CA (path length 0: no intermediates), keyCertSign and cRLSign. */
export async function createCa(opts: { name?: string; validity: Validity; key?: KeyObject }): Promise<CaCredentials> {
  const privateKey = opts.key ?? generateKey().privateKey;
  const spki = spkiDer(privateKey);
  const name: x509.JsonName = [{ O: ['nvi-switch'] }, { CN: [opts.name ?? 'nvi-switch cloud CA'] }];
  const cert = await x509.X509CertificateGenerator.create({
    subject: name,
    issuer: name,
    ...dates(opts.validity),
    publicKey: bytes(spki),
    signingKey: await signingKey(privateKey),
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(bytes(spki)),
    ],
  });
  const certificate = pem(cert);
  return { certificate, privateKey, parsed: parseCertificate(certificate) };
}

async function issueLeaf(
  ca: CaCredentials,
  subject: x509.JsonName,
  publicKey: KeyObject,
  validity: Validity,
  names: { type: 'ip' | 'url' | 'dns'; value: string }[],
): Promise<string> {
  const spki = spkiDer(publicKey);
  const cert = await x509.X509CertificateGenerator.create({
    subject,
    issuer: new x509.Name(bytes(ca.parsed.subjectDer)), // the CA's subject bytes, not re-encoded text
    ...dates(validity),
    publicKey: bytes(spki),
    signingKey: await signingKey(ca.privateKey),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.SubjectAlternativeNameExtension(names, false),
      await x509.SubjectKeyIdentifierExtension.create(bytes(spki)),
      await x509.AuthorityKeyIdentifierExtension.create(bytes(ca.parsed.spki)),
    ],
  });
  return pem(cert);
}

/** A host certificate: CN = host, SAN IP = underlay IPv4, SAN URI urn:nvi-switch:host:<host>. */
export async function issueHostCertificate(
  ca: CaCredentials,
  opts: { host: string; address: string; publicKey: KeyObject; validity: Validity },
): Promise<string> {
  const address = formatIpv4(parseIpv4Address(opts.address));
  return issueLeaf(ca, [{ CN: [opts.host] }], opts.publicKey, opts.validity, [
    { type: 'ip', value: address },
    { type: 'url', value: hostUri(opts.host) },
  ]);
}

/** A VM certificate, Cert(V6): CN = VM, O = tenant, SAN IP = identity, SAN URI urn:nvi-switch:vm:<tenant>:<vm>. */
export async function issueVmCertificate(
  ca: CaCredentials,
  opts: { vm: string; tenant: string; identity: string; publicKey: KeyObject; validity: Validity },
): Promise<string> {
  const identity = formatIpv6(parseIpv6Address(opts.identity));
  return issueLeaf(ca, [{ O: [opts.tenant] }, { CN: [opts.vm] }], opts.publicKey, opts.validity, [
    { type: 'ip', value: identity },
    { type: 'url', value: vmUri(opts.tenant, opts.vm) },
  ]);
}

// ---------------------------------------------------------------------------------------
// Checking

/** Check that a certificate can serve as the trust anchor: a CA allowed to sign certificates. */
export function checkAnchor(ca: ParsedCertificate): void {
  if (!ca.isCa) throw new NviError(PKI_ERROR, `trust anchor ${ca.subject} is not a CA certificate (BasicConstraints)`);
  if ((ca.keyUsage & KU_KEY_CERT_SIGN) === 0) throw new NviError(PKI_ERROR, `trust anchor ${ca.subject} may not sign certificates (KeyUsage)`);
  if (!isIssuedBy(ca, ca)) throw new NviError(PKI_ERROR, `trust anchor ${ca.subject} is not self-signed`);
}

// ---------------------------------------------------------------------------------------
// The pki dir

export interface PkiPaths {
  readonly dir: string;
  readonly caCert: string;
  readonly caKey: string;
  hostCert(host: string): string;
  vmCert(vm: string): string;
}

export function pkiPaths(dir: string): PkiPaths {
  return {
    dir,
    caCert: join(dir, 'ca.crt'),
    caKey: join(dir, 'ca.key'),
    hostCert: (h) => join(dir, 'hosts', `${h}.crt`),
    vmCert: (v) => join(dir, 'vms', `${v}.crt`),
  };
}

/** A host's own key directory: its key, and the keys of the VMs it runs. */
export interface HostKeyPaths {
  readonly dir: string;
  readonly hostKey: string;
  readonly vmsDir: string;
  vmKey(vm: string): string;
}

export function hostKeyPaths(dir: string): HostKeyPaths {
  return { dir, hostKey: join(dir, 'host.key'), vmsDir: join(dir, 'vms'), vmKey: (v) => join(dir, 'vms', `${v}.key`) };
}

function readText(path: string, what: string): string {
  if (!existsSync(path)) throw new NviError(PKI_ERROR, `${what} ${path} does not exist`);
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new NviError(PKI_ERROR, `cannot read ${what} ${path}: ${(e as Error).message}`);
  }
}

function readCertificate(path: string, what: string): { pem: string; parsed: ParsedCertificate } {
  const text = readText(path, what);
  try {
    return { pem: text, parsed: parseCertificate(text) };
  } catch (e) {
    throw new NviError(PKI_ERROR, `${what} ${path}: ${(e as Error).message}`);
  }
}

/** The CA certificate (PEM) alone: the trust anchor every switch needs. */
export function loadAnchor(dir: string): string {
  const p = pkiPaths(dir);
  const { pem: text, parsed } = readCertificate(p.caCert, 'CA certificate');
  checkAnchor(parsed);
  return text;
}

/** The CA with its key, to issue certificates (ca init, host enroll, vm create). */
export function loadCa(dir: string): CaCredentials {
  const p = pkiPaths(dir);
  if (!existsSync(p.caCert)) throw new NviError(PKI_ERROR, `no CA in ${dir} (${p.caCert} does not exist): run nvi-switch ca init first`);
  const { pem: certificate, parsed } = readCertificate(p.caCert, 'CA certificate');
  checkAnchor(parsed);
  const privateKey = readPrivateKey(p.caKey);
  if (!spkiDer(privateKey).equals(parsed.spki)) throw new NviError(PKI_ERROR, `${p.caKey} is not the key of ${p.caCert}`);
  return { certificate, privateKey, parsed };
}

/** A VM's certificate and key: what its host needs to sign bindings for it (NVI Algorithm step 4). */
export interface VmCredentials {
  readonly certificate: string;
  readonly privateKey: KeyObject;
}

/** VM `vm`'s certificate from the pki dir and its key from the key directory of the host it runs on. */
export function loadVmCredentials(pkiDir: string, keyDir: string, vm: string): VmCredentials {
  const cert = pkiPaths(pkiDir).vmCert(vm);
  const key = hostKeyPaths(keyDir).vmKey(vm);
  const { pem: certificate, parsed } = readCertificate(cert, `certificate of VM ${vm}`);
  const privateKey = readPrivateKey(key);
  if (!spkiDer(privateKey).equals(parsed.spki)) throw new NviError(PKI_ERROR, `${key} is not the key of ${cert}`);
  return { certificate, privateKey };
}

/** A host's certificate (PEM), or undefined when it has not been enrolled. */
export function readHostCertificate(dir: string, host: string): string | undefined {
  const path = pkiPaths(dir).hostCert(host);
  if (!existsSync(path)) return undefined;
  return readCertificate(path, `certificate of host ${host}`).pem;
}
