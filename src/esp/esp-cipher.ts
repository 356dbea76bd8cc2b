// AES-GCM for ESP (RFC 4106), a batch at a time. A stage queues its packets as jobs and
// makes one call; implementations: node:crypto (TypeScript, always present) and the native
// addon (one call into C per batch, in place, key schedule kept per SA).

import { createCipheriv, createDecipheriv, type CipherGCMTypes } from 'node:crypto';
import { ESP_HLEN, ESP_ICV_LEN, ESP_OFF_IV, ESP_OFF_SEQ, ESP_OFF_SPI, ESP_SALT_LEN } from '../wire/esp.js';

export type EspAlgorithm = 'aes-128-gcm' | 'aes-256-gcm';

export function keyLength(alg: EspAlgorithm): number {
  return alg === 'aes-128-gcm' ? 16 : 32;
}

/**
 * Jobs of one batch. Job j covers the ESP packet at espOff[j] in the batch arena: the
 * header (SPI, sequence, IV) is written; `ptLen[j]` bytes at espOff+16 are the plaintext
 * (seal) or ciphertext (open); the ICV follows them.
 */
export class EspJobs {
  count = 0;
  readonly key: Int32Array;
  readonly espOff: Int32Array;
  readonly ptLen: Int32Array;
  readonly seqHi: Uint32Array;
  /** Batch index of the packet the job belongs to. */
  readonly packet: Int32Array;
  /**
   * Set by the cipher for every job, both ways. seal(): 1 when the job was encrypted and its
   * ICV written, 0 when it failed (the buffer then holds plaintext behind the ESP header:
   * the packet must not be sent). open(): 1 when the ICV verified and the plaintext
   * replaced the ciphertext.
   */
  readonly ok: Uint8Array;

  /** Room for `capacity` jobs: the largest batch a stage hands over. */
  constructor(readonly capacity: number) {
    this.key = new Int32Array(capacity);
    this.espOff = new Int32Array(capacity);
    this.ptLen = new Int32Array(capacity);
    this.seqHi = new Uint32Array(capacity);
    this.packet = new Int32Array(capacity);
    this.ok = new Uint8Array(capacity);
  }

  add(key: number, espOff: number, ptLen: number, seqHi: number, packet: number): void {
    const j = this.count++;
    this.key[j] = key;
    this.espOff[j] = espOff;
    this.ptLen[j] = ptLen;
    this.seqHi[j] = seqHi;
    this.packet[j] = packet;
    this.ok[j] = 0;
  }
}

/** An ESP key as installed: what a new process needs to carry on an SA. */
export interface KeyMaterial {
  readonly alg: EspAlgorithm;
  readonly key: Buffer;
  readonly salt: Buffer;
}

export interface EspCipher {
  readonly name: string;
  /** Install a key at plug time; returns its handle. `salt` is the 4-byte RFC 4106 salt. */
  addKey(alg: EspAlgorithm, key: Uint8Array, salt: Uint8Array): number;
  removeKey(handle: number): void;
  /** A copy of an installed key, for handing the SA to the process that takes over (handover.ts); undefined if not installed. */
  exportKey(handle: number): KeyMaterial | undefined;
  /** Keys installed now (a leak shows here: bench/churn.ts). */
  readonly keyCount: number;
  /** Per-key cipher state kept between packets (the native cipher's OpenSSL contexts, about 1 KB each). */
  readonly contexts: number;
  /**
   * One pass of the host's sweep: give back the per-key state of keys not used in the last
   * `idle` passes, looking at up to `maxKeys` keys from where the last pass stopped; the next
   * packet of such a key makes it again. Returns how many contexts went.
   */
  trim(idle: number, maxKeys: number): number;
  /**
   * Encrypt every job in place and write its ICV; sets jobs.ok[j] (0: this job failed, its
   * plaintext is still there). A failure of one job is reported in ok, never thrown.
   * Throws, before any job is touched, only for a broken invariant: a key handle that is
   * not installed or a job outside the buffer.
   */
  seal(buf: Buffer, jobs: EspJobs): void;
  /**
   * Verify and decrypt every job in place; sets jobs.ok[j]. The plaintext is written only
   * when the ICV verifies. Throws as seal() does.
   */
  open(buf: Buffer, jobs: EspJobs): void;
}

/** Largest ESP plaintext: an IPv4 packet cannot carry more (the native cipher's limit too). */
const MAX_TEXT = 65535;

interface KeyEntry {
  alg: CipherGCMTypes;
  key: Buffer;
  salt: Buffer;
}

/**
 * node:crypto implementation. Node's cipher objects cannot work in place or be rekeyed
 * with a new IV, so this path allocates a cipher and an output buffer per packet; the
 * native cipher does not. Kept as the reference and fallback (STYLE 13).
 */
export class NodeEspCipher implements EspCipher {
  readonly name = 'node-crypto';
  private readonly keys: (KeyEntry | null)[] = [];
  private readonly free: number[] = [];
  private readonly nonce = Buffer.alloc(12);
  private readonly aad = Buffer.alloc(12);

  addKey(alg: EspAlgorithm, key: Uint8Array, salt: Uint8Array): number {
    if (key.length !== keyLength(alg)) throw new Error(`${alg} needs a ${keyLength(alg)}-byte key, got ${key.length}`);
    if (salt.length !== ESP_SALT_LEN) throw new Error(`ESP salt must be ${ESP_SALT_LEN} bytes, got ${salt.length}`);
    const entry = { alg, key: Buffer.from(key), salt: Buffer.from(salt) };
    const h = this.free.pop();
    if (h !== undefined) {
      this.keys[h] = entry;
      return h;
    }
    this.keys.push(entry);
    return this.keys.length - 1;
  }

  get keyCount(): number {
    return this.keys.length - this.free.length;
  }

  /** None: this path makes a cipher per packet. */
  readonly contexts = 0;

  trim(): number {
    return 0;
  }

  exportKey(handle: number): KeyMaterial | undefined {
    const e = this.keys[handle];
    return e ? { alg: e.alg as EspAlgorithm, key: Buffer.from(e.key), salt: Buffer.from(e.salt) } : undefined;
  }

  removeKey(handle: number): void {
    const e = this.keys[handle];
    if (!e) return;
    e.key.fill(0);
    this.keys[handle] = null;
    this.free.push(handle);
  }

  /** The checks src/native/esp_gcm.c makes before any job, with the same errors. */
  private check(buf: Buffer, jobs: EspJobs): void {
    if (jobs.count < 0 || jobs.count > jobs.capacity) throw new RangeError(`job count ${jobs.count} exceeds the job arrays`);
    for (let j = 0; j < jobs.count; j++) {
      if (!this.keys[jobs.key[j]]) throw new Error(`ESP key handle ${jobs.key[j]} is not installed`);
      const off = jobs.espOff[j];
      const len = jobs.ptLen[j];
      if (off < 0 || len < 0 || len > MAX_TEXT || off + ESP_HLEN + len + ESP_ICV_LEN > buf.length) {
        throw new RangeError(`ESP job ${j} (offset ${off}, length ${len}) lies outside the buffer`);
      }
    }
  }

  private prepare(buf: Buffer, jobs: EspJobs, j: number): KeyEntry {
    const e = this.keys[jobs.key[j]]!; // check() saw every handle installed
    const esp = jobs.espOff[j];
    e.salt.copy(this.nonce, 0);
    buf.copy(this.nonce, ESP_SALT_LEN, esp + ESP_OFF_IV, esp + ESP_OFF_IV + 8);
    buf.copy(this.aad, 0, esp + ESP_OFF_SPI, esp + ESP_OFF_SPI + 4);
    this.aad.writeUInt32BE(jobs.seqHi[j], 4);
    buf.copy(this.aad, 8, esp + ESP_OFF_SEQ, esp + ESP_OFF_SEQ + 4);
    return e;
  }

  seal(buf: Buffer, jobs: EspJobs): void {
    this.check(buf, jobs);
    for (let j = 0; j < jobs.count; j++) {
      const e = this.prepare(buf, jobs, j);
      const p = jobs.espOff[j] + ESP_HLEN;
      const n = jobs.ptLen[j];
      let ct: Buffer;
      let tag: Buffer;
      try {
        const c = createCipheriv(e.alg, e.key, this.nonce, { authTagLength: ESP_ICV_LEN });
        c.setAAD(this.aad);
        ct = c.update(buf.subarray(p, p + n));
        c.final();
        tag = c.getAuthTag();
      } catch {
        jobs.ok[j] = 0; // as the native cipher reports an OpenSSL failure: this job only, buffer untouched
        continue;
      }
      ct.copy(buf, p);
      tag.copy(buf, p + n);
      jobs.ok[j] = 1;
    }
  }

  open(buf: Buffer, jobs: EspJobs): void {
    this.check(buf, jobs);
    for (let j = 0; j < jobs.count; j++) {
      const e = this.prepare(buf, jobs, j);
      const p = jobs.espOff[j] + ESP_HLEN;
      const n = jobs.ptLen[j];
      const d = createDecipheriv(e.alg, e.key, this.nonce, { authTagLength: ESP_ICV_LEN });
      d.setAAD(this.aad);
      d.setAuthTag(buf.subarray(p + n, p + n + ESP_ICV_LEN));
      const pt = d.update(buf.subarray(p, p + n));
      try {
        d.final();
      } catch {
        jobs.ok[j] = 0; // ICV mismatch: the ciphertext stays as it was
        continue;
      }
      pt.copy(buf, p);
      jobs.ok[j] = 1;
    }
  }
}
