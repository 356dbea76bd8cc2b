// What a switch hands to the process that takes over from it (handover.ts): its SAs with their
// keys, sequence numbers and replay windows, the pairs its cables plugged, and the flow tables
// of initiate-only pairs. The rest the new process works out again: every cable is plugged
// again through the usual checks (binding, certificate, policy); only the key exchange is
// skipped, as the SA is handed over. A cable whose checks now fail is not plugged, and its SA
// goes.
//
// Sequence numbers: each outbound SA resumes SEQ_MARGIN above the last one the old process
// took, so that no number is used twice under a key (RFC 4303 3.3.3) even if a packet was
// sealed after the snapshot.

import { formatIpv4, parseIpv6Address } from '../base/address.js';
import type { Logger } from '../base/log.js';
import { msOf } from '../base/ticks.js';
import type { EspAlgorithm, EspCipher, KeyMaterial } from '../esp/esp-cipher.js';
import type { WindowState } from '../esp/replay-window.js';
import { OutboundSa } from '../esp/sa.js';
import type { SavedFlows } from './cable-maker.js';
import type { Host } from './host.js';

/** An outbound SA resumes this many sequence numbers above where the old process stopped. */
export const SEQ_MARGIN = 1024;

interface SavedKey {
  readonly alg: EspAlgorithm;
  /** base64 */
  readonly key: string;
  readonly salt: string;
}

interface SavedOutbound {
  readonly spi: number;
  readonly peer: number;
  readonly createdAt: number;
  /** The next packet goes out with this sequence number + 1. */
  readonly seqHi: number;
  readonly seqLo: number;
  /** Packets sent under its key, for the record: the next process counts them by seqHi/seqLo. */
  readonly packets: number;
  readonly bytes: number;
  readonly key: SavedKey;
}

export interface SavedEgress {
  readonly srcVm: string;
  readonly dst: string;
  readonly packets: number;
  readonly bytes: number;
  readonly drops: number;
  /** With ESP: the SA it sends on. */
  readonly sa?: SavedOutbound;
}

export interface SavedInbound {
  readonly spi: number;
  readonly peer: number;
  readonly peerHost: string;
  readonly src: string;
  readonly dstVm: string;
  /** The pair's current SA; else one replaced by a rekey, accepted until retireAt (ms). */
  readonly current: boolean;
  readonly retireAt: number | null;
  readonly packets: number;
  readonly bytes: number;
  readonly window: WindowState;
  readonly key: SavedKey;
  /** The ingress cable's counters (on the current SA only: the pair's one cable). */
  readonly counters?: { readonly packets: number; readonly bytes: number; readonly drops: number };
}

/** A spare SA (spares.ts), either end: its peer host, and how old it is. */
export interface SavedSpare {
  readonly spi: number;
  readonly peer: number;
  readonly peerHost: string;
  readonly ageMs: number;
  readonly key: SavedKey;
}

export interface HandoverState {
  readonly egress: readonly SavedEgress[];
  readonly inbound: readonly SavedInbound[];
  readonly flows: SavedFlows;
  /** Spares this host may send on, and those it keeps for other hosts (absent from a process before them). */
  readonly spares?: { readonly outbound: readonly SavedSpare[]; readonly inbound: readonly SavedSpare[] };
}

export interface Restored {
  /** Egress cables plugged again, and those of them on a handed-over SA. */
  readonly egress: number;
  readonly egressSas: number;
  readonly inbound: number;
  /** Saved cables or SAs the new process did not take: why, as "pair: reason". */
  readonly refused: string[];
}

function saveKey(m: KeyMaterial): SavedKey {
  return { alg: m.alg, key: m.key.toString('base64'), salt: m.salt.toString('base64') };
}

function loadKey(cipher: EspCipher, k: SavedKey): number {
  const key = Buffer.from(k.key, 'base64');
  const handle = cipher.addKey(k.alg, key, Buffer.from(k.salt, 'base64'));
  key.fill(0);
  return handle;
}

/** Sequence number (hi, lo) + n, as [hi, lo]. */
function seqPlus(hi: number, lo: number, n: number): [number, number] {
  const sum = lo + n;
  return [(hi + Math.floor(sum / 0x1_0000_0000)) >>> 0, sum >>> 0];
}

/** The state of `host` as it stands: call only once it stopped reading (nothing changes it any more). */
export function saveHandover(host: Host, cipher: EspCipher): HandoverState {
  const now = host.clock.now();
  const egress: SavedEgress[] = [];
  for (const c of host.egressCables.all()) {
    if (!c.plugged || !host.ports.has(c.srcPort)) continue;
    const srcVm = host.ports.at(c.srcPort).name;
    let sa: SavedOutbound | undefined;
    if (c.sa) {
      const m = cipher.exportKey(c.sa.key);
      if (!m) continue;
      const [seqHi, seqLo] = seqPlus(c.sa.seqHi, c.sa.seqLo, SEQ_MARGIN);
      sa = { spi: c.sa.spi, peer: c.peerAddr, createdAt: msOf(now, c.sa.createdTick), seqHi, seqLo, packets: c.sa.packets, bytes: c.sa.bytes, key: saveKey(m) };
      m.key.fill(0);
    }
    egress.push({ srcVm, dst: c.dstText, packets: c.packets, bytes: c.bytes, drops: c.drops, sa });
  }
  const inbound: SavedInbound[] = [];
  for (const sa of host.sas.spis.values()) {
    const c = sa.cable;
    if (!c.plugged || c.localPort < 0 || !host.ports.has(c.localPort)) continue; // its VM left: the peer is told, as it would be
    const m = cipher.exportKey(sa.key);
    if (!m) continue;
    const current = host.sas.inboundOf(c) === sa;
    inbound.push({
      spi: sa.spi, peer: sa.peer, peerHost: c.peerHost, src: c.srcText, dstVm: host.ports.at(c.localPort).name,
      current, retireAt: sa.current ? null : msOf(now, sa.retireTick), packets: sa.packets, bytes: sa.bytes, window: sa.save(), key: saveKey(m),
      counters: current ? { packets: c.packets, bytes: c.bytes, drops: c.drops } : undefined,
    });
    m.key.fill(0);
  }
  return { egress, inbound, flows: host.maker.saveFlows(), spares: saveSpares(host, cipher, now) };
}

/** Both ends' spares: a peer sends a new pair's first packet on one whichever process has it then. */
function saveSpares(host: Host, cipher: EspCipher, now: number): HandoverState['spares'] {
  const saved = (spi: number, peer: number, peerHost: string, at: number, handle: number): SavedSpare[] => {
    const m = cipher.exportKey(handle);
    if (!m) return [];
    const s = { spi, peer, peerHost, ageMs: now - at, key: saveKey(m) };
    m.key.fill(0);
    return [s];
  };
  return {
    outbound: host.kx.spares.takeAll().flatMap((s) => saved(s.sa.spi, s.peer, s.peerHost, s.at, s.sa.key)),
    inbound: host.spares.all().flatMap((s) => saved(s.spi, s.peer, s.peerHost, s.at, s.key)),
  };
}

/** Take over the spares of the process before (none from one that had none). */
function restoreSpares(host: Host, cipher: EspCipher, spares: HandoverState['spares'], now: number): void {
  for (const s of spares?.outbound ?? []) {
    host.kx.spares.adopt(s.peerHost, s.peer, new OutboundSa(s.spi, loadKey(cipher, s.key), now - s.ageMs, host.saLimits), now - s.ageMs);
  }
  for (const s of spares?.inbound ?? []) {
    if (!host.sas.spiInUse(s.spi) && !host.spares.has(s.spi)) host.spares.add({ spi: s.spi, key: loadKey(cipher, s.key), peer: s.peer, peerHost: s.peerHost, at: now - s.ageMs, held: null });
  }
}

/**
 * Take over `state` in a host that does not read yet: flows first (the cables plugged next
 * find them), then the inbound SAs (each pair's replaced ones before its current one), then
 * the egress cables.
 */
export async function restoreHandover(host: Host, cipher: EspCipher, state: HandoverState, log: Logger): Promise<Restored> {
  const refused: string[] = [];
  host.maker.loadFlows(state.flows);
  restoreSpares(host, cipher, state.spares, host.clock.now());

  let inbound = 0;
  const ordered = [...state.inbound].sort((a, b) => Number(a.current) - Number(b.current));
  for (const s of ordered) {
    const port = host.ports.byName(s.dstVm);
    const pair = `${s.src} -> ${s.dstVm}`;
    if (!port) {
      refused.push(`${pair}: no port for ${s.dstVm}`);
      continue;
    }
    const r = await host.receiver.accept({ initiatorHost: s.peerHost, initiatorAddress: s.peer, src: s.src, dst: port.identityText });
    if (!r.ok) {
      refused.push(`${pair}: ${r.detail}`);
      continue;
    }
    if (host.sas.spiInUse(s.spi)) {
      refused.push(`${pair}: SPI 0x${s.spi.toString(16)} taken`);
      continue;
    }
    const sa = host.sas.installInbound(r.cable, s.spi, loadKey(cipher, s.key), s.peer);
    sa.load(s.window);
    sa.packets = s.packets;
    sa.bytes = s.bytes;
    if (!s.current && s.retireAt !== null) host.sas.retireBy(sa, s.retireAt);
    if (s.counters) {
      r.cable.packets += s.counters.packets;
      r.cable.bytes += s.counters.bytes;
      r.cable.drops += s.counters.drops;
    }
    inbound++;
  }

  const plugs = state.egress.map(async (s) => {
    const port = host.ports.byName(s.srcVm);
    const pair = `${s.srcVm} -> ${s.dst}`;
    if (!port) {
      refused.push(`${pair}: no port for ${s.srcVm}`);
      return 0;
    }
    let handedOver: { sa: OutboundSa; peer: number } | undefined;
    if (s.sa) {
      const sa = new OutboundSa(s.sa.spi, loadKey(cipher, s.sa.key), s.sa.createdAt, host.saLimits);
      sa.resumeAfter(s.sa.seqHi, s.sa.seqLo); // its packets too: they are the sequence numbers taken
      sa.bytes = s.sa.bytes;
      handedOver = { sa, peer: s.sa.peer };
    }
    const dst = parseIpv6Address(s.dst);
    const cable = await host.sender.plug(port.index, dst, undefined, { negotiate: true, handedOver });
    if (handedOver && cable.sa !== handedOver.sa) {
      cipher.removeKey(handedOver.sa.key);
      if (cable.plugged) log.info('handover-sa-replaced', { pair, peer: formatIpv4(handedOver.peer), now: cable.peerHost });
    }
    if (!cable.plugged) {
      refused.push(`${pair}: ${cable.rule}`);
      return 0;
    }
    cable.packets += s.packets;
    cable.bytes += s.bytes;
    cable.drops += s.drops;
    host.install(cable);
    return handedOver && cable.sa === handedOver.sa ? 2 : 1;
  });
  const results = await Promise.all(plugs);
  return {
    egress: results.filter((n) => n > 0).length,
    egressSas: results.filter((n) => n === 2).length,
    inbound,
    refused,
  };
}

