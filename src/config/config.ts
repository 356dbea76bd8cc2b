// nvi-switch.yaml: loaded once, validated at construction, every error naming its YAML
// path. The result is plain typed data; tenant policy sections (groups, rules, tests) are
// kept raw here and compiled by src/policy.

import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { parseTenantPrefix, type TenantPrefix } from '../trust/identity.js';
import { type EspAlgorithm } from '../esp/esp-cipher.js';
import { parseMac } from '../base/address.js';
import { formatIpv6, parseIpv6Address } from '../base/address.js';
import { parseIpv4Address } from '../base/address.js';
import { at, bool, int, isObj, list, num, obj, oneOf, onlyKeys, opt, str, type Obj } from '../base/check.js';
import { ConfigError } from '../base/errors.js';

export interface HostConfig {
  readonly name: string;
  /** Underlay IPv4 address, uint32 host order. */
  readonly address: number;
  readonly addressText: string;
  /** The host's own key directory (absolute): host.key and vms/<vm>.key of the VMs it runs. */
  readonly keyDir: string;
  /** The CPUs its data-path threads run on (thread i on cpus[i mod length]); none: wherever the kernel puts them. */
  readonly cpus?: readonly number[];
}

/** CPU numbers a host may give its data-path threads: 0 to MAX_CPU. */
export const MAX_CPU = 1023;

export interface VmConfig {
  readonly name: string;
  readonly tenant: string;
  readonly host: string;
  readonly identity: Buffer; // 16 bytes
  readonly identityText: string; // canonical
  readonly mac: Buffer; // 6 bytes
  readonly level: number | undefined;
  /** Name of the TAP device the switch creates or attaches to (port kinds tap and qemu-tap). */
  readonly tap: string;
  /** How the VM reaches its switch. */
  readonly port: VmPortConfig;
}

/**
 * tap: a TAP the switch creates and owns (the namespace lab); qemu-tap: a TAP the hypervisor
 * opens by name (QEMU -netdev tap, libvirt type='ethernet'), the switch on its host side;
 * stream: a unix socket the switch listens on (QEMU -netdev stream).
 */
export type VmPortConfig =
  | { readonly kind: 'tap' | 'qemu-tap' }
  | { readonly kind: 'stream'; /** Absolute socket path; absent: under the host's state directory. */ readonly path?: string };

export const PORT_KINDS = ['tap', 'qemu-tap', 'stream'] as const;

export interface TenantConfig {
  readonly name: string;
  readonly prefix: TenantPrefix;
  readonly vms: readonly VmConfig[];
  /** The raw `groups`, `rules` and `tests` sections, compiled by src/policy. */
  readonly policy: { readonly groups: unknown; readonly rules: unknown; readonly tests: unknown };
  readonly path: string;
}

export interface StoreConfig {
  readonly kind: 'embedded' | 'etcd';
  /** embedded: absolute path of the SQLite file. */
  readonly path: string;
  /** etcd: endpoints (http://host:port or https://host:port). */
  readonly endpoints: readonly string[];
  /** etcd: every key starts with it. */
  readonly prefix: string;
  /** etcd over TLS: PEM files of the CA, and the client's certificate and key (absolute paths). */
  readonly tls?: { readonly ca?: string; readonly cert?: string; readonly key?: string };
}

export interface SwitchSettings {
  /** TSO and checksum offload between guests and their TAPs (the switch segments; the kernel runs GRO). */
  readonly offload: boolean;
  /** With offload: UDP segmentation offload too, on kernels that have it on a TAP (>= 6.2): both ways, as for TCP. */
  readonly offloadUdp: boolean;
  readonly cables: { readonly max: number; readonly ttl: number; readonly negativeTtl: number; readonly perPort: number };
  readonly upcall: { readonly queuePerCable: number; readonly queueTotal: number; readonly verifyPerSecond: number; readonly portMissesPerSecond: number; readonly prefetchReplies: boolean };
  readonly esp: {
    readonly cipher: EspAlgorithm;
    readonly rekey: { readonly seconds: number; readonly packets: number; readonly bytes: number };
    readonly grace: number;
    /** Spare SAs kept ready with each peer host a new pair asked for (src/switch/spares.ts); 0: none. */
    readonly spares: number;
  };
  /** The Prometheus endpoint (`switch.metrics.listen`); undefined: off. */
  readonly metrics?: { readonly host: string; readonly port: number };
  /** Microseconds the event loop keeps polling, without sleeping, after a packet (0: off). */
  readonly busyPollUs: number;
  /** Data-path threads per host (src/switch/workers/): each owns the ports of its share of the VMs. */
  readonly workers: number;
}

export interface CloudConfig {
  /** Absolute path of the YAML file; relative paths in it are resolved against its folder. */
  readonly file: string;
  readonly pkiDir: string;
  /** Control sockets, the hosts' epochs and ports, the lab's state (`stateDir`); undefined: .nvi-state beside the file. */
  readonly stateDir?: string;
  readonly store: StoreConfig;
  readonly underlay: { readonly mtu: number; readonly keyExchangePort: number; readonly espUdpPort: number };
  readonly switch: SwitchSettings;
  readonly hosts: ReadonlyMap<string, HostConfig>;
  readonly tenants: ReadonlyMap<string, TenantConfig>;
  readonly vms: ReadonlyMap<string, VmConfig>;
  readonly lab: { readonly prefix: string; readonly subnet: string };
}

const NAME = /^[a-z][a-z0-9-]{0,14}$/;

function name(v: unknown, path: string): string {
  const s = str(v, path);
  if (!NAME.test(s)) throw new ConfigError(path, `names are 1-15 of a-z, 0-9, '-', starting with a letter; got ${JSON.stringify(s)}`);
  return s;
}

export function loadConfig(file: string): CloudConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(file, `cannot read: ${(e as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw new ConfigError(file, `not valid YAML: ${(e as Error).message}`);
  }
  return parseConfig(doc, resolve(file));
}

export function parseConfig(doc: unknown, file: string): CloudConfig {
  const root = obj(doc, '(root)');
  onlyKeys(root, ['version', 'pki', 'stateDir', 'store', 'underlay', 'switch', 'hosts', 'lab', 'tenants'], '(root)');
  int(root.version, 'version', 1, 1);
  const dir = dirname(file);

  const pki = obj(root.pki, 'pki');
  onlyKeys(pki, ['dir'], 'pki');
  const pkiDir = resolve(dir, str(pki.dir, 'pki.dir'));

  const store = readStore(root.store, dir);
  const underlay = readUnderlay(root.underlay ?? {});
  const sw = readSwitch(root.switch ?? {});
  const hosts = readHosts(root.hosts, pkiDir, dir);
  const labRaw = obj(root.lab ?? {}, 'lab');
  onlyKeys(labRaw, ['prefix', 'subnet'], 'lab');
  const lab = {
    prefix: opt(labRaw, 'prefix', 'nvi-', str, 'lab'),
    subnet: opt(labRaw, 'subnet', '10.77.0.0/24', str, 'lab'),
  };
  const tenants = new Map<string, TenantConfig>();
  const vms = new Map<string, VmConfig>();
  const byIdentity = new Map<string, string>();
  const tenantsRaw = obj(root.tenants, 'tenants');
  for (const [tname, traw] of Object.entries(tenantsRaw)) {
    const tenant = readTenant(name(tname, `tenants.${tname}`), traw, hosts);
    for (const vm of tenant.vms) {
      const other = vms.get(vm.name);
      if (other) throw new ConfigError(`tenants.${tname}.vms.${vm.name}`, `VM name already used in tenant ${other.tenant}`);
      const dup = byIdentity.get(vm.identityText);
      if (dup) throw new ConfigError(`tenants.${tname}.vms.${vm.name}.identity`, `identity already belongs to ${dup}`);
      vms.set(vm.name, vm);
      byIdentity.set(vm.identityText, vm.name);
    }
    tenants.set(tenant.name, tenant);
  }
  const stateDir = root.stateDir === undefined ? undefined : resolve(dir, str(root.stateDir, 'stateDir'));
  return { file, pkiDir, stateDir, store, underlay, switch: sw, hosts, tenants, vms, lab };
}

function readStore(v: unknown, dir: string): StoreConfig {
  const o = obj(v ?? { kind: 'embedded' }, 'store');
  onlyKeys(o, ['kind', 'path', 'endpoints', 'prefix', 'tls'], 'store');
  const kind = oneOf(o.kind ?? 'embedded', 'store.kind', ['embedded', 'etcd'] as const);
  const path = resolve(dir, opt(o, 'path', '.nvi-state/store.db', str, 'store'));
  const endpoints = o.endpoints === undefined ? [] : list(o.endpoints, 'store.endpoints').map((e, k) => {
    const url = str(e, `store.endpoints[${k}]`);
    if (!/^https?:\/\/[^/\s]+$/.test(url)) throw new ConfigError(`store.endpoints[${k}]`, `expected http://host:port or https://host:port, got ${JSON.stringify(url)}`);
    return url;
  });
  if (kind === 'etcd' && endpoints.length === 0) throw new ConfigError('store.endpoints', 'etcd needs at least one endpoint');
  const prefix = opt(o, 'prefix', '/nvi/', str, 'store');
  if (!prefix.endsWith('/')) throw new ConfigError('store.prefix', `must end with '/', got ${JSON.stringify(prefix)}`);
  let tls: StoreConfig['tls'];
  if (o.tls !== undefined) {
    const t = obj(o.tls, 'store.tls');
    onlyKeys(t, ['ca', 'cert', 'key'], 'store.tls');
    const file = (k: 'ca' | 'cert' | 'key'): string | undefined => (t[k] === undefined ? undefined : resolve(dir, str(t[k], `store.tls.${k}`)));
    tls = { ca: file('ca'), cert: file('cert'), key: file('key') };
    if ((tls.cert === undefined) !== (tls.key === undefined)) throw new ConfigError('store.tls', 'a client certificate needs its key, and a key its certificate');
  }
  return { kind, path, endpoints, prefix, tls };
}

function readUnderlay(v: unknown): CloudConfig['underlay'] {
  const o = obj(v, 'underlay');
  onlyKeys(o, ['mtu', 'keyExchangePort', 'espUdpPort'], 'underlay');
  const u = {
    mtu: opt(o, 'mtu', 1500, (x, p) => int(x, p, 1334, 9000), 'underlay'), // 1280 + overhead at least
    keyExchangePort: opt(o, 'keyExchangePort', 7011, (x, p) => int(x, p, 1, 65535), 'underlay'),
    espUdpPort: opt(o, 'espUdpPort', 0, (x, p) => int(x, p, 0, 65535), 'underlay'), // 0: ESP as IP protocol 50
  };
  if (u.espUdpPort !== 0 && u.espUdpPort === u.keyExchangePort) {
    throw new ConfigError('underlay.espUdpPort', `${u.espUdpPort} is the key exchange's port too; give ESP in UDP a port of its own (4500, RFC 3948)`);
  }
  return u;
}

/** Most data-path threads one host may run. */
export const MAX_WORKERS = 64;

function readSwitch(v: unknown): SwitchSettings {
  const o = obj(v, 'switch');
  onlyKeys(o, ['offload', 'offloadUdp', 'cables', 'upcall', 'esp', 'metrics', 'busyPollUs', 'workers'], 'switch');
  const c = obj(o.cables ?? {}, 'switch.cables');
  onlyKeys(c, ['max', 'ttl', 'negativeTtl', 'perPort'], 'switch.cables');
  const u = obj(o.upcall ?? {}, 'switch.upcall');
  onlyKeys(u, ['queuePerCable', 'queueTotal', 'verifyPerSecond', 'portMissesPerSecond', 'prefetchReplies'], 'switch.upcall');
  const e = obj(o.esp ?? {}, 'switch.esp');
  onlyKeys(e, ['cipher', 'rekey', 'grace', 'spares'], 'switch.esp');
  const r = obj(e.rekey ?? {}, 'switch.esp.rekey');
  onlyKeys(r, ['seconds', 'packets', 'bytes'], 'switch.esp.rekey');
  const ip = (x: unknown, p: string, lo: number, hi: number): number => int(x, p, lo, hi);
  const max = opt(c, 'max', 100_000, (x, p) => ip(x, p, 1, 10_000_000), 'switch.cables');
  const busyPollUs = opt(o, 'busyPollUs', 0, (x, p) => ip(x, p, 0, 10_000_000), 'switch');
  const workers = opt(o, 'workers', 1, (x, p) => ip(x, p, 1, MAX_WORKERS), 'switch');
  return {
    offload: opt(o, 'offload', true, bool, 'switch'),
    offloadUdp: opt(o, 'offloadUdp', true, bool, 'switch'),
    cables: {
      max,
      ttl: opt(c, 'ttl', 300, (x, p) => num(x, p, 0.001, 86_400), 'switch.cables'),
      negativeTtl: opt(c, 'negativeTtl', 10, (x, p) => num(x, p, 0.001, 86_400), 'switch.cables'),
      // A VM's own egress cables may fill at most this much of the cache: a flood evicts only its own.
      perPort: opt(c, 'perPort', Math.min(16_384, max), (x, p) => ip(x, p, 1, max), 'switch.cables'),
    },
    upcall: {
      queuePerCable: opt(u, 'queuePerCable', 64, (x, p) => ip(x, p, 1, 65_536), 'switch.upcall'),
      queueTotal: opt(u, 'queueTotal', 4096, (x, p) => ip(x, p, 1, 1_048_576), 'switch.upcall'),
      verifyPerSecond: opt(u, 'verifyPerSecond', 2000, (x, p) => ip(x, p, 1, 1_000_000), 'switch.upcall'),
      portMissesPerSecond: opt(u, 'portMissesPerSecond', 2000, (x, p) => ip(x, p, 1, 1_000_000), 'switch.upcall'),
      prefetchReplies: opt(u, 'prefetchReplies', true, bool, 'switch.upcall'),
    },
    esp: {
      cipher: oneOf(e.cipher ?? 'aes-128-gcm', 'switch.esp.cipher', ['aes-128-gcm', 'aes-256-gcm'] as const),
      rekey: {
        seconds: opt(r, 'seconds', 3600, (x, p) => num(x, p, 0.1, 86_400 * 30), 'switch.esp.rekey'),
        packets: opt(r, 'packets', 1e9, (x, p) => ip(x, p, 1, 2 ** 53), 'switch.esp.rekey'),
        bytes: opt(r, 'bytes', 1e12, (x, p) => ip(x, p, 1, 2 ** 53), 'switch.esp.rekey'),
      },
      grace: opt(e, 'grace', 30, (x, p) => num(x, p, 0, 3600), 'switch.esp'),
      spares: opt(e, 'spares', 2, (x, p) => ip(x, p, 0, 16), 'switch.esp'),
    },
    metrics: o.metrics === undefined ? undefined : readMetrics(o.metrics),
    busyPollUs,
    workers,
  };
}

/** `switch.metrics: { listen: "127.0.0.1:9477" }` (or "[::1]:9477"): an address literal and a port. */
function readMetrics(v: unknown): { host: string; port: number } {
  const o = obj(v, 'switch.metrics');
  onlyKeys(o, ['listen'], 'switch.metrics');
  return parseListen(str(o.listen, 'switch.metrics.listen'), 'switch.metrics.listen', '127.0.0.1:9477');
}

/** "ADDRESS:PORT" (an IPv4 address, or an IPv6 one in brackets); `path` names it in the error. */
export function parseListen(text: string, path: string, example: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|(\d{1,3}(?:\.\d{1,3}){3})):(\d{1,5})$/.exec(text);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (!m || isIP(host!) === 0 || port < 1 || port > 65535) {
    throw new ConfigError(path, `"${text}" is not ADDRESS:PORT (an IPv4 address, or an IPv6 address in brackets, and a port 1-65535), e.g. ${example}`);
  }
  return { host: host!, port };
}

function readCpus(v: unknown, path: string): number[] {
  const cpus = list(v, path).map((c, i) => int(c, `${path}[${i}]`, 0, MAX_CPU));
  if (cpus.length === 0) throw new ConfigError(path, 'expected at least one CPU (or no cpus at all)');
  const dup = cpus.find((c, i) => cpus.indexOf(c) !== i);
  if (dup !== undefined) throw new ConfigError(path, `CPU ${dup} is listed twice`);
  return cpus;
}

function readHosts(v: unknown, pkiDir: string, dir: string): Map<string, HostConfig> {
  const hosts = new Map<string, HostConfig>();
  const seen = new Map<number, string>();
  for (const [hname, hraw] of Object.entries(obj(v, 'hosts'))) {
    const path = `hosts.${hname}`;
    const h = obj(hraw, path);
    onlyKeys(h, ['address', 'keys', 'cpus'], path);
    const addressText = str(h.address, `${path}.address`);
    const address = at(`${path}.address`, () => parseIpv4Address(addressText));
    const dup = seen.get(address);
    if (dup) throw new ConfigError(`${path}.address`, `address already used by host ${dup}`);
    seen.set(address, hname);
    const keyDir = h.keys === undefined ? join(pkiDir, 'keys', hname) : resolve(dir, str(h.keys, `${path}.keys`));
    const cpus = h.cpus === undefined ? undefined : readCpus(h.cpus, `${path}.cpus`);
    hosts.set(hname, { name: name(hname, path), address, addressText, keyDir, ...(cpus ? { cpus } : {}) });
  }
  if (hosts.size === 0) throw new ConfigError('hosts', 'at least one host is needed');
  return hosts;
}

function readTenant(tname: string, v: unknown, hosts: Map<string, HostConfig>): TenantConfig {
  const path = `tenants.${tname}`;
  const t = obj(v, path);
  onlyKeys(t, ['prefix', 'vms', 'groups', 'rules', 'tests'], path);
  const prefixText = str(t.prefix, `${path}.prefix`);
  const prefix = at(`${path}.prefix`, () => parseTenantPrefix(prefixText));
  const vms: VmConfig[] = [];
  for (const [vname, vraw] of Object.entries(obj(t.vms ?? {}, `${path}.vms`))) {
    vms.push(readVm(name(vname, `${path}.vms.${vname}`), tname, prefix, vraw, hosts, `${path}.vms.${vname}`));
  }
  return { name: tname, prefix, vms, policy: { groups: t.groups, rules: t.rules, tests: t.tests }, path };
}

function readVm(vname: string, tenant: string, prefix: TenantPrefix, v: unknown, hosts: Map<string, HostConfig>, path: string): VmConfig {
  const o: Obj = isObj(v) ? v : obj(v, path);
  onlyKeys(o, ['host', 'identity', 'mac', 'level', 'tap', 'port'], path);
  const host = str(o.host, `${path}.host`);
  if (!hosts.has(host)) throw new ConfigError(`${path}.host`, `unknown host ${JSON.stringify(host)} (hosts: ${[...hosts.keys()].join(', ')})`);
  const idText = str(o.identity, `${path}.identity`);
  const identity = at(`${path}.identity`, () => parseIpv6Address(idText));
  if (!identity.subarray(0, 8).equals(prefix.bytes)) {
    throw new ConfigError(`${path}.identity`, `${formatIpv6(identity)} is not inside the tenant prefix ${prefix.text}`);
  }
  const mac = o.mac === undefined ? macFromIdentity(identity) : at(`${path}.mac`, () => parseMac(str(o.mac, `${path}.mac`)));
  if ((mac[0] & 1) !== 0) throw new ConfigError(`${path}.mac`, 'a VM MAC must be unicast');
  const tap = o.tap === undefined ? `nvi-${vname}` : str(o.tap, `${path}.tap`);
  if (tap.length > 15) throw new ConfigError(`${path}.tap`, `interface names have at most 15 characters; ${JSON.stringify(tap)} is longer (set tap:)`);
  const port = readPort(o.port, `${path}.port`);
  return {
    name: vname,
    tenant,
    host,
    identity,
    identityText: formatIpv6(identity),
    mac,
    level: o.level === undefined ? undefined : int(o.level, `${path}.level`, 0, 1000),
    tap,
    port,
  };
}

function readPort(v: unknown, path: string): VmPortConfig {
  if (v === undefined) return { kind: 'tap' };
  const o = obj(v, path);
  onlyKeys(o, ['kind', 'path'], path);
  const kind = str(o.kind, `${path}.kind`);
  if (!(PORT_KINDS as readonly string[]).includes(kind)) throw new ConfigError(`${path}.kind`, `${JSON.stringify(kind)} is not a port kind (${PORT_KINDS.join(', ')})`);
  if (kind !== 'stream') {
    if (o.path !== undefined) throw new ConfigError(`${path}.path`, `only a stream port has a path; a ${kind} port is named by tap:`);
    return { kind: kind as 'tap' | 'qemu-tap' };
  }
  if (o.path === undefined) return { kind: 'stream' };
  const p = str(o.path, `${path}.path`);
  if (!p.startsWith('/')) throw new ConfigError(`${path}.path`, `${JSON.stringify(p)}: the socket path must be absolute`);
  // sockaddr_un.sun_path holds 108 bytes with the terminating zero.
  if (Buffer.byteLength(p) > 107) throw new ConfigError(`${path}.path`, `a unix socket path has at most 107 bytes; this one has ${Buffer.byteLength(p)}`);
  return { kind: 'stream', path: p };
}

/** A locally administered unicast MAC from the identity's last five bytes. */
export function macFromIdentity(identity: Uint8Array): Buffer {
  return Buffer.from([0x02, identity[11], identity[12], identity[13], identity[14], identity[15]]);
}

/** The VMs that run on `host`, in a stable order (their port indexes). */
export function vmsOnHost(cfg: CloudConfig, host: string): VmConfig[] {
  return [...cfg.vms.values()].filter((vm) => vm.host === host);
}
