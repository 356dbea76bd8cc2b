// Edits of nvi-switch.yaml that the commands make (a migration moves a VM to another host): the
// changed value is replaced where it stands, every other byte of the file is kept.

import { readFileSync, writeFileSync } from 'node:fs';
import { isScalar, parseDocument } from 'yaml';
import { NviError } from '../base/errors.js';
import { loadConfig } from './config.js';

/** Set `tenants.T.vms.VM.host` to `host` for the VM named `vm` (in whichever tenant it is). */
export function setVmHost(file: string, vm: string, host: string): void {
  const cfg = loadConfig(file);
  const v = cfg.vms.get(vm);
  if (!v) throw new NviError('NVI_ERR_CONFIG', `no VM ${vm} in ${file}`);
  if (!cfg.hosts.has(host)) throw new NviError('NVI_ERR_CONFIG', `no host ${host} in ${file}`);
  if (v.host === host) return;
  const text = readFileSync(file, 'utf8');
  const node = parseDocument(text).getIn(['tenants', v.tenant, 'vms', vm, 'host'], true);
  const range = isScalar(node) ? node.range : undefined;
  if (!range) throw new NviError('NVI_ERR_CONFIG', `tenants.${v.tenant}.vms.${vm}.host: not found as a plain value in ${file}`);
  const out = `${text.slice(0, range[0])}${host}${text.slice(range[1])}`;
  writeFileSync(file, out);
  if (loadConfig(file).vms.get(vm)?.host !== host) {
    writeFileSync(file, text);
    throw new NviError('NVI_ERR_CONFIG', `could not set tenants.${v.tenant}.vms.${vm}.host in ${file}; left it as it was`);
  }
}
