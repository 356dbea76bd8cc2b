// The lab of nvi-switch.yaml, built from network namespaces on this machine:
//
//   <prefix>fabric     the underlay: a bridge joining every host
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
import { controlPath, stateDir } from '../switch/paths.js';
import { deleteNetns, inNs, ip, listNetns, netnsExists, requireRoot, sh, trySh } from './netns.js';

export interface LabState {
  readonly config: string;
  readonly switches: { readonly host: string; readonly pid: number; readonly log: string }[];
}

export const ROUTER_LINK_LOCAL_TEXT = 'fe80::4e:56ff:fe49:1';
const UNDERLAY_IF = 'underlay0';
const BRIDGE = 'fabric0';

export function labNames(cfg: CloudConfig): { fabric: string; hosts: Map<string, string>; vms: Map<string, string> } {
  const p = cfg.lab.prefix;
  return {
    fabric: `${p}fabric`,
    hosts: new Map([...cfg.hosts.keys()].map((h) => [h, `${p}${h}`])),
    vms: new Map([...cfg.vms.keys()].map((v) => [v, `${p}${v}`])),
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

/** Build the lab and start its switches. `binary` is the nvi-switch entry script. */
export async function labUp(cfg: CloudConfig, binary: string, log: (line: string) => void, opts: { exportSa?: boolean } = {}): Promise<LabState> {
  requireRoot('lab up');
  await labDown(cfg, () => {});
  const names = labNames(cfg);
  const [net, bits] = cfg.lab.subnet.split('/');
  if (!net || !bits) throw new NviError('NVI_ERR_CONFIG', `lab.subnet: ${cfg.lab.subnet} is not an IPv4 prefix`);
  mkdirSync(labDir(cfg), { recursive: true });
  const switches: { host: string; pid: number; log: string }[] = [];
  try {
    // 1. The underlay: a bridge in the fabric namespace, a veth per host.
    // The underlay carries IPv4 only (identities travel inside it), so IPv6 is off there.
    ip('netns', 'add', names.fabric);
    inNs(names.fabric, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1');
    inNs(names.fabric, 'ip', 'link', 'add', BRIDGE, 'type', 'bridge');
    inNs(names.fabric, 'ip', 'link', 'set', BRIDGE, 'up');
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
    // 2. A namespace per VM, empty until its switch creates the TAP inside it.
    for (const [vm, ns] of names.vms) {
      ip('netns', 'add', ns);
      inNs(ns, 'ip', 'link', 'set', 'lo', 'up');
      inNs(ns, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.accept_ra=1', 'net.ipv6.conf.default.accept_ra=1');
      log(`vm ${vm}: namespace ${ns}`);
    }
    // 3. The switches, one per host, in their host's namespace.
    for (const [host, ns] of names.hosts) {
      const logFile = join(labDir(cfg), `${host}.log`);
      const out = openSync(logFile, 'a');
      const debug = opts.exportSa ? ['--export-sa', saExportPath(cfg, host)] : [];
      const child = spawn('ip', ['netns', 'exec', ns, process.execPath, binary, 'run', '-c', cfg.file, '--host', host, '--vm-netns', cfg.lab.prefix, ...debug], {
        detached: true,
        stdio: ['ignore', out, out],
      });
      child.unref();
      if (!child.pid) throw new NviError('NVI_ERR_LAB', `could not start the switch of ${host}`);
      switches.push({ host, pid: child.pid, log: logFile });
      writeState(cfg, { config: cfg.file, switches });
      log(`switch ${host}: pid ${child.pid}, log ${logFile}`);
    }
    for (const s of switches) await waitFor(() => existsSync(controlPath(cfg, s.host)), 20_000, () => `the switch of ${s.host} did not start; see ${s.log}:\n${tail(s.log)}`);
    // 4. Each VM's interface: its identity, then wait for the switch's Router Advertisement.
    for (const [vmName, ns] of names.vms) {
      const vm = cfg.vms.get(vmName)!;
      inNs(ns, 'ip', 'link', 'set', vm.tap, 'address', formatMacColon(vm.mac));
      inNs(ns, 'ip', '-6', 'addr', 'add', `${vm.identityText}/128`, 'dev', vm.tap, 'nodad');
      inNs(ns, 'ip', 'link', 'set', vm.tap, 'up');
    }
    for (const [vmName, ns] of names.vms) {
      const vm = cfg.vms.get(vmName)!;
      const hasDefault = (): boolean => inNs(ns, 'ip', '-6', 'route', 'show', 'default').includes(ROUTER_LINK_LOCAL_TEXT);
      await waitFor(hasDefault, 15_000, () => `VM ${vmName} got no Router Advertisement from its switch (no default route via ${ROUTER_LINK_LOCAL_TEXT} in ${ns})`);
      log(`vm ${vmName}: ${vm.identityText} on ${vm.tap}, default route via ${ROUTER_LINK_LOCAL_TEXT} (from RA)`);
    }
  } catch (e) {
    await labDown(cfg, () => {});
    throw e;
  }
  const state = { config: cfg.file, switches };
  writeState(cfg, state);
  return state;
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
    if (!gone) process.kill(pid, 'SIGKILL');
    log(`switch ${host}: stopped (pid ${pid})`);
  }
  for (const ns of [...names.vms.values(), ...names.hosts.values(), names.fabric]) {
    if (present.has(ns) && deleteNetns(ns)) log(`namespace ${ns}: deleted`);
  }
  for (const host of names.hosts.keys()) {
    rmSync(controlPath(cfg, host), { force: true });
    rmSync(saExportPath(cfg, host), { force: true });
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
