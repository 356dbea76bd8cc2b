// nvi-switch lab up|down|status [-c nvi-switch.yaml] [--json] [--export-sa]
// nvi-switch lab restart HOST [-c nvi-switch.yaml]   stop HOST's switch and start a new one
// nvi-switch lab attach|detach VM [-c nvi-switch.yaml]  a VM's namespace and port while the lab runs
// nvi-switch lab migrate VM --to HOST [-c nvi-switch.yaml]  live migration, the VM's namespace kept
// --export-sa (debug): each switch writes the keys of its SAs beside the lab state, for tshark.
// The lab of the config in network namespaces (src/lab/lab.ts). Needs root.

import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { loadConfig, type CloudConfig } from '../config/config.js';
import { NviError } from '../base/errors.js';
import { isLabUp, labAttach, labDetach, labDown, labMigrate, labNames, labRestartSwitch, labUp, readState, ROUTER_LINK_LOCAL_TEXT } from '../lab/lab.js';
import { inNs, netnsExists } from '../lab/netns.js';
import type { CableInfo } from '../switch/cable-info.js';
import { controlRequest } from '../switch/control.js';
import { controlPath } from '../switch/paths.js';
import { CONFIG_OPTION, parseOptions } from './args.js';
import { table } from './cmd-control.js';

const BINARY = fileURLToPath(new URL('../../../bin/nvi-switch.js', import.meta.url));

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseOptions(argv, { ...CONFIG_OPTION, json: { type: 'boolean' }, 'export-sa': { type: 'boolean' }, to: { type: 'string' } });
  const [sub, ...rest] = positionals;
  const usage = 'usage: nvi-switch lab up|down|status | restart HOST | attach|detach VM | migrate VM --to HOST [-c nvi-switch.yaml]';
  const withName = ['restart', 'attach', 'detach', 'migrate'].includes(sub ?? '');
  if (withName ? rest.length !== 1 : rest.length > 0 || !['up', 'down', 'status'].includes(sub ?? '')) throw new NviError('NVI_ERR_USAGE', usage);
  if ((sub === 'migrate') !== (values.to !== undefined)) throw new NviError('NVI_ERR_USAGE', usage);
  const cfg = loadConfig(values.config);
  const say = (line: string): void => {
    process.stdout.write(`${line}\n`);
  };
  if (sub === 'up') {
    await labUp(cfg, BINARY, say, { exportSa: values['export-sa'] });
    say(`lab up: ${cfg.hosts.size} hosts, ${cfg.vms.size} VMs. Try: ip netns exec ${cfg.lab.prefix}web1 ping -6 -c 3 ${cfg.vms.get('web2')?.identityText ?? '<identity>'}`);
    return 0;
  }
  if (sub === 'restart') {
    await labRestartSwitch(cfg, rest[0], BINARY, say);
    return 0;
  }
  if (sub === 'attach') {
    await labAttach(cfg, rest[0], say);
    return 0;
  }
  if (sub === 'detach') {
    await labDetach(cfg, rest[0], say);
    return 0;
  }
  if (sub === 'migrate') {
    const r = await labMigrate(cfg, rest[0], values.to!);
    say(`vm ${r.vm}: migrated ${r.from} -> ${r.to}, active there ${r.switchoverMs} ms after it left ${r.from}`);
    return 0;
  }
  if (sub === 'down') {
    await labDown(cfg, say);
    say('lab down');
    return 0;
  }
  const status = await labStatus(cfg);
  if (values.json) say(JSON.stringify(status, null, 2));
  else printStatus(status);
  return status.up ? 0 : 1;
}

interface Status {
  up: boolean;
  hosts: { host: string; namespace: string; address: string; pid?: number; running: boolean; stats?: Record<string, unknown> }[];
  vms: { vm: string; tenant: string; host: string; namespace: string; identity: string; ready: boolean; defaultRoute: boolean }[];
  cables: Record<string, CableInfo[]>;
}

async function labStatus(cfg: CloudConfig): Promise<Status> {
  const names = labNames(cfg);
  const state = readState(cfg);
  const hosts: Status['hosts'] = [];
  const cables: Record<string, CableInfo[]> = {};
  for (const [host, ns] of names.hosts) {
    const pid = state?.switches.find((s) => s.host === host)?.pid;
    const path = controlPath(cfg, host);
    let stats: Record<string, unknown> | undefined;
    if (existsSync(path)) {
      try {
        stats = (await controlRequest(path, { cmd: 'stats' })) as Record<string, unknown>;
        cables[host] = (await controlRequest(path, { cmd: 'cables' })) as CableInfo[];
      } catch {
        stats = undefined;
      }
    }
    hosts.push({ host, namespace: ns, address: cfg.hosts.get(host)!.addressText, pid, running: stats !== undefined, stats });
  }
  const vms: Status['vms'] = [];
  for (const [vmName, ns] of names.vms) {
    const vm = cfg.vms.get(vmName)!;
    let ready = false;
    let defaultRoute = false;
    if (netnsExists(ns)) {
      try {
        ready = inNs(ns, 'ip', '-6', 'addr', 'show', 'dev', vm.tap).includes(vm.identityText);
        defaultRoute = inNs(ns, 'ip', '-6', 'route', 'show', 'default').includes(ROUTER_LINK_LOCAL_TEXT);
      } catch {
        ready = false;
      }
    }
    vms.push({ vm: vmName, tenant: vm.tenant, host: vm.host, namespace: ns, identity: vm.identityText, ready, defaultRoute });
  }
  return { up: isLabUp(cfg) && hosts.every((h) => h.running), hosts, vms, cables };
}

function printStatus(s: Status): void {
  const out = (t: string): boolean => process.stdout.write(t);
  out(`lab ${s.up ? 'up' : 'NOT up'}\n\nhosts\n`);
  out(table(['host', 'namespace', 'address', 'pid', 'switch'], s.hosts.map((h) => [h.host, h.namespace, h.address, String(h.pid ?? '-'), h.running ? 'running' : 'not running'])));
  out('\nVMs\n');
  out(table(['vm', 'tenant', 'host', 'namespace', 'identity', 'interface', 'default route'], s.vms.map((v) => [v.vm, v.tenant, v.host, v.namespace, v.identity, v.ready ? 'up' : 'missing', v.defaultRoute ? 'via switch (RA)' : 'none'])));
  for (const [host, list] of Object.entries(s.cables)) {
    out(`\ncables on ${host}\n`);
    out(table(['dir', 'pair', 'peer', 'state', 'rule', 'packets', 'bytes'], list.map((c) => [c.direction, `${c.srcVm ?? c.src} -> ${c.dstVm ?? c.dst}`, c.peer, c.state, c.rule, String(c.packets), String(c.bytes)])));
  }
  for (const h of s.hosts) {
    if (!h.stats) continue;
    const e = h.stats.egress as Record<string, unknown>;
    const i = h.stats.ingress as Record<string, unknown>;
    out(`\ncounters on ${h.host}\n  egress  ${JSON.stringify(e)}\n  ingress ${JSON.stringify(i)}\n`);
  }
}
