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
  /** Where exportKey() has C write a key and its salt (zeroed after each copy). */
  private readonly exported = Buffer.alloc(32 + ESP_SALT_LEN);

  constructor(private readonly native: NativeAddon = loadNative()) {
    this.table = native.gcmCreate();
  }

  /** The key and salt are copied into C; no copy stays in JS (the caller still owns, and should zero, its own). */
  addKey(alg: EspAlgorithm, key: Uint8Array, salt: Uint8Array): number {
    if (key.length !== keyLength(alg)) throw new Error(`${alg} needs a ${keyLength(alg)}-byte key, got ${key.length}`);
    if (salt.length !== ESP_SALT_LEN) throw new Error(`ESP salt must be ${ESP_SALT_LEN} bytes, got ${salt.length}`);
    return this.native.gcmAddKey(this.table, key, salt);
  }

  get keyCount(): number {
    return this.native.gcmKeyCount(this.table);
  }

  get contexts(): number {
    return this.native.gcmContextCount(this.table);
  }

  /** Bytes of the native key table (48 a slot, used or free), for the benches' memory figures. */
  get tableBytes(): number {
    return this.native.gcmTableBytes(this.table);
  }

  trim(idle: number, maxKeys: number): number {
    return this.native.gcmTrim(this.table, idle, maxKeys);
  }

  /** The key schedule, key and salt are cleansed in C. */
  removeKey(handle: number): void {
    this.native.gcmRemoveKey(this.table, handle);
  }

  /** For a handover: the key and salt read back from C (the key's length tells the algorithm). */
  exportKey(handle: number): KeyMaterial | undefined {
    const out = this.exported;
    const n = this.native.gcmExportKey(this.table, handle, out);
    if (n === 0) return undefined;
    const m: KeyMaterial = { alg: n === 16 ? 'aes-128-gcm' : 'aes-256-gcm', key: Buffer.from(out.subarray(0, n)), salt: Buffer.from(out.subarray(n, n + ESP_SALT_LEN)) };
    out.fill(0);
    return m;
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
