// Sign(V6, Physical-IP): the signed binding of a VM identity to the host it runs on now
// (NVI Algorithm steps 2-5; step 6 re-signs it with epoch + 1 after a migration).
//
// The signature is Ed25519 by the VM's certified key over one canonical encoding of every
// field of the record but the signature. Each text field must already be in its one
// canonical form (RFC 5952 IPv6, dotted-quad IPv4, ISO 8601 from Date.toISOString), so text
// and bytes correspond one to one and no two records share a signed message:
//
//   "nvi-switch binding v1" 0x00
//   identity       16 bytes
//   tenant         u16 length || UTF-8
//   vm             u16 length || UTF-8
//   host           u16 length || UTF-8
//   hostAddress     4 bytes
//   epoch          u64 big-endian
//   notBefore      u64 big-endian, ms since 1970
//   notAfter       u64 big-endian, ms since 1970
//   certificate    32 bytes: SHA-256 of the certificate DER (binds the record to Cert(V6))

import { createHash, sign as cryptoSign, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { NviError } from '../base/errors.js';
import { formatIpv6, parseIpv6Address } from '../base/address.js';
import { formatIpv4, parseIpv4Address } from '../base/address.js';
import type { BindingRecord } from './records.js';
import { loadVmCredentials, parseCertificate, pemToDer, spkiDer, type VmCredentials } from './pki.js';

export const BINDING_CONTEXT = Buffer.from('nvi-switch binding v1\0');
export const BINDING_SIG_LEN = 64;
/** Bindings start this long before they are signed, for hosts whose clocks run behind. */
export const BINDING_BACKDATE_MS = 60_000;
const MAX_NAME_BYTES = 255;

export type BindingFields = Omit<BindingRecord, 'signature'>;

/** Thrown by encodeBinding for a record that is not in canonical form; the verifier's VerifyMalformed. */
export class BindingFormatError extends NviError {
  constructor(message: string) {
    super('NVI_ERR_BINDING_FORMAT', message);
  }
}

function fail(message: string): never {
  throw new BindingFormatError(message);
}

function name(v: unknown, field: string): Buffer {
  if (typeof v !== 'string' || v === '') fail(`${field} must be a non-empty string`);
  const b = Buffer.from(v, 'utf8');
  if (b.length > MAX_NAME_BYTES) fail(`${field} is longer than ${MAX_NAME_BYTES} bytes`);
  return b;
}

function time(v: unknown, field: string): number {
  if (typeof v !== 'string') fail(`${field} must be an ISO 8601 string`);
  const ms = Date.parse(v);
  if (!Number.isFinite(ms) || ms < 0 || new Date(ms).toISOString() !== v) fail(`${field} ${JSON.stringify(v)} is not canonical ISO 8601 (Date.toISOString)`);
  return ms;
}

/** Identity bytes of canonical IPv6 text, or a BindingFormatError. */
export function identityBytes(text: unknown): Buffer {
  if (typeof text !== 'string') fail('identity must be a string');
  let b: Buffer;
  try {
    b = parseIpv6Address(text);
  } catch {
    fail(`identity ${JSON.stringify(text)} is not an IPv6 address`);
  }
  if (formatIpv6(b) !== text) fail(`identity ${JSON.stringify(text)} is not canonical (RFC 5952: ${formatIpv6(b)})`);
  return b;
}

function addressBytes(text: unknown): number {
  if (typeof text !== 'string') fail('hostAddress must be a string');
  let a: number;
  try {
    a = parseIpv4Address(text);
  } catch {
    fail(`hostAddress ${JSON.stringify(text)} is not an IPv4 address`);
  }
  if (formatIpv4(a) !== text) fail(`hostAddress ${JSON.stringify(text)} is not canonical dotted quad`);
  return a;
}

/** The signed message of a binding. Throws BindingFormatError when a field is missing or not canonical. */
export function encodeBinding(f: BindingFields): Buffer {
  if (typeof f !== 'object' || f === null) fail('binding record must be an object');
  const identity = identityBytes(f.identity);
  const tenant = name(f.tenant, 'tenant');
  const vm = name(f.vm, 'vm');
  const host = name(f.host, 'host');
  const address = addressBytes(f.hostAddress);
  if (!Number.isSafeInteger(f.epoch) || f.epoch < 1) fail(`epoch must be an integer from 1, got ${JSON.stringify(f.epoch)}`);
  const notBefore = time(f.notBefore, 'notBefore');
  const notAfter = time(f.notAfter, 'notAfter');
  if (notAfter <= notBefore) fail('notAfter is not after notBefore');
  if (typeof f.certificate !== 'string') fail('certificate must be PEM text');
  let certDer: Buffer;
  try {
    certDer = pemToDer(f.certificate);
  } catch (e) {
    fail(`certificate: ${(e as Error).message}`);
  }
  const out = Buffer.alloc(BINDING_CONTEXT.length + 16 + 6 + tenant.length + vm.length + host.length + 4 + 24 + 32);
  let off = BINDING_CONTEXT.copy(out, 0);
  off += identity.copy(out, off);
  for (const b of [tenant, vm, host]) {
    off = out.writeUInt16BE(b.length, off);
    off += b.copy(out, off);
  }
  off = out.writeUInt32BE(address, off);
  off = out.writeBigUInt64BE(BigInt(f.epoch), off);
  off = out.writeBigUInt64BE(BigInt(notBefore), off);
  off = out.writeBigUInt64BE(BigInt(notAfter), off);
  off += createHash('sha256').update(certDer).digest().copy(out, off);
  if (off !== out.length) throw new Error(`binding encoding length ${off} != ${out.length}`); // invariant
  return out;
}

/** Sign the fields with the VM's key. */
export function signBinding(fields: BindingFields, vmPrivateKey: KeyObject): BindingRecord {
  const signature = cryptoSign(null, encodeBinding(fields), vmPrivateKey).toString('base64');
  return { ...fields, signature };
}

/** The 64 signature bytes of a record, or undefined when it is not base64 of 64 bytes. */
export function signatureBytes(signature: unknown): Buffer | undefined {
  if (typeof signature !== 'string' || !/^[A-Za-z0-9+/]{86}==$/.test(signature)) return undefined;
  const b = Buffer.from(signature, 'base64');
  return b.length === BINDING_SIG_LEN ? b : undefined;
}

/** Low-level check: the Ed25519 signature over `message` by `publicKey`. */
export function verifyBindingSignature(message: Uint8Array, signature: Uint8Array, publicKey: KeyObject): boolean {
  return cryptoVerify(null, message, publicKey, signature);
}

/** The VM a binding is for. */
export interface VmRef {
  readonly name: string;
  readonly tenant: string;
  readonly identityText: string;
}

/** The host a binding places the VM on. */
export interface HostRef {
  readonly name: string;
  readonly addressText: string;
}

/**
 * What host `host` does when VM `vm` starts on it (NVI Algorithm steps 2-5, epoch 1) or
 * arrives by migration (step 6, the previous epoch + 1): a binding valid from `now` (less
 * BINDING_BACKDATE_MS) for `validitySeconds`, signed with the VM's key. The certificate comes
 * from a pki dir and the key from the host's key directory, or both are given.
 */
export function makeBinding(
  source: { readonly pkiDir: string; readonly keyDir: string } | VmCredentials,
  vm: VmRef,
  host: HostRef,
  epoch: number,
  now: number,
  validitySeconds: number,
): BindingRecord {
  const creds = 'pkiDir' in source ? loadVmCredentials(source.pkiDir, source.keyDir, vm.name) : source;
  const cert = parseCertificate(creds.certificate);
  if (!cert.ipAddresses.includes(vm.identityText)) {
    throw new NviError('NVI_ERR_PKI', `certificate of VM ${vm.name} names ${cert.ipAddresses.join(', ') || 'no IP'}, not its identity ${vm.identityText}`);
  }
  if (!spkiDer(creds.privateKey).equals(cert.spki)) throw new NviError('NVI_ERR_PKI', `the key given for VM ${vm.name} is not the key of its certificate`);
  const start = now - BINDING_BACKDATE_MS;
  return signBinding(
    {
      identity: vm.identityText,
      tenant: vm.tenant,
      vm: vm.name,
      host: host.name,
      hostAddress: host.addressText,
      epoch,
      notBefore: new Date(start).toISOString(),
      notAfter: new Date(now + validitySeconds * 1000).toISOString(),
      certificate: creds.certificate,
    },
    creds.privateKey,
  );
}
