// A host's `stats` from its workers' (sharded-switch.ts): counters add up; lists of ports
// join; a histogram's buckets add up bucket by bucket; what describes the host or the
// process rather than a worker's share is taken from the first worker.

/** Keys whose value is the same for every worker (or the process's), not a share to add. */
const SAME = new Set(['host', 'policyRevision', 'revision', 'le', 'windowUs', 'rss']);

export function mergeStats(all: readonly unknown[]): unknown {
  return all.slice(1).reduce((acc, next) => merge(acc, next, ''), all[0]);
}

function merge(a: unknown, b: unknown, key: string): unknown {
  if (SAME.has(key)) return a ?? b;
  if (typeof a === 'number' && typeof b === 'number') return a + b;
  if (typeof a === 'boolean' && typeof b === 'boolean') return a && b; // e.g. store.fresh: every worker's replica is current
  if (Array.isArray(a) && Array.isArray(b)) {
    const buckets = a.length === b.length && a.every((x) => typeof x === 'object' && x !== null && 'le' in x);
    return buckets ? a.map((x, k) => merge(x, b[k], '')) : [...a, ...b];
  }
  if (isRecord(a) && isRecord(b)) {
    const out: Record<string, unknown> = { ...a };
    for (const [k, v] of Object.entries(b)) out[k] = k in a ? merge(a[k], v, k) : v;
    return out;
  }
  return a ?? b;
}

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}
