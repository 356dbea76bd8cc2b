// Live migration of a VM from the host it runs on to another (NVI Algorithm step 6), driven on
// both hosts' control sockets (vm-ports.ts has each side):
//   1. prepare on the destination: a key offer (an ephemeral key signed by the destination);
//   2. out on the source: the VM key sealed to that offer, the source's port removed;
//   3. in on the destination: the key, the port, waiting for the VM; `afterIn` lets the VM run
//      there (the lab moves the VM's interface; QEMU finishes its migration);
//   4. the VM's first frame on its new port activates it: the destination publishes the
//      binding for its own address with the next epoch; every host with a cable to the VM is
//      pushed the change and plugs again to the new host;
//   5. done on the source: it forgets the VM key; the config file places the VM on the destination.
// If the destination fails before it is active, the source takes the VM back (abort: its port
// returns with the next epoch), so the VM is reachable at one of the two, never at neither.
//
// A hypervisor's live migration (QEMU) keeps the VM running at the source until its own
// switch-over, so `live` changes step 2: the source seals the key but keeps its port (seal), and
// lets go (release) only once the destination is active. A failure before that cancels the
// destination's port and key: the VM never left the source.

import { NviError } from '../base/errors.js';
import type { CloudConfig } from '../config/config.js';
import { setVmHost } from '../config/edit.js';
import type { KeyOffer, SealedKey } from '../trust/key-transfer.js';
import { controlRequest } from './control.js';
import { controlPath } from './paths.js';
import type { PortState } from './vm-ports.js';

export interface MigrationHooks {
  /** The source let go of the VM (its port is gone, its key sealed for the destination). */
  afterOut?(): Promise<void>;
  /** The destination waits for the VM: make it run there. */
  afterIn?(): Promise<void>;
  /** The source took the VM back: make it run there again. */
  afterAbort?(): Promise<void>;
  /** The VM runs at the source until afterIn has moved it (a QEMU live migration). */
  readonly live?: boolean;
}

export interface MigrationResult {
  readonly vm: string;
  readonly from: string;
  readonly to: string;
  /** ms from the source's port going (live: from handing over to the destination) to the destination's binding published. */
  readonly switchoverMs: number;
}

export async function migrate(cfg: CloudConfig, vm: string, to: string, hooks: MigrationHooks = {}, activeWithinMs = 10_000): Promise<MigrationResult> {
  const v = cfg.vms.get(vm);
  if (!v) throw new NviError('NVI_ERR_USAGE', `no VM ${vm} in ${cfg.file}`);
  if (!cfg.hosts.has(to)) throw new NviError('NVI_ERR_USAGE', `no host ${to} in ${cfg.file}`);
  const from = v.host;
  if (from === to) throw new NviError('NVI_ERR_USAGE', `${vm} runs on ${to} already`);
  const src = controlPath(cfg, from);
  const dst = controlPath(cfg, to);
  if (hooks.live) return migrateLive(cfg, vm, from, to, hooks, activeWithinMs);
  const offer = (await controlRequest(dst, { cmd: 'vm', op: 'prepare', vm })) as KeyOffer;
  const sealed = (await controlRequest(src, { cmd: 'vm', op: 'out', vm, offer })) as SealedKey;
  const t0 = Date.now();
  try {
    await hooks.afterOut?.();
    await controlRequest(dst, { cmd: 'vm', op: 'in', vm, sealed });
    await hooks.afterIn?.();
    await untilActive(dst, vm, activeWithinMs);
  } catch (e) {
    await controlRequest(src, { cmd: 'vm', op: 'abort', vm });
    await hooks.afterAbort?.();
    throw new NviError('NVI_ERR_MIGRATION', `migration of ${vm} to ${to} failed (${(e as Error).message}); ${vm} is back on ${from}`);
  }
  const switchoverMs = Date.now() - t0;
  await controlRequest(src, { cmd: 'vm', op: 'done', vm });
  setVmHost(cfg.file, vm, to);
  return { vm, from, to, switchoverMs };
}

async function migrateLive(cfg: CloudConfig, vm: string, from: string, to: string, hooks: MigrationHooks, activeWithinMs: number): Promise<MigrationResult> {
  const src = controlPath(cfg, from);
  const dst = controlPath(cfg, to);
  const offer = (await controlRequest(dst, { cmd: 'vm', op: 'prepare', vm })) as KeyOffer;
  const sealed = (await controlRequest(src, { cmd: 'vm', op: 'seal', vm, offer })) as SealedKey;
  const t0 = Date.now();
  try {
    await controlRequest(dst, { cmd: 'vm', op: 'in', vm, sealed });
    await hooks.afterIn?.();
    await untilActive(dst, vm, activeWithinMs);
  } catch (e) {
    await controlRequest(dst, { cmd: 'vm', op: 'cancel', vm }).catch(() => {});
    throw new NviError('NVI_ERR_MIGRATION', `migration of ${vm} to ${to} failed (${(e as Error).message}); ${vm} stays on ${from}`);
  }
  const switchoverMs = Date.now() - t0;
  await controlRequest(src, { cmd: 'vm', op: 'release', vm });
  await controlRequest(src, { cmd: 'vm', op: 'done', vm });
  setVmHost(cfg.file, vm, to);
  return { vm, from, to, switchoverMs };
}

async function untilActive(path: string, vm: string, ms: number): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    const r = (await controlRequest(path, { cmd: 'vm', op: 'state', vm }, 2000)) as { state: PortState };
    if (r.state === 'active') return;
    if (r.state === 'absent') throw new Error(`${vm} has no port at the destination any more`);
    if (Date.now() > end) throw new Error(`${vm} did not become active at the destination within ${ms} ms`);
    await new Promise((res) => setTimeout(res, 5));
  }
}
