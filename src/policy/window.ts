// A rule's weekly time window, compiled to intervals of the week (ms after Monday 00:00
// local time) and the instants where it opens or closes. Time is always passed in (ms since
// the epoch); nothing here reads the clock.

import type { WindowSpec } from './model.js';

const MINUTE = 60_000;
const DAY = 1440 * MINUTE;
const WEEK = 7 * DAY;
/** The Unix epoch (1970-01-01) was a Thursday: day 3 of a week that starts on Monday. */
const EPOCH_IN_WEEK = 3 * DAY;

export class TimeWindow {
  readonly text: string;
  private readonly offset: number;
  /** Merged, sorted, disjoint [start, end) intervals within [0, WEEK]. */
  private readonly starts: number[] = [];
  private readonly ends: number[] = [];
  /** Points of the week (in [0, WEEK)) where the window opens or closes, ascending. */
  private readonly changes: number[] = [];

  constructor(spec: WindowSpec) {
    this.text = spec.text;
    this.offset = spec.offset * MINUTE;
    const raw: [number, number][] = [];
    for (const d of spec.days) {
      const s = d * DAY + spec.from * MINUTE;
      const e = spec.to > spec.from ? d * DAY + spec.to * MINUTE : (d + 1) * DAY + spec.to * MINUTE;
      if (e <= WEEK) raw.push([s, e]);
      else raw.push([s, WEEK], [0, e - WEEK]); // Sunday night into Monday morning
    }
    raw.sort((a, b) => a[0] - b[0]);
    for (const [s, e] of raw) {
      const last = this.ends.length - 1;
      if (last >= 0 && s <= this.ends[last]) this.ends[last] = Math.max(this.ends[last], e);
      else {
        this.starts.push(s);
        this.ends.push(e);
      }
    }
    const points = new Set<number>();
    for (let k = 0; k < this.starts.length; k++) points.add(this.starts[k] % WEEK).add(this.ends[k] % WEEK);
    for (const p of [...points].sort((a, b) => a - b)) {
      if (this.activeAt(p) !== this.activeAt((p - 1 + WEEK) % WEEK)) this.changes.push(p);
    }
  }

  /** Is the window open at `now` (ms since the epoch)? */
  active(now: number): boolean {
    return this.activeAt(this.position(now));
  }

  /** The first instant after `now` at which the window opens or closes; Infinity if it never does. */
  nextChange(now: number): number {
    if (this.changes.length === 0) return Infinity;
    const pos = this.position(now);
    for (const c of this.changes) if (c > pos) return now + (c - pos);
    return now + (this.changes[0] + WEEK - pos);
  }

  private position(now: number): number {
    const x = (now + this.offset + EPOCH_IN_WEEK) % WEEK;
    return x < 0 ? x + WEEK : x;
  }

  private activeAt(pos: number): boolean {
    for (let k = 0; k < this.starts.length; k++) if (pos >= this.starts[k] && pos < this.ends[k]) return true;
    return false;
  }
}
