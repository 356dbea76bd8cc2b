// Packet captures in the bench lab's namespaces, with the kernel's nanosecond stamps (one clock:
// the namespaces share it), and what the benches read back from them with tshark.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';

export interface CapturePoint {
  /** Names the capture file. */
  readonly name: string;
  readonly ns: string;
  readonly dev: string;
  /** A tcpdump filter. */
  readonly filter: string;
}

/** tcpdump on each point, writing `file(name)`; stop them with stopCaptures once they have listened a while. */
export function startCaptures(points: readonly CapturePoint[], file: (name: string) => string): ChildProcess[] {
  return points.map((w) =>
    spawn('ip', ['netns', 'exec', w.ns, 'tcpdump', '-i', w.dev, '-s', '160', '--time-stamp-precision=nano', '-U', '-w', file(w.name), w.filter], { stdio: ['ignore', 'ignore', 'pipe'] }));
}

export async function stopCaptures(dumps: readonly ChildProcess[]): Promise<void> {
  for (const d of dumps) d.kill('SIGINT');
  await Promise.all(dumps.map((d) => new Promise((r) => (d.exitCode !== null ? r(null) : d.once('exit', r)))));
}

/** tshark's fields of a capture, one array per packet matching `filter`. */
export function fields(file: string, filter: string, names: readonly string[]): string[][] {
  const r = spawnSync('tshark', ['-r', file, '-Y', filter, '-T', 'fields', ...names.flatMap((n) => ['-e', n])], { encoding: 'utf8', maxBuffer: 256 * 2 ** 20 });
  if (r.status !== 0) throw new Error(`tshark ${file}: ${r.stderr}`);
  return r.stdout.trim().split('\n').filter((l) => l !== '').map((l) => l.split('\t'));
}

/** A bytes field as tshark prints it (hex, with or without colons). */
export function hexBytes(text: string): Buffer {
  return Buffer.from(text.replace(/:/g, ''), 'hex');
}

/** The first time in `sorted` after `t`. */
export function after(sorted: readonly number[], t: number): number | undefined {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid]! <= t) lo = mid + 1;
    else hi = mid;
  }
  return sorted[lo];
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** Fail loudly when a tool the capture needs is missing. */
export function needTools(tools: readonly string[], refuse: (why: string) => never): void {
  for (const tool of tools) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) refuse(`${tool} is missing (scripts/setup.sh installs it)`);
  }
}
