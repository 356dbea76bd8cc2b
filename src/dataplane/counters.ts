// Counters of one pipeline, by stage and by fate. They never overlap and add up:
//   in + reinjected = delivered + underlay + consumed + replied + held + dropped
// where `dropped` is the sum of the per-reason drops (Packet Too Big replies count as
// drops of the packet that caused them, and as `errorsSent` for what was sent back).
// Pending upcalls hold (held - reinjected) packets at any moment.
//
// Every packet is counted once more under the row of whoever settled it: row 0 is the
// port (frames refused before they enter a batch), then one row per stage in order, then
// the transmit step (packets a port or the underlay refused). Summed over the rows, the
// per-row counts give the totals above.

import { Next, PacketFlag, type Batch } from './batch.js';
import { DROP_COUNT, DROP_INFO, Drop, isDrop } from '../base/drops.js';

/** Fates a row counts besides drops, in the order of `Next`. */
const FATES = 7;
const FATE_NAMES: Readonly<Partial<Record<Next, string>>> = {
  [Next.Underlay]: 'underlay',
  [Next.VmPort]: 'delivered',
  [Next.Held]: 'held',
  [Next.Consumed]: 'consumed',
  [Next.Reply]: 'replied',
};

export interface RowSnapshot {
  readonly [fate: string]: number | Record<string, number>;
}

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
  /** Packets of the last batch accounted that were dropped (verdict observers look only then). */
  batchDrops = 0;
  readonly drops = new Float64Array(DROP_COUNT);
  /** Row names: 'port', the stages in order, 'tx'. */
  readonly rows: readonly string[];
  /** Drops by row and reason: [row * DROP_COUNT + reason]. */
  readonly rowDrops: Float64Array;
  /** Other fates by row: [row * FATES + next]. */
  readonly rowFates: Float64Array;
  readonly txRow: number;

  constructor(stageNames: readonly string[]) {
    this.rows = ['port', ...stageNames, 'tx'];
    this.txRow = this.rows.length - 1;
    this.rowDrops = new Float64Array(this.rows.length * DROP_COUNT);
    this.rowFates = new Float64Array(this.rows.length * FATES);
  }

  /** Count the fate of every packet of a batch once all stages ran. */
  account(b: Batch): void {
    let dropped = 0;
    for (let i = 0; i < b.count; i++) {
      if ((b.flags[i] & PacketFlag.Reinjected) !== 0) this.reinjected++;
      else this.in++;
      const next = b.next[i];
      const row = b.by[i];
      switch (next) {
        case Next.Drop:
          this.drop(row, b.reason[i], 1);
          dropped++;
          continue;
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
          if (b.reason[i] !== Drop.None) {
            this.drop(row, b.reason[i], 1);
            this.errorsSent++;
            dropped++;
            continue;
          }
          this.replied++;
          break;
        case Next.Held:
          this.held++;
          break;
        default:
          throw new Error(`packet ${i} left the pipeline still active: a stage forgot it`);
      }
      this.rowFates[row * FATES + next]++;
    }
    this.batchDrops = dropped;
  }

  /** Packets refused at a port before they could enter a batch (offloaded frames that make no sense). */
  refusedAtPort(reason: Drop, n: number): void {
    this.in += n;
    this.drop(0, reason, n);
  }

  /**
   * Packet i of a batch, settled as `b.next[i]` by row `b.by[i]`, was refused by its port:
   * it moves from that fate to a transmit drop for `reason` (a Packet Too Big reply the port
   * refused stays counted under the drop that caused it).
   */
  txRefused(b: Batch, i: number, reason: Drop): void {
    const next = b.next[i];
    if (next === Next.Reply && b.reason[i] !== Drop.None) {
      this.errorsSent--;
      return;
    }
    if (next === Next.Underlay) this.underlay--;
    else if (next === Next.VmPort) this.delivered--;
    else if (next === Next.Reply) this.replied--;
    this.rowFates[b.by[i] * FATES + next]--;
    this.drop(this.txRow, reason, 1);
  }

  private drop(row: number, reason: number, n: number): void {
    this.drops[reason] += n;
    this.rowDrops[row * DROP_COUNT + reason] += n;
  }

  dropped(): number {
    let n = 0;
    for (let k = 0; k < DROP_COUNT; k++) n += this.drops[k];
    return n;
  }

  /** Name -> count for every reason that occurred. */
  dropsByName(): Record<string, number> {
    return named(this.drops, 0);
  }

  /** Per row (port, each stage, tx): what it settled and its drops by reason; rows with nothing are left out. */
  byStage(): Record<string, RowSnapshot> {
    const out: Record<string, RowSnapshot> = {};
    this.rows.forEach((name, row) => {
      const r: Record<string, number | Record<string, number>> = {};
      for (const [next, fate] of Object.entries(FATE_NAMES)) {
        const n = this.rowFates[row * FATES + Number(next)];
        if (n > 0) r[fate] = n;
      }
      const drops = named(this.rowDrops, row * DROP_COUNT);
      if (Object.keys(drops).length > 0) r.drops = drops;
      if (Object.keys(r).length > 0) out[name] = r;
    });
    return out;
  }

  snapshot(): PipeSnapshot {
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
      stages: this.byStage(),
    };
  }
}

export interface PipeSnapshot {
  readonly in: number;
  readonly reinjected: number;
  readonly delivered: number;
  readonly underlay: number;
  readonly consumed: number;
  readonly replied: number;
  readonly errorsSent: number;
  readonly held: number;
  readonly dropped: number;
  readonly drops: Record<string, number>;
  readonly stages: Record<string, RowSnapshot>;
}

function named(counts: Float64Array, base: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (let k = 1; k < DROP_COUNT; k++) {
    const n = counts[base + k];
    if (n > 0 && isDrop(k)) out[DROP_INFO[k][0]] = n;
  }
  return out;
}
