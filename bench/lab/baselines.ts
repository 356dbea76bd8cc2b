// The baselines of the lab bench, built on the nvi-switch lab's own host namespaces so that
// they cross the same fabric bridge and the same number of namespaces as the VMs' traffic:
//
//   wireguard-go   <p>wgc1 --veth--> <p>h1 (kernel forwards into the TUN <p>wg1; wireguard-go
//                  encrypts in userspace, UDP 51820 over underlay0) --<p>fabric--> <p>h2
//                  (wireguard-go decrypts into <p>wg2's TUN, kernel forwards) --veth--> <p>wgc2
//                  MTU 1420 on the client veths and the TUNs (wg-quick's default on a 1500
//                  underlay); nvi-switch's VMs get 1446.
//   kernel         <p>krc1 --veth--> <p>h1 --VXLAN <p>vx (VNI 77, UDP 4789, no encryption, no
//                  userspace)--> <p>h2 --veth--> <p>krc2; and <p>krc3 on h1 for the same-host
//                  reference. Client MTU 1446, as nvi-switch's VMs. VXLAN because this kernel
//                  has no sit/ipip/gre; IPv6-in-IPv4 (41) would also be copied to the switches'
//                  raw sockets.
//
// Clients speak IPv6 (as the VMs do): wgc1 fd00:77:1::2, wgc2 fd00:77:2::2, krc1 fd00:78:1::2,
// krc2 fd00:78:2::2, krc3 fd00:78:3::2; the host side of each veth is ::1 of its /64.
// The host namespaces have IPv6 off (the lab's underlay is IPv4 only): it is turned on only on
// the interfaces added here, plus net.ipv6.conf.all.forwarding=1. The switches are idle while
// the baselines run.
//
// Every command is recorded in `commands` in the order it ran (shell syntax), for the report.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BenchError, sh, start, trySh } from './proc.js';

export const WG_PORT = 51820;
const WG_MTU = 1420;
const VM_MTU = 1446;

export interface HostSide {
  readonly ns: string;        // the lab host namespace, e.g. nvi-b-h1
  readonly address: string;   // its underlay address
}

export interface Baselines {
  readonly commands: string[];
  readonly wg: { readonly pids: { label: string; pid: number }[] };
  /** Undefined when the kernel cannot make a VXLAN device; `kernelError` says why. */
  kernel?: true;
  kernelError?: string;
}

export function baselineNamespaces(prefix: string): string[] {
  return ['wgc1', 'wgc2', 'krc1', 'krc2', 'krc3'].map((n) => `${prefix}${n}`);
}

export function wgDevice(prefix: string, i: 1 | 2): string {
  return `${prefix}wg${i}`;
}

export function vxDevice(prefix: string): string {
  return `${prefix}vx`;
}

class Recorder {
  readonly commands: string[] = [];
  run(cmd: string, ...args: string[]): string {
    this.commands.push([cmd, ...args].join(' '));
    return sh(cmd, args);
  }
  note(line: string): void {
    this.commands.push(line);
  }
}

/** A client namespace `client` joined to host namespace `host` by a veth `hostIf` <-> eth0. */
function client(r: Recorder, host: string, hostIf: string, clientNs: string, net: string, mtu: number): void {
  r.run('ip', 'netns', 'add', clientNs);
  r.run('ip', 'link', 'add', hostIf, 'netns', host, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', clientNs);
  r.run('ip', 'netns', 'exec', host, 'sysctl', '-q', '-w', `net.ipv6.conf.${hostIf}.disable_ipv6=0`);
  r.run('ip', '-n', host, 'link', 'set', hostIf, 'mtu', String(mtu), 'up');
  r.run('ip', '-n', host, 'addr', 'add', `${net}::1/64`, 'dev', hostIf, 'nodad');
  r.run('ip', '-n', clientNs, 'link', 'set', 'lo', 'up');
  r.run('ip', '-n', clientNs, 'link', 'set', 'eth0', 'mtu', String(mtu), 'up');
  r.run('ip', '-n', clientNs, 'addr', 'add', `${net}::2/64`, 'dev', 'eth0', 'nodad');
  r.run('ip', '-n', clientNs, 'route', 'add', 'default', 'via', `${net}::1`);
}

async function waitLink(ns: string, dev: string, ms: number, what: () => string): Promise<void> {
  const end = Date.now() + ms;
  while (!trySh('ip', ['-n', ns, 'link', 'show', dev])) {
    if (Date.now() > end) throw new BenchError(what());
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * Build both baselines. `dir` holds the WireGuard keys and wireguard-go's logs.
 * wireguard-go runs in the foreground (-f), registered, so teardown stops it by PID.
 */
export async function buildBaselines(prefix: string, h1: HostSide, h2: HostSide, dir: string): Promise<Baselines> {
  const r = new Recorder();
  const [c1, c2, k1, k2, k3] = baselineNamespaces(prefix) as [string, string, string, string, string];
  for (const h of [h1, h2]) r.run('ip', 'netns', 'exec', h.ns, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.forwarding=1');

  // 1. wireguard-go between the host namespaces.
  r.note('# wireguard-go');
  client(r, h1.ns, 'wgc', c1, 'fd00:77:1', WG_MTU);
  client(r, h2.ns, 'wgc', c2, 'fd00:77:2', WG_MTU);
  const keys = [1, 2].map((i) => {
    const priv = sh('wg', ['genkey']).trim();
    const file = join(dir, `wg${i}.key`);
    writeFileSync(file, `${priv}\n`, { mode: 0o600 });
    return { file, pub: sh('wg', ['pubkey'], { input: `${priv}\n` }).trim() };
  });
  r.note(`wg genkey > ${keys[0]!.file}; wg genkey > ${keys[1]!.file}  (public keys with wg pubkey)`);
  const pids: { label: string; pid: number }[] = [];
  const sides = [
    { h: h1, peer: h2, dev: wgDevice(prefix, 1), key: keys[0]!, peerPub: keys[1]!.pub, local: 'fd00:77:1', remote: 'fd00:77:2' },
    { h: h2, peer: h1, dev: wgDevice(prefix, 2), key: keys[1]!, peerPub: keys[0]!.pub, local: 'fd00:77:2', remote: 'fd00:77:1' },
  ];
  for (const s of sides) {
    const log = join(dir, `${s.dev}.log`);
    r.note(`WG_PROCESS_FOREGROUND=1 ip netns exec ${s.h.ns} wireguard-go -f ${s.dev} >${log} 2>&1 &`);
    const d = start('ip', ['netns', 'exec', s.h.ns, 'wireguard-go', '-f', s.dev], { logFile: log, env: { ...process.env, WG_PROCESS_FOREGROUND: '1', LOG_LEVEL: 'error' } });
    pids.push({ label: `wireguard-go ${s.h.ns}`, pid: d.pid });
    await waitLink(s.h.ns, s.dev, 5000, () => `wireguard-go made no ${s.dev} in ${s.h.ns}; see ${log}`);
    r.run('ip', 'netns', 'exec', s.h.ns, 'wg', 'set', s.dev, 'listen-port', String(WG_PORT), 'private-key', s.key.file,
      'peer', s.peerPub, 'endpoint', `${s.peer.address}:${WG_PORT}`, 'allowed-ips', `${s.remote}::/64`);
    r.run('ip', 'netns', 'exec', s.h.ns, 'sysctl', '-q', '-w', `net.ipv6.conf.${s.dev}.disable_ipv6=0`);
    r.run('ip', '-n', s.h.ns, 'link', 'set', s.dev, 'mtu', String(WG_MTU), 'up');
    r.run('ip', '-n', s.h.ns, 'route', 'add', `${s.remote}::/64`, 'dev', s.dev);
  }
  const out: Baselines = { commands: r.commands, wg: { pids } };

  // 2. The kernel: VXLAN, no encryption, no userspace.
  r.note('# kernel (VXLAN)');
  const vx = vxDevice(prefix);
  try {
    const ends = [
      { h: h1, peer: h2, me: 'fd00:78:ff::1', them: 'fd00:78:ff::2', remoteNet: 'fd00:78:2' },
      { h: h2, peer: h1, me: 'fd00:78:ff::2', them: 'fd00:78:ff::1', remoteNet: 'fd00:78:1' },
    ];
    for (const e of ends) {
      r.run('ip', '-n', e.h.ns, 'link', 'add', vx, 'type', 'vxlan', 'id', '77', 'local', e.h.address, 'remote', e.peer.address, 'dstport', '4789', 'dev', 'underlay0');
      r.run('ip', 'netns', 'exec', e.h.ns, 'sysctl', '-q', '-w', `net.ipv6.conf.${vx}.disable_ipv6=0`);
      r.run('ip', '-n', e.h.ns, 'addr', 'add', `${e.me}/64`, 'dev', vx, 'nodad');
      r.run('ip', '-n', e.h.ns, 'link', 'set', vx, 'up');
    }
    client(r, h1.ns, 'krc', k1, 'fd00:78:1', VM_MTU);
    client(r, h2.ns, 'krc', k2, 'fd00:78:2', VM_MTU);
    client(r, h1.ns, 'krc3', k3, 'fd00:78:3', VM_MTU);
    for (const e of ends) r.run('ip', '-n', e.h.ns, 'route', 'add', `${e.remoteNet}::/64`, 'via', e.them, 'dev', vx);
    out.kernel = true;
  } catch (e) {
    out.kernelError = (e as Error).message;
  }
  return out;
}
