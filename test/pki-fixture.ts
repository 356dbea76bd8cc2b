// Test PKI built at test time: a CA, hosts h1 and h2, VMs, bindings, all at fixed times
// around T0 with short validity, and a clock the tests move by hand.

import type { KeyObject } from 'node:crypto';
import { signBinding, type BindingFields } from '../src/trust/binding.js';
import { deriveIdentity, parseTenantPrefix } from '../src/trust/identity.js';
import {
  createCa,
  generateKey,
  issueHostCertificate,
  issueVmCertificate,
  spkiDer,
  type CaCredentials,
  type Validity,
} from '../src/trust/pki.js';
import { formatIpv6 } from '../src/base/address.js';
import type { MappingStore } from '../src/store/store.js';
import type { BindingRecord, HostRecord } from '../src/trust/records.js';

export const T0 = Date.parse('2030-06-01T12:00:00.000Z');
export const MINUTE = 60_000;
export const HOUR = 60 * MINUTE;
export const DAY = 24 * HOUR;

export const PREFIX = parseTenantPrefix('fd9a:3c7e:51b2:1::/64');
/** Certificates valid one day around T0; bindings one hour. */
export const CERT_VALIDITY: Validity = { notBefore: T0 - DAY / 2, notAfter: T0 + DAY / 2 };
export const BINDING_VALIDITY = { notBefore: T0 - HOUR / 2, notAfter: T0 + HOUR / 2 };

export class FakeClock {
  constructor(public t = T0) {}
  now(): number {
    return this.t;
  }
}

/** Host records in memory: the only part of the store the verifier uses. */
export class MemoryHosts implements Pick<MappingStore, 'lookupHost'> {
  readonly hosts = new Map<string, HostRecord>();
  async lookupHost(host: string): Promise<HostRecord | undefined> {
    return this.hosts.get(host);
  }
}

export interface TestVm {
  readonly name: string;
  readonly identity: string;
  readonly key: KeyObject;
  readonly certificate: string;
}

export interface TestPki {
  readonly ca: CaCredentials;
  readonly hosts: MemoryHosts;
  readonly web1: TestVm;
  readonly web2: TestVm;
}

export function identityOf(key: KeyObject): string {
  return formatIpv6(deriveIdentity(PREFIX, spkiDer(key)));
}

export async function makeVm(ca: CaCredentials, name: string, opts: { identity?: string; validity?: Validity; tenant?: string } = {}): Promise<TestVm> {
  const key = generateKey().privateKey;
  const identity = opts.identity ?? identityOf(key);
  const certificate = await issueVmCertificate(ca, {
    vm: name,
    tenant: opts.tenant ?? 'blue',
    identity,
    publicKey: key,
    validity: opts.validity ?? CERT_VALIDITY,
  });
  return { name, identity, key, certificate };
}

export async function hostRecord(ca: CaCredentials, host: string, address: string, validity = CERT_VALIDITY): Promise<HostRecord> {
  const certificate = await issueHostCertificate(ca, { host, address, publicKey: generateKey().publicKey, validity });
  return { host, address, certificate };
}

export async function makePki(): Promise<TestPki> {
  const ca = await createCa({ name: 'test CA', validity: { notBefore: T0 - 10 * DAY, notAfter: T0 + 10 * DAY } });
  const hosts = new MemoryHosts();
  hosts.hosts.set('h1', await hostRecord(ca, 'h1', '10.77.0.1'));
  hosts.hosts.set('h2', await hostRecord(ca, 'h2', '10.77.0.2'));
  return { ca, hosts, web1: await makeVm(ca, 'web1'), web2: await makeVm(ca, 'web2') };
}

/** The fields of a binding of `vm` on h1, epoch 1, valid one hour around T0; override any. */
export function fields(vm: TestVm, over: Partial<BindingFields> = {}): BindingFields {
  return {
    identity: vm.identity,
    tenant: 'blue',
    vm: vm.name,
    host: 'h1',
    hostAddress: '10.77.0.1',
    epoch: 1,
    notBefore: new Date(BINDING_VALIDITY.notBefore).toISOString(),
    notAfter: new Date(BINDING_VALIDITY.notAfter).toISOString(),
    certificate: vm.certificate,
    ...over,
  };
}

export function bind(vm: TestVm, over: Partial<BindingFields> = {}, key: KeyObject = vm.key): BindingRecord {
  return signBinding(fields(vm, over), key);
}
