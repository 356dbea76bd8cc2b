// Which data-path thread owns what, when a host runs `switch.workers: N` threads.
//
// A VM belongs to worker (last 32-bit word of its identity, big-endian) mod N: the identity's
// last 64 bits are a hash, so VMs spread evenly, and the kernel's socket filters compute
// the same word from a packet (src/native/raw_socket.c). The worker of a VM reads its TAP,
// holds every cable from and to it with their SAs, and answers the key exchange for it:
//   - an SA into this host is keyed for its destination VM, by that VM's worker, which picks
//     an SPI with SPI mod N = its index: ESP then reaches it by SPI;
//   - plain IPv6-in-IPv4 reaches the worker of the inner destination;
//   - an INIT goes to the worker of its destination, an ANSWER to the worker whose request
//     id it carries (the first byte of every request id is the worker's index).
// A pair of VMs stays on one worker at each end, so no packet path shares state and no flow
// is reordered.

/** A host's share: worker `index` of `count`. */
export interface Shard {
  readonly count: number;
  readonly index: number;
}

/** The worker of the VM with identity bytes `id` (16 bytes at `offset`) among `count`. */
export function ownerOf(id: Uint8Array, count: number, offset = 0): number {
  const w = ((id[offset + 12] << 24) | (id[offset + 13] << 16) | (id[offset + 14] << 8) | id[offset + 15]) >>> 0;
  return w % count;
}

/** Worker `shard` owns the VM with identity bytes `id`; with no shard (one data-path thread), every VM is its own. */
export function owns(shard: Shard | undefined, id: Uint8Array): boolean {
  return shard === undefined || ownerOf(id, shard.count) === shard.index;
}

/** `spi` moved to the nearest SPI above it (below 2^30, at least 256) that worker `shard.index` receives. */
export function spiForShard(spi: number, shard: Shard): number {
  let s = spi - (spi % shard.count) + shard.index;
  if (s < 256) s += Math.ceil((256 - s) / shard.count) * shard.count;
  if (s >= 2 ** 30) s -= Math.ceil((s - 2 ** 30 + 1) / shard.count) * shard.count;
  return s;
}
