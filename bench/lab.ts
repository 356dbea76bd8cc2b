// Lab benchmark: nvi-switch (ESP) against wireguard-go, OpenVPN and the kernel, on one lab, in one run.
//
//   npx tsc -p . && node dist/bench/lab.js [--runs 5] [--quick] [--seconds 5] [--ping 50] [--lone 20]
//       [-c nvi-switch.yaml] [--esp-udp PORT] [--topology] [--json FILE] [--keep] [--free]   (root)
//
// 1. Preflight: root, /dev/net/tun, every tool (an error names the apt package to install).
// 2. The lab: a temp copy of nvi-switch.yaml with lab.prefix nvi-b-, pki.dir made absolute
//    and the embedded store inside the temp dir; `lab up` (src/lab/lab.ts) builds it.
// 3. The baselines on the lab's own host namespaces (bench/lab/baselines.ts): wireguard-go
//    and OpenVPN between the hosts' underlay addresses, and kernel VXLAN; each with client namespaces
//    that stand in for VMs, so every path crosses VM -> host -> fabric -> host -> VM.
//    Every path's two sides each get one CPU, as a host would give its datapath: h1's switch,
//    wireguard-go and openvpn run on CPU 0, h2's on CPU 1 (hosts.<name>.cpus for the switches,
//    taskset for the peers). --free: nothing pinned, the kernel places every process.
//    --esp-udp PORT: the switches carry ESP in UDP to PORT (underlay.espUdpPort; UDP GSO/GRO)
//    instead of the config's choice.
// 4. N runs. Each run visits every path in turn, so that the machine's noise falls on all of
//    them alike; on each path: TCP with 1 and 4 streams (iperf3 -t S [-P 4] after -O 1 s of
//    warm-up), UDP with 64-byte payloads (-b 0), ping -c 50 -i 0.01, and ping -c 20 -i 0.2
//    (each packet alone: the machine idles between them) (bench/lab/measure.ts).
//    Paths: cross host web1 -> web2 (nvi-switch, ESP), wgc1 -> wgc2 (wireguard-go),
//    ovc1 -> ovc2 (OpenVPN), krc1 -> krc2 (kernel); same host web1 -> web3 (nvi-switch),
//    krc1 -> krc3 (kernel).
// 5. The report: median [min-max] over the runs, the ratio of nvi-switch to the better of the
//    encrypted peers on each line; CPU of the datapath and iperf3 processes in the measured
//    window, and the datapath's CPU seconds per GB carried; where packets were dropped (per
//    second).
// 6. Teardown, always (end, failure, SIGINT/SIGTERM/SIGHUP): our children by PID, then any
//    process still inside one of our namespaces by PID, the baseline namespaces, `lab down`,
//    and a check that no namespace or process of ours is left.

import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseDocument } from 'yaml';
import { loadConfig, type CloudConfig } from '../src/config/config.js';
import { labDown, labNames, labUp, type LabState } from '../src/lab/lab.js';
import { controlRequest } from '../src/switch/control.js';
import { controlPath } from '../src/switch/paths.js';
import { baselineNamespaces, buildBaselines, ovpnDevice, OVPN_PORT, vxDevice, wgDevice, WG_PORT, type Baselines } from './lab/baselines.js';
import { pingTest, reachable, tcpTest, udpTest, type Path, type PingResult, type TcpResult, type Timing, type UdpResult } from './lab/measure.js';
import { abort, alive, BenchError, delay, isAborted, procStart, query, sh, stopChildren, trySh } from './lab/proc.js';
import { printReport, type PathResults } from './lab/report.js';
import { benchOptions, integer } from './options.js';

const PREFIX = 'nvi-b-';
const BINARY = fileURLToPath(new URL('../../bin/nvi-switch.js', import.meta.url));
const DEFAULT_CONFIG = fileURLToPath(new URL('../../nvi-switch.yaml', import.meta.url));
const UDP_LEN = 64;

const TOOLS: readonly [string, string][] = [
  ['ip', 'iproute2'], ['iperf3', 'iperf3'], ['ping', 'iputils-ping'],
  ['wireguard-go', 'wireguard-go'], ['wg', 'wireguard-tools'], ['openvpn', 'openvpn'], ['openssl', 'openssl'], ['taskset', 'util-linux'], ['getconf', 'libc-bin'],
];

interface Options {
  runs: number;
  timing: Timing;
  ping: number;
  /** Pings 0.2 s apart. */
  lone: number;
  config: string;
  topology: boolean;
  json: string | undefined;
  keep: boolean;
  /** Each side's datapath on one CPU: h1's (switch, wireguard-go, openvpn) on 0, h2's on 1. */
  pin: boolean;
  /** underlay.espUdpPort for the switches (undefined: the config's). */
  espUdp: number | undefined;
}

function options(): Options {
  const v = benchOptions({
    runs: { type: 'string' }, quick: { type: 'boolean' }, seconds: { type: 'string' }, ping: { type: 'string' }, lone: { type: 'string' },
    config: { type: 'string', short: 'c', default: DEFAULT_CONFIG }, topology: { type: 'boolean' }, json: { type: 'string' }, keep: { type: 'boolean' },
    free: { type: 'boolean' }, 'esp-udp': { type: 'string' },
  });
  const quick = v.quick === true;
  return {
    runs: integer('runs', v.runs ?? (quick ? '1' : '5')),
    timing: { seconds: integer('seconds', v.seconds ?? (quick ? '2' : '5')), omit: 1 },
    ping: integer('ping', v.ping ?? (quick ? '20' : '50')),
    lone: integer('lone', v.lone ?? (quick ? '10' : '20')),
    config: resolve(v.config),
    topology: v.topology === true,
    json: v.json,
    keep: v.keep === true,
    pin: v.free !== true,
    espUdp: v['esp-udp'] === undefined ? undefined : integer('esp-udp', v['esp-udp']),
  };
}

function preflight(): void {
  if (process.getuid?.() !== 0) throw new BenchError('bench/lab needs root (network namespaces, TAP/TUN devices, raw sockets)');
  if (!existsSync('/dev/net/tun')) throw new BenchError('/dev/net/tun is missing (the switches and wireguard-go need TUN/TAP)');
  const missing = TOOLS.filter(([tool]) => !trySh('sh', ['-c', `command -v ${tool}`]));
  if (missing.length > 0) {
    throw new BenchError(`missing tools: ${missing.map(([t, pkg]) => `${t} (apt-get install ${pkg})`).join(', ')}`);
  }
}

const LOCK = '/run/nvi-bench-lab.lock';

/**
 * One bench at a time: two would share the nvi-b- names and tear down each other's lab.
 * The lock names our PID; a lock whose PID is no longer a bench/lab process is stale.
 */
function lock(): () => void {
  for (let i = 0; i < 2; i++) {
    try {
      writeFileSync(LOCK, `${process.pid}\n`, { flag: 'wx' });
      return () => {
        if (readFileSync(LOCK, 'utf8').trim() === String(process.pid)) rmSync(LOCK, { force: true });
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const pid = Number(readFileSync(LOCK, 'utf8').trim());
      const cmd = alive(pid) ? query('cat', [`/proc/${pid}/cmdline`]) : '';
      if (cmd.includes('bench/lab.js')) throw new BenchError(`another bench/lab run is in progress (pid ${pid}; lock ${LOCK})`);
      rmSync(LOCK, { force: true });
    }
  }
  throw new BenchError(`could not take ${LOCK}`);
}

/** The temp copy of the config: our prefix, absolute pki.dir, the embedded store in `dir`. */
function benchConfig(source: string, dir: string, pin: boolean, espUdp: number | undefined): CloudConfig {
  const doc = parseDocument(readFileSync(source, 'utf8'));
  const pki = doc.getIn(['pki', 'dir']);
  if (typeof pki !== 'string') throw new BenchError(`${source}: pki.dir is missing`);
  doc.setIn(['pki', 'dir'], resolve(dirname(source), pki));
  doc.setIn(['lab', 'prefix'], PREFIX);
  doc.setIn(['store'], doc.createNode({ kind: 'embedded', path: '.nvi-state/lab.db' }));
  if (espUdp !== undefined) doc.setIn(['underlay', 'espUdpPort'], espUdp);

  const file = join(dir, 'nvi-switch.yaml');
  writeFileSync(file, doc.toString());
  if (!pin) return loadConfig(file);
  const first = loadConfig(file);
  for (const [vm, cpu] of [['web1', 0], ['web2', 1]] as const) {
    const host = first.vms.get(vm)?.host;
    if (host) doc.setIn(['hosts', host, 'cpus'], doc.createNode([cpu]));
  }
  writeFileSync(file, doc.toString());
  return loadConfig(file);
}

/** Every namespace name this bench may make. */
function ourNamespaces(cfg: CloudConfig): string[] {
  const n = labNames(cfg);
  return [...baselineNamespaces(PREFIX), ...n.vms.values(), ...n.hosts.values(), n.fabric];
}

function nsPids(ns: string): number[] {
  return query('ip', ['netns', 'pids', ns]).split('\n').filter((l) => l.trim()).map(Number);
}

function presentNamespaces(): Set<string> {
  return new Set(query('ip', ['netns', 'list']).split('\n').map((l) => l.split(' ')[0]!).filter(Boolean));
}

interface Proc { pid: number; start: string | undefined }

/** Still the same process (not a reused PID)? */
function stillThere(p: Proc): boolean {
  return alive(p.pid) && procStart(p.pid) === p.start;
}

async function killProcs(procs: readonly Proc[]): Promise<void> {
  const signal = (sig: NodeJS.Signals): void => {
    for (const p of procs) if (stillThere(p)) process.kill(p.pid, sig);
  };
  signal('SIGTERM');
  for (let i = 0; i < 30 && procs.some(stillThere); i++) await delay(100);
  signal('SIGKILL');
}

/**
 * Remove everything of ours; also what a killed earlier run left. Returns what could not be
 * removed (empty when clean). Processes are found by PID inside our own namespaces only.
 */
async function teardown(cfg: CloudConfig, log: (l: string) => void): Promise<string[]> {
  await stopChildren();
  const names = ourNamespaces(cfg);
  const present = presentNamespaces();
  const strays = names.filter((n) => present.has(n)).flatMap(nsPids).map((pid): Proc => ({ pid, start: procStart(pid) }));
  await labDown(cfg, log);
  await killProcs(strays);
  for (const ns of baselineNamespaces(PREFIX)) if (presentNamespaces().has(ns)) trySh('ip', ['netns', 'delete', ns]);
  for (const i of [1, 2] as const) rmSync(`/var/run/wireguard/${wgDevice(PREFIX, i)}.sock`, { force: true });
  const left = presentNamespaces();
  return [
    ...names.filter((n) => left.has(n)).map((n) => `namespace ${n}`),
    ...strays.filter(stillThere).map((p) => `process ${p.pid}`),
  ];
}

function nviPaths(cfg: CloudConfig, state: LabState): { cross: Path; same: Path } {
  const names = labNames(cfg);
  const vm = (n: string) => {
    const v = cfg.vms.get(n);
    if (!v) throw new BenchError(`${cfg.file}: the bench needs VM ${n} (web1, web2 on another host, web3 on web1's host)`);
    return v;
  };
  const [a, b, c] = [vm('web1'), vm('web2'), vm('web3')];
  if (a.host === b.host || a.host !== c.host || a.tenant !== b.tenant || a.tenant !== c.tenant) {
    throw new BenchError('the bench needs web1 and web3 on one host, web2 on another, all of one tenant');
  }
  const pid = (h: string): number => state.switches.find((s) => s.host === h)!.pid;
  const hostNs = (h: string): string => names.hosts.get(h)!;
  const vmNs = (n: string): string => names.vms.get(n)!;
  const switchCounters = (hosts: string[]) => async (): Promise<Map<string, number>> => {
    const m = new Map<string, number>();
    for (const h of hosts) {
      const s = (await controlRequest(controlPath(cfg, h), { cmd: 'stats' })) as SwitchStats;
      for (const dir of ['egress', 'ingress'] as const) {
        for (const [reason, n] of Object.entries(s[dir].drops ?? {})) m.set(`switch ${h} ${dir} drop ${reason}`, n);
      }
      for (const t of s.ports ?? []) {
        m.set(`switch ${h} tap ${t.name} txRefused`, t.txRefused);
        m.set(`switch ${h} tap ${t.name} txBusy (write stopped: TAP full)`, t.txBusy);
      }
      m.set(`switch ${h} underlay txRefused`, s.underlay?.txRefused ?? 0);
      m.set(`switch ${h} underlay txBusy (write stopped: socket full)`, s.underlay?.txBusy ?? 0);
      m.set(`switch ${h} underlay rxErrors`, s.underlay?.rxErrors ?? 0);
    }
    return m;
  };
  const tap = (n: string, v: { tap: string }) => ({ ns: vmNs(n), dev: v.tap, label: `${n} TAP ${v.tap}` });
  const underlay = (h: string) => ({ ns: hostNs(h), dev: 'underlay0', label: `${h} underlay0` });
  return {
    cross: {
      key: 'nvi', scope: 'cross', label: 'web1 -> web2', src: vmNs('web1'), dst: vmNs('web2'), dstAddr: b.identityText,
      datapath: [{ label: `switch ${a.host}`, pid: pid(a.host) }, { label: `switch ${b.host}`, pid: pid(b.host) }],
      ifaces: [tap('web1', a), underlay(a.host), underlay(b.host), tap('web2', b)],
      udpSockets: [{ ns: vmNs('web2'), label: 'web2', family: 6 }],
      rawSockets: [{ ns: hostNs(a.host), label: a.host }, { ns: hostNs(b.host), label: b.host }],
      extra: switchCounters([a.host, b.host]),
    },
    same: {
      key: 'nvi', scope: 'same', label: 'web1 -> web3', src: vmNs('web1'), dst: vmNs('web3'), dstAddr: c.identityText,
      datapath: [{ label: `switch ${a.host}`, pid: pid(a.host) }],
      ifaces: [tap('web1', a), tap('web3', c)],
      udpSockets: [{ ns: vmNs('web3'), label: 'web3', family: 6 }],
      rawSockets: [],
      extra: switchCounters([a.host]),
    },
  };
}

interface SwitchStats {
  egress: { drops?: Record<string, number> };
  ingress: { drops?: Record<string, number> };
  ports?: { name: string; txRefused: number; txBusy: number }[];
  underlay?: { txRefused: number; txBusy: number; rxErrors: number };
}

function baselinePaths(h1: string, h2: string, h1Name: string, h2Name: string, b: Baselines): Path[] {
  const c = (n: string) => `${PREFIX}${n}`;
  const veth = (ns: string, dev: string, label: string) => ({ ns, dev, label });
  /** A userspace tunnel between the hosts: client `${client}1` -> `${client}2`, a TUN on each host, `program` on UDP `port`. */
  const tunnel = (key: 'wg' | 'ovpn', client: string, dstAddr: string, dev: (i: 1 | 2) => string, program: string, port: number, pids: Path['datapath']): Path => {
    const [c1, c2] = [`${client}1`, `${client}2`];
    return {
      key, scope: 'cross', label: `${c1} -> ${c2}`, src: c(c1), dst: c(c2), dstAddr, datapath: pids,
      ifaces: [
        veth(c(c1), 'eth0', `${c1} eth0`), veth(h1, client, `${h1Name} veth ${client}`), veth(h1, dev(1), `${h1Name} TUN ${dev(1)}`),
        veth(h1, 'underlay0', `${h1Name} underlay0`), veth(h2, 'underlay0', `${h2Name} underlay0`),
        veth(h2, dev(2), `${h2Name} TUN ${dev(2)}`), veth(h2, client, `${h2Name} veth ${client}`), veth(c(c2), 'eth0', `${c2} eth0`),
      ],
      udpSockets: [{ ns: h1, label: `${h1Name} (${program} :${port})`, family: 4 }, { ns: h2, label: `${h2Name} (${program} :${port})`, family: 4 }, { ns: c(c2), label: c2, family: 6 }],
      rawSockets: [],
    };
  };
  const paths: Path[] = [
    tunnel('wg', 'wgc', 'fd00:77:2::2', (i) => wgDevice(PREFIX, i), 'wireguard-go', WG_PORT, b.wg.pids),
    tunnel('ovpn', 'ovc', 'fd00:79:2::2', (i) => ovpnDevice(PREFIX, i), 'openvpn', OVPN_PORT, b.ovpn.pids),
  ];
  if (b.kernel) {
    const vx = vxDevice(PREFIX);
    paths.push({
      key: 'kernel', scope: 'cross', label: 'krc1 -> krc2', src: c('krc1'), dst: c('krc2'), dstAddr: 'fd00:78:2::2', datapath: [],
      ifaces: [veth(c('krc1'), 'eth0', 'krc1 eth0'), veth(h1, 'krc', `${h1Name} veth krc`), veth(h1, vx, `${h1Name} ${vx}`),
        veth(h1, 'underlay0', `${h1Name} underlay0`), veth(h2, 'underlay0', `${h2Name} underlay0`), veth(h2, vx, `${h2Name} ${vx}`),
        veth(h2, 'krc', `${h2Name} veth krc`), veth(c('krc2'), 'eth0', 'krc2 eth0')],
      udpSockets: [{ ns: h2, label: `${h2Name} (vxlan)`, family: 4 }, { ns: c('krc2'), label: 'krc2', family: 6 }],
      rawSockets: [],
    }, {
      key: 'kernel', scope: 'same', label: 'krc1 -> krc3', src: c('krc1'), dst: c('krc3'), dstAddr: 'fd00:78:3::2', datapath: [],
      ifaces: [veth(c('krc1'), 'eth0', 'krc1 eth0'), veth(h1, 'krc', `${h1Name} veth krc`), veth(h1, 'krc3', `${h1Name} veth krc3`), veth(c('krc3'), 'eth0', 'krc3 eth0')],
      udpSockets: [{ ns: c('krc3'), label: 'krc3', family: 6 }],
      rawSockets: [],
    });
  }
  return paths;
}

async function main(): Promise<number> {
  const t0 = Date.now();
  const opt = options();
  preflight();
  const unlock = lock();
  process.on('exit', unlock);
  const dir = mkdtempSync(join(tmpdir(), 'nvi-bench-lab-'));
  let cfg: CloudConfig;
  try {
    cfg = benchConfig(opt.config, dir, opt.pin, opt.espUdp);
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  const say = (l: string): void => { process.stdout.write(`${l}\n`); };
  let failed = true;
  let tearing: Promise<string[]> | undefined;
  const down = (): Promise<string[]> => (tearing ??= (abort(), teardown(cfg, () => {})));
  const onSignal = (sig: NodeJS.Signals): void => {
    process.stderr.write(`\n${sig}: tearing the lab down\n`);
    void down().then((left) => {
      if (left.length > 0) process.stderr.write(`left behind: ${left.join(', ')}\n`);
      process.stderr.write(`logs: ${dir}\n`);
      process.exit(130);
    });
  };
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, onSignal);
  try {
    // Leftovers of a run that was killed outright (SIGKILL) go first.
    const stale = await teardown(cfg, (l) => say(`stale: ${l}`));
    if (stale.length > 0) throw new BenchError(`could not remove an earlier run's ${stale.join(', ')}`);
    say(`load average ${readFileSync('/proc/loadavg', 'utf8').trim()} (other jobs on the machine skew every figure)`);
    say(`bench/lab: ${opt.runs} run(s), TCP/UDP ${opt.timing.seconds} s after ${opt.timing.omit} s warm-up, ping -c ${opt.ping}; temp ${dir}`);
    const tUp = Date.now();
    const state = await labUp(cfg, BINARY, () => {});
    const nvi = nviPaths(cfg, state);
    const web1 = cfg.vms.get('web1')!;
    const web2 = cfg.vms.get('web2')!;
    const names = labNames(cfg);
    const [h1, h2] = [names.hosts.get(web1.host)!, names.hosts.get(web2.host)!];
    const base = await buildBaselines(PREFIX, { ns: h1, address: cfg.hosts.get(web1.host)!.addressText }, { ns: h2, address: cfg.hosts.get(web2.host)!.addressText }, dir);
    say(`lab up and baselines built in ${((Date.now() - tUp) / 1000).toFixed(1)} s (switch pids ${state.switches.map((s) => `${s.host}=${s.pid}`).join(', ')}; wireguard-go pids ${base.wg.pids.map((p) => p.pid).join(', ')}; openvpn pids ${base.ovpn.pids.map((p) => p.pid).join(', ')})`);
    if (base.kernelError) say(`kernel baseline skipped: ${base.kernelError}`);
    if (opt.pin) {
      // As the switches (hosts.<name>.cpus, set in the bench's config): each peer's process on its host's CPU.
      const side = (i: 0 | 1): number[] => [base.wg.pids[i]!.pid, base.ovpn.pids[i]!.pid];
      for (const [i, cpu] of [[0, 0], [1, 1]] as const) for (const pid of side(i)) sh('taskset', ['-apc', String(cpu), String(pid)]);
      say(`pinned: h1's switch, wireguard-go and openvpn to CPU 0; h2's to CPU 1 (--free: none)`);
    }
    if (opt.topology) say(`\nbaseline topology (commands as run):\n  ${base.commands.join('\n  ')}\n`);
    const paths = [nvi.cross, ...baselinePaths(h1, h2, web1.host, web2.host, base), nvi.same];
    for (const p of paths) await reachable(p, 15_000);
    const results = new Map<Path, PathResults>(paths.map((p) => [p, { tcp: [], tcp4: [], udp: [], ping: [], lone: [] }]));
    for (let run = 1; run <= opt.runs; run++) {
      const tRun = Date.now();
      for (const p of paths) {
        const r = results.get(p)!;
        r.tcp.push(await attempt(() => tcpTest(p, opt.timing), `run ${run} ${p.key} ${p.label} tcp`, say));
        await delay(500);
        r.tcp4.push(await attempt(() => tcpTest(p, opt.timing, 4), `run ${run} ${p.key} ${p.label} tcp -P 4`, say));
        await delay(500);
        r.udp.push(await attempt(() => udpTest(p, opt.timing, UDP_LEN), `run ${run} ${p.key} ${p.label} udp`, say));
        await delay(1000);
        r.ping.push(await attempt(() => pingTest(p, opt.ping), `run ${run} ${p.key} ${p.label} ping`, say));
        r.lone.push(await attempt(() => pingTest(p, opt.lone, 0.2), `run ${run} ${p.key} ${p.label} lone ping`, say));
      }
      say(`run ${run}/${opt.runs}: ${((Date.now() - tRun) / 1000).toFixed(0)} s`);
    }
    say(`load average ${readFileSync('/proc/loadavg', 'utf8').trim()}`);
    printReport(say, paths, results, { runs: opt.runs, timing: opt.timing, ping: opt.ping, lone: opt.lone, udpLen: UDP_LEN, espUdpPort: cfg.underlay.espUdpPort });
    if (opt.json) {
      const out = paths.map((p) => ({ key: p.key, scope: p.scope, label: p.label, ...results.get(p) }));
      writeFileSync(opt.json, `${JSON.stringify({ date: new Date().toISOString(), options: opt, topology: base.commands, paths: out }, null, 2)}\n`);
      say(`results: ${opt.json}`);
    }
    failed = false;
  } finally {
    const left = await down(); // the signal handlers stay: a second Ctrl-C waits for this same teardown
    say(left.length === 0 ? 'teardown: no namespace or process of the bench left' : `teardown: LEFT BEHIND ${left.join(', ')}`);
    if (failed || opt.keep) say(`logs and config kept in ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
    say(`total ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  }
  return 0;
}

/** One test; a failure is reported and counted as missing (noise must not end a long run). */
async function attempt<T extends TcpResult | UdpResult | PingResult>(f: () => Promise<T>, what: string, say: (l: string) => void): Promise<T | undefined> {
  try {
    return await f();
  } catch (e) {
    if (isAborted()) throw e;
    say(`  ${what}: FAILED: ${(e as Error).message}`);
    return undefined;
  }
}

main().then((code) => process.exit(code), (e: unknown) => {
  process.stderr.write(`bench/lab: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
