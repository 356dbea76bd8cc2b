// Classic pcap files (the format tcpdump writes; Wireshark's "pcap" type). Read: both byte
// orders, microsecond and nanosecond magic. Write: little-endian, microseconds.
// pcapng is refused with a message that says how to convert it.

import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { NviError } from '../base/errors.js';

export const LINKTYPE_ETHERNET = 1;
export const LINKTYPE_RAW = 101; // raw IPv4/IPv6, what the underlay carries
export const LINKTYPE_IPV4 = 228;
export const LINKTYPE_IPV6 = 229;

const MAGIC_US = 0xa1b2c3d4;
const MAGIC_NS = 0xa1b23c4d;
const PCAPNG_MAGIC = 0x0a0d0d0a;
const GLOBAL_HLEN = 24;
const RECORD_HLEN = 16;
const DEFAULT_SNAPLEN = 262144;

export interface PcapRecord {
  /** Capture time in microseconds since the epoch. */
  readonly timeUs: number;
  /** Captured bytes (a view valid until the next record is read). */
  readonly data: Buffer;
  /** Length on the wire; larger than data.length when the capture was cut at snaplen. */
  readonly originalLength: number;
}

function pcapError(file: string, message: string): NviError {
  return new NviError('NVI_ERR_PCAP', `${file}: ${message}`);
}

/** Reads a pcap file record by record in chunks, so large captures need not fit in memory. */
export class PcapReader {
  readonly linkType: number;
  readonly snapLength: number;
  private readonly fd: number;
  private readonly littleEndian: boolean;
  private readonly nanos: boolean;
  private buf = Buffer.alloc(1 << 20);
  private bufStart = 0;
  private bufEnd = 0;
  private eof = false;

  constructor(readonly file: string) {
    try {
      this.fd = openSync(file, 'r');
    } catch (e) {
      throw pcapError(file, `cannot open: ${(e as Error).message}`);
    }
    const head = Buffer.alloc(GLOBAL_HLEN);
    const n = readSync(this.fd, head, 0, GLOBAL_HLEN, 0);
    if (n < GLOBAL_HLEN) {
      closeSync(this.fd);
      throw pcapError(file, `too short for a pcap header (${n} bytes)`);
    }
    const le = head.readUInt32LE(0);
    const be = head.readUInt32BE(0);
    if (le === PCAPNG_MAGIC) {
      closeSync(this.fd);
      throw pcapError(file, 'is pcapng; convert it with: editcap -F pcap IN OUT');
    }
    if (le === MAGIC_US || le === MAGIC_NS) this.littleEndian = true;
    else if (be === MAGIC_US || be === MAGIC_NS) this.littleEndian = false;
    else {
      closeSync(this.fd);
      throw pcapError(file, `not a pcap file (magic 0x${be.toString(16)})`);
    }
    this.nanos = (this.littleEndian ? le : be) === MAGIC_NS;
    this.snapLength = this.u32(head, 16);
    this.linkType = this.u32(head, 20) & 0x0fffffff;
    this.position = GLOBAL_HLEN;
  }

  private position: number;

  private u32(b: Buffer, off: number): number {
    return this.littleEndian ? b.readUInt32LE(off) : b.readUInt32BE(off);
  }

  /** Make `need` bytes available from bufStart; false at end of file. */
  private fill(need: number): boolean {
    if (this.bufEnd - this.bufStart >= need) return true;
    if (need > this.buf.length) {
      const bigger = Buffer.alloc(Math.max(need, this.buf.length * 2));
      this.buf.copy(bigger, 0, this.bufStart, this.bufEnd);
      this.buf = bigger;
    } else {
      this.buf.copy(this.buf, 0, this.bufStart, this.bufEnd);
    }
    this.bufEnd -= this.bufStart;
    this.bufStart = 0;
    while (!this.eof && this.bufEnd < need) {
      const n = readSync(this.fd, this.buf, this.bufEnd, this.buf.length - this.bufEnd, this.position);
      if (n === 0) this.eof = true;
      this.position += n;
      this.bufEnd += n;
    }
    return this.bufEnd - this.bufStart >= need;
  }

  /** The next record, or undefined at the end. Throws for a record cut short by the end of the file. */
  next(): PcapRecord | undefined {
    if (!this.fill(RECORD_HLEN)) {
      if (this.bufEnd > this.bufStart) throw pcapError(this.file, 'ends inside a record header');
      return undefined;
    }
    const h = this.buf.subarray(this.bufStart, this.bufStart + RECORD_HLEN);
    const sec = this.u32(h, 0);
    const frac = this.u32(h, 4);
    const incl = this.u32(h, 8);
    const orig = this.u32(h, 12);
    if (incl > Math.max(this.snapLength, DEFAULT_SNAPLEN)) {
      throw pcapError(this.file, `record of ${incl} bytes exceeds the snap length ${this.snapLength}`);
    }
    if (!this.fill(RECORD_HLEN + incl)) throw pcapError(this.file, 'ends inside a record');
    const data = this.buf.subarray(this.bufStart + RECORD_HLEN, this.bufStart + RECORD_HLEN + incl);
    this.bufStart += RECORD_HLEN + incl;
    const timeUs = sec * 1e6 + (this.nanos ? Math.floor(frac / 1000) : frac);
    return { timeUs, data, originalLength: orig };
  }

  *records(): Generator<PcapRecord> {
    for (let r = this.next(); r; r = this.next()) yield r;
  }

  close(): void {
    closeSync(this.fd);
  }
}

/** Read every record of a small file into memory (copies). */
export function readPcap(file: string): { linkType: number; records: { timeUs: number; data: Buffer }[] } {
  const r = new PcapReader(file);
  try {
    const records = [];
    for (const rec of r.records()) records.push({ timeUs: rec.timeUs, data: Buffer.from(rec.data) });
    return { linkType: r.linkType, records };
  } finally {
    r.close();
  }
}

/** Writes a classic pcap file, buffering records and flushing in large writes. */
export class PcapWriter {
  private readonly fd: number;
  private readonly buf = Buffer.alloc(1 << 20);
  private used = 0;
  count = 0;

  constructor(readonly file: string, readonly linkType: number, readonly snapLength = DEFAULT_SNAPLEN) {
    try {
      this.fd = openSync(file, 'w');
    } catch (e) {
      throw pcapError(file, `cannot create: ${(e as Error).message}`);
    }
    const h = Buffer.alloc(GLOBAL_HLEN);
    h.writeUInt32LE(MAGIC_US, 0);
    h.writeUInt16LE(2, 4);
    h.writeUInt16LE(4, 6);
    h.writeUInt32LE(snapLength, 16);
    h.writeUInt32LE(linkType, 20);
    writeSync(this.fd, h);
  }

  /** Append data[off, off+len) captured at timeUs. */
  write(data: Uint8Array, off: number, len: number, timeUs: number): void {
    const incl = Math.min(len, this.snapLength);
    if (this.used + RECORD_HLEN + incl > this.buf.length) this.flush();
    if (RECORD_HLEN + incl > this.buf.length) throw pcapError(this.file, `record of ${incl} bytes too large`);
    const b = this.buf;
    const sec = Math.floor(timeUs / 1e6);
    b.writeUInt32LE(sec, this.used);
    b.writeUInt32LE(Math.round(timeUs - sec * 1e6), this.used + 4);
    b.writeUInt32LE(incl, this.used + 8);
    b.writeUInt32LE(len, this.used + 12);
    b.set(data.subarray(off, off + incl), this.used + RECORD_HLEN);
    this.used += RECORD_HLEN + incl;
    this.count++;
  }

  flush(): void {
    if (this.used > 0) writeSync(this.fd, this.buf, 0, this.used);
    this.used = 0;
  }

  close(): void {
    this.flush();
    closeSync(this.fd);
  }
}
