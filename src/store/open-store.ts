// Opening the mapping store a config names (the embedded SQLite file, or etcd), and seeding it with what every switch needs
// before the first binding can verify: the hosts' certificates.

import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { CloudConfig } from '../config/config.js';
import { NviError } from '../base/errors.js';
import { parseCertificate, readHostCertificate } from '../trust/pki.js';
import { EtcdStore } from './etcd-store.js';
import { SqliteStore, type SqliteStoreOptions } from './sqlite-store.js';
import { STORE_UNAVAILABLE, type MappingStore } from './store.js';

/** The store of `cfg.store`: the embedded SQLite file (its directory is created) or etcd (connections open on first use). */
export async function openStore(cfg: CloudConfig, opts: SqliteStoreOptions = {}): Promise<MappingStore> {
  switch (cfg.store.kind) {
    case 'embedded': {
      try {
        mkdirSync(dirname(cfg.store.path), { recursive: true });
      } catch (e) {
        throw new NviError(STORE_UNAVAILABLE, `store ${cfg.store.path}: cannot create its directory: ${(e as Error).message}`);
      }
      return SqliteStore.open(cfg.store.path, opts);
    }
    case 'etcd':
      return new EtcdStore({ endpoints: cfg.store.endpoints, prefix: cfg.store.prefix, tls: cfg.store.tls });
  }
}

export interface SeedResult {
  /** Hosts whose certificate was published. */
  readonly published: string[];
  /** Hosts left out, with the reason (not enrolled, not valid at `now`). */
  readonly skipped: { readonly host: string; readonly reason: string }[];
}

/** Publish the HostRecord of every host in the config that has a certificate in the pki dir, valid at `now` (ms). */
export async function seedStore(cfg: CloudConfig, store: MappingStore, now: number): Promise<SeedResult> {
  const published: string[] = [];
  const skipped: { host: string; reason: string }[] = [];
  for (const host of cfg.hosts.values()) {
    const certificate = readHostCertificate(cfg.pkiDir, host.name);
    if (!certificate) {
      skipped.push({ host: host.name, reason: `not enrolled (no ${host.name}.crt in ${cfg.pkiDir}/hosts)` });
      continue;
    }
    const cert = parseCertificate(certificate);
    if (now < cert.notBefore || now > cert.notAfter) {
      skipped.push({ host: host.name, reason: `certificate valid only ${new Date(cert.notBefore).toISOString()} .. ${new Date(cert.notAfter).toISOString()}` });
      continue;
    }
    if (!cert.ipAddresses.includes(host.addressText)) {
      skipped.push({ host: host.name, reason: `certificate names ${cert.ipAddresses.join(', ')}, the config ${host.addressText}: enroll it again` });
      continue;
    }
    await store.publishHost({ host: host.name, address: host.addressText, certificate });
    published.push(host.name);
  }
  return { published, skipped };
}
