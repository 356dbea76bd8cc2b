// Hot ports and migration of a running cloud's VMs, through the switches' control sockets:
//   nvi-switch vm attach VM [-c nvi-switch.yaml]        its host's switch opens its port and publishes its binding
//   nvi-switch vm detach VM [-c nvi-switch.yaml]        the binding goes from the store, the port from the switch
//   nvi-switch migrate VM --to HOST [-c nvi-switch.yaml] live migration (src/switch/migrate.ts)
//   nvi-switch migrate VM --to HOST --live [--exec CMD] [--wait S]
//                                                       the hypervisor moves the VM (QEMU, libvirt):
//                                                       the port waits at HOST, CMD (sh -c) runs the
//                                                       hypervisor's migration, the VM's first frame there
//                                                       switches over; CMD failing cancels, the VM stays
//   nvi-switch vm qemu-args VM [--host H] [--json]      QEMU arguments and a libvirt <interface> for the VM's port
// The VM's host is the one the config file names (migrate updates it).

import { spawn } from 'node:child_process';
import { NviError } from '../base/errors.js';
import { loadConfig, type CloudConfig } from '../config/config.js';
import { controlRequest } from '../switch/control.js';
import { migrate as migrateVm } from '../switch/migrate.js';
import { controlPath } from '../switch/paths.js';
import { qemuPort } from '../switch/qemu-args.js';
import { CONFIG_OPTION, parseOptions } from './args.js';

/** attach or detach VM on the host the config places it on. */
export async function attachOrDetach(cfg: CloudConfig, op: 'attach' | 'detach', vm: string): Promise<unknown> {
  const v = cfg.vms.get(vm);
  if (!v) throw new NviError('NVI_ERR_USAGE', `no VM ${vm} in ${cfg.file}`);
  return controlRequest(controlPath(cfg, v.host), { cmd: 'vm', op, vm }, 15_000);
}

export async function vmPort(op: 'attach' | 'detach', argv: string[]): Promise<number> {
  const { values, positionals } = parseOptions(argv, CONFIG_OPTION);
  if (positionals.length !== 1) throw new NviError('NVI_ERR_USAGE', `usage: nvi-switch vm ${op} VM [-c nvi-switch.yaml]`);
  const cfg = loadConfig(values.config);
  const r = await attachOrDetach(cfg, op, positionals[0]);
  process.stdout.write(`vm ${positionals[0]}: ${op === 'attach' ? `attached on ${cfg.vms.get(positionals[0])!.host}, binding epoch ${(r as { epoch: number }).epoch}` : `detached from ${cfg.vms.get(positionals[0])!.host}${(r as { withdrawn: boolean }).withdrawn ? ', binding withdrawn' : ''}`}\n`);
  return 0;
}

export async function vmQemuArgs(argv: string[]): Promise<number> {
  const { values, positionals } = parseOptions(argv, { ...CONFIG_OPTION, host: { type: 'string' }, json: { type: 'boolean' } });
  if (positionals.length !== 1) throw new NviError('NVI_ERR_USAGE', 'usage: nvi-switch vm qemu-args VM [--host H] [--json] [-c nvi-switch.yaml]');
  const cfg = loadConfig(values.config);
  const vm = cfg.vms.get(positionals[0]);
  if (!vm) throw new NviError('NVI_ERR_USAGE', `no VM ${positionals[0]} in ${cfg.file}`);
  if (values.host !== undefined && !cfg.hosts.has(values.host)) throw new NviError('NVI_ERR_USAGE', `no host ${values.host} in ${cfg.file}`);
  const port = qemuPort(cfg, vm, values.host);
  if (values.json) {
    process.stdout.write(`${JSON.stringify(port)}\n`);
    return 0;
  }
  if (port.args.length === 0) throw new NviError('NVI_ERR_USAGE', port.notes.join('; '));
  const quote = (a: string): string => (/^[\w,=./:-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`);
  process.stdout.write(`# QEMU: add to your command line\n${port.args.map(quote).join(' ')}\n\n# libvirt: in <devices>\n${port.libvirt}\n\n${port.notes.map((n) => `# ${n}`).join('\n')}\n`);
  return 0;
}

export const migrate = {
  async run(argv: string[]): Promise<number> {
    const usage = 'usage: nvi-switch migrate VM --to HOST [--live [--exec CMD] [--wait SECONDS]] [-c nvi-switch.yaml]';
    const { values, positionals } = parseOptions(argv, {
      ...CONFIG_OPTION, to: { type: 'string' }, live: { type: 'boolean' }, exec: { type: 'string' }, wait: { type: 'string' },
    });
    if (positionals.length !== 1 || !values.to) throw new NviError('NVI_ERR_USAGE', usage);
    if (!values.live && (values.exec !== undefined || values.wait !== undefined)) throw new NviError('NVI_ERR_USAGE', `--exec and --wait go with --live; ${usage}`);
    const waitS = values.wait === undefined ? (values.live ? 120 : 10) : Number(values.wait);
    if (!Number.isInteger(waitS) || waitS < 1 || waitS > 3600) throw new NviError('NVI_ERR_USAGE', `--wait: whole seconds from 1 to 3600, got "${values.wait}"`);
    const cfg = loadConfig(values.config);
    const vm = positionals[0];
    const to = values.to;
    const afterIn = !values.live
      ? undefined
      : values.exec !== undefined
        ? () => runHypervisorStep(values.exec!)
        : async () => {
          process.stdout.write(`vm ${vm}: its port waits on ${to} (nvi-switch vm qemu-args ${vm} --host ${to}); run the hypervisor's migration now; ${waitS} s for its first frame there\n`);
        };
    const r = await migrateVm(cfg, vm, to, { live: values.live, afterIn }, waitS * 1000);
    process.stdout.write(`vm ${r.vm}: migrated ${r.from} -> ${r.to}, active there ${r.switchoverMs} ms after ${values.live ? 'its port was ready' : `it left ${r.from}`}\n`);
    return 0;
  },
};

/** The hypervisor's part of a live migration (`--exec`): a shell command that must exit 0. */
function runHypervisorStep(command: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = spawn('sh', ['-c', command], { stdio: ['ignore', 'inherit', 'inherit'] });
    c.on('error', (e) => reject(new NviError('NVI_ERR_MIGRATION', `--exec: ${e.message}`)));
    c.on('exit', (code, signal) => (code === 0 ? resolve() : reject(new NviError('NVI_ERR_MIGRATION', `--exec \`${command}\` exited ${code ?? signal}`))));
  });
}
