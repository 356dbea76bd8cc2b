// Self-certifying VM identities. An identity is an IPv6 address: the tenant's /64 prefix
// followed by 64 bits of SHA-256 over the prefix and the VM's public key (SPKI DER), in the
// manner of CGA (RFC 3972) and HIP ORCHIDs (RFC 7343). Whoever holds the certified key can
// recompute it; nobody, not even a stolen CA, can mint a certificate for an existing
// identity with another key without a 2^64 second-preimage search.

import { createHash } from 'node:crypto';
import { formatIpv6, parseIpv6Address } from '../base/address.js';

const IDENTITY_CONTEXT = Buffer.from('nvi-switch identity v1\0');

/** A tenant prefix: exactly a /64 (the identity's low 64 bits come from the key). */
export interface TenantPrefix {
  readonly bytes: Buffer; // 8 bytes
  readonly text: string; // "fd9a:3c7e:51b2:1::/64"
}

export function parseTenantPrefix(text: string): TenantPrefix {
  const m = /^([0-9a-fA-F:.]+)\/64$/.exec(text);
  if (!m) throw new Error(`tenant prefix must be an IPv6 /64, got ${JSON.stringify(text)}`);
  const addr = parseIpv6Address(m[1]);
  if (addr.subarray(8).some((b) => b !== 0)) {
    throw new Error(`tenant prefix ${text} has bits set beyond /64`);
  }
  if (addr[0] === 0xff || (addr[0] === 0xfe && (addr[1] & 0xc0) === 0x80)) {
    throw new Error(`tenant prefix ${text} is multicast or link-local`);
  }
  return { bytes: addr.subarray(0, 8), text: `${formatIpv6(addr)}/64` };
}

/** The identity for a public key (SPKI DER) under a tenant prefix. */
export function deriveIdentity(prefix: TenantPrefix, spkiDer: Uint8Array): Buffer {
  const h = createHash('sha256').update(IDENTITY_CONTEXT).update(prefix.bytes).update(spkiDer).digest();
  const id = Buffer.alloc(16);
  prefix.bytes.copy(id, 0);
  h.copy(id, 8, 0, 8);
  return id;
}

/** True when `identity` (16 bytes) is the one derived from `spkiDer` under its own /64. */
export function identityMatchesKey(identity: Uint8Array, spkiDer: Uint8Array): boolean {
  const prefix = { bytes: Buffer.from(identity.subarray(0, 8)), text: '' };
  return deriveIdentity(prefix, spkiDer).equals(Buffer.from(identity));
}
