// AES-GCM for ESP in the native addon (src/native/esp_gcm.c): the same interface and
// semantics as NodeEspCipher, one call into C per batch, in place, the key schedule kept
// per installed key. NodeEspCipher stays the tested reference and fallback (STYLE 13);
// test/esp-cipher.test.ts checks both against each other and bench/esp-cipher.ts shows the gain.

import { ESP_SALT_LEN } from '../wire/esp.js';
import { NodeEspCipher, keyLength, type EspAlgorithm, type EspCipher, type EspJobs, type KeyMaterial } from './esp-cipher.js';
import { loadNative, nativeAvailable, type NativeAddon, type NativeGcmTable } from '../native/addon.js';

export class NativeEspCipher implements EspCipher {
  readonly name = 'native';
  private readonly table: NativeGcmTable;
  /** The installed keys by handle; their bytes are kept only for a handover (exportKey). */
  private readonly handles = new Map<number, KeyMaterial>();

  constructor(private readonly native: NativeAddon = loadNative()) {
    this.table = native.gcmCreate();
  }

  addKey(alg: EspAlgorithm, key: Uint8Array, salt: Uint8Array): number {
    if (key.length !== keyLength(alg)) throw new Error(`${alg} needs a ${keyLength(alg)}-byte key, got ${key.length}`);
    if (salt.length !== ESP_SALT_LEN) throw new Error(`ESP salt must be ${ESP_SALT_LEN} bytes, got ${salt.length}`);
    const h = this.native.gcmAddKey(this.table, key, salt);
    this.handles.set(h, { alg, key: Buffer.from(key), salt: Buffer.from(salt) });
    return h;
  }

  get keyCount(): number {
    return this.handles.size;
  }

  /** The key schedule is cleansed in C and the kept copy zeroed; the caller still owns (and should zero) its own copy. */
  removeKey(handle: number): void {
    this.native.gcmRemoveKey(this.table, handle);
    this.handles.get(handle)?.key.fill(0);
    this.handles.delete(handle);
  }

  exportKey(handle: number): KeyMaterial | undefined {
    const m = this.handles.get(handle);
    return m && { alg: m.alg, key: Buffer.from(m.key), salt: Buffer.from(m.salt) };
  }

  seal(buf: Buffer, jobs: EspJobs): void {
    if (jobs.count === 0) return;
    this.native.gcmSeal(this.table, buf, jobs.key, jobs.espOff, jobs.ptLen, jobs.seqHi, jobs.ok, jobs.count);
  }

  open(buf: Buffer, jobs: EspJobs): void {
    if (jobs.count === 0) return;
    this.native.gcmOpen(this.table, buf, jobs.key, jobs.espOff, jobs.ptLen, jobs.seqHi, jobs.ok, jobs.count);
  }
}

/** The native cipher when the addon is built, else node:crypto. */
export function createEspCipher(): EspCipher {
  return nativeAvailable() ? new NativeEspCipher() : new NodeEspCipher();
}
