// nvi-switch explain SRC DST [tcp|udp|icmp [PORT]] [-c nvi-switch.yaml] [--live] [--json] [--at TIME]
// SRC and DST are VM names or identities. Runs SDN Algorithm 1 on SRC's host and
// Algorithm 2 on DST's host with a recorder attached and prints every step. Offline by
// default (the config's cloud, built in this process); --live asks the running switches.

import { loadConfig, type CloudConfig } from '../config/config.js';
import { NviError } from '../base/errors.js';
import { NodeEspCipher } from '../esp/esp-cipher.js';
import { Drop } from '../base/drops.js';
import { PROTO_ICMPV6, PROTO_TCP, PROTO_UDP } from '../wire/ipv6.js';
import { MemoryLogger } from '../base/log.js';
import { OfflineCloud } from '../replay/offline-cloud.js';
import { controlRequest } from '../switch/control.js';
import { explainReceiver, explainSender, formatExplanation, type Explanation, type Packet } from '../switch/explain.js';
import { controlPath } from '../switch/paths.js';
import { CONFIG_OPTION, parseOptions } from './args.js';

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseOptions(argv, { ...CONFIG_OPTION, at: { type: 'string' }, live: { type: 'boolean' }, json: { type: 'boolean' } });
  const [srcArg, dstArg, protoArg, portArg] = positionals;
  if (!srcArg || !dstArg || positionals.length > 4) {
    throw new NviError('NVI_ERR_USAGE', 'usage: nvi-switch explain SRC DST [tcp|udp|icmp [PORT]]');
  }
  const cfg = loadConfig(values.config);
  const src = vmOf(cfg, srcArg);
  const dst = vmOf(cfg, dstArg);
  const packet = protoArg === undefined ? undefined : parsePacket(protoArg, portArg);
  const at = values.at;
  const now = at === undefined ? Date.now() : Date.parse(at);
  if (Number.isNaN(now)) throw new NviError('NVI_ERR_USAGE', `--at ${at}: not a time (use ISO 8601)`);

  const results = values.live ? await live(cfg, src, dst, packet) : await offline(cfg, src, dst, packet, now);
  if (values.json) process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
  else process.stdout.write(results.map(formatExplanation).join('\n'));
  return results.every((r) => r.drop === Drop.None) ? 0 : 3;
}

async function offline(cfg: CloudConfig, src: Vm, dst: Vm, packet: Packet | undefined, now: number): Promise<Explanation[]> {
  const off = await OfflineCloud.open(cfg, { cipher: new NodeEspCipher(), clock: { now: () => now }, log: new MemoryLogger() });
  try {
    const sender = await explainSender(off.hosts.get(src.host)!, src.identityText, dst.identityText, packet);
    if (!reachesReceiver(sender)) return [sender];
    const from = cfg.hosts.get(src.host)!;
    const receiver = await explainReceiver(off.hosts.get(dst.host)!, src.identityText, dst.identityText, from.name, from.address, packet);
    return [sender, receiver];
  } finally {
    off.close();
  }
}

async function live(cfg: CloudConfig, src: Vm, dst: Vm, packet: Packet | undefined): Promise<Explanation[]> {
  const base = { src: src.identityText, dst: dst.identityText, proto: packet?.proto, port: packet?.port };
  const sender = (await controlRequest(controlPath(cfg, src.host), { cmd: 'explain', side: 'sender', ...base })) as Explanation;
  if (!reachesReceiver(sender)) return [sender];
  const from = cfg.hosts.get(src.host)!;
  const receiver = (await controlRequest(controlPath(cfg, dst.host), {
    cmd: 'explain', side: 'receiver', ...base, fromHost: from.name, fromAddress: from.addressText,
  })) as Explanation;
  return [sender, receiver];
}

/** The receiver is asked only when the sender would plug the cable (else no packet leaves). */
function reachesReceiver(e: Explanation): boolean {
  return e.drop === Drop.None || e.drop === Drop.PolicyProtoPort || e.drop === Drop.PolicyUnplugRule || e.drop === Drop.PolicyInitiateOnly;
}

type Vm = { readonly name: string; readonly host: string; readonly identityText: string };

function vmOf(cfg: CloudConfig, arg: string): Vm {
  const byName = cfg.vms.get(arg);
  if (byName) return byName;
  const byId = [...cfg.vms.values()].find((v) => v.identityText === arg);
  if (byId) return byId;
  throw new NviError('NVI_ERR_USAGE', `${arg}: not a VM name or identity of ${cfg.file}`);
}

function parsePacket(proto: string, port: string | undefined): Packet {
  const p = proto === 'tcp' ? PROTO_TCP : proto === 'udp' ? PROTO_UDP : proto === 'icmp' ? PROTO_ICMPV6 : Number(proto);
  if (!Number.isInteger(p) || p < 0 || p > 255) throw new NviError('NVI_ERR_USAGE', `${proto}: expected tcp, udp, icmp or a protocol number`);
  if (port === undefined) return { proto: p };
  const n = Number(port);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new NviError('NVI_ERR_USAGE', `${port}: not a port`);
  return { proto: p, port: n };
}
