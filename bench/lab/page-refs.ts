// The pages a process touched since its accessed bits were cleared: write 1 to
// /proc/PID/clear_refs, let it work, then add up the `Referenced:` lines of /proc/PID/smaps.
// On a machine whose caches and TLB go cold while a CPU idles (a virtual machine), a lone
// packet pays for each page it touches; this counts them, the same count on a quiet and on a
// busy hour.
//
// Pages of shared libraries (libc, ld.so) count as referenced when any process touched them
// (the page's own flag, not only this process's page table): they are reported apart and left
// out of a process's own total. A mapping on huge pages (THP, node's --use-largepages) counts
// all 512 of a huge page's 4 KB pages when any of them was touched.

import { readFileSync, writeFileSync } from 'node:fs';

export const REGIONS = ['node code', 'node data', 'malloc heap', 'JIT code', 'anonymous', 'addons', 'stack', 'shared libraries', 'other'] as const;
export type Region = (typeof REGIONS)[number];
/** The regions a process touched itself (without shared libraries). */
export const OWN_REGIONS: readonly Region[] = REGIONS.filter((r) => r !== 'shared libraries');

const PAGE_KB = 4;
/** The header line of one mapping: start-end perms offset dev inode [path]. */
const MAPPING = /^[0-9a-f]+-[0-9a-f]+ ([rwxps-]{4}) \S+ \S+ \S+\s*(.*)$/;

/** Which region a mapping belongs to: `nodeBinary` is the path of node's executable. */
export function regionOf(perms: string, path: string, nodeBinary: string): Region {
  if (path === nodeBinary) return perms.includes('x') ? 'node code' : 'node data';
  if (path === '[heap]') return 'malloc heap';
  if (path === '[stack]') return 'stack';
  if (path === '') return perms.includes('x') ? 'JIT code' : 'anonymous';
  if (path.endsWith('.node')) return 'addons';
  if (/\.so(\.|$)/.test(path)) return 'shared libraries';
  return 'other';
}

/** Referenced 4 KB pages per region in the text of a smaps file. */
export function parseSmaps(text: string, nodeBinary: string): Map<Region, number> {
  const pages = new Map<Region, number>(REGIONS.map((r) => [r, 0]));
  let region: Region = 'other';
  for (const line of text.split('\n')) {
    const m = MAPPING.exec(line);
    if (m) {
      region = regionOf(m[1]!, m[2]!.trim(), nodeBinary);
      continue;
    }
    if (line.startsWith('Referenced:')) {
      const kb = Number(line.slice('Referenced:'.length).trim().split(/\s+/)[0]);
      if (!Number.isFinite(kb)) throw new Error(`smaps: unreadable line ${JSON.stringify(line)}`);
      pages.set(region, pages.get(region)! + kb / PAGE_KB);
    }
  }
  return pages;
}

/** Clear the accessed bits of every page of `pid` (needs root or the same user). */
export function clearReferenced(pid: number): void {
  writeFileSync(`/proc/${pid}/clear_refs`, '1');
}

/** The pages `pid` touched since clearReferenced, per region. */
export function referencedPages(pid: number, nodeBinary = process.execPath): Map<Region, number> {
  return parseSmaps(readFileSync(`/proc/${pid}/smaps`, 'utf8'), nodeBinary);
}

/** The sum over the process's own regions. */
export function ownTotal(pages: ReadonlyMap<Region, number>): number {
  return OWN_REGIONS.reduce((s, r) => s + (pages.get(r) ?? 0), 0);
}
