// The control socket of a running switch: a unix socket, one JSON request per line, one
// JSON answer per line. `nvi-switch cables|stats|explain --live` speak it.
//   {"cmd":"stats"}   {"cmd":"cables"}
//   {"cmd":"explain","side":"sender"|"receiver","src":ID,"dst":ID,"proto":6,"port":22,"fromHost":"h1","fromAddress":"10.77.0.1"}

import { createConnection, createServer, type Server } from 'node:net';
import { rmSync } from 'node:fs';
import { NviError } from '../base/errors.js';
import { CableDirection, type Cable } from '../dataplane/cable.js';
import { dropName } from '../base/drops.js';
import { formatIpv4, parseIpv4Address } from '../base/address.js';
import { FlowMode } from '../dataplane/decision.js';
import { explainReceiver, explainSender, type Packet } from './explain.js';
import type { LiveSwitch } from './live.js';

export interface CableInfo {
  readonly direction: 'egress' | 'ingress';
  readonly src: string;
  readonly dst: string;
  readonly srcVm?: string;
  readonly dstVm?: string;
  readonly peer: string;
  readonly state: string;
  readonly rule: string;
  readonly revision?: number;
  readonly sa?: string;
  readonly packets: number;
  readonly bytes: number;
  readonly drops: number;
  readonly ageSeconds: number;
}

export class ControlServer {
  private constructor(private readonly server: Server, private readonly path: string) {}

  static listen(path: string, sw: LiveSwitch): Promise<ControlServer> {
    rmSync(path, { force: true });
    const server = createServer((conn) => {
      let buf = '';
      conn.setEncoding('utf8');
      conn.on('data', (chunk: string) => {
        buf += chunk;
        if (buf.length > 65536) conn.destroy();
        for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          void answer(sw, line).then((reply) => conn.write(`${JSON.stringify(reply)}\n`));
        }
      });
      conn.on('error', () => {});
    });
    return new Promise((resolve, reject) => {
      server.once('error', (e) => reject(new NviError('NVI_ERR_CONTROL', `control socket ${path}: ${e.message}`)));
      server.listen(path, () => resolve(new ControlServer(server, path)));
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => {
      rmSync(this.path, { force: true });
      resolve();
    }));
  }
}

async function answer(sw: LiveSwitch, line: string): Promise<{ ok: boolean; result?: unknown; error?: string }> {
  try {
    const req = JSON.parse(line) as Record<string, unknown>;
    switch (req.cmd) {
      case 'stats':
        return { ok: true, result: sw.stats() };
      case 'cables':
        return { ok: true, result: cables(sw) };
      case 'explain': {
        const packet: Packet | undefined = typeof req.proto === 'number' ? { proto: req.proto, port: typeof req.port === 'number' ? req.port : undefined } : undefined;
        const src = String(req.src);
        const dst = String(req.dst);
        const result = req.side === 'receiver'
          ? await explainReceiver(sw.host, src, dst, String(req.fromHost), parseIpv4Address(String(req.fromAddress)), packet)
          : await explainSender(sw.host, src, dst, packet);
        return { ok: true, result };
      }
      default:
        return { ok: false, error: `unknown command ${JSON.stringify(req.cmd)}` };
    }
  } catch (e) {
    return { ok: false, error: (e as Error).message };
  }
}

function cables(sw: LiveSwitch): CableInfo[] {
  const h = sw.host;
  const now = Date.now();
  const vmOf = new Map([...sw.cloud.config.vms.values()].map((vm) => [vm.identityText, vm.name]));
  const out: CableInfo[] = [];
  const info = (c: Cable): CableInfo => ({
    direction: c.direction === CableDirection.Egress ? 'egress' : 'ingress',
    src: c.srcText,
    dst: c.dstText,
    srcVm: vmOf.get(c.srcText),
    dstVm: vmOf.get(c.dstText),
    peer: c.localPort >= 0 && c.direction === CableDirection.Egress ? 'this host' : c.peerHost || (c.peerAddr ? formatIpv4(c.peerAddr) : '-'),
    state: !c.plugged ? `unplugged: ${dropName(c.drop)}` : c.decision?.flow === FlowMode.Opens ? 'plugged, opens flows'
      : c.decision?.flow === FlowMode.RepliesOnly ? 'plugged, replies only' : 'plugged',
    rule: c.rule,
    revision: c.decision?.revision,
    sa: c.sa ? `0x${c.sa.spi.toString(16)} seq ${c.sa.seqHi * 2 ** 32 + c.sa.seqLo}` : inboundSa(sw, c),
    packets: c.packets,
    bytes: c.bytes,
    drops: c.drops,
    ageSeconds: Math.round((now - c.plugTime) / 1000),
  });
  for (const c of h.egressCables.all()) out.push(info(c));
  for (const c of h.ingressCables.all()) out.push(info(c));
  return out;
}

function inboundSa(sw: LiveSwitch, c: Cable): string | undefined {
  for (const sa of sw.host.spis.values()) if (sa.cable === c) return `0x${sa.spi.toString(16)} in, ${sa.packets} packets`;
  return undefined;
}

/** Send one request to the control socket at `path`; resolves with its result. */
export function controlRequest(path: string, req: Record<string, unknown>, timeoutMs = 5000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const conn = createConnection(path);
    let buf = '';
    const timer = setTimeout(() => {
      conn.destroy();
      reject(new NviError('NVI_ERR_CONTROL', `no answer from ${path} within ${timeoutMs} ms`));
    }, timeoutMs);
    conn.setEncoding('utf8');
    conn.on('connect', () => conn.write(`${JSON.stringify(req)}\n`));
    conn.on('data', (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      conn.end();
      const reply = JSON.parse(buf.slice(0, nl)) as { ok: boolean; result?: unknown; error?: string };
      if (reply.ok) resolve(reply.result);
      else reject(new NviError('NVI_ERR_CONTROL', reply.error ?? 'error'));
    });
    conn.on('error', (e) => {
      clearTimeout(timer);
      reject(new NviError('NVI_ERR_CONTROL', `cannot reach the switch at ${path}: ${e.message} (is it running?)`));
    });
  });
}
