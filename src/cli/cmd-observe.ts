// The verdicts of running switches as they happen (src/switch/verdicts.ts):
//   nvi-switch observe [--host H] [--vm VM] [--tenant T] [--verdict dropped|plugged|unplugged]
//                      [--reason R|FAMILY/] [--follow] [--json] [-c nvi-switch.yaml]
// Without --follow: the last verdicts each switch kept. With --follow: until interrupted;
// events the switches' rate limit left out are reported as they are counted.
// Without --host: every host of the config whose switch answers (with --vm: the VM's host).

import { existsSync } from 'node:fs';
import { NviError } from '../base/errors.js';
import { loadConfig, type CloudConfig } from '../config/config.js';
import { controlRequest, controlStream } from '../switch/control.js';
import { controlPath } from '../switch/paths.js';
import { VERDICT_KINDS, type Verdict } from '../switch/verdicts.js';
import { CONFIG_OPTION, parseOptions } from './args.js';

const USAGE = 'usage: nvi-switch observe [--host H] [--vm VM] [--tenant T] [--verdict dropped|plugged|unplugged] [--reason R] [--follow] [--json] [-c nvi-switch.yaml]';

function hostsOf(cfg: CloudConfig, host: string | undefined): string[] {
  if (host !== undefined) {
    if (!cfg.hosts.has(host)) throw new NviError('NVI_ERR_USAGE', `--host ${host}: no such host in ${cfg.file}`);
    return [host];
  }
  const running = [...cfg.hosts.keys()].filter((h) => existsSync(controlPath(cfg, h)));
  if (running.length === 0) throw new NviError('NVI_ERR_CONTROL', `no switch of ${cfg.file} is running (no control socket under ${controlPath(cfg, '*')})`);
  return running;
}

/** One line per verdict: time, host, VERDICT, direction, reason or rule, the pair. */
export function formatVerdict(v: Verdict): string {
  const who = (vm: string | undefined, id: string | undefined): string => vm ?? id ?? '?';
  const pair = v.src || v.dst ? `${who(v.srcVm, v.src)} -> ${who(v.dstVm, v.dst)}` : `(from ${v.peer ?? 'unknown'})`;
  const proto = v.proto === 6 ? ' tcp' : v.proto === 17 ? ' udp' : v.proto === 58 ? ' icmpv6' : '';
  const why = v.verdict === 'dropped' ? `${v.reason} at ${v.stage}` : v.verdict === 'unplugged' ? `${v.reason} (${v.rule})` : `${v.rule}`;
  const peer = v.verdict !== 'dropped' && v.peer ? ` peer ${v.peer}` : '';
  return `${v.time} ${v.host} ${v.verdict.toUpperCase().padEnd(9)} ${v.direction.padEnd(7)} ${pair}${proto}  ${why}${peer}`;
}

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseOptions(argv, {
    ...CONFIG_OPTION, host: { type: 'string' }, vm: { type: 'string' }, tenant: { type: 'string' }, verdict: { type: 'string' },
    reason: { type: 'string' }, follow: { type: 'boolean' }, json: { type: 'boolean' },
  });
  if (positionals.length > 0) throw new NviError('NVI_ERR_USAGE', USAGE);
  if (values.verdict !== undefined && !VERDICT_KINDS.includes(values.verdict as Verdict['verdict'])) {
    throw new NviError('NVI_ERR_USAGE', `--verdict: one of ${VERDICT_KINDS.join(', ')}, got "${values.verdict}"`);
  }
  const cfg = loadConfig(values.config);
  if (values.vm !== undefined && !cfg.vms.has(values.vm)) throw new NviError('NVI_ERR_USAGE', `--vm ${values.vm}: no such VM in ${cfg.file}`);
  if (values.tenant !== undefined && !cfg.tenants.has(values.tenant)) throw new NviError('NVI_ERR_USAGE', `--tenant ${values.tenant}: no such tenant in ${cfg.file}`);
  const filter = { vm: values.vm, tenant: values.tenant, verdict: values.verdict, reason: values.reason };
  const print = (v: Verdict): void => {
    process.stdout.write(`${values.json ? JSON.stringify(v) : formatVerdict(v)}\n`);
  };
  const hosts = hostsOf(cfg, values.host);
  if (!values.follow) {
    const all: Verdict[] = [];
    for (const h of hosts) all.push(...((await controlRequest(controlPath(cfg, h), { cmd: 'observe', ...filter })) as Verdict[]));
    all.sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : 0)).forEach(print);
    return 0;
  }
  const stop = new AbortController();
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => stop.abort());
  await Promise.all(hosts.map((h) => controlStream(controlPath(cfg, h), { cmd: 'observe', follow: true, ...filter }, (msg) => {
    if (msg.ok === true) process.stderr.write(`${h}: following its verdicts\n`);
    else if (msg.event) print(msg.event as Verdict);
    else if (typeof msg.lost === 'number') process.stderr.write(`${h}: ${msg.lost} verdicts lost so far (the switch's rate limit, or this terminal too slow)\n`);
  }, stop.signal)));
  return 0;
}
