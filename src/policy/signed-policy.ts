// The policy document in the mapping store is signed by the cloud CA, over its revision and
// its text, so that whoever controls the store cannot rewrite the tenants' rules: a switch
// takes a policy only with a valid signature and a revision above the one it runs, and
// otherwise keeps the policy it has and counts the refusal.
//
//   signed message = "nvi-switch policy v1" 0x00 || revision (u64 big-endian) || SHA-256(document)
//   signature      = Ed25519 by the CA key, base64

import { createHash, sign, verify, type KeyObject } from 'node:crypto';

/** The tenants' policy document (JSON text of the tenants sections), its revision, and the signature over both. */
export interface PolicyRecord {
  readonly revision: number;
  readonly document: string;
  /** Ed25519 by the cloud CA over the revision and the document (base64); '' when unsigned. */
  readonly signature: string;
}

const CONTEXT = Buffer.from('nvi-switch policy v1\0');

export type PolicyRefusal = 'unsigned' | 'bad-signature' | 'older-revision';

function message(revision: number, document: string): Buffer {
  const out = Buffer.alloc(CONTEXT.length + 8 + 32);
  CONTEXT.copy(out, 0);
  out.writeBigUInt64BE(BigInt(revision), CONTEXT.length);
  createHash('sha256').update(document, 'utf8').digest().copy(out, CONTEXT.length + 8);
  return out;
}

/** The record `policy apply` publishes: `document` at `revision`, signed with the CA's key. */
export function signPolicy(revision: number, document: string, caKey: KeyObject): PolicyRecord {
  if (!Number.isSafeInteger(revision) || revision < 1) throw new RangeError(`policy revision must be an integer from 1, got ${revision}`);
  return { revision, document, signature: sign(null, message(revision, document), caKey).toString('base64') };
}

/**
 * Why a switch running revision `current` must refuse `rec`, or undefined when it may take it.
 * `caPublicKey` is the trust anchor's key.
 */
export function policyRefusal(rec: PolicyRecord, caPublicKey: KeyObject, current: number): PolicyRefusal | undefined {
  if (typeof rec.signature !== 'string' || rec.signature === '') return 'unsigned';
  const sig = Buffer.from(rec.signature, 'base64');
  const ok = Number.isSafeInteger(rec.revision) && rec.revision >= 1 && typeof rec.document === 'string' && sig.length === 64
    && verify(null, message(rec.revision, rec.document), caPublicKey, sig);
  if (!ok) return 'bad-signature';
  if (rec.revision <= current) return 'older-revision';
  return undefined;
}
