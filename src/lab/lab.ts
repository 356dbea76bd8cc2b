// The lab of nvi-switch.yaml, built from network namespaces on this machine:
//
//   <prefix>fabric     the underlay: a bridge joining every host, and with store.kind etcd
//                      the etcd members on the store's endpoints (reached over the underlay)
//   <prefix><host>     one per host: its underlay interface (the host's address) and its
//                      switch process (`nvi-switch run --host H --vm-netns <prefix>`)
//   <prefix><vm>       one per VM: its only interface is the TAP its host's switch owns,
//                      with the VM's identity (/128) and a default route learnt from the
//                      switch's Router Advertisement
//
// `up` builds it (removing leftovers of an earlier lab first), `down` removes everything it
// could have made, also after a crash: the state file names the switch PIDs, and every
// namespace the config implies is deleted whether or not the state file survived.

import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CloudConfig } from '../config/config.js';
import { NviError } from '../base/errors.js';
import { controlRequest } from '../switch/control.js';
import { migrate, type MigrationHooks, type MigrationResult } from '../switch/migrate.js';
import { controlPath, hostStateDir, stateDir } from '../switch/paths.js';
import { detachedVms } from '../switch/detached-list.js';
import { etcdMembers, isLabEtcd, startEtcdMember, waitEtcdHealthy } from './etcd.js';
import { describeStuck } from './stuck.js';
import { deleteNetns, inNs, ip, listNetns, netnsExists, requireRoot, sh, trySh } from './netns.js';

export interface LabState {
  readonly config: string;
  readonly switches: { readonly host: string; readonly pid: number; readonly log: string }[];
  readonly etcd?: { readonly name: string; readonly pid: number; readonly log: string }[];
}

export const ROUTER_LINK_LOCAL_TEXT = 'fe80::4e:56ff:fe49:1';
const UNDERLAY_IF = 'underlay0';
const BRIDGE = 'fabric0';
/** Present when br_netfilter is loaded (in every namespace). */
export const BRIDGE_NETFILTER = '/proc/sys/net/bridge/bridge-nf-call-iptables';
const BRIDGE_NETFILTER_OFF = ['net.bridge.bridge-nf-call-iptables=0', 'net.bridge.bridge-nf-call-ip6tables=0', 'net.bridge.bridge-nf-call-arptables=0'];

export function labNames(cfg: CloudConfig): { fabric: string; hosts: Map<string, string>; vms: Map<string, string> } {
  const p = cfg.lab.prefix;
  return {
    fabric: `${p}fabric`,
    hosts: new Map([...cfg.hosts.keys()].map((h) => [h, `${p}${h}`])),
    // Only a VM with a TAP of the switch's own is a namespace; a QEMU guest brings its own kernel.
    vms: new Map([...cfg.vms.values()].filter((v) => v.port.kind === 'tap').map((v) => [v.name, `${p}${v.name}`])),
  };
}

function labDir(cfg: CloudConfig): string {
  return join(stateDir(cfg), 'lab');
}

function statePath(cfg: CloudConfig): string {
  return join(labDir(cfg), 'state.json');
}

export function readState(cfg: CloudConfig): LabState | undefined {
  const p = statePath(cfg);
  if (!existsSync(p)) return undefined;
  try {
    return JSON.parse(readFileSync(p, 'utf8')) as LabState;
  } catch {
    return undefined;
  }
}

/** What starts a lab's switches: the SA key export (debug), and flags for their node (a bench's --cpu-prof). */
export interface SwitchStart {
  readonly exportSa?: boolean;
  /** `{host}` in them stands for the switch's host. */
  readonly nodeArgs?: readonly string[];
}

/** Build the lab and start its switches. `binary` is the nvi-switch entry script. */
export async function labUp(cfg: CloudConfig, binary: string, log: (line: string) => void, opts: SwitchStart = {}): Promise<LabState> {
  requireRoot('lab up');
  await labDown(cfg, () => {});
  const names = labNames(cfg);
  const [net, bits] = cfg.lab.subnet.split('/');
  if (!net || !bits) throw new NviError('NVI_ERR_CONFIG', `lab.subnet: ${cfg.lab.subnet} is not an IPv4 prefix`);
  mkdirSync(labDir(cfg), { recursive: true });
  const switches: { host: string; pid: number; log: string }[] = [];
  const etcd: { name: string; pid: number; log: string }[] = [];
  try {
    // 1. The underlay: a bridge in the fabric namespace, a veth per host.
    // The underlay carries IPv4 only (identities travel inside it), so IPv6 is off there.
    ip('netns', 'add', names.fabric);
    inNs(names.fabric, 'ip', 'link', 'set', 'lo', 'up'); // etcd members there reach their own addresses through it
    inNs(names.fabric, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1');
    inNs(names.fabric, 'ip', 'link', 'add', BRIDGE, 'type', 'bridge');
    inNs(names.fabric, 'ip', 'link', 'set', BRIDGE, 'up');
    // A data centre's fabric forwards and does not filter. Where br_netfilter is loaded, the
    // bridge would hand every underlay packet to iptables (15-20% of the lab's TCP, measured):
    // off in the fabric's namespace, whose own setting it is.
    if (existsSync(BRIDGE_NETFILTER)) inNs(names.fabric, 'sysctl', '-q', '-w', ...BRIDGE_NETFILTER_OFF);
    for (const [host, ns] of names.hosts) {
      const h = cfg.hosts.get(host)!;
      ip('netns', 'add', ns);
      inNs(ns, 'ip', 'link', 'set', 'lo', 'up');
      inNs(ns, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1');
      ip('link', 'add', `${cfg.lab.prefix}u-${host}`.slice(0, 15), 'netns', ns, 'type', 'veth', 'peer', 'name', `port-${host}`.slice(0, 15), 'netns', names.fabric);
      inNs(ns, 'ip', 'link', 'set', `${cfg.lab.prefix}u-${host}`.slice(0, 15), 'name', UNDERLAY_IF);
      inNs(ns, 'ip', 'link', 'set', UNDERLAY_IF, 'mtu', String(cfg.underlay.mtu), 'up');
      inNs(ns, 'ip', 'addr', 'add', `${h.addressText}/${bits}`, 'dev', UNDERLAY_IF);
      inNs(names.fabric, 'ip', 'link', 'set', `port-${host}`.slice(0, 15), 'master', BRIDGE, 'mtu', String(cfg.underlay.mtu), 'up');
      log(`host ${host}: namespace ${ns}, ${UNDERLAY_IF} ${h.addressText}/${bits}`);
    }
    // 1b. etcd, when the store is etcd: one member per endpoint, on the fabric.
    if (cfg.store.kind === 'etcd') {
      const members = etcdMembers(cfg.store.endpoints, labDir(cfg));
      for (const addr of new Set(members.map((m) => new URL(m.client).hostname))) inNs(names.fabric, 'ip', 'addr', 'add', `${addr}/${bits}`, 'dev', BRIDGE);
      for (const m of members) {
        const logFile = join(labDir(cfg), `etcd-${m.name}.log`);
        etcd.push({ name: m.name, pid: startEtcdMember(names.fabric, m, members, logFile), log: logFile });
        writeState(cfg, { config: cfg.file, switches, etcd });
      }
      await waitEtcdHealthy(names.fabric, cfg.store.endpoints, 20_000, etcd[0].log);
      log(`store: etcd ${members.map((m) => m.client).join(', ')} in ${names.fabric}`);
    }
    // 1c. As the operator: the hosts' certificates and the tenants' policy, signed with the CA
    // key, published from inside a host's namespace (where the store's endpoints are reached).
    const [firstHost] = names.hosts.values();
    sh('ip', ['netns', 'exec', firstHost, process.execPath, binary, 'policy', 'apply', '-c', cfg.file]);
    log(`store: host certificates and the signed policy published (${cfg.store.kind})`);
    // 2. A namespace per VM, empty until its switch creates the TAP inside it.
    for (const vm of names.vms.keys()) log(`vm ${vm}: namespace ${vmNamespace(cfg, vm)}`);
    // 3. The switches, one per host, in their host's namespace.
    for (const host of names.hosts.keys()) {
      switches.push(startSwitch(cfg, host, binary, opts));
      writeState(cfg, { config: cfg.file, switches, etcd });
      log(`switch ${host}: pid ${switches[switches.length - 1].pid}, log ${switches[switches.length - 1].log}`);
    }
    for (const s of switches) await switchReady(cfg, s);
    // 4. Each VM's interface: its identity, then wait for the switch's Router Advertisement.
    for (const host of names.hosts.keys()) for (const line of await configureVms(cfg, host)) log(line);
  } catch (e) {
    await labDown(cfg, () => {});
    throw e;
  }
  const state = { config: cfg.file, switches, etcd };
  writeState(cfg, state);
  return state;
}

/** Start host `host`'s switch in its namespace (detached; output appended to its log). */
function startSwitch(cfg: CloudConfig, host: string, binary: string, opts: SwitchStart): { host: string; pid: number; log: string } {
  const ns = labNames(cfg).hosts.get(host)!;
  const logFile = join(labDir(cfg), `${host}.log`);
  const out = openSync(logFile, 'a');
  const debug = opts.exportSa ? ['--export-sa', saExportPath(cfg, host)] : [];
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, ...(opts.nodeArgs ?? []).map((a) => a.replaceAll('{host}', host)), binary, 'run', '-c', cfg.file, '--host', host, '--vm-netns', cfg.lab.prefix, ...debug], {
    detached: true,
    stdio: ['ignore', out, out],
  });
  child.unref();
  if (!child.pid) throw new NviError('NVI_ERR_LAB', `could not start the switch of ${host}`);
  return { host, pid: child.pid, log: logFile };
}

/** Wait for a started switch's control socket. */
async function switchReady(cfg: CloudConfig, s: { host: string; log: string }): Promise<void> {
  await waitFor(() => existsSync(controlPath(cfg, s.host)), 20_000, () => `the switch of ${s.host} did not start; see ${s.log}:\n${tail(s.log)}`);
}

/** The interfaces of `host`'s VMs (the TAPs its switch made): MAC, identity, up; then wait for each one's default route from the RA. */
async function configureVms(cfg: CloudConfig, host: string): Promise<string[]> {
  const detached = detachedVms(cfg, host);
  const vms = [...cfg.vms.values()].filter((vm) => vm.host === host && vm.port.kind === 'tap' && !detached.has(vm.name)).map((vm) => vm.name);
  for (const vm of vms) bringUp(cfg, vm);
  const lines: string[] = [];
  for (const vm of vms) lines.push(await routed(cfg, vm));
  return lines;
}

/** VM `vm`'s interface (the TAP its switch made in its namespace): MAC, identity, up. */
function bringUp(cfg: CloudConfig, vmName: string): void {
  const vm = cfg.vms.get(vmName)!;
  const ns = labNames(cfg).vms.get(vmName)!;
  inNs(ns, 'ip', 'link', 'set', vm.tap, 'address', formatMacColon(vm.mac));
  inNs(ns, 'ip', '-6', 'addr', 'add', `${vm.identityText}/128`, 'dev', vm.tap, 'nodad');
  inNs(ns, 'ip', 'link', 'set', vm.tap, 'up');
}

/** Wait for VM `vm`'s default route, learnt from its switch's Router Advertisement. */
async function routed(cfg: CloudConfig, vmName: string): Promise<string> {
  const vm = cfg.vms.get(vmName)!;
  const ns = labNames(cfg).vms.get(vmName)!;
  const hasDefault = (): boolean => inNs(ns, 'ip', '-6', 'route', 'show', 'default').includes(ROUTER_LINK_LOCAL_TEXT);
  await waitFor(hasDefault, 15_000, () => `VM ${vmName} got no Router Advertisement from its switch (no default route via ${ROUTER_LINK_LOCAL_TEXT} in ${ns})`);
  return `vm ${vmName}: ${vm.identityText} on ${vm.tap}, default route via ${ROUTER_LINK_LOCAL_TEXT} (from RA)`;
}

/** A namespace for VM `vm`, as lab up makes one (its switch will put the TAP in it). */
function vmNamespace(cfg: CloudConfig, vm: string): string {
  const ns = `${cfg.lab.prefix}${vm}`;
  if (!netnsExists(ns)) {
    ip('netns', 'add', ns);
    inNs(ns, 'ip', 'link', 'set', 'lo', 'up');
    inNs(ns, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.accept_ra=1', 'net.ipv6.conf.default.accept_ra=1');
  }
  return ns;
}

/** A VM added to the config while the lab runs: its namespace, its port on its host's running switch, its interface. */
export async function labAttach(cfg: CloudConfig, vm: string, log: (line: string) => void): Promise<void> {
  requireRoot('lab attach');
  const v = cfg.vms.get(vm);
  if (!v) throw new NviError('NVI_ERR_USAGE', `no VM ${vm} in ${cfg.file}`);
  if (v.port.kind !== 'tap') {
    // A QEMU guest: its port only; the guest configures itself (DHCPv6, RA).
    const r = (await controlRequest(controlPath(cfg, v.host), { cmd: 'vm', op: 'attach', vm }, 15_000)) as { epoch: number };
    log(`vm ${vm}: ${v.port.kind} port attached on ${v.host} (binding epoch ${r.epoch}); start the guest with \`nvi-switch vm qemu-args ${vm}\``);
    return;
  }
  const ns = vmNamespace(cfg, vm);
  const r = (await controlRequest(controlPath(cfg, v.host), { cmd: 'vm', op: 'attach', vm }, 15_000)) as { epoch: number };
  bringUp(cfg, vm);
  log(await routed(cfg, vm));
  log(`vm ${vm}: attached on ${v.host} (binding epoch ${r.epoch}), namespace ${ns}`);
}

/** A VM leaves the running lab: its binding and port (on its host's switch), then its namespace. */
export async function labDetach(cfg: CloudConfig, vm: string, log: (line: string) => void): Promise<void> {
  requireRoot('lab detach');
  const v = cfg.vms.get(vm);
  if (!v) throw new NviError('NVI_ERR_USAGE', `no VM ${vm} in ${cfg.file}`);
  await controlRequest(controlPath(cfg, v.host), { cmd: 'vm', op: 'detach', vm }, 15_000);
  const ns = `${cfg.lab.prefix}${vm}`;
  if (deleteNetns(ns)) log(`namespace ${ns}: deleted`);
  log(`vm ${vm}: detached from ${v.host}`);
}

/**
 * Live migration in the lab (src/switch/migrate.ts): the VM's namespace stays, with its
 * sockets; the old switch's TAP goes, the new switch's TAP comes into the same namespace and
 * gets the same MAC and identity; the VM's first frame on it activates it at the destination.
 */
export async function labMigrate(cfg: CloudConfig, vm: string, to: string, hooks: Pick<MigrationHooks, 'afterOut'> = {}): Promise<MigrationResult> {
  requireRoot('lab migrate');
  const v = cfg.vms.get(vm);
  if (!v) throw new NviError('NVI_ERR_USAGE', `no VM ${vm} in ${cfg.file}`);
  if (v.port.kind !== 'tap') throw new NviError('NVI_ERR_USAGE', `${vm} is a QEMU guest (port kind ${v.port.kind}): it moves by a QEMU live migration (nvi-switch migrate ${vm} --to HOST --live --exec ...)`);
  // A migrated VM keeps its state: its addresses (already checked for duplicates) and its routes
  // come back with the interface (the Router Advertisement that follows only refreshes them).
  const up = async (): Promise<void> => {
    const ns = labNames(cfg).vms.get(vm)!;
    inNs(ns, 'sysctl', '-q', '-w', `net.ipv6.conf.${v.tap}.accept_dad=0`); // its link-local address was checked before the move
    bringUp(cfg, vm);
    inNs(ns, 'ip', '-6', 'route', 'replace', 'default', 'via', ROUTER_LINK_LOCAL_TEXT, 'dev', v.tap);
  };
  return migrate(cfg, vm, to, { ...hooks, afterIn: up, afterAbort: up });
}

/**
 * Stop host `host`'s switch and start a new one (its VMs' TAPs go with the old process and
 * come back with the new; their interfaces are configured again).
 */
export async function labRestartSwitch(cfg: CloudConfig, host: string, binary: string, log: (line: string) => void): Promise<void> {
  requireRoot('lab restart');
  if (!cfg.hosts.has(host)) throw new NviError('NVI_ERR_USAGE', `no host ${host} in ${cfg.file}`);
  const state = readState(cfg);
  if (!state) throw new NviError('NVI_ERR_LAB', `the lab of ${cfg.file} is not up`);
  const old = state.switches.find((s) => s.host === host);
  if (old && isSwitch(old.pid, host)) {
    process.kill(old.pid, 'SIGTERM');
    const gone = await waitFor(() => !alive(old.pid), 5000, () => '').then(() => true, () => false);
    if (!gone) process.kill(old.pid, 'SIGKILL');
    log(`switch ${host}: stopped (pid ${old.pid})`);
  }
  rmSync(controlPath(cfg, host), { force: true });
  const s = startSwitch(cfg, host, binary, {});
  writeState(cfg, { ...state, switches: [...state.switches.filter((x) => x.host !== host), s] });
  await switchReady(cfg, s);
  for (const line of await configureVms(cfg, host)) log(line);
  log(`switch ${host}: pid ${s.pid}`);
}

/** Host `host`'s switch is now process `pid` (it took over from the one the lab started: `nvi-switch restart`). */
export function labSwitchReplaced(cfg: CloudConfig, host: string, pid: number): boolean {
  const state = readState(cfg);
  const s = state?.switches.find((x) => x.host === host);
  if (!state || !s) return false;
  writeState(cfg, { ...state, switches: state.switches.map((x) => (x.host === host ? { ...x, pid } : x)) });
  return true;
}

/**
 * Remove everything the lab could have made: switch processes (those the state file names,
 * and any switch running inside the lab's host namespaces, even one started by another
 * config with the same prefix), namespaces, state.
 */
export async function labDown(cfg: CloudConfig, log: (line: string) => void): Promise<void> {
  requireRoot('lab down');
  const state = readState(cfg);
  const names = labNames(cfg);
  const present = new Set(listNetns());
  const switches = new Map<number, string>();
  for (const s of state?.switches ?? []) if (isSwitch(s.pid, s.host)) switches.set(s.pid, s.host);
  for (const [host, ns] of names.hosts) {
    if (!present.has(ns)) continue;
    for (const pid of netnsPids(ns)) if (isSwitch(pid)) switches.set(pid, host);
  }
  for (const [pid, host] of switches) {
    process.kill(pid, 'SIGTERM');
    const gone = await waitFor(() => !alive(pid), 5000, () => '').then(() => true, () => false);
    if (gone) {
      log(`switch ${host}: stopped (pid ${pid})`);
      continue;
    }
    const why = await describeStuck(pid);
    process.kill(pid, 'SIGKILL');
    log(`switch ${host}: did not stop on SIGTERM within 5 s (${why}); killed (pid ${pid})`);
  }
  const members = new Map<number, string>();
  for (const m of state?.etcd ?? []) if (isLabEtcd(m.pid, labDir(cfg))) members.set(m.pid, m.name);
  if (present.has(names.fabric)) for (const pid of netnsPids(names.fabric)) if (isLabEtcd(pid, labDir(cfg))) members.set(pid, `pid ${pid}`);
  for (const [pid, name] of members) {
    process.kill(pid, 'SIGTERM');
    const gone = await waitFor(() => !alive(pid), 5000, () => '').then(() => true, () => false);
    if (!gone) process.kill(pid, 'SIGKILL');
    log(`etcd ${name}: stopped (pid ${pid})`);
  }
  if (cfg.store.kind === 'etcd') for (const m of etcdMembers(cfg.store.endpoints, labDir(cfg))) rmSync(m.dataDir, { recursive: true, force: true });
  for (const ns of [...names.vms.values(), ...names.hosts.values(), names.fabric]) {
    if (present.has(ns) && deleteNetns(ns)) log(`namespace ${ns}: deleted`);
  }
  for (const host of names.hosts.keys()) {
    rmSync(controlPath(cfg, host), { force: true });
    rmSync(saExportPath(cfg, host), { force: true });
    // What the lab's hosts remembered (epochs seen) belongs to this lab's store, which goes too (etcd) or
    // moves on (embedded): a new lab starts its hosts with nothing remembered.
    rmSync(hostStateDir(cfg, host), { recursive: true, force: true });
  }
  rmSync(statePath(cfg), { force: true });
}

/** Where `lab up --export-sa` has host `host`'s switch write the SAs it accepts. */
export function saExportPath(cfg: CloudConfig, host: string): string {
  return join(labDir(cfg), `${host}.esp_sa`);
}

export function isLabUp(cfg: CloudConfig): boolean {
  return netnsExists(labNames(cfg).fabric);
}

function writeState(cfg: CloudConfig, state: LabState): void {
  writeFileSync(statePath(cfg), `${JSON.stringify(state, null, 2)}\n`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** True when `pid` is a running nvi-switch switch (of host `host` when given), not a reused PID of something else. */
function isSwitch(pid: number, host?: string): boolean {
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return cmdline.includes('run') && (host === undefined || cmdline.includes(host)) && cmdline.some((a) => a.endsWith('nvi-switch.js'));
  } catch {
    return false;
  }
}

/** PIDs of the processes inside network namespace `ns`. */
function netnsPids(ns: string): number[] {
  try {
    return sh('ip', ['netns', 'pids', ns]).split('\n').filter((l) => /^\d+$/.test(l)).map(Number);
  } catch {
    return [];
  }
}

function waitFor(cond: () => boolean, ms: number, what: () => string): Promise<void> {
  const end = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      let ok = false;
      try {
        ok = cond();
      } catch {
        ok = false;
      }
      if (ok) resolve();
      else if (Date.now() > end) reject(new NviError('NVI_ERR_LAB', what()));
      else setTimeout(tick, 100);
    };
    tick();
  });
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-15).join('\n');
  } catch {
    return '';
  }
}

function formatMacColon(mac: Buffer): string {
  return Array.from(mac, (b) => b.toString(16).padStart(2, '0')).join(':');
}

/** Is `ns` a namespace of this lab with a live shell? (used by status) */
export function vmReady(ns: string, tap: string): boolean {
  return trySh('ip', ['netns', 'exec', ns, 'ip', 'link', 'show', tap]);
}
