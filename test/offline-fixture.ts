// Shared by the pipeline tests: the shipped cloud, all hosts in one process, and frames
// built the way a guest's kernel builds them.

import { loadConfig, type CloudConfig } from '../src/config/config.js';
import { NodeEspCipher, type EspCipher } from '../src/esp/esp-cipher.js';
import type { SaKeys } from '../src/esp/wireshark-sa.js';
import { ETH_HLEN, writeEthIpv6 } from '../src/wire/ethernet.js';
import { icmp6Checksum } from '../src/wire/icmpv6.js';
import { PROTO_ICMPV6 } from '../src/wire/ipv6.js';
import { ROUTER_MAC } from '../src/dataplane/vm-port.js';
import { MemoryLogger } from '../src/base/log.js';
import { OfflineCloud } from '../src/replay/offline-cloud.js';
import type { SaLimits } from '../src/esp/sa.js';
import type { KxTiming } from '../src/switch/key-exchange.js';
import type { MemoryHub } from '../src/switch/transports.js';

export const CONFIG_FILE = new URL('../../nvi-switch.yaml', import.meta.url).pathname;

export interface Offline {
  readonly off: OfflineCloud;
  readonly config: CloudConfig;
  readonly sas: SaKeys[];
  readonly log: MemoryLogger;
}

export async function openOffline(opts: { carry?: boolean; cipher?: EspCipher; saLimits?: Partial<SaLimits>; now?: number; clock?: { now(): number }; hub?: MemoryHub; kx?: Partial<KxTiming>; prefetchReplies?: boolean; spares?: number } = {}): Promise<Offline> {
  const config = loadConfig(CONFIG_FILE);
  const sas: SaKeys[] = [];
  const log = new MemoryLogger();
  const now = opts.now ?? Date.now();
  const off = await OfflineCloud.open(config, {
    cipher: opts.cipher ?? new NodeEspCipher(),
    clock: opts.clock ?? { now: () => now },
    log,
    carry: opts.carry,
    saLimits: opts.saLimits,
    hub: opts.hub,
    kx: opts.kx,
    prefetchReplies: opts.prefetchReplies,
    spares: opts.spares,
    exportKeys: (k) => sas.push(k),
  });
  return { off, config, sas, log };
}

/** An Ethernet frame from VM `from` to the identity of VM `to` carrying an ICMPv6 echo request. */
export function echoFrame(config: CloudConfig, from: string, to: string, seq: number, payload = 32): Buffer {
  const a = config.vms.get(from)!;
  const b = config.vms.get(to)!;
  return echoBetween(a.mac, a.identity, b.identity, seq, payload);
}

export function echoBetween(mac: Buffer, src: Buffer, dst: Buffer, seq: number, payload = 32): Buffer {
  const icmpLen = 8 + payload;
  const f = Buffer.alloc(ETH_HLEN + 40 + icmpLen);
  writeEthIpv6(f, 0, ROUTER_MAC, mac);
  const ip = ETH_HLEN;
  f[ip] = 0x60;
  f.writeUInt16BE(icmpLen, ip + 4);
  f[ip + 6] = PROTO_ICMPV6;
  f[ip + 7] = 64;
  src.copy(f, ip + 8);
  dst.copy(f, ip + 24);
  const m = ip + 40;
  f[m] = 128;
  f.writeUInt16BE(0x4e56, m + 4);
  f.writeUInt16BE(seq & 0xffff, m + 6);
  for (let k = 0; k < payload; k++) f[m + 8 + k] = (seq + k) & 0xff;
  f.writeUInt16BE(icmp6Checksum(f, ip, m, icmpLen), m + 2);
  return f;
}

export function frames(list: Buffer[], t0 = 1_700_000_000_000_000): { data: Buffer; timeUs: number; tag: number }[] {
  return list.map((data, k) => ({ data, timeUs: t0 + k, tag: k }));
}
