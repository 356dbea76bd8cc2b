// The lab of nvi-switch.yaml for the end-to-end tests (test/e2e-*.test.ts), built by the real
// CLI (`nvi-switch lab up --export-sa`) from a copy of the config in a temporary directory:
//   lab.prefix  nvi-t-        (never the developer's nvi- lab, nor another engineer's bench lab)
//   pki.dir     <tmp>/pki, a copy of <repo>/lab/pki (tests move keys around in it)
//   store.path  <tmp>/lab.db
// plus the overrides a test asks for (e.g. switch.esp.rekey.packets).
//
// Cleanup: `down()` stops every background command this fixture started and runs
// `nvi-switch lab down`; the same happens synchronously on process exit and on SIGINT/SIGTERM,
// so no namespace, TAP or switch process outlives the test process. Every command is bounded
// by timeout(1), so even a SIGKILLed test leaves nothing running for long (the lab itself then
// needs `nvi-switch lab down -c <tmp>/lab.yaml`; newLab refuses to start over it).
//
// The temporary directory (config, switch logs .nvi-state/lab/<host>.log, captures) is removed
// after a clean run and kept, with its path printed, when a test failed.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';
import { loadConfig, type CloudConfig, type VmConfig } from '../src/config/config.js';
import { formatMac } from '../src/base/address.js';
import { ROUTER_MAC } from '../src/dataplane/vm-port.js';
import { etcdMembers, startEtcdMember, waitEtcdHealthy } from '../src/lab/etcd.js';
import { atExit } from './at-exit.js';

/** The repository: this file runs as dist/test/e2e-fixture.js. */
export const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const BIN = join(REPO, 'bin', 'nvi-switch.js');
export const NET_PY = join(REPO, 'test', 'e2e', 'net.py');
export const PREFIX = 'nvi-t-';
export const ROUTER_MAC_TEXT = formatMac(ROUTER_MAC);

export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** A command in the background (bounded by timeout(1)); its output accumulates. */
export class Background {
  stdout = '';
  stderr = '';
  readonly done: Promise<RunResult>;
  private exited = false;

  constructor(readonly what: string, readonly child: ChildProcess) {
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (this.stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    this.done = new Promise((resolve) => {
      child.on('close', (code, signal) => {
        this.exited = true;
        resolve({ code: code ?? (signal ? 128 : -1), stdout: this.stdout, stderr: this.stderr });
      });
      child.on('error', (e) => {
        this.exited = true;
        resolve({ code: -1, stdout: this.stdout, stderr: `${this.stderr}${e.message}` });
      });
    });
  }

  get running(): boolean {
    return !this.exited;
  }

  /** Resolve once `re` shows in stdout or stderr; reject at the deadline or if the command ends first. */
  async waitFor(re: RegExp, ms = 10_000): Promise<void> {
    const end = Date.now() + ms;
    while (!re.test(this.stdout) && !re.test(this.stderr)) {
      if (!this.running) throw new Error(`${this.what} ended before printing ${re}: ${this.stderr}${this.stdout}`);
      if (Date.now() > end) throw new Error(`${this.what} did not print ${re} within ${ms} ms: ${this.stderr}${this.stdout}`);
      await sleep(20);
    }
  }

  /** Send `signal` (timeout(1) passes it on to the command) and wait for the end. */
  async stop(signal: NodeJS.Signals = 'SIGINT', ms = 10_000): Promise<RunResult> {
    if (this.running && this.child.pid) {
      try {
        process.kill(this.child.pid, signal);
      } catch {
        // already gone
      }
    }
    const timer = setTimeout(() => this.kill(), ms);
    const r = await this.done;
    clearTimeout(timer);
    return r;
  }

  /** SIGKILL the command's process group (timeout(1) leads its own group). */
  kill(): void {
    if (!this.running || !this.child.pid) return;
    for (const target of [-this.child.pid, this.child.pid]) {
      try {
        process.kill(target, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Run `cmd args` under timeout(1); resolves with its exit code and output (124: timed out). */
export function run(cmd: string, args: readonly string[], timeoutS = 30): Promise<RunResult> {
  return bounded(cmd, args, timeoutS).done;
}

function bounded(cmd: string, args: readonly string[], timeoutS: number, signal = 'TERM'): Background {
  const child = spawn('timeout', ['-k', '3', '-s', signal, String(timeoutS), cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Background(`${cmd} ${args.join(' ')}`, child);
}

export interface LabOptions {
  /** Dotted YAML paths and values to set in the copy of nvi-switch.yaml. */
  readonly set?: Readonly<Record<string, unknown>>;
  /** The store on etcd with this many members on the fabric (10.77.0.250, .251, ...), as nvi-switch-etcd.yaml has one. */
  readonly etcd?: number;
}

export interface Vm {
  readonly name: string;
  readonly ns: string;
  readonly tap: string;
  readonly id: string;
  readonly mac: string;
  readonly tenant: string;
  readonly host: string;
}

/** Counters of one pipeline (src/dataplane/counters.ts), as `stats --json` prints them. */
export interface PipeStats {
  in: number;
  reinjected: number;
  delivered: number;
  underlay: number;
  consumed: number;
  replied: number;
  errorsSent: number;
  held: number;
  dropped: number;
  drops: Record<string, number>;
  /** Per stage (and 'port', 'tx'): what it settled, and its drops by reason. */
  stages: Record<string, Record<string, number | Record<string, number>>>;
}

export interface HostStats {
  host: string;
  egress: PipeStats;
  ingress: PipeStats;
  upcall: { misses: number; plugs: number; released: number; queued: number; inFlight: number };
  cables: { rekeys: number; rekeyFailures: number; retiredSas: number; egress: number; ingress: number; inboundSas: number; windowsWithBlocks: number };
  ports: { vm?: string; name: string; up: boolean; rx: number; tx: number; txRefused: number; txBusy: number; failure: string | null }[];
  underlay: { rx: number; rxErrors: number; tx: number; txRefused: number; txBusy: number };
  kx: Record<string, unknown>;
  verifier: Record<string, unknown>;
  busyPoll: { windowUs: number; turns: number };
}

export interface CableInfo {
  direction: 'egress' | 'ingress';
  srcVm?: string;
  dstVm?: string;
  peer: string;
  state: string;
  rule: string;
  epoch?: number;
  sa?: string;
  packets: number;
  bytes: number;
  drops: number;
}

const live = new Set<Lab>();
let hooked = false;

/** Synchronous last resort at exit: stop what is left of every lab this process started. */
function exitCleanup(): void {
  for (const lab of live) lab.downSync();
}

function hookExit(): void {
  if (hooked) return;
  hooked = true;
  atExit(exitCleanup);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      process.stderr.write(`\n${sig}: taking the e2e lab down\n`);
      process.exit(130);
    });
  }
}

export class Lab {
  readonly config: string;
  cfg: CloudConfig;
  readonly fabric = `${PREFIX}fabric`;
  private readonly background = new Set<Background>();
  private isUp = false;

  constructor(readonly dir: string, opts: LabOptions) {
    const doc = parse(readFileSync(join(REPO, 'nvi-switch.yaml'), 'utf8')) as Record<string, unknown>;
    setPath(doc, 'lab.prefix', PREFIX);
    // A copy of the lab's pki: attach, detach and migration write and move keys in it.
    cpSync(join(REPO, 'lab', 'pki'), join(dir, 'pki'), { recursive: true });
    setPath(doc, 'pki.dir', join(dir, 'pki'));
    setPath(doc, 'store.path', join(dir, 'lab.db'));
    if (opts.etcd) {
      setPath(doc, 'store.kind', 'etcd');
      setPath(doc, 'store.endpoints', Array.from({ length: opts.etcd }, (_, k) => `http://10.77.0.${250 + k}:2379`));
    }
    for (const [path, value] of Object.entries(opts.set ?? {})) setPath(doc, path, value);
    this.config = join(dir, 'lab.yaml');
    writeFileSync(this.config, stringify(doc));
    this.cfg = loadConfig(this.config);
  }

  /** Read the config again (a command changed it: vm create, migrate). */
  reload(): void {
    this.cfg = loadConfig(this.config);
  }

  vm(name: string): Vm {
    const v: VmConfig | undefined = this.cfg.vms.get(name);
    if (!v) throw new Error(`no VM ${name}`);
    return { name, ns: `${PREFIX}${name}`, tap: v.tap, id: v.identityText, mac: formatMac(v.mac), tenant: v.tenant, host: v.host };
  }

  hostNs(host: string): string {
    return `${PREFIX}${host}`;
  }

  hostAddress(host: string): string {
    return this.cfg.hosts.get(host)!.addressText;
  }

  logOf(host: string): string {
    const p = join(this.dir, '.nvi-state', 'lab', `${host}.log`);
    return existsSync(p) ? readFileSync(p, 'utf8') : '';
  }

  /** Lines of the host's switch log above info level (warnings, errors). */
  complaints(host: string): string[] {
    return this.logOf(host).split('\n').filter((l) => l.length > 0 && !l.includes('"level":"info"'));
  }

  saExport(host: string): string[] {
    const p = join(this.dir, '.nvi-state', 'lab', `${host}.esp_sa`);
    return existsSync(p) ? readFileSync(p, 'utf8').split('\n').filter((l) => l.length > 0) : [];
  }

  /** `etcdctl ARGS` against the lab's etcd, from the fabric namespace. */
  etcdctl(args: readonly string[], timeoutS = 15): Promise<RunResult> {
    return this.inNs(this.fabric, 'etcdctl', [`--endpoints=${this.cfg.store.endpoints.join(',')}`, '--dial-timeout=2s', ...args], timeoutS);
  }

  /** Stop etcd member k (SIGTERM, SIGKILL after 5 s) and wait until it is gone. */
  async stopEtcd(k: number): Promise<void> {
    const pid = this.etcdPids()[k]?.pid;
    if (pid === undefined) throw new Error(`no etcd member ${k}`);
    const alive = (): boolean => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    if (alive()) process.kill(pid, 'SIGTERM');
    for (let t = 0; t < 100 && alive(); t++) await sleep(50);
    if (alive()) process.kill(pid, 'SIGKILL');
  }

  /** Start etcd member k again (on its kept data), recorded in the lab state so that lab down stops it. */
  startEtcd(k: number): void {
    const labDir = join(this.dir, '.nvi-state', 'lab');
    const members = etcdMembers(this.cfg.store.endpoints, labDir);
    const pid = startEtcdMember(this.fabric, members[k], members, join(labDir, `etcd-${members[k].name}.log`));
    const p = join(labDir, 'state.json');
    const state = JSON.parse(readFileSync(p, 'utf8')) as { etcd: { name: string; pid: number; log: string }[] };
    state.etcd[k] = { ...state.etcd[k], pid };
    writeFileSync(p, JSON.stringify(state, null, 2));
  }

  /** Every etcd member answers its health check. */
  etcdHealthy(timeoutMs = 20_000): Promise<void> {
    return waitEtcdHealthy(this.fabric, this.cfg.store.endpoints, timeoutMs, join(this.dir, '.nvi-state', 'lab', 'etcd-m0.log'));
  }

  /** The etcd members as the lab state names them. */
  etcdPids(): { name: string; pid: number }[] {
    const p = join(this.dir, '.nvi-state', 'lab', 'state.json');
    if (!existsSync(p)) return [];
    return (JSON.parse(readFileSync(p, 'utf8')) as { etcd?: { name: string; pid: number }[] }).etcd ?? [];
  }

  /** PIDs of the switches as the lab state names them. */
  switchPids(): { host: string; pid: number }[] {
    const p = join(this.dir, '.nvi-state', 'lab', 'state.json');
    if (!existsSync(p)) return [];
    return (JSON.parse(readFileSync(p, 'utf8')) as { switches: { host: string; pid: number }[] }).switches;
  }

  /** The CLI as the cloud's operator, from inside host h1's namespace (where an etcd store on the fabric is reached). */
  operator(args: readonly string[], timeoutS = 30): Promise<RunResult> {
    return run('ip', ['netns', 'exec', this.hostNs('h1'), process.execPath, BIN, ...args, '-c', this.config], timeoutS);
  }

  cli(args: readonly string[], timeoutS = 30): Promise<RunResult> {
    return run(process.execPath, [BIN, ...args, '-c', this.config], timeoutS);
  }

  /** `cmd args` inside network namespace `ns`. */
  inNs(ns: string, cmd: string, args: readonly string[], timeoutS = 30): Promise<RunResult> {
    return run('ip', ['netns', 'exec', ns, cmd, ...args], timeoutS);
  }

  /** `cmd args` inside `ns`, in the background; stopped by down() at the latest. */
  bg(ns: string, cmd: string, args: readonly string[], timeoutS = 60, signal = 'TERM'): Background {
    const b = bounded('ip', ['netns', 'exec', ns, cmd, ...args], timeoutS, signal);
    this.background.add(b);
    void b.done.then(() => this.background.delete(b));
    return b;
  }

  /** test/e2e/net.py in a VM's namespace; its JSON answer. */
  async py(vm: string, args: readonly (string | number)[], timeoutS = 30): Promise<Record<string, unknown>> {
    const r = await this.inNs(this.vm(vm).ns, 'python3', [NET_PY, ...args.map(String)], timeoutS);
    if (r.code !== 0) throw new Error(`net.py ${args.join(' ')} in ${vm}: exit ${r.code}: ${r.stderr}`);
    return lastJson(r.stdout);
  }

  /** test/e2e/net.py in the background (servers); wait for `listening` before talking to it. */
  async pyServer(vm: string, args: readonly (string | number)[], timeoutS = 30): Promise<{ result: () => Promise<Record<string, unknown>> }> {
    const b = this.bg(this.vm(vm).ns, 'python3', [NET_PY, ...args.map(String)], timeoutS);
    await b.waitFor(/"listening"/);
    return {
      result: async () => {
        const r = await b.done;
        if (r.code !== 0) throw new Error(`net.py ${args.join(' ')} in ${vm}: exit ${r.code}: ${r.stderr}`);
        return lastJson(r.stdout);
      },
    };
  }

  /**
   * tcpdump on `iface` in `ns` into a file of the lab directory; resolves once it listens.
   * --immediate-mode: without it packets wait in the kernel's capture ring for up to a second
   * and a tcpdump stopped meanwhile writes none of them ("0 captured, 6 received by filter").
   */
  async capture(name: string, ns: string, iface: string, filter: string, timeoutS = 120): Promise<Capture> {
    const file = join(this.dir, `${name}.pcap`);
    const b = this.bg(ns, 'tcpdump', ['-i', iface, '-n', '--immediate-mode', '-B', '131072', '-U', '-s', '0', '-w', file, ...(filter ? [filter] : [])], timeoutS, 'INT');
    await b.waitFor(/listening on/);
    return new Capture(file, b);
  }

  async stats(): Promise<Record<string, HostStats>> {
    const r = await this.cli(['stats', '--json']);
    if (r.code !== 0) throw new Error(`stats --json: exit ${r.code}: ${r.stderr}`);
    return JSON.parse(r.stdout) as Record<string, HostStats>;
  }

  /** Every switch forgets its cables and SAs: the next packet of each pair is a first packet again. */
  async flush(): Promise<void> {
    const r = await this.cli(['cables', '--flush']);
    if (r.code !== 0) throw new Error(`cables --flush: exit ${r.code}: ${r.stderr}`);
  }

  async cables(): Promise<Record<string, CableInfo[]>> {
    const r = await this.cli(['cables', '--json']);
    if (r.code !== 0) throw new Error(`cables --json: exit ${r.code}: ${r.stderr}`);
    return JSON.parse(r.stdout) as Record<string, CableInfo[]>;
  }

  /** Kernel counters of `iface` in `ns` (ip -s -j link). */
  async linkStats(ns: string, iface: string): Promise<{ rx: { packets: number; dropped: number }; tx: { packets: number; dropped: number } }> {
    const r = await this.inNs(ns, 'ip', ['-s', '-j', 'link', 'show', iface]);
    const s = (JSON.parse(r.stdout) as { stats64: { rx: { packets: number; dropped: number }; tx: { packets: number; dropped: number } } }[])[0].stats64;
    return { rx: s.rx, tx: s.tx };
  }

  /**
   * The TCP counters of a namespace's kernel (/proc/net/snmp and /proc/net/netstat are per
   * network namespace; a VM's namespace holds only the VM's own connections).
   */
  async tcpCounters(ns: string): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const file of ['/proc/net/snmp', '/proc/net/netstat']) {
      const lines = (await this.inNs(ns, 'cat', [file])).stdout.split('\n');
      for (let k = 0; k + 1 < lines.length; k += 2) {
        const names = lines[k].split(/\s+/);
        const values = lines[k + 1].split(/\s+/);
        if (!['Tcp:', 'TcpExt:'].includes(names[0])) continue;
        names.slice(1).forEach((n, j) => (out[n] = Number(values[j + 1])));
      }
    }
    return out;
  }

  async up(): Promise<void> {
    live.add(this);
    const r = await this.cli(['lab', 'up', '--export-sa'], 90);
    if (r.code !== 0) throw new Error(`lab up: exit ${r.code}\n${r.stdout}${r.stderr}\nh1.log:\n${this.logOf('h1')}\nh2.log:\n${this.logOf('h2')}`);
    this.isUp = true;
  }

  /** Stop the background commands, then `nvi-switch lab down`. */
  async down(): Promise<RunResult> {
    await Promise.all([...this.background].map((b) => b.stop('SIGTERM', 3000)));
    const r = await this.cli(['lab', 'down'], 60);
    // A switch that had to be killed is a bug to chase: what it was doing goes to the test's output.
    for (const line of `${r.stdout}\n${r.stderr}`.split('\n')) if (line.includes('did not stop')) process.stdout.write(`e2e: ${line}\n`);
    this.isUp = false;
    live.delete(this);
    return r;
  }

  /** The same, synchronously (process exit). */
  downSync(): void {
    for (const b of this.background) b.kill();
    spawnSync('timeout', ['-k', '3', '60', process.execPath, BIN, 'lab', 'down', '-c', this.config], { stdio: 'ignore' });
    live.delete(this);
  }

  get running(): boolean {
    return this.isUp;
  }
}

export class Capture {
  constructor(readonly file: string, private readonly proc: Background) {}

  /** The packets captured so far (tcpdump -U writes each one as it comes), once `cond` holds for them or `ms` passed. */
  async until(cond: (lines: string[]) => boolean, ms = 3000, filter = ''): Promise<string[]> {
    return until(() => readCapture(this.file, filter), cond, ms, 50);
  }

  /** Stop tcpdump (SIGINT: it flushes the file) and return the file. */
  async stop(): Promise<string> {
    const r = await this.proc.stop('SIGINT');
    const m = /(\d+) packets? captured\n(\d+) packets? received by filter/.exec(r.stderr);
    if (!m) throw new Error(`tcpdump on ${this.file} did not end cleanly: ${r.stderr}`);
    if (m[1] !== m[2]) throw new Error(`tcpdump on ${this.file} wrote ${m[1]} of the ${m[2]} packets it received`);
    return this.file;
  }
}

/** One line per packet of a capture file (tcpdump -r -n -e). */
export async function readCapture(file: string, filter = ''): Promise<string[]> {
  const r = await run('tcpdump', ['-r', file, '-n', '-e', ...(filter ? [filter] : [])]);
  if (r.code !== 0) throw new Error(`tcpdump -r ${file}: ${r.stderr}`);
  return r.stdout.split('\n').filter((l) => l.length > 0);
}

/**
 * A lab in a fresh temporary directory, not up yet (`await lab.up()`). Refuses when another
 * nvi-t- lab is up. (Bring it up in a test, not in a before hook: uvu's runner returns from its
 * `finally`, which swallows an error thrown by a before hook and reports the file as passed.)
 */
export function newLab(name: string, opts: LabOptions = {}): Lab {
  const leftovers = labNamespaces();
  const procs = switchProcesses(`--vm-netns ${PREFIX}`);
  if (leftovers.length > 0 || procs.length > 0) {
    throw new Error(
      `another ${PREFIX} lab is up (namespaces: ${leftovers.join(' ') || '-'}; switch processes: ${procs.map((p) => `${p.pid} ${p.cmdline}`).join('; ') || '-'}). ` +
      'Take it down with `nvi-switch lab down -c <its config>` first.',
    );
  }
  hookExit(); // before the directory's own exit handler: the lab goes down while its config still exists
  const dir = mkdtempSync(join(tmpdir(), `nvi-e2e-${name}-`));
  const lab = new Lab(dir, opts);
  live.add(lab);
  atExit(() => {
    if (process.exitCode && process.exitCode !== 0) process.stderr.write(`e2e: kept ${dir} (config, switch logs, captures)\n`);
    else rmSync(dir, { recursive: true, force: true });
  });
  return lab;
}

/** Network namespaces of the test labs. */
export function labNamespaces(): string[] {
  const r = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  return r.stdout.split('\n').map((l) => l.split(' ')[0]).filter((n) => n.startsWith(PREFIX));
}

/** Processes whose command line contains `needle` (read from /proc). */
export function switchProcesses(needle: string): { pid: number; cmdline: string }[] {
  const out: { pid: number; cmdline: string }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    let cmdline = '';
    try {
      cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').join(' ');
    } catch {
      continue;
    }
    if (cmdline.includes('nvi-switch.js') && cmdline.includes(' run ') && cmdline.includes(needle)) out.push({ pid: Number(entry), cmdline: cmdline.trim() });
  }
  return out;
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Change of each drop reason between two snapshots (only the reasons that moved). */
export function dropDelta(before: PipeStats, after: PipeStats): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(after.drops)) {
    const d = v - (before.drops[k] ?? 0);
    if (d !== 0) out[k] = d;
  }
  return out;
}

/** The pipeline's counters add up (src/dataplane/counters.ts): in + reinjected = every fate. */
export function fates(p: PipeStats): { lhs: number; rhs: number } {
  return { lhs: p.in + p.reinjected, rhs: p.delivered + p.underlay + p.consumed + p.replied + p.held + p.dropped };
}

/** Poll until `cond` holds (checked at least once), up to `ms`. */
export async function until<T>(get: () => Promise<T>, cond: (v: T) => boolean, ms: number, every = 200): Promise<T> {
  const end = Date.now() + ms;
  let v = await get();
  while (!cond(v) && Date.now() < end) {
    await sleep(every);
    v = await get();
  }
  return v;
}

function lastJson(stdout: string): Record<string, unknown> {
  const lines = stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]) as Record<string, unknown>;
}

function setPath(doc: Record<string, unknown>, path: string, value: unknown): void {
  const keys = path.split('.');
  let o = doc;
  for (const k of keys.slice(0, -1)) {
    if (typeof o[k] !== 'object' || o[k] === null) o[k] = {};
    o = o[k] as Record<string, unknown>;
  }
  o[keys[keys.length - 1]] = value;
}
