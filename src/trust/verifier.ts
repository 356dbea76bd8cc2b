// Step 3 of SDN Algorithms 1 and 2: before a cable is plugged, the hypervisor verifies
// Cert(V6) and Sign(V6, Physical-IP) of the binding the mapping store returned. A binding
// is accepted (Drop.None) or refused with exactly one reason, checked in this order:
//
//   1. the record and its certificate parse, in canonical form          VerifyMalformed
//   2. the VM certificate is issued by the trust anchor                  VerifyUnknownCa
//   3. the certificate (and the anchor) are valid now                    VerifyExpired / VerifyNotYetValid
//   4. the certificate names the record: SAN IP = identity,
//      CN = vm, O = tenant                                               VerifySanMismatch
//   5. the identity is derived from the certified key (identity.ts)      VerifyIdentityNotDerived
//   6. the binding is signed by the certified key                        VerifyBadSignature
//   7. the binding is valid now                                          VerifyExpired / VerifyNotYetValid
//   8. its epoch is not older than the highest this verifier has seen    VerifyOldEpoch
//   9. the named host's certificate (from the store) is issued by the
//      anchor, valid now, CN = host, SAN IP = hostAddress                VerifyHostCertMismatch
//  10. expect.hostAddress (where the packet came from) = hostAddress     VerifyWrongHostAddress
//      expect.host = host                                                VerifyHostCertMismatch
//
// Work is cached and bounded. Certificates that chain to the anchor are cached by SHA-256
// fingerprint (their parsing and step 2 are skipped next time). A binding that passed is
// cached by (identity, epoch, signature) with its whole record: the same record again skips
// steps 1, 2 and 4-6 but re-checks times (3, 7), the epoch (8), the host (9) and (10). A
// well-formed binding that is not cached costs one token of a bucket filled at
// `verifyPerSecond`; with the bucket empty verify() answers UpcallRateLimited at once and
// does no work. Such a verification does at most three Ed25519 checks (VM certificate,
// binding, host certificate), fewer when the certificates are cached.

import { LRUCache } from 'lru-cache';
import { createHash } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { Drop } from '../base/drops.js';
import type { Clock } from '../base/clock.js';
import type { BindingRecord, HostRecord } from './records.js';
import type { Trace } from '../base/trace.js';
import { encodeBinding, identityBytes, signatureBytes, verifyBindingSignature } from './binding.js';
import { KU_DIGITAL_SIGNATURE } from './certificate.js';
import { identityMatchesKey } from './identity.js';
import { checkAnchor, hostUri, isIssuedBy, parseCertificate, pemToDer, type ParsedCertificate } from './pki.js';
import { TokenBucket } from '../base/token-bucket.js';

export interface VerifierLimits {
  /** Bindings verified from scratch per second at most (switch.upcall.verifyPerSecond). */
  readonly verifyPerSecond: number;
  /** Tokens that may be saved up; default one second's worth. */
  readonly burst?: number;
  /** Certificates cached by fingerprint; default 65536. */
  readonly certificates?: number;
  /** Verified bindings cached; default 65536. */
  readonly bindings?: number;
  /** Identities whose highest epoch is remembered; default 262144. */
  readonly epochs?: number;
}

export interface VerifyExpect {
  /** The underlay source address of the packet that carried this identity (SDN Algorithm 2). */
  readonly hostAddress?: string;
  readonly host?: string;
}

/** Counters; each verify() adds one to exactly one of verified, refused, rateLimited. */
export class VerifierCounters {
  verified = 0;
  refused = 0;
  rateLimited = 0;
  /** Binding signatures checked (step 6). */
  signatureChecks = 0;
  /** Certificate signatures checked against the anchor (steps 2 and 9). */
  chainChecks = 0;
  bindingCacheHits = 0;
  certCacheHits = 0;
  /** Published bindings checked as the store published them (verifyPublished; their verdicts count above as any); published ones left to their first packet. */
  verifiedAhead = 0;
  notAhead = 0;
}

/** A certificate issued by the anchor, with the validity of the chain (its own and the anchor's). */
interface CertEntry {
  readonly cert: ParsedCertificate;
  readonly notBefore: number;
  readonly notAfter: number;
}

interface BindingEntry {
  readonly record: BindingRecord;
  readonly cert: CertEntry;
  readonly notBefore: number;
  readonly notAfter: number;
}

/**
 * Where the highest epoch seen per identity is kept beyond the process (a file on the host's
 * disk): an old signed binding replayed by the store after a restart is still refused.
 */
export interface EpochMemory {
  /** Every remembered (identity, highest epoch). */
  load(): Iterable<readonly [string, number]>;
  /** `identity` was verified at `epoch`, higher than any seen before. */
  save(identity: string, epoch: number): void;
}

/** Where the verifier finds host certificates (the mapping store). */
export interface HostDirectory {
  lookupHost(host: string): Promise<HostRecord | undefined>;
}

export class BindingVerifier {
  readonly counters = new VerifierCounters();
  private readonly anchor: ParsedCertificate;
  private readonly certs: LRUCache<string, CertEntry>;
  /**
   * Each host's certificate as the store gave it last, with its entry: the same text again
   * skips decoding and fingerprinting it (the key exchange asks for every INIT and ANSWER).
   */
  private readonly hostCerts = new LRUCache<string, { readonly pem: string; readonly entry: CertEntry }>({ max: 4096 });
  private readonly bindings: LRUCache<string, BindingEntry>;
  private readonly epochs: LRUCache<string, number>;
  private readonly bucket: TokenBucket;

  /** Throws (NVI_ERR_PKI, NVI_ERR_CERT_FORMAT) when `anchorPem` is not a usable CA certificate. */
  constructor(
    anchorPem: string,
    private readonly store: HostDirectory,
    private readonly clock: Clock,
    limits: VerifierLimits,
    private readonly memory?: EpochMemory,
  ) {
    this.anchor = parseCertificate(anchorPem);
    checkAnchor(this.anchor);
    this.certs = new LRUCache({ max: limits.certificates ?? 65_536 });
    this.bindings = new LRUCache({ max: limits.bindings ?? 65_536 });
    this.epochs = new LRUCache({ max: limits.epochs ?? 262_144 });
    if (memory) for (const [identity, epoch] of memory.load()) if (epoch > (this.epochs.get(identity) ?? 0)) this.epochs.set(identity, epoch);
    this.bucket = new TokenBucket(limits.verifyPerSecond, limits.burst ?? limits.verifyPerSecond, clock.now());
  }

  /**
   * Forget every verified binding and VM certificate: each is verified from scratch when next
   * used. Host certificates stay (every key exchange checks its peer's: they are known as
   * long as the hosts talk), and so does the highest epoch seen per identity (an older
   * binding is still refused). Returns how many bindings were forgotten.
   */
  forgetVerified(): number {
    const n = this.bindings.size;
    this.bindings.clear();
    this.certs.clear(); // host certificates stay reachable through hostCerts
    return n;
  }

  /** Bindings kept verified (one per identity at most). */
  get cachedBindings(): number {
    return this.bindings.size;
  }

  /** The highest epoch verified (or remembered) for `identity`, if known. */
  highestEpoch(identity: string): number | undefined {
    return this.epochs.get(identity);
  }

  /**
   * `identity` had a binding at `epoch` that the store is about to forget (this host withdraws
   * it): remember the epoch as if verified, so that the next binding this host signs for it goes
   * above it. Other hosts may hold that epoch; one below it they would refuse (verify/old-epoch).
   */
  rememberEpoch(identity: string, epoch: number): void {
    if (epoch <= (this.epochs.get(identity) ?? 0)) return;
    this.epochs.set(identity, epoch);
    this.memory?.save(identity, epoch);
  }

  /**
   * False when verify() would refuse `record` now for want of a token (it is not the binding
   * verified last for its identity, and the bucket is empty). Takes no token.
   */
  mayVerify(record: BindingRecord): boolean {
    return this.verified(record) || this.bucket.has(this.clock.now());
  }

  /**
   * A binding the store just published (a VM that came or moved): verified now, so that the
   * first packet to or from it finds it verified. Only while the bucket holds more than half its
   * burst: a miss never waits for tokens spent ahead. Resolves with the verdict, or undefined
   * when it was left to the first packet.
   */
  async verifyPublished(record: BindingRecord): Promise<Drop | undefined> {
    if (this.verified(record)) return undefined;
    if (!this.bucket.has(this.clock.now()) || this.bucket.available() * 2 <= this.bucket.burst) {
      this.counters.notAhead++;
      return undefined;
    }
    this.counters.verifiedAhead++;
    return this.verify(record);
  }

  /** True when `record` is the binding verified last for its identity: verify() checks it without a signature. */
  verified(record: BindingRecord): boolean {
    const entry = typeof record.identity === 'string' ? this.bindings.peek(record.identity) : undefined;
    return entry !== undefined && sameRecord(entry.record, record);
  }

  /** Drop.None when the binding may be used, else the one reason it may not (see the list above). */
  async verify(record: BindingRecord, expect: VerifyExpect = {}, trace?: Trace): Promise<Drop> {
    const now = this.clock.now();
    const d = await this.check(record, expect, now, trace);
    if (d === Drop.None) this.counters.verified++;
    else if (d === Drop.UpcallRateLimited) this.counters.rateLimited++;
    else this.counters.refused++;
    return d;
  }

  private async check(record: BindingRecord, expect: VerifyExpect, now: number, trace?: Trace): Promise<Drop> {
    if (typeof record !== 'object' || record === null) {
      trace?.step('verify', 'binding record is not an object', 'fail');
      return Drop.VerifyMalformed;
    }
    // A record equal to the last one verified for its identity is well-formed and signed: skip
    // 1-2 and 4-6. One entry per identity: a VM that moves (a new epoch each time) replaces its
    // entry instead of adding one.
    const key = record.identity;
    let entry = typeof key === 'string' ? this.bindings.get(key) : undefined;
    if (entry && !sameRecord(entry.record, record)) entry = undefined;
    if (entry) {
      this.counters.bindingCacheHits++;
      trace?.step('verify', `binding epoch ${record.epoch} of ${record.identity} verified before: certificate, names, identity and signature not checked again`, 'ok');
      const c = certValidNow(entry.cert, now, trace);
      if (c !== Drop.None) return c;
      const w = windowNow('binding', entry.notBefore, entry.notAfter, now, trace);
      if (w !== Drop.None) return w;
    } else {
      // 1. Shape, before anything costs a token.
      let message: Buffer;
      try {
        message = encodeBinding(record);
      } catch (e) {
        trace?.step('verify', `binding record is malformed: ${(e as Error).message}`, 'fail');
        return Drop.VerifyMalformed;
      }
      const signature = signatureBytes(record.signature);
      if (!signature) {
        trace?.step('verify', 'binding signature is not base64 of 64 bytes', 'fail');
        return Drop.VerifyMalformed;
      }
      if (!this.bucket.take(now)) {
        trace?.step('verify', `no verification token left (${this.bucket.rate}/s): not verified`, 'fail');
        return Drop.UpcallRateLimited;
      }
      const fresh = this.verifyFresh(record, message, signature, now, trace);
      if (!('record' in fresh)) return fresh.drop;
      entry = fresh;
    }

    // 8. Epoch: a binding from before a migration is never accepted again (NVI Algorithm step 6).
    const highest = this.epochs.get(record.identity);
    if (highest !== undefined && record.epoch < highest) {
      trace?.step('verify', `epoch ${record.epoch} is older than epoch ${highest} already seen for ${record.identity}`, 'fail');
      return Drop.VerifyOldEpoch;
    }
    trace?.step('verify', highest === undefined ? `epoch ${record.epoch} is the first seen` : `epoch ${record.epoch} is not older than ${highest}, the highest seen`, 'ok');

    // 9. The host the binding names.
    const h = await this.checkHost(record, now, trace);
    if (h !== Drop.None) return h;

    // 10. What the caller saw: the packet's underlay source, the host it expects.
    if (expect.hostAddress !== undefined) {
      if (expect.hostAddress !== record.hostAddress) {
        trace?.step('verify', `packet came from ${expect.hostAddress}, but the binding places ${record.identity} at ${record.hostAddress}`, 'fail');
        return Drop.VerifyWrongHostAddress;
      }
      trace?.step('verify', `packet came from ${expect.hostAddress}, the binding's host address`, 'ok');
    }
    if (expect.host !== undefined) {
      if (expect.host !== record.host) {
        trace?.step('verify', `expected host ${expect.host}, but the binding names ${record.host}`, 'fail');
        return Drop.VerifyHostCertMismatch;
      }
      trace?.step('verify', `binding names host ${expect.host}, as expected`, 'ok');
    }

    if (highest === undefined || record.epoch > highest) {
      this.epochs.set(record.identity, record.epoch);
      this.memory?.save(record.identity, record.epoch);
    }
    this.bindings.set(key, entry);
    return Drop.None;
  }

  /** Steps 2-7 for a binding not verified before. */
  private verifyFresh(record: BindingRecord, message: Buffer, signature: Buffer, now: number, trace?: Trace): BindingEntry | { drop: Drop } {
    // 2. Chain (1: certificate parse).
    const c = this.certificate(record.certificate, trace);
    if (!('cert' in c)) return c;
    const cert = c.cert;
    // 3. Certificate validity.
    const v = certValidNow(c, now, trace);
    if (v !== Drop.None) return { drop: v };
    // 4. Names.
    if (!cert.ipAddresses.includes(record.identity)) {
      trace?.step('verify', `certificate names ${cert.ipAddresses.join(', ') || 'no IP address'}, not the identity ${record.identity}`, 'fail');
      return { drop: Drop.VerifySanMismatch };
    }
    if (cert.commonName !== record.vm || cert.organization !== record.tenant) {
      trace?.step('verify', `certificate is for ${cert.subject}, the record for VM ${record.vm} of tenant ${record.tenant}`, 'fail');
      return { drop: Drop.VerifySanMismatch };
    }
    trace?.step('verify', `certificate names ${record.identity}, VM ${record.vm} of tenant ${record.tenant}`, 'ok');
    // 5. Self-certifying identity.
    if (!identityMatchesKey(identityBytes(record.identity), cert.spki)) {
      trace?.step('verify', `identity ${record.identity} is not derived from the certified key`, 'fail');
      return { drop: Drop.VerifyIdentityNotDerived };
    }
    trace?.step('verify', `identity ${record.identity} is derived from the certified key`, 'ok');
    // 6. Sign(V6, Physical-IP).
    this.counters.signatureChecks++;
    if (!verifyBindingSignature(message, signature, cert.publicKey)) {
      trace?.step('verify', `binding signature does not verify with the key of ${cert.subject}`, 'fail');
      return { drop: Drop.VerifyBadSignature };
    }
    trace?.step('verify', `binding (${record.identity} at ${record.host} ${record.hostAddress}, epoch ${record.epoch}) is signed by the certified key`, 'ok');
    // 7. Binding validity.
    const notBefore = Date.parse(record.notBefore);
    const notAfter = Date.parse(record.notAfter);
    const w = windowNow('binding', notBefore, notAfter, now, trace);
    if (w !== Drop.None) return { drop: w };
    return { record: { ...record }, cert: c, notBefore, notAfter };
  }

  /** Host `name`'s certificate `pem`: the entry of the same text last time, or certificate(). */
  private hostCertificateEntry(name: string, pem: string, trace?: Trace): CertEntry | { drop: Drop } {
    const known = this.hostCerts.get(name);
    if (known !== undefined && known.pem === pem) {
      this.counters.certCacheHits++;
      trace?.step('verify', `host certificate of ${name} ${known.entry.cert.subject} chains to ${this.anchor.subject} (cached)`, 'ok');
      return known.entry;
    }
    const c = this.certificate(pem, trace, `host certificate of ${name}`);
    if ('cert' in c) this.hostCerts.set(name, { pem, entry: c });
    return c;
  }

  /** A certificate issued by the anchor, from the cache or checked now (VerifyMalformed, VerifyUnknownCa). */
  private certificate(pem: string, trace?: Trace, role = 'certificate'): CertEntry | { drop: Drop } {
    let der: Buffer;
    try {
      der = pemToDer(pem);
    } catch (e) {
      trace?.step('verify', `${role} is malformed: ${(e as Error).message}`, 'fail');
      return { drop: Drop.VerifyMalformed };
    }
    const fingerprint = createHash('sha256').update(der).digest('hex');
    const cached = this.certs.get(fingerprint);
    if (cached) {
      this.counters.certCacheHits++;
      trace?.step('verify', `${role} ${cached.cert.subject} chains to ${this.anchor.subject} (cached)`, 'ok');
      return cached;
    }
    let cert: ParsedCertificate;
    try {
      cert = parseCertificate(der);
    } catch (e) {
      trace?.step('verify', `${role} is malformed: ${(e as Error).message}`, 'fail');
      return { drop: Drop.VerifyMalformed };
    }
    if (cert.isCa || (cert.keyUsage & KU_DIGITAL_SIGNATURE) === 0) {
      // VMs and hosts sign; a CA certificate or one without digitalSignature is not theirs.
      trace?.step('verify', `${role} ${cert.subject} is not an end-entity signing certificate`, 'fail');
      return { drop: Drop.VerifyUnknownCa };
    }
    this.counters.chainChecks++;
    if (!isIssuedBy(cert, this.anchor)) {
      trace?.step('verify', `${role} ${cert.subject} (issuer ${cert.issuer}) does not chain to ${this.anchor.subject}`, 'fail');
      return { drop: Drop.VerifyUnknownCa };
    }
    trace?.step('verify', `${role} ${cert.subject} chains to ${this.anchor.subject}`, 'ok');
    const entry: CertEntry = {
      cert,
      notBefore: Math.max(cert.notBefore, this.anchor.notBefore),
      notAfter: Math.min(cert.notAfter, this.anchor.notAfter),
    };
    this.certs.set(fingerprint, entry);
    return entry;
  }

  /**
   * The signing key of host `host` at underlay address `address`, for the key exchange:
   * its certificate in the store chains to the anchor, is valid now, and names that host
   * and that address. Drop.None with the key, or the reason.
   */
  async hostKey(host: string, address: string, trace?: Trace): Promise<{ readonly drop: Drop; readonly key?: KeyObject }> {
    const r = await this.hostCertificate(host, address, this.clock.now(), trace);
    return 'cert' in r ? { drop: Drop.None, key: r.cert.publicKey } : r;
  }

  /** Step 9: the certificate of the host the binding names, as published in the store. */
  private async checkHost(record: BindingRecord, now: number, trace?: Trace): Promise<Drop> {
    const r = await this.hostCertificate(record.host, record.hostAddress, now, trace);
    return 'cert' in r ? Drop.None : r.drop;
  }

  private async hostCertificate(name: string, address: string, now: number, trace?: Trace): Promise<CertEntry | { drop: Drop }> {
    let host;
    try {
      host = await this.store.lookupHost(name);
    } catch (e) {
      trace?.step('verify', `store did not answer for host ${name}: ${(e as Error).message}`, 'fail');
      return { drop: Drop.ResolveStoreUnavailable };
    }
    if (!host) {
      trace?.step('verify', `no certificate for host ${name} in the store`, 'fail');
      return { drop: Drop.VerifyHostCertMismatch };
    }
    const c = this.hostCertificateEntry(name, host.certificate, trace);
    if (!('cert' in c)) return { drop: Drop.VerifyHostCertMismatch };
    const cert = c.cert;
    if (now < c.notBefore || now > c.notAfter) {
      trace?.step('verify', `host certificate of ${name} is not valid now (${iso(c.notBefore)} .. ${iso(c.notAfter)})`, 'fail');
      return { drop: Drop.VerifyHostCertMismatch };
    }
    if (cert.commonName !== name || !cert.uris.includes(hostUri(name))) {
      trace?.step('verify', `host certificate ${cert.subject} is not the certificate of host ${name}`, 'fail');
      return { drop: Drop.VerifyHostCertMismatch };
    }
    if (!cert.ipAddresses.includes(address)) {
      trace?.step('verify', `host certificate of ${name} names ${cert.ipAddresses.join(', ') || 'no address'}, not ${address}`, 'fail');
      return { drop: Drop.VerifyHostCertMismatch };
    }
    trace?.step('verify', `host certificate names ${name} at ${address}`, 'ok');
    return c;
  }
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function certValidNow(c: CertEntry, now: number, trace?: Trace): Drop {
  return windowNow(`certificate ${c.cert.subject}`, c.notBefore, c.notAfter, now, trace);
}

/** Inclusive at both ends, as X.509 validity (RFC 5280 4.1.2.5). */
function windowNow(what: string, notBefore: number, notAfter: number, now: number, trace?: Trace): Drop {
  if (now < notBefore) {
    trace?.step('verify', `${what} is not valid before ${iso(notBefore)} (now ${iso(now)})`, 'fail');
    return Drop.VerifyNotYetValid;
  }
  if (now > notAfter) {
    trace?.step('verify', `${what} expired at ${iso(notAfter)} (now ${iso(now)})`, 'fail');
    return Drop.VerifyExpired;
  }
  trace?.step('verify', `${what} is valid now (until ${iso(notAfter)})`, 'ok');
  return Drop.None;
}

function sameRecord(a: BindingRecord, b: BindingRecord): boolean {
  return (
    a.identity === b.identity &&
    a.tenant === b.tenant &&
    a.vm === b.vm &&
    a.host === b.host &&
    a.hostAddress === b.hostAddress &&
    a.epoch === b.epoch &&
    a.notBefore === b.notBefore &&
    a.notAfter === b.notAfter &&
    a.signature === b.signature &&
    a.certificate === b.certificate
  );
}
