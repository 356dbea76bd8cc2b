// Times in the data path's records (cables, SAs) as ticks: milliseconds since 1970 taken
// modulo 2^32 as an int32 (`ms | 0`). A tick is a small integer in V8, so a record keeps it in
// its own field; a time kept as a double is a boxed number of its own (16 bytes, and one more
// pointer to follow on every packet that checks it).
//
// Two ticks compare right while they are less than 2^31 ms (24.8 days) apart, the way the
// kernel compares jiffies. So a deadline is set at most MAX_AHEAD_MS (12.4 days) ahead, "never"
// included, and every record is checked or swept well within 12.4 days of its deadline: a
// cable lives at most 2 TTLs (2 days at most) before its next verification, an SA at most
// as long as its cable, and an SA's grace time is an hour at most.

/** How far ahead of now a deadline may be (ms): 12.4 days. A deadline of Infinity is this far. */
export const MAX_AHEAD_MS = 2 ** 30;

/** The tick of `ms` (ms since 1970). */
export function tickOf(ms: number): number {
  return ms | 0;
}

/** The tick of deadline `at` (ms since 1970; Infinity: never), at most MAX_AHEAD_MS after `now`. */
export function deadline(now: number, at: number): number {
  return Math.min(at, now + MAX_AHEAD_MS) | 0;
}

/** True when tick `now` is at or past tick `t`. */
export function reached(now: number, t: number): boolean {
  return ((now - t) | 0) >= 0;
}

/** The earlier of ticks `a` and `b`. */
export function earlier(a: number, b: number): number {
  return ((a - b) | 0) <= 0 ? a : b;
}

/** Milliseconds since 1970 of tick `t`, told at `now` (ms since 1970); `t` within 24.8 days of it. */
export function msOf(now: number, t: number): number {
  return now + ((t - (now | 0)) | 0);
}
