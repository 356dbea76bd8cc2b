// The switch as its VMs' DHCPv6 server (egress stage dhcp-server), through h1's real egress
// pipeline offline: what it answers, what it refuses and why, and tshark's reading of the
// answers (written to a pcap), so the bytes are checked by a dissector that is not ours.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Drop } from '../src/base/drops.js';
import { linkLocalFromMac, ND_ROUTER_SOLICIT, sealIcmp6, writeIcmp6Header } from '../src/wire/icmpv6.js';
import { ALL_DHCP_SERVERS, DhcpMsg, DhcpOpt, DhcpWriter, udp6Checksum } from '../src/wire/dhcpv6.js';
import { ETH_HLEN, writeEthIpv6 } from '../src/wire/ethernet.js';
import { IPV6_HLEN, PROTO_UDP } from '../src/wire/ipv6.js';
import { SERVER_DUID } from '../src/dataplane/egress/dhcp-server.js';
import { LINKTYPE_ETHERNET, PcapWriter } from '../src/io/pcap.js';
import type { DhcpServer } from '../src/dataplane/egress/dhcp-server.js';
import { frames, openOffline, type Offline } from './offline-fixture.js';
import { atExit } from './at-exit.js';

const dir = mkdtempSync(join(tmpdir(), 'nvi-dhcp-'));
atExit(() => rmSync(dir, { recursive: true, force: true }));
const CLIENT_DUID = Buffer.from('000100012c3a4b5c525400123456', 'hex');

interface Msg {
  type: number;
  clientId?: Buffer | null;
  serverId?: Buffer;
  iaids?: number[];
  iaAddr?: Buffer;
  rapid?: boolean;
  /** Bytes appended raw after the options (to break the format). */
  tail?: Buffer;
  zeroChecksum?: boolean;
}

/** A DHCPv6 message from `vm`'s link-local address to the servers' multicast address, as an Ethernet frame. */
function dhcpFrame(o: Offline, vm: string, m: Msg): Buffer {
  const v = o.config.vms.get(vm)!;
  const body = Buffer.alloc(600);
  const w = new DhcpWriter(body, 0).header(m.type, 0x123456);
  if (m.clientId !== null) w.copy(DhcpOpt.ClientId, m.clientId ?? CLIENT_DUID, 0, (m.clientId ?? CLIENT_DUID).length);
  if (m.serverId) w.copy(DhcpOpt.ServerId, m.serverId, 0, m.serverId.length);
  for (const iaid of m.iaids ?? []) {
    if (m.iaAddr) {
      const ia = Buffer.alloc(12 + 28);
      ia.writeUInt32BE(iaid, 0);
      ia.writeUInt16BE(DhcpOpt.IaAddr, 12);
      ia.writeUInt16BE(24, 14);
      m.iaAddr.copy(ia, 16);
      w.copy(DhcpOpt.IaNa, ia, 0, ia.length);
    } else {
      const ia = Buffer.alloc(12);
      ia.writeUInt32BE(iaid, 0);
      w.copy(DhcpOpt.IaNa, ia, 0, 12);
    }
  }
  if (m.rapid) w.empty(DhcpOpt.RapidCommit);
  const msg = Buffer.concat([body.subarray(0, w.at), m.tail ?? Buffer.alloc(0)]);
  const udpLen = 8 + msg.length;
  const f = Buffer.alloc(ETH_HLEN + IPV6_HLEN + udpLen);
  writeEthIpv6(f, 0, Buffer.from('333300010002', 'hex'), v.mac);
  const ip = ETH_HLEN;
  f[ip] = 0x60;
  f.writeUInt16BE(udpLen, ip + 4);
  f[ip + 6] = PROTO_UDP;
  f[ip + 7] = 1;
  linkLocalFromMac(v.mac).copy(f, ip + 8);
  ALL_DHCP_SERVERS.copy(f, ip + 24);
  const u = ip + IPV6_HLEN;
  f.writeUInt16BE(546, u);
  f.writeUInt16BE(547, u + 2);
  f.writeUInt16BE(udpLen, u + 4);
  msg.copy(f, u + 8);
  if (!m.zeroChecksum) f.writeUInt16BE(udp6Checksum(f, ip, u, udpLen) || 0xffff, u + 6);
  return f;
}

/** Send `m` from web1; returns the switch's answer frame, or undefined. */
async function ask(o: Offline, m: Msg): Promise<Buffer | undefined> {
  const before = o.off.replies.length;
  await o.off.sendFrames('web1', frames([dhcpFrame(o, 'web1', m)]));
  return o.off.replies.slice(before).find((r) => r.vm === 'web1')?.data;
}

/** tshark's fields of DHCPv6 answers in `list`, one object per frame. */
function dissect(list: Buffer[], fields: string[]): Record<string, string>[] {
  const file = join(dir, `a${Math.random().toString(16).slice(2)}.pcap`);
  const w = new PcapWriter(file, LINKTYPE_ETHERNET);
  list.forEach((data, k) => w.write(data, 0, data.length, 1_700_000_000_000_000 + k));
  w.close();
  const out = execFileSync('tshark', ['-r', file, '-T', 'fields', '-E', 'separator=|', ...fields.flatMap((f) => ['-e', f])], { encoding: 'utf8' });
  return out.trim().split('\n').map((line) => Object.fromEntries(line.split('|').map((v, k) => [fields[k], v])));
}

function dropped(o: Offline, reason: Drop): number {
  return o.off.hosts.get('h1')!.egress.counters.drops[reason];
}

test('a Solicit is advertised the identity, a Request with the server ID gets it in a Reply; tshark reads both', async () => {
  const o = await openOffline();
  const id = o.config.vms.get('web1')!.identityText;
  const adv = await ask(o, { type: DhcpMsg.Solicit, iaids: [7] });
  assert.ok(adv, 'answered');
  const reply = await ask(o, { type: DhcpMsg.Request, iaids: [7], serverId: SERVER_DUID });
  assert.ok(reply, 'answered');
  const got = dissect([adv!, reply!], ['dhcpv6.msgtype', 'dhcpv6.xid', 'dhcpv6.iaid', 'dhcpv6.iaaddr.ip', 'dhcpv6.iaaddr.valid_lifetime', 'dhcpv6.duidll.link_layer_addr', 'ipv6.src', 'udp.dstport', 'udp.checksum.status']);
  assert.equal(got.map((g) => g['dhcpv6.msgtype']), ['2', '7'], 'Advertise, then Reply');
  for (const g of got) {
    assert.is(g['dhcpv6.xid'], '0x123456');
    assert.is(g['dhcpv6.iaid'], '00000007');
    assert.is(g['dhcpv6.iaaddr.ip'], id, 'the identity, as the one address');
    assert.is(g['dhcpv6.iaaddr.valid_lifetime'], '4294967295', 'infinite');
    assert.is(g['dhcpv6.duidll.link_layer_addr'], '02:4e:56:49:00:01');
    assert.is(g['ipv6.src'], 'fe80::4e:56ff:fe49:1');
    assert.is(g['udp.dstport'], '546');
  }
  const counts = o.off.hosts.get('h1')!.egress.stage<DhcpServer>('dhcp-server').counts;
  assert.is(counts.solicit, 1);
  assert.is(counts.request, 1);
  o.off.close();
});

test('a Solicit with Rapid Commit gets a Reply at once; a second IA_NA gets NoAddrsAvail', async () => {
  const o = await openOffline();
  const r = await ask(o, { type: DhcpMsg.Solicit, iaids: [1, 2], rapid: true });
  const [g] = dissect([r!], ['dhcpv6.msgtype', 'dhcpv6.iaid', 'dhcpv6.status_code', 'dhcpv6.option.type']);
  assert.is(g['dhcpv6.msgtype'], '7');
  assert.is(g['dhcpv6.iaid'], '00000001,00000002');
  assert.is(g['dhcpv6.status_code'], '2', 'NoAddrsAvail for the second IA');
  assert.ok(g['dhcpv6.option.type'].split(',').includes('14'), 'Rapid Commit echoed');
  o.off.close();
});

test('Confirm: on link with the identity, not on link with another address', async () => {
  const o = await openOffline();
  const v = o.config.vms.get('web1')!;
  const yes = await ask(o, { type: DhcpMsg.Confirm, iaids: [1], iaAddr: v.identity });
  const other = Buffer.from(v.identity);
  other[15] ^= 1;
  const no = await ask(o, { type: DhcpMsg.Confirm, iaids: [1], iaAddr: other });
  const got = dissect([yes!, no!], ['dhcpv6.status_code']);
  assert.equal(got.map((g) => g['dhcpv6.status_code']), ['0', '4']);
  o.off.close();
});

test('a Request for another server is absorbed, not answered and not forwarded', async () => {
  const o = await openOffline();
  const r = await ask(o, { type: DhcpMsg.Request, iaids: [1], serverId: Buffer.from('00030001aabbccddeeff', 'hex') });
  assert.is(r, undefined);
  assert.is(o.off.hosts.get('h1')!.egress.stage<DhcpServer>('dhcp-server').counts.ignored, 1);
  assert.is(o.off.underlay.length, 0);
  o.off.close();
});

for (const [what, m, reason] of [
  ['an option that runs past the message', { type: DhcpMsg.Solicit, iaids: [1], tail: Buffer.from([0, 3, 0, 40, 1, 2]) }, Drop.DhcpMalformed],
  ['a zero UDP checksum', { type: DhcpMsg.Solicit, iaids: [1], zeroChecksum: true }, Drop.DhcpMalformed],
  ['a Solicit without a client ID', { type: DhcpMsg.Solicit, iaids: [1], clientId: null }, Drop.DhcpMalformed],
  ['a Solicit that names a server', { type: DhcpMsg.Solicit, iaids: [1], serverId: SERVER_DUID }, Drop.DhcpMalformed],
  ['an Advertise from a VM', { type: DhcpMsg.Advertise }, Drop.DhcpServerOnly],
  ['a relay message from a VM', { type: DhcpMsg.RelayForw }, Drop.DhcpServerOnly],
] as const) {
  test(`${what} is refused and counted`, async () => {
    const o = await openOffline();
    assert.is(await ask(o, m as Msg), undefined, 'no answer');
    assert.is(dropped(o, reason), 1);
    o.off.close();
  });
}

test('the Router Advertisement sets the M flag: addresses come from DHCPv6', async () => {
  const o = await openOffline();
  const v = o.config.vms.get('web1')!;
  const f = Buffer.alloc(ETH_HLEN + IPV6_HLEN + 8);
  writeEthIpv6(f, 0, Buffer.from('333300000002', 'hex'), v.mac);
  writeIcmp6Header(f, ETH_HLEN, linkLocalFromMac(v.mac), Buffer.from('ff020000000000000000000000000002', 'hex'), 8, 255);
  f[ETH_HLEN + IPV6_HLEN] = ND_ROUTER_SOLICIT;
  sealIcmp6(f, ETH_HLEN, 8);
  const before = o.off.replies.length;
  await o.off.sendFrames('web1', frames([f]));
  const ra = o.off.replies[before]?.data;
  assert.ok(ra, 'an RA');
  const [g] = dissect([ra!], ['icmpv6.type', 'icmpv6.nd.ra.flag.m', 'icmpv6.opt.mtu']);
  assert.is(g['icmpv6.type'], '134');
  assert.is(g['icmpv6.nd.ra.flag.m'], '1');
  assert.ok(Number(g['icmpv6.opt.mtu']) >= 1280);
  o.off.close();
});

test.run();
