// Inbound SAs by SPI, as the data path looks them up: an open-addressing table with linear
// probing, the SPIs in one Int32Array and the SAs in a parallel array, never more than half
// full. A lookup reads the SPI word of a slot and, when it is equal, the SA beside it: one
// cache line of keys instead of a Map's bucket, then its entry. SPIs 0..255 are reserved
// (RFC 4303 2.1) and never stored, so 0 marks an empty slot. A removal moves back the entries
// after it (no tombstones); the table grows by doubling and shrinks by half when it is less
// than an eighth full.

/** SPIs below this are reserved (RFC 4303 2.1: 1..255 by IANA, 0 for local use). */
export const SPI_MIN = 256;

/**
 * What the data path needs of the table: a lookup in two steps, the slot then its value, so
 * that a batch takes each step for all its packets at once (src/dataplane/ingress/esp-decap.ts).
 */
export interface SpiLookup<T> {
  /** The slot that holds `spi`, or -1. */
  find(spi: number): number;
  /** The value in slot `slot` (find's). */
  valueAt(slot: number): T;
}
const EMPTY = 0;
const FIRST_SLOTS = 16;

export class SpiTable<T> implements SpiLookup<T> {
  private keys = new Int32Array(FIRST_SLOTS);
  private vals: (T | undefined)[] = new Array<T | undefined>(FIRST_SLOTS).fill(undefined);
  /** 32 - log2(slots): a key's home slot is the top bits of its product with the golden ratio. */
  private shift = 32 - Math.log2(FIRST_SLOTS);
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** The value of `spi` (an unsigned 32-bit number), if any. */
  get(spi: number): T | undefined {
    const s = this.find(spi);
    return s < 0 ? undefined : this.vals[s];
  }

  find(spi: number): number {
    const key = spi | 0;
    const keys = this.keys;
    const mask = keys.length - 1;
    for (let s = slotOf(key, this.shift); ; s = (s + 1) & mask) {
      const k = keys[s];
      if (k === EMPTY) return -1;
      if (k === key) return s;
    }
  }

  valueAt(slot: number): T {
    return this.vals[slot]!;
  }

  has(spi: number): boolean {
    return this.get(spi) !== undefined;
  }

  /** Store `value` under `spi` (SPI_MIN..2^32-1), replacing any value it had. */
  set(spi: number, value: T): void {
    if (!Number.isInteger(spi) || spi < SPI_MIN || spi > 0xffffffff) throw new RangeError(`SPI ${spi} is reserved or not a 32-bit number`);
    if (value === undefined) throw new TypeError(`SPI ${spi}: no value`);
    if ((this.count + 1) * 2 > this.keys.length) this.resize(this.keys.length * 2);
    const key = spi | 0;
    const mask = this.keys.length - 1;
    let s = slotOf(key, this.shift);
    while (this.keys[s] !== EMPTY && this.keys[s] !== key) s = (s + 1) & mask;
    if (this.keys[s] === EMPTY) this.count++;
    this.keys[s] = key;
    this.vals[s] = value;
  }

  /** Remove `spi`; true when it was there. */
  delete(spi: number): boolean {
    const key = spi | 0;
    if (key === EMPTY) return false;
    const keys = this.keys;
    const mask = keys.length - 1;
    let s = slotOf(key, this.shift);
    while (keys[s] !== key) {
      if (keys[s] === EMPTY) return false;
      s = (s + 1) & mask;
    }
    // Backward shift: an entry after the hole moves into it unless its home slot lies
    // (cyclically) after the hole, up to its own slot.
    let hole = s;
    for (let j = (s + 1) & mask; keys[j] !== EMPTY; j = (j + 1) & mask) {
      const home = slotOf(keys[j], this.shift);
      if (((j - home) & mask) >= ((j - hole) & mask)) {
        keys[hole] = keys[j];
        this.vals[hole] = this.vals[j];
        hole = j;
      }
    }
    keys[hole] = EMPTY;
    this.vals[hole] = undefined;
    this.count--;
    if (this.count * 8 < keys.length && keys.length > FIRST_SLOTS) this.resize(keys.length / 2);
    return true;
  }

  /** Call `fn` with every value, in no particular order. `fn` must not add or remove entries. */
  forEach(fn: (value: T) => void): void {
    this.scan(0, this.keys.length, fn);
  }

  /**
   * Call `fn` with the values in at most `count` slots from slot `from` on (wrapping around);
   * returns where the next call goes on. A walk in slices. `fn` must not add or remove entries.
   */
  scan(from: number, count: number, fn: (value: T) => void): number {
    const keys = this.keys;
    const vals = this.vals;
    const mask = keys.length - 1;
    const visit = Math.min(count, keys.length);
    let s = from & mask;
    for (let k = 0; k < visit; k++, s = (s + 1) & mask) if (keys[s] !== EMPTY) fn(vals[s]!);
    return s;
  }

  /** Every value, in no particular order: a copy, so the caller may remove while it walks it. */
  values(): T[] {
    const out: T[] = [];
    this.forEach((v) => out.push(v));
    return out;
  }

  private resize(slots: number): void {
    const keys = this.keys;
    const vals = this.vals;
    this.keys = new Int32Array(slots);
    this.vals = new Array<T | undefined>(slots).fill(undefined);
    this.shift = 32 - Math.log2(slots);
    for (let s = 0; s < keys.length; s++) {
      if (keys[s] === EMPTY) continue;
      let t = slotOf(keys[s], this.shift);
      while (this.keys[t] !== EMPTY) t = (t + 1) & (slots - 1);
      this.keys[t] = keys[s];
      this.vals[t] = vals[s];
    }
  }
}

/** Home slot of a key: Fibonacci hashing (the top bits of key * 2^32/phi), so any SPIs spread. */
function slotOf(key: number, shift: number): number {
  return Math.imul(key, 0x9e3779b1) >>> shift;
}
