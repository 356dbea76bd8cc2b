// After the pipeline: every packet of a batch to its sink, in order, one call per sink. The
// underlay gets its packets, each VM port its frames and replies; a packet a sink refuses
// becomes a transmit drop. An ESP packet dropped for an unknown SPI makes the key exchange
// tell its sender (NOTIFY), so that sender plugs the cable again at once.

import { Drop } from '../base/drops.js';
import { BATCH_MAX, Next, type Batch } from '../dataplane/batch.js';
import type { PipelineCounters } from '../dataplane/counters.js';
import { ESP_OFF_SPI } from '../wire/esp.js';
import { readU32 } from '../wire/ipv4.js';

/** Where packets leave: the underlay port, or a VM port. */
export interface PacketSink {
  /** Send packets b[idx[0..n)]; returns how many were sent, in order (the rest failed). */
  send(b: Batch, idx: Int32Array, n: number): number;
}

const NOWHERE: PacketSink = { send: () => 0 };

export class TxFanout {
  private underlay: PacketSink = NOWHERE;
  private ports: PacketSink[];
  private readonly underlayIdx = new Int32Array(BATCH_MAX);
  private readonly portIdx: Int32Array[];
  private readonly portCount: Int32Array;

  constructor(portCount: number, private readonly onUnknownSpi: (spi: number, from: number) => void) {
    this.ports = new Array<PacketSink>(portCount).fill(NOWHERE);
    this.portIdx = this.ports.map(() => new Int32Array(BATCH_MAX));
    this.portCount = new Int32Array(portCount);
  }

  attach(underlay: PacketSink, ports: readonly PacketSink[]): void {
    if (ports.length !== this.ports.length) throw new Error(`${this.ports.length} ports, ${ports.length} sinks given`);
    this.underlay = underlay;
    this.ports = [...ports];
  }

  /** Hand every packet of `b` to its sink; refusals are counted in `c` as transmit drops. */
  send(b: Batch, c: PipelineCounters): void {
    let nu = 0;
    this.portCount.fill(0);
    for (let i = 0; i < b.count; i++) {
      const next = b.next[i];
      if (next === Next.Underlay) this.underlayIdx[nu++] = i;
      else if (next === Next.VmPort || next === Next.Reply) this.portIdx[b.outPort[i]][this.portCount[b.outPort[i]]++] = i;
      else if (next === Next.Drop && b.reason[i] === Drop.EspUnknownSpi) this.onUnknownSpi(readU32(b.data, b.l3[i] + ESP_OFF_SPI), b.peer[i]);
    }
    if (nu > 0) {
      for (let k = this.underlay.send(b, this.underlayIdx, nu); k < nu; k++) c.txRefused(b, this.underlayIdx[k], Drop.TxUnderlayError);
    }
    for (let p = 0; p < this.ports.length; p++) {
      const n = this.portCount[p];
      if (n === 0) continue;
      const idx = this.portIdx[p];
      for (let k = this.ports[p].send(b, idx, n); k < n; k++) c.txRefused(b, idx[k], Drop.TxPortError);
    }
  }
}
