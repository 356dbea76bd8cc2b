// Ethernet II framing (IEEE 802.3). The switch only carries IPv6 between VMs.

export const ETH_OFF_DST = 0;
export const ETH_OFF_SRC = 6;
export const ETH_OFF_TYPE = 12;
export const ETH_HLEN = 14;
export const ETHERTYPE_IPV6 = 0x86dd;

/** True when the 6-byte MAC at `off` equals `mac` (6 bytes). */
export function macEquals(buf: Uint8Array, off: number, mac: Uint8Array): boolean {
  return (
    buf[off] === mac[0] && buf[off + 1] === mac[1] && buf[off + 2] === mac[2] &&
    buf[off + 3] === mac[3] && buf[off + 4] === mac[4] && buf[off + 5] === mac[5]
  );
}

/** Write an Ethernet header at `off`: dst, src, EtherType IPv6. */
export function writeEthIpv6(buf: Uint8Array, off: number, dst: Uint8Array, src: Uint8Array): void {
  buf.set(dst, off + ETH_OFF_DST);
  buf.set(src, off + ETH_OFF_SRC);
  buf[off + ETH_OFF_TYPE] = ETHERTYPE_IPV6 >> 8;
  buf[off + ETH_OFF_TYPE + 1] = ETHERTYPE_IPV6 & 0xff;
}
