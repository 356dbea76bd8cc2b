// nvi-switch: one binary, one subcommand per job. Each command module exports
// `run(argv): Promise<number>` (the exit code) and is loaded only when used.

import 'reflect-metadata';
import { NviError } from '../base/errors.js';

type Command = { run(argv: string[]): Promise<number> };

/** name -> what it does, the module under src/cli that implements it, and its export (default: the module). */
const COMMANDS: Record<string, { about: string; module: string; export?: string }> = {
  replay: { about: 'run captured VM frames through the pipeline offline (pcap in, pcap out)', module: 'cmd-replay' },
  explain: { about: 'show, step by step, how the switch decides SRC -> DST', module: 'cmd-explain' },
  policy: { about: 'policy test | policy apply: check or publish tenant policy', module: 'cmd-policy' },
  ca: { about: 'ca init: create the cloud CA', module: 'cmd-pki', export: 'ca' },
  host: { about: 'host enroll: issue a host certificate', module: 'cmd-pki', export: 'host' },
  vm: { about: 'vm create | attach | detach | qemu-args: a VM\'s identity and credentials; its port on a running switch; how QEMU plugs in', module: 'cmd-pki', export: 'vm' },
  migrate: { about: 'migrate VM --to HOST [--live [--exec CMD]]: live migration between running switches (--live: the hypervisor moves the VM)', module: 'cmd-vm', export: 'migrate' },
  run: { about: 'run the switch of one host (TAP ports, raw-socket underlay)', module: 'cmd-run' },
  restart: { about: 'restart --host H: a new switch process takes over the running one\'s ports, SAs and cables without dropping traffic (also an upgrade)', module: 'cmd-restart' },
  lab: { about: 'lab up | down | status | restart | attach | detach | migrate: the nvi-switch.yaml lab in network namespaces', module: 'cmd-lab' },
  cables: { about: 'list the cables of a running switch', module: 'cmd-control', export: 'cables' },
  stats: { about: 'counters of a running switch by stage and reason', module: 'cmd-control', export: 'stats' },
  top: { about: 'a live view of a running switch: cables by rate, drops by reason, upcalls and key exchanges a second', module: 'cmd-top' },
  console: { about: 'the tenant console: a web page and API where tenants edit and watch their network (loopback; TLS with --tls-cert)', module: 'cmd-console', export: 'console_' },
  tenant: { about: 'tenant token T | --operator: a token for the console', module: 'cmd-console', export: 'tenant' },
  observe: { about: 'verdicts as they happen: plugs, unplugs, drops with their reason (--follow, --verdict, --vm, --tenant, --reason)', module: 'cmd-observe' },
};

async function load(name: string): Promise<Command> {
  const entry = COMMANDS[name];
  const mod = (await import(`./${entry.module}.js`)) as Record<string, unknown>;
  return (entry.export ? mod[entry.export] : mod) as Command;
}

function usage(): string {
  const w = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(w)}  ${c.about}`);
  return `usage: nvi-switch <command> [options]\n\ncommands:\n${lines.join('\n')}\n`;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '-h' || name === '--help' || name === 'help') {
    process.stdout.write(usage());
    return name ? 0 : 2;
  }
  const entry = COMMANDS[name];
  if (!entry) {
    process.stderr.write(`nvi-switch: unknown command ${JSON.stringify(name)}\n\n${usage()}`);
    return 2;
  }
  try {
    const cmd = await load(name);
    return await cmd.run(rest);
  } catch (e) {
    if (e instanceof NviError) {
      process.stderr.write(`nvi-switch ${name}: ${e.message} [${e.code}]\n`);
      return e.code === 'NVI_ERR_USAGE' ? 2 : 1;
    }
    throw e;
  }
}
