// A host holds only its own credentials: its key directory has its host key and the keys of
// the VMs the config places on it, nothing else. A switch that finds another host's VM key
// there refuses to start (someone copied keys around: a break-in at this host would give
// that VM away too).

import { existsSync, readdirSync } from 'node:fs';
import { NviError } from '../base/errors.js';
import type { CloudConfig } from '../config/config.js';
import { hostKeyPaths, loadVmCredentials, type VmCredentials } from '../trust/pki.js';

/** Throws NVI_ERR_PKI naming the first key in `host`'s key directory that is not its own. */
export function checkHostKeys(cfg: CloudConfig, host: string): void {
  const h = cfg.hosts.get(host);
  if (!h) throw new NviError('NVI_ERR_CONFIG', `no host ${host} in ${cfg.file}`);
  const p = hostKeyPaths(h.keyDir);
  if (!existsSync(p.hostKey)) throw new NviError('NVI_ERR_PKI', `host ${host} has no key ${p.hostKey}: run nvi-switch host enroll ${host}`);
  if (!existsSync(p.vmsDir)) return;
  for (const file of readdirSync(p.vmsDir)) {
    if (!file.endsWith('.key')) continue;
    const vm = file.slice(0, -4);
    const owner = cfg.vms.get(vm)?.host;
    if (owner === host) continue;
    const where = owner === undefined ? 'which is in no tenant of the config' : `which runs on host ${owner}`;
    throw new NviError('NVI_ERR_PKI', `${p.vmsDir}/${file} is the key of VM ${vm}, ${where}: a host keeps only the keys of its own VMs (move it to that host's key directory)`);
  }
}

/** The credentials of VM `vm`: its certificate, and its key from its host's key directory. */
export function vmCredentials(cfg: CloudConfig, vm: string): VmCredentials {
  const v = cfg.vms.get(vm);
  if (!v) throw new NviError('NVI_ERR_CONFIG', `no VM ${vm} in ${cfg.file}`);
  return loadVmCredentials(cfg.pkiDir, cfg.hosts.get(v.host)!.keyDir, vm);
}
