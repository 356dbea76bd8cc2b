// Internet checksum (RFC 1071): one's-complement sum of 16-bit words.

/** Add buf[off, off+len) to a running 32-bit one's-complement sum. */
export function onesSum(buf: Uint8Array, off: number, len: number, sum: number): number {
  const end = off + (len & ~1);
  for (let p = off; p < end; p += 2) sum += (buf[p] << 8) | buf[p + 1];
  if (len & 1) sum += buf[off + len - 1] << 8;
  return sum;
}

/** Fold a running sum to 16 bits and complement it. */
export function finishChecksum(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** Checksum of buf[off, off+len). A header with a valid checksum sums to 0. */
export function checksum(buf: Uint8Array, off: number, len: number): number {
  return finishChecksum(onesSum(buf, off, len, 0));
}
