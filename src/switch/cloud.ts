// Assembling a cloud from nvi-switch.yaml: the mapping store (seeded with the hosts'
// certificates and the tenants' policy), the verifier with the trust anchor, the compiled
// policy, and what a host does when it starts: publish a signed binding for each of its
// VMs (NVI Algorithm steps 2-5; a new epoch each time, so older bindings are refused).

import type { KeyObject } from 'node:crypto';
import type { CloudConfig } from '../config/config.js';
import { vmsOnHost } from '../config/config.js';
import { NviError } from '../base/errors.js';
import { makeBinding } from '../trust/binding.js';
import { loadAnchor, pkiPaths, readPrivateKey } from '../trust/pki.js';
import { BindingVerifier } from '../trust/verifier.js';
import type { Policy } from '../policy/decision.js';
import { compilePolicyDocument, policyDocument } from '../policy/document.js';
import { openStore, seedStore } from '../store/open-store.js';
import type { MappingStore } from '../store/store.js';
import type { Clock } from '../base/clock.js';

/** Validity of the bindings a host publishes for its VMs, seconds. */
export const BINDING_VALIDITY_SECONDS = 24 * 3600;

export interface Cloud {
  readonly config: CloudConfig;
  readonly store: MappingStore;
  readonly verifier: BindingVerifier;
  readonly anchor: string;
  readonly clock: Clock;
  /** The policy compiled from the store's current document. */
  policy: Policy;
}

export interface OpenCloudOptions {
  readonly clock?: Clock;
  /** Use this store instead of the one the config names (replay uses a private one). */
  readonly store?: MappingStore;
  /** Publish the config's policy when it differs from the store's (default true). */
  readonly publishPolicy?: boolean;
}

export async function openCloud(config: CloudConfig, opts: OpenCloudOptions = {}): Promise<Cloud> {
  const clock = opts.clock ?? { now: () => Date.now() };
  const anchor = loadAnchor(config.pkiDir);
  const store = opts.store ?? (await openStore(config));
  const seeded = await seedStore(config, store, clock.now());
  if (seeded.skipped.length > 0) {
    throw new NviError('NVI_ERR_PKI', `hosts not ready: ${seeded.skipped.map((s) => `${s.host}: ${s.reason}`).join('; ')}`);
  }
  const policy = await currentPolicy(config, store, opts.publishPolicy ?? true);
  const cloud = { config, store, anchor, clock, policy } as Omit<Cloud, 'verifier'>;
  return { ...cloud, verifier: newVerifier(cloud) };
}

/** A verifier of its own, as every host has (its caches and the epochs it has seen). */
export function newVerifier(cloud: Pick<Cloud, 'config' | 'store' | 'anchor' | 'clock'>): BindingVerifier {
  return new BindingVerifier(cloud.anchor, cloud.store, cloud.clock, { verifyPerSecond: cloud.config.switch.upcall.verifyPerSecond });
}

/** The store's policy, after publishing the config's own when it differs. */
async function currentPolicy(config: CloudConfig, store: MappingStore, publish: boolean): Promise<Policy> {
  const mine = policyDocument(config.tenants.values());
  let rec = await store.policy();
  if (publish && (!rec || rec.document !== mine)) {
    const revision = await store.publishPolicy(mine);
    rec = { revision, document: mine };
  }
  if (!rec) throw new NviError('NVI_ERR_CONFIG', 'the mapping store holds no policy yet (run with the config that defines it)');
  return compilePolicyDocument(rec.document, rec.revision);
}

/** Compile the store's policy now (after a change notification). */
export async function reloadPolicy(store: MappingStore): Promise<Policy | undefined> {
  const rec = await store.policy();
  return rec ? compilePolicyDocument(rec.document, rec.revision) : undefined;
}

/** A host starts its VMs: sign and publish a binding for each, one epoch above the last. */
export async function publishBindings(cloud: Cloud, host: string): Promise<number> {
  const cfg = cloud.config;
  const h = cfg.hosts.get(host);
  if (!h) throw new NviError('NVI_ERR_CONFIG', `no host ${host} in ${cfg.file}`);
  let n = 0;
  for (const vm of vmsOnHost(cfg, host)) {
    const prev = await cloud.store.lookup(vm.identityText);
    const epoch = (prev?.epoch ?? 0) + 1;
    await cloud.store.publish(makeBinding(cfg, vm, h, epoch, cloud.clock.now(), BINDING_VALIDITY_SECONDS));
    n++;
  }
  return n;
}

/** The host's private key (signs its key-exchange messages). */
export function hostPrivateKey(cfg: CloudConfig, host: string): KeyObject {
  return readPrivateKey(pkiPaths(cfg.pkiDir).hostKey(host));
}
