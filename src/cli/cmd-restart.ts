// nvi-switch restart --host NAME [-c nvi-switch.yaml] [--json]
// Restart a running switch without dropping its VMs' traffic: the running process starts its
// successor (with the code installed now: an upgrade is an install and a restart), hands it the
// fds of its TAPs and sockets and its state (SAs with their sequence numbers, replay windows,
// cables, flows), and exits once the new one forwards (src/switch/handover.ts). A lab's record
// of the switch's process follows.

import { loadConfig } from '../config/config.js';
import { NviError } from '../base/errors.js';
import { labSwitchReplaced } from '../lab/lab.js';
import { controlRequest } from '../switch/control.js';
import type { HandoverResult } from '../switch/handover.js';
import { controlPath } from '../switch/paths.js';
import { CONFIG_OPTION, parseOptions } from './args.js';

export async function run(argv: string[]): Promise<number> {
  const { values } = parseOptions(argv, { ...CONFIG_OPTION, host: { type: 'string' }, json: { type: 'boolean' } });
  const cfg = loadConfig(values.config);
  const host = values.host;
  if (!host) throw new NviError('NVI_ERR_USAGE', `--host is required (one of ${[...cfg.hosts.keys()].join(', ')})`);
  if (!cfg.hosts.has(host)) throw new NviError('NVI_ERR_USAGE', `--host ${host}: no such host in ${cfg.file}`);
  const r = (await controlRequest(controlPath(cfg, host), { cmd: 'handover' }, 60_000)) as HandoverResult;
  labSwitchReplaced(cfg, host, r.pid);
  if (values.json) {
    process.stdout.write(`${JSON.stringify(r)}\n`);
    return 0;
  }
  process.stdout.write(`${host}: handed over to pid ${r.pid}; paused ${r.pausedMs} ms; took over ${r.egress} egress cables (${r.egressSas} on their SAs) and ${r.inbound} inbound SAs\n`);
  for (const why of r.refused) process.stdout.write(`  not taken over: ${why}\n`);
  return 0;
}
