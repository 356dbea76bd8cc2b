// After the pipeline: every packet of a batch to its sink, in order, one call per sink. The
// underlay gets its packets, each VM port its frames and replies; a packet a sink refuses
// becomes a transmit drop. An ESP packet dropped for an unknown SPI, or because its VM left
// this host, makes the key exchange tell its sender (a signed NOTIFY), so that sender looks
// the destination up and plugs the cable again at once.

import { Drop } from '../base/drops.js';
import { BATCH_MAX, Next, PacketFlag, type Batch } from '../dataplane/batch.js';
import type { PipelineCounters } from '../dataplane/counters.js';
import { ESP_HLEN, ESP_OFF_SPI } from '../wire/esp.js';
import { readU32 } from '../wire/ipv4.js';

/** Where packets leave: the underlay port, or a VM port. */
export interface PacketSink {
  /** Send packets b[idx[0..n)]; returns how many were sent, in order (the rest failed). */
  send(b: Batch, idx: Int32Array, n: number): number;
  /** Why the packets not sent were refused (default tx/port-error or tx/underlay-error). */
  refusal?(): Drop;
}

const NOWHERE: PacketSink = { send: () => 0 };

export class TxFanout {
  private underlay: PacketSink = NOWHERE;
  /** By port index; a port without a sink (detached, or not attached yet) refuses everything. */
  private ports: PacketSink[] = [];
  private readonly underlayIdx = new Int32Array(BATCH_MAX);
  private portIdx: Int32Array[] = [];
  private portCount = new Int32Array(0);

  constructor(private readonly onNotify: (spi: number, from: number, moved: boolean) => void) {}

  setUnderlay(underlay: PacketSink): void {
    this.underlay = underlay;
  }

  /** Port `index` sends through `sink` (undefined: it is gone). Between batches only. */
  setPort(index: number, sink: PacketSink | undefined): void {
    while (this.ports.length <= index) {
      this.ports.push(NOWHERE);
      this.portIdx.push(new Int32Array(BATCH_MAX));
    }
    if (this.portCount.length < this.ports.length) this.portCount = new Int32Array(this.ports.length);
    this.ports[index] = sink ?? NOWHERE;
  }

  /** Hand every packet of `b` to its sink; refusals are counted in `c` as transmit drops. */
  send(b: Batch, c: PipelineCounters): void {
    let nu = 0;
    this.portCount.fill(0);
    for (let i = 0; i < b.count; i++) {
      const next = b.next[i];
      if (next === Next.Underlay) this.underlayIdx[nu++] = i;
      else if (next === Next.VmPort || next === Next.Reply) this.portIdx[b.outPort[i]][this.portCount[b.outPort[i]]++] = i;
      else if (next === Next.Drop && (b.flags[i] & PacketFlag.Esp) !== 0) {
        // The ESP header: still at l3 when esp-decap refused the SPI; just before the inner packet once decrypted.
        if (b.reason[i] === Drop.EspUnknownSpi) this.onNotify(readU32(b.data, b.l3[i] + ESP_OFF_SPI), b.peer[i], false);
        else if (b.reason[i] === Drop.VmMoved) this.onNotify(readU32(b.data, b.l3[i] - ESP_HLEN + ESP_OFF_SPI), b.peer[i], true);
      }
    }
    if (nu > 0) {
      for (let k = this.underlay.send(b, this.underlayIdx, nu); k < nu; k++) c.txRefused(b, this.underlayIdx[k], Drop.TxUnderlayError);
    }
    for (let p = 0; p < this.ports.length; p++) {
      const n = this.portCount[p];
      if (n === 0) continue;
      const idx = this.portIdx[p];
      const sink = this.ports[p];
      const sent = sink.send(b, idx, n);
      if (sent === n) continue;
      const why = sink.refusal?.() ?? Drop.TxPortError;
      for (let k = sent; k < n; k++) c.txRefused(b, idx[k], why);
    }
  }
}
