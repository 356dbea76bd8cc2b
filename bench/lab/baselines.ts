// The baselines of the lab bench, built on the nvi-switch lab's own host namespaces so that
// they cross the same fabric bridge and the same number of namespaces as the VMs' traffic:
//
//   wireguard-go   <p>wgc1 --veth--> <p>h1 (kernel forwards into the TUN <p>wg1; wireguard-go
//                  encrypts in userspace, UDP 51820 over underlay0) --<p>fabric--> <p>h2
//                  (wireguard-go decrypts into <p>wg2's TUN, kernel forwards) --veth--> <p>wgc2
//                  MTU 1420 on the client veths and the TUNs (wg-quick's default on a 1500
//                  underlay); nvi-switch's VMs get 1446.
//   OpenVPN        <p>ovc1 --veth--> <p>h1 (kernel forwards into the TUN <p>ov1; openvpn, in
//                  userspace (--disable-dco), seals with AES-128-GCM and sends UDP 1194 over
//                  underlay0) --<p>fabric--> <p>h2 (openvpn opens into <p>ov2) --veth--> <p>ovc2.
//                  Point to point, TLS (an EC CA and a certificate per host, made with openssl
//                  in the bench's temp dir), MTU 1420 as wireguard-go's.
//   kernel         <p>krc1 --veth--> <p>h1 --VXLAN <p>vx (VNI 77, UDP 4789, no encryption, no
//                  userspace)--> <p>h2 --veth--> <p>krc2; and <p>krc3 on h1 for the same-host
//                  reference. Client MTU 1446, as nvi-switch's VMs. VXLAN because this kernel
//                  has no sit/ipip/gre; IPv6-in-IPv4 (41) would also be copied to the switches'
//                  raw sockets.
//
// Clients speak IPv6 (as the VMs do): wgc1 fd00:77:1::2, wgc2 fd00:77:2::2, ovc1 fd00:79:1::2,
// ovc2 fd00:79:2::2, krc1 fd00:78:1::2,
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
export const OVPN_PORT = 1194;
const WG_MTU = 1420;
const VM_MTU = 1446;

export interface HostSide {
  readonly ns: string;        // the lab host namespace, e.g. nvi-b-h1
  readonly address: string;   // its underlay address
}

export interface Baselines {
  readonly commands: string[];
  readonly wg: { readonly pids: { label: string; pid: number }[] };
  readonly ovpn: { readonly pids: { label: string; pid: number }[] };
  /** Undefined when the kernel cannot make a VXLAN device; `kernelError` says why. */
  kernel?: true;
  kernelError?: string;
}

export function baselineNamespaces(prefix: string): string[] {
  return ['wgc1', 'wgc2', 'ovc1', 'ovc2', 'krc1', 'krc2', 'krc3'].map((n) => `${prefix}${n}`);
}

export function wgDevice(prefix: string, i: 1 | 2): string {
  return `${prefix}wg${i}`;
}

export function ovpnDevice(prefix: string, i: 1 | 2): string {
  return `${prefix}ov${i}`;
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
 * OpenVPN between the host namespaces: its PKI, the TUNs (made here, so that IPv6 is on before
 * openvpn takes them), one openvpn per host in the foreground, registered for teardown.
 */
async function openvpn(r: Recorder, prefix: string, hosts: readonly [HostSide, HostSide], clients: readonly [string, string], dir: string): Promise<{ label: string; pid: number }[]> {
  r.note('# OpenVPN');
  const pem = (name: string): string => join(dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  r.run('openssl', 'req', '-x509', ...ec, '-keyout', pem('ovpn-ca.key'), '-out', pem('ovpn-ca.crt'), '-days', '2', '-subj', '/CN=nvi-bench-ca');
  for (const i of [1, 2]) {
    r.run('openssl', 'req', ...ec, '-keyout', pem(`ovpn${i}.key`), '-out', pem(`ovpn${i}.csr`), '-subj', `/CN=ovpn-h${i}`);
    r.run('openssl', 'x509', '-req', '-in', pem(`ovpn${i}.csr`), '-CA', pem('ovpn-ca.crt'), '-CAkey', pem('ovpn-ca.key'), '-CAcreateserial', '-out', pem(`ovpn${i}.crt`), '-days', '2');
  }
  const pids: { label: string; pid: number }[] = [];
  for (const i of [1, 2] as const) {
    const [h, peer] = i === 1 ? [hosts[0], hosts[1]] : [hosts[1], hosts[0]];
    const [local, remote] = i === 1 ? ['fd00:79:1', 'fd00:79:2'] : ['fd00:79:2', 'fd00:79:1'];
    const dev = ovpnDevice(prefix, i);
    client(r, h.ns, 'ovc', clients[i - 1], local, WG_MTU);
    r.run('ip', '-n', h.ns, 'tuntap', 'add', 'dev', dev, 'mode', 'tun');
    r.run('ip', 'netns', 'exec', h.ns, 'sysctl', '-q', '-w', `net.ipv6.conf.${dev}.disable_ipv6=0`);
    r.run('ip', '-n', h.ns, 'link', 'set', dev, 'mtu', String(WG_MTU), 'up');
    r.run('ip', '-n', h.ns, 'route', 'add', `${remote}::/64`, 'dev', dev);
    const log = join(dir, `${dev}.log`);
    const args = ['--dev', dev, '--dev-type', 'tun', '--disable-dco', '--proto', 'udp4', '--local', h.address, '--lport', String(OVPN_PORT),
      '--remote', peer.address, '--rport', String(OVPN_PORT), i === 1 ? '--tls-server' : '--tls-client', '--dh', 'none',
      '--ca', pem('ovpn-ca.crt'), '--cert', pem(`ovpn${i}.crt`), '--key', pem(`ovpn${i}.key`),
      '--data-ciphers', 'AES-128-GCM', '--tun-mtu', String(WG_MTU), '--verb', '1'];
    r.note(`ip netns exec ${h.ns} openvpn ${args.join(' ')} >${log} 2>&1 &`);
    const d = start('ip', ['netns', 'exec', h.ns, 'openvpn', ...args], { logFile: log });
    pids.push({ label: `openvpn ${h.ns}`, pid: d.pid });
  }
  return pids;
}

/**
 * Build the baselines. `dir` holds the WireGuard keys, the OpenVPN PKI and the peers' logs.
 * wireguard-go (-f) and openvpn run in the foreground, registered, so teardown stops them by PID.
 */
export async function buildBaselines(prefix: string, h1: HostSide, h2: HostSide, dir: string): Promise<Baselines> {
  const r = new Recorder();
  const [c1, c2, o1, o2, k1, k2, k3] = baselineNamespaces(prefix) as [string, string, string, string, string, string, string];
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
  const out: Baselines = { commands: r.commands, wg: { pids }, ovpn: { pids: await openvpn(r, prefix, [h1, h2], [o1, o2], dir) } };

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
