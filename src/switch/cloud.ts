// Assembling a cloud from nvi-switch.yaml: the mapping store, the verifier with the trust
// anchor, the compiled policy, and what a host does when it starts: publish a signed binding
// for each of its VMs (NVI Algorithm steps 2-5; a new epoch each time, so older bindings are
// refused).
//
// Two roles touch the store. The operator (lab up, policy apply, an offline replay) holds the
// CA key: it publishes the hosts' certificates and the tenants' policy, signed. A switch holds
// only its own keys: it reads the policy and takes it only with the CA's signature.

import { createPublicKey, type KeyObject } from 'node:crypto';
import { systemClock, type Clock } from '../base/clock.js';
import { NviError } from '../base/errors.js';
import type { CloudConfig, VmConfig } from '../config/config.js';
import { vmsOnHost } from '../config/config.js';
import type { Policy } from '../policy/decision.js';
import { compilePolicyDocument, policyDocument } from '../policy/document.js';
import { policyRefusal, signPolicy } from '../policy/signed-policy.js';
import { openStore, seedStore } from '../store/open-store.js';
import type { MappingStore, PolicyRecord } from '../store/store.js';
import { makeBinding } from '../trust/binding.js';
import { hostKeyPaths, loadAnchor, loadCa, readPrivateKey } from '../trust/pki.js';
import { BindingVerifier, type EpochMemory, type HostDirectory } from '../trust/verifier.js';

/** Validity of the bindings a host publishes for its VMs, seconds. */
export const BINDING_VALIDITY_SECONDS = 24 * 3600;

export interface Cloud {
  readonly config: CloudConfig;
  readonly store: MappingStore;
  readonly anchor: string;
  /** The anchor's public key: policies must be signed with its private key. */
  readonly anchorKey: KeyObject;
  readonly clock: Clock;
  /** The policy compiled from the store's current (signed) document. */
  policy: Policy;
}

export interface OpenCloudOptions {
  readonly clock?: Clock;
  /** Use this store instead of the one the config names (replay uses a private one). */
  readonly store?: MappingStore;
  /** As the operator (with the CA key): publish the hosts' certificates and the config's policy, signed, first. */
  readonly operator?: boolean;
}

export async function openCloud(config: CloudConfig, opts: OpenCloudOptions = {}): Promise<Cloud> {
  const clock = opts.clock ?? systemClock;
  const anchor = loadAnchor(config.pkiDir);
  const anchorKey = createPublicKey(anchor);
  const store = opts.store ?? (await openStore(config));
  try {
    if (opts.operator) await prepareStore(config, store, clock.now());
    const rec = await store.policy();
    const policy = compileSignedPolicy(rec, anchorKey, config);
    return { config, store, anchor, anchorKey, clock, policy };
  } catch (e) {
    if (!opts.store) await store.close();
    throw e;
  }
}

/**
 * The operator's part (lab up, policy apply, replay): every enrolled host's certificate, and
 * the config's policy signed with the CA key as the next revision when it differs from the
 * store's. Returns the policy revision now in force.
 */
export async function prepareStore(config: CloudConfig, store: MappingStore, now: number): Promise<number> {
  const seeded = await seedStore(config, store, now);
  if (seeded.skipped.length > 0) {
    throw new NviError('NVI_ERR_PKI', `hosts not ready: ${seeded.skipped.map((s) => `${s.host}: ${s.reason}`).join('; ')}`);
  }
  return publishPolicy(config, store);
}

/** Sign and publish the config's policy as the next revision, unless the store holds the same document. */
export async function publishPolicy(config: CloudConfig, store: MappingStore): Promise<number> {
  const document = policyDocument(config.tenants.values());
  const current = await store.policy();
  if (current && current.document === document && current.signature !== '') return current.revision;
  const ca = loadCa(config.pkiDir);
  const revision = (current?.revision ?? 0) + 1;
  await store.publishPolicy(signPolicy(revision, document, ca.privateKey));
  return revision;
}

/** The store's policy, compiled, if the CA signed it; a switch refuses to run without one. */
export function compileSignedPolicy(rec: PolicyRecord | undefined, anchorKey: KeyObject, config: CloudConfig): Policy {
  if (!rec) throw new NviError('NVI_ERR_POLICY', `the mapping store holds no policy yet: publish one with nvi-switch policy apply -c ${config.file}`);
  const refusal = policyRefusal(rec, anchorKey, 0);
  if (refusal) throw new NviError('NVI_ERR_POLICY', `the mapping store's policy (revision ${rec.revision}) is refused: ${refusal}; publish a signed one with nvi-switch policy apply`);
  return compilePolicyDocument(rec.document, rec.revision);
}

/** A verifier of its own, as every host has (its caches and the epochs it has seen), reading host certificates from `hosts`. */
export function newVerifier(cloud: Pick<Cloud, 'config' | 'anchor' | 'clock'>, hosts: HostDirectory, epochs?: EpochMemory): BindingVerifier {
  return new BindingVerifier(cloud.anchor, hosts, cloud.clock, { verifyPerSecond: cloud.config.switch.upcall.verifyPerSecond }, epochs);
}

/** A host starts its VMs: sign and publish a binding for each, one epoch above the last. */
export async function publishBindings(cloud: Cloud, host: string): Promise<number> {
  const cfg = cloud.config;
  let n = 0;
  for (const vm of vmsOnHost(cfg, host)) {
    await publishBinding(cloud, host, vm);
    n++;
  }
  return n;
}

/**
 * Host `host` takes `vm` (NVI Algorithm steps 2-5, or step 6 after a migration): the binding
 * for its own address, signed with the VM's key from its key directory, one epoch above the
 * store's last (its binding's, or the one it withdrew: a VM detached elsewhere) and above
 * `seen`, the highest the host knows of, published with the store's compare-and-swap.
 * Returns the epoch.
 */
export async function publishBinding(cloud: Cloud, host: string, vm: VmConfig, seen = 0): Promise<number> {
  const cfg = cloud.config;
  const h = cfg.hosts.get(host);
  if (!h) throw new NviError('NVI_ERR_CONFIG', `no host ${host} in ${cfg.file}`);
  const last = await cloud.store.lastEpoch(vm.identityText);
  // Above the store's epoch, and above any this host has seen (a store that was made to go back
  // must not lead it to sign an epoch some host already holds for another place).
  const epoch = Math.max(last, seen) + 1;
  await cloud.store.publish(makeBinding({ pkiDir: cfg.pkiDir, keyDir: h.keyDir }, vm, h, epoch, cloud.clock.now(), BINDING_VALIDITY_SECONDS));
  return epoch;
}

/** The host's private key (signs its key-exchange messages), from the host's own key directory. */
export function hostPrivateKey(cfg: CloudConfig, host: string): KeyObject {
  const h = cfg.hosts.get(host);
  if (!h) throw new NviError('NVI_ERR_CONFIG', `no host ${host} in ${cfg.file}`);
  return readPrivateKey(hostKeyPaths(h.keyDir).hostKey);
}
