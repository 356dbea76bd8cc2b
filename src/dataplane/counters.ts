// Counters of one pipeline. They never overlap and add up:
//   in + reinjected = delivered + underlay + consumed + replied + held + dropped
// where `dropped` is the sum of the per-reason drops (Packet Too Big replies count as
// drops of the packet that caused them, and as `replies` for what was sent back).
// Pending upcalls hold (held - reinjected) packets at any moment.

import { Next, PacketFlag, type Batch } from './batch.js';
import { DROP_COUNT, DROP_INFO, Drop } from '../base/drops.js';

export class PipelineCounters {
  in = 0;
  reinjected = 0;
  /** Frames handed to a VM port. */
  delivered = 0;
  /** Packets handed to the underlay. */
  underlay = 0;
  /** ND/MLD frames absorbed by the switch. */
  consumed = 0;
  /** Requests (NS, RS) answered in place. */
  replied = 0;
  /** Packets that caused an ICMPv6 error sent back (Packet Too Big); also counted in drops. */
  errorsSent = 0;
  held = 0;
  bytesIn = 0;
  readonly drops = new Float64Array(DROP_COUNT);

  /** Count the fate of every packet of a batch once all stages ran. */
  account(b: Batch): void {
    for (let i = 0; i < b.count; i++) {
      if ((b.flags[i] & PacketFlag.Reinjected) !== 0) this.reinjected++;
      else this.in++;
      switch (b.next[i]) {
        case Next.Drop:
          this.drops[b.reason[i]]++;
          break;
        case Next.Underlay:
          this.underlay++;
          break;
        case Next.VmPort:
          this.delivered++;
          break;
        case Next.Consumed:
          this.consumed++;
          break;
        case Next.Reply:
          if (b.reason[i] === Drop.None) this.replied++;
          else {
            this.drops[b.reason[i]]++;
            this.errorsSent++;
          }
          break;
        case Next.Held:
          this.held++;
          break;
        default:
          throw new Error(`packet ${i} left the pipeline still active: a stage forgot it`);
      }
    }
  }

  /** Packets refused at a port before they could enter a batch (offloaded frames that make no sense). */
  refusedAtPort(reason: Drop, n: number): void {
    this.in += n;
    this.drops[reason] += n;
  }

  dropped(): number {
    let n = 0;
    for (let k = 0; k < DROP_COUNT; k++) n += this.drops[k];
    return n;
  }

  /** Name -> count for every reason that occurred. */
  dropsByName(): Record<string, number> {
    const out: Record<string, number> = {};
    for (let k = 1; k < DROP_COUNT; k++) if (this.drops[k] > 0) out[DROP_INFO[k as Drop][0]] = this.drops[k];
    return out;
  }

  snapshot(): Record<string, number | Record<string, number>> {
    return {
      in: this.in,
      reinjected: this.reinjected,
      delivered: this.delivered,
      underlay: this.underlay,
      consumed: this.consumed,
      replied: this.replied,
      errorsSent: this.errorsSent,
      held: this.held,
      dropped: this.dropped(),
      drops: this.dropsByName(),
    };
  }
}
