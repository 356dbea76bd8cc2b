// Processes and CPU accounting for the lab bench (bench/lab.ts).
//
// Commands run without a shell. Every child that may outlive a call (iperf3, ping,
// wireguard-go) is registered here, so that teardown stops it by its PID and nothing else.
// After abort() no new command starts: a SIGINT in the middle of a run ends the run.
//
// CPU: /proc/<pid>/stat utime + stime (fields 14 and 15) count every thread of the process;
// /proc/stat's first line counts the whole machine. Both are in clock ticks (CLK_TCK).
// Figures are "% of one core": 100 is one core busy for the whole window, 200 both of ours.

import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

export class BenchError extends Error {}

const children = new Set<ChildProcess>();
let aborted = false;

/** Refuse every new command from now on (a signal arrived, or teardown began). */
export function abort(): void {
  aborted = true;
}

export function isAborted(): boolean {
  return aborted;
}

/** Run to completion; throws a BenchError quoting the command and what it printed. */
export function sh(cmd: string, args: readonly string[], opts: { input?: string; env?: NodeJS.ProcessEnv } = {}): string {
  if (aborted) throw new BenchError('aborted');
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], input: opts.input ?? '', env: opts.env ?? process.env });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new BenchError(`${cmd} ${args.join(' ')}: ${(err.stderr || err.message).trim()}`);
  }
}

/** Read-only queries for teardown: run even after abort(); stdout, or '' on failure. */
export function query(cmd: string, args: readonly string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return r.status === 0 ? r.stdout : '';
}

/** Run and report success (cleanup, probes: absence is fine). Runs even after abort(). */
export function trySh(cmd: string, args: readonly string[]): boolean {
  return spawnSync(cmd, args, { stdio: 'ignore' }).status === 0;
}

/** `ip netns exec NS cmd args...` */
export function inNs(ns: string, cmd: string, ...args: string[]): string {
  return sh('ip', ['netns', 'exec', ns, cmd, ...args]);
}

export interface Running {
  readonly pid: number;
  readonly exited: Promise<number | null>;
  stdout(): string;
  stderr(): string;
  kill(sig?: NodeJS.Signals): void;
}

/**
 * Start a registered child. `ip netns exec` execs its command, so the PID is the
 * command's own (iperf3's, wireguard-go's), which is what CPU accounting reads.
 * With `logFile`, output goes there; otherwise it is kept in memory.
 */
export function start(cmd: string, args: readonly string[], opts: { logFile?: string; env?: NodeJS.ProcessEnv } = {}): Running {
  if (aborted) throw new BenchError('aborted');
  const fd = opts.logFile ? openSync(opts.logFile, 'a') : undefined;
  const child = spawn(cmd, args, { stdio: ['ignore', fd ?? 'pipe', fd ?? 'pipe'], env: opts.env ?? process.env });
  if (fd !== undefined) closeSync(fd);
  if (!child.pid) throw new BenchError(`could not start ${cmd} ${args.join(' ')}`);
  children.add(child);
  let out = '';
  let err = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => { out += d; });
  child.stderr?.setEncoding('utf8').on('data', (d: string) => { err += d; });
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => {
      children.delete(child);
      resolve(code);
    });
    child.once('error', (e) => {
      err += e.message;
      children.delete(child);
      resolve(null);
    });
  });
  const pid = child.pid;
  return {
    pid,
    exited,
    stdout: () => out,
    stderr: () => err,
    kill: (sig: NodeJS.Signals = 'SIGTERM') => {
      if (children.has(child)) child.kill(sig);
    },
  };
}

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves to the child's exit code, or 'timeout' (the child is then killed). */
export async function waitExit(r: Running, ms: number): Promise<number | null | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), ms); });
  const res = await Promise.race([r.exited, t]);
  clearTimeout(timer);
  if (res === 'timeout') {
    r.kill('SIGKILL');
    await r.exited;
  }
  return res;
}

/** Stop every registered child: SIGTERM, then SIGKILL after 3 s. */
export async function stopChildren(): Promise<void> {
  const list = [...children];
  if (list.length === 0) return;
  const exits = list.map((c) => new Promise<void>((resolve) => {
    if (c.exitCode !== null || c.signalCode !== null) resolve();
    else c.once('exit', () => resolve());
  }));
  for (const c of list) c.kill('SIGTERM');
  const all = Promise.all(exits).then(() => true);
  if (!(await Promise.race([all, delay(3000).then(() => false)]))) {
    for (const c of list) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await Promise.race([all, delay(2000)]);
  }
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The start time of `pid` (field 22 of /proc/<pid>/stat): with the PID, names one process. */
export function procStart(pid: number): string | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return s.slice(s.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

// ---- CPU ----

export const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout?.trim()) || 100;

/** utime and stime of every thread of `pid`, in ticks; undefined once it is gone. */
export function procTicks(pid: number): { user: number; sys: number } | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' '); // f[0] is field 3 (state)
    return { user: Number(f[11]), sys: Number(f[12]) };
  } catch {
    return undefined;
  }
}

interface MachineTicks { busy: number; softirq: number }

function machineTicks(): MachineTicks {
  // cpu  user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user)
  const v = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = v as [number, number, number, number, number, number, number, number];
  return { busy: user + nice + system + irq + softirq + steal, softirq };
}

export interface ProcCpu { pct: number; sysPct: number }
export interface CpuUse {
  /** Per watched process (label -> % of one core); missing when it never ran in the window. */
  readonly procs: Record<string, ProcCpu>;
  /** The whole machine, % of one core (200 = both cores busy); softirq is part of busy. */
  readonly busyPct: number;
  readonly softirqPct: number;
  readonly seconds: number;
}

interface Reading { t: number; user: number; sys: number }

/**
 * Samples the watched processes every 200 ms between begin() and end(). A process that
 * exits inside the window (the iperf3 client) is charged up to its last sample.
 */
export class CpuWatch {
  private readonly first = new Map<string, Reading>();
  private readonly last = new Map<string, Reading>();
  private m0: (MachineTicks & { t: number }) | undefined;
  private m1: (MachineTicks & { t: number }) | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly pids: ReadonlyMap<string, number>) {}

  begin(): void {
    this.sample();
    this.timer = setInterval(() => this.sample(), 200);
  }

  get begun(): boolean {
    return this.m0 !== undefined;
  }

  end(): CpuUse {
    clearInterval(this.timer);
    if (!this.m0) return { procs: {}, busyPct: NaN, softirqPct: NaN, seconds: 0 };
    this.sample();
    const procs: Record<string, ProcCpu> = {};
    for (const [label, a] of this.first) {
      const b = this.last.get(label)!;
      const s = (b.t - a.t) / 1000;
      if (s <= 0.1) continue;
      procs[label] = { pct: (100 * (b.user + b.sys - a.user - a.sys)) / CLK_TCK / s, sysPct: (100 * (b.sys - a.sys)) / CLK_TCK / s };
    }
    const m0 = this.m0;
    const m1 = this.m1!;
    const s = (m1.t - m0.t) / 1000;
    return { procs, busyPct: (100 * (m1.busy - m0.busy)) / CLK_TCK / s, softirqPct: (100 * (m1.softirq - m0.softirq)) / CLK_TCK / s, seconds: s };
  }

  private sample(): void {
    const t = performance.now();
    for (const [label, pid] of this.pids) {
      const r = procTicks(pid);
      if (!r) continue;
      const reading = { t, ...r };
      if (!this.first.has(label)) this.first.set(label, reading);
      this.last.set(label, reading);
    }
    const m = { t, ...machineTicks() };
    if (!this.m0) this.m0 = m;
    this.m1 = m;
  }
}
