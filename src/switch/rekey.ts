// Make-before-break rekey of an outbound SA: when encap reports an SA past a soft limit
// (age, packets, bytes) or used up, a new key exchange runs for the cable's pair while the
// old SA keeps carrying traffic; the new SA replaces it in one step, and the old key goes
// (the SA table removes it, and its SPI from the index of outbound SPIs).

import type { Logger } from '../base/log.js';
import type { Cable } from '../dataplane/cable.js';
import type { OutboundSa } from '../esp/sa.js';
import type { CableCache } from '../dataplane/cable-cache.js';
import type { PortTable } from '../dataplane/port-table.js';
import type { EspCipher } from '../esp/esp-cipher.js';
import type { KeyExchange } from './key-exchange.js';

export class Rekeyer {
  readonly counts = { rekeys: 0, rekeyFailures: 0 };
  private readonly running = new Set<string>();

  constructor(
    private readonly ports: PortTable,
    private readonly egress: CableCache,
    private readonly keys: KeyExchange,
    private readonly cipher: EspCipher,
    private readonly log: Logger,
    /** `c` carries a new SA instead of `old` (whose key is to go). */
    private readonly rekeyed: (c: Cable, old: OutboundSa) => void,
  ) {}

  /** Start a rekey of `c` unless one runs for its pair already. */
  rekey(c: Cable): void {
    const key = `${c.srcText} ${c.dstText}`;
    if (this.running.has(key) || c.srcPort < 0 || !this.ports.has(c.srcPort)) return;
    this.running.add(key);
    void this.keys.establish({ srcPort: this.ports.at(c.srcPort), dst: c.dstText, peerHost: c.peerHost, peerAddress: c.peerAddr }).then((r) => {
      this.running.delete(key);
      if (!r.ok) {
        this.counts.rekeyFailures++;
        this.log.warn('rekey-failed', { src: c.srcText, dst: c.dstText, detail: r.detail });
        return;
      }
      const current = this.egress.findCable(c);
      // The new SA goes to c's peer: not to a cable of the pair that goes elsewhere now (its VM moved meanwhile).
      if (!current || current.sa === null || current.peerAddr !== c.peerAddr) {
        this.cipher.removeKey(r.sa.key);
        return;
      }
      const old = current.sa;
      current.sa = r.sa;
      if (c !== current) c.sa = r.sa;
      this.rekeyed(current, old);
      this.counts.rekeys++;
    });
  }
}
