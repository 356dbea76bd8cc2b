// What a lab switch that did not stop on SIGTERM is doing, for `lab down` to say before it
// kills it: the kernel's view from /proc. Its run state, the system call it is in ("running":
// none, it is in user space), the kernel function it sleeps in, and how much CPU it burns over
// half a second: a loop spins at a whole core, a blocked call at none.

import { readFileSync } from 'node:fs';

/** One line on process `pid`, sampled over `ms`. */
export async function describeStuck(pid: number, ms = 500): Promise<string> {
  const a = readStat(pid);
  await new Promise((r) => setTimeout(r, ms));
  const b = readStat(pid);
  if (a === undefined || b === undefined) return 'gone';
  try {
    const syscall = readFileSync(`/proc/${pid}/syscall`, 'utf8').trim().split(' ')[0];
    const wchan = readFileSync(`/proc/${pid}/wchan`, 'utf8').trim() || '-';
    const busy = Math.round((100 * (b.cpu - a.cpu)) / (ms / 1000));
    return `state ${b.state}, system call ${syscall === 'running' ? 'none (user space)' : syscall}, kernel wait ${wchan}, ${busy}% of a core over ${ms} ms, CPU ${b.cpu.toFixed(1)} s in all`;
  } catch {
    return 'gone';
  }
}

/** Run state and utime + stime in seconds (clock ticks of 1/100 s) of `pid`, or undefined when it is gone. */
function readStat(pid: number): { state: string; cpu: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { state: f[0], cpu: (Number(f[11]) + Number(f[12])) / 100 };
  } catch {
    return undefined;
  }
}
