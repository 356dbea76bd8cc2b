// A UDP probe between two lab VMs (test/e2e/net.py): the sender sends a numbered datagram
// every interval, the receiver logs every silence longer than 5 ms with its wall-clock start.
// Blackouts of migrations and restarts are read from those silences.

import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const NET_PY = join(fileURLToPath(new URL('../../../', import.meta.url)), 'test', 'e2e', 'net.py');

export interface Gap {
  /** Wall-clock ms when the silence began. */
  readonly at: number;
  readonly ms: number;
}

/** net.py in VM namespace `ns`; `ready` once it listens, `done` with its JSON report. */
export function netpy(ns: string, args: (string | number)[], children: ChildProcess[]): { done: Promise<Record<string, unknown>>; ready: Promise<void> } {
  const c = spawn('ip', ['netns', 'exec', ns, 'python3', NET_PY, ...args.map(String)], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(c);
  let out = '';
  let readyResolve!: () => void;
  const ready = new Promise<void>((r) => (readyResolve = r));
  c.stdout!.setEncoding('utf8').on('data', (d: string) => {
    out += d;
    if (out.includes('"listening"')) readyResolve();
  });
  const done = new Promise<Record<string, unknown>>((res, rej) => c.on('close', (code) => {
    const lines = out.trim().split('\n');
    if (code !== 0) rej(new Error(`net.py ${args.join(' ')} in ${ns}: exit ${code}`));
    else res(JSON.parse(lines[lines.length - 1]) as Record<string, unknown>);
  }));
  return { done, ready };
}

/** The longest silence that overlaps [from - 50, to + 50] ms; 0 when none. */
export function longestGap(gaps: readonly Gap[], from: number, to: number): number {
  return Math.max(0, ...gaps.filter((g) => g.at <= to + 50 && g.at + g.ms >= from - 50).map((g) => g.ms));
}

export function quantiles(xs: readonly number[]): string {
  if (xs.length === 0) return 'none';
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number): number => s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)];
  return `p50 ${q(0.5).toFixed(1)} ms, p99 ${q(0.99).toFixed(1)} ms, max ${s[s.length - 1].toFixed(1)} ms`;
}

/** p50 / p99 / max of microsecond figures, in ms with two decimals. */
export function quantilesUs(us: readonly number[]): string {
  if (us.length === 0) return 'none';
  const s = [...us].sort((a, b) => a - b);
  const q = (p: number): number => s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)] / 1000;
  return `p50 ${q(0.5).toFixed(2)} ms, p99 ${q(0.99).toFixed(2)} ms, max ${(s[s.length - 1] / 1000).toFixed(2)} ms`;
}
