// Where a cloud keeps its runtime files: `stateDir` of nvi-switch.yaml (a service's
// /var/lib/nvi-switch), by default .nvi-state/ beside the file.

import { dirname, join } from 'node:path';
import type { CloudConfig } from '../config/config.js';

export function stateDir(cfg: CloudConfig): string {
  return cfg.stateDir ?? join(dirname(cfg.file), '.nvi-state');
}

/** The control socket of host `host`'s running switch. */
export function controlPath(cfg: CloudConfig, host: string): string {
  return join(stateDir(cfg), 'run', `${host}.sock`);
}

/** What host `host` keeps on its own disk (the epochs it has seen). */
export function hostStateDir(cfg: CloudConfig, host: string): string {
  return join(stateDir(cfg), 'hosts', host);
}

/** The highest binding epoch host `host` has seen per identity (epoch-file.ts). */
export function epochPath(cfg: CloudConfig, host: string): string {
  return join(hostStateDir(cfg, host), 'epochs');
}

/** The VMs detached from host `host` (kept across a restart of its switch, so they stay detached). */
export function detachedPath(cfg: CloudConfig, host: string): string {
  return join(hostStateDir(cfg, host), 'detached.json');
}

/** Where host `host`'s switch listens for VM `vm`'s stream port (QEMU -netdev stream) unless the config says. */
export function streamPortPath(cfg: CloudConfig, host: string, vm: string): string {
  return join(hostStateDir(cfg, host), 'ports', `${vm}.sock`);
}
