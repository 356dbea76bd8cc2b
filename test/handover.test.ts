// A switch handing its state to the process that takes over (handover-state.ts), both hosts
// in one process: the cables come back on the same SAs without a key exchange, every outbound
// sequence number after the handover lies above every one before (never reused under a key),
// the receiver's replay window comes along (an old packet replayed after the handover is
// still a replay), and the flows of an initiate-only pair stay open.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Drop } from '../src/base/drops.js';
import type { Cable } from '../src/dataplane/cable.js';
import { icmp6Checksum } from '../src/wire/icmpv6.js';
import { IPV4_HLEN } from '../src/wire/ipv4.js';
import { SEQ_MARGIN } from '../src/switch/handover-state.js';
import { handoverRefusal } from '../src/switch/handover.js';
import { echoFrame, frames, openOffline } from './offline-fixture.js';

const ESP = 50;

function esp(packets: { data: Buffer }[]): { spi: number; seq: number; data: Buffer }[] {
  return packets.filter((p) => p.data[9] === ESP).map((p) => ({ spi: p.data.readUInt32BE(IPV4_HLEN), seq: p.data.readUInt32BE(IPV4_HLEN + 4), data: p.data }));
}

test('h1 and h2 hand over while web1 talks to web2: the same SAs, sequence numbers only upwards, no key exchange, replays still refused', async () => {
  const o = await openOffline();
  const h2Delivered = (): number => o.off.delivered.filter((d) => d.vm === 'web2').length;
  const send = async (from: number, n: number): Promise<void> => {
    const list = Array.from({ length: n }, (_, k) => echoFrame(o.config, 'web1', 'web2', from + k));
    await o.off.sendFrames('web1', frames(list.slice(0, 1)));
    if (n > 1) await o.off.sendFrames('web1', frames(list.slice(1)));
  };
  await send(1, 6);
  assert.is(h2Delivered(), 6);
  const before = esp(o.off.underlay);
  const kxBefore = o.off.underlay.filter((p) => p.data[9] === 17).length;
  assert.is(before.length, 6);
  const spi = before[0].spi;

  const r1 = await o.off.handOver('h1');
  assert.equal(r1.refused, []);
  assert.is(r1.egressSas, 1, 'h1 took its ESP cable over on the SA it sent on');
  const r2 = await o.off.handOver('h2');
  assert.equal(r2.refused, []);
  assert.is(r2.inbound, 1, 'h2 took the inbound SA over');

  await send(7, 5);
  assert.is(h2Delivered(), 11, 'every packet after the handover arrived');
  const after = esp(o.off.underlay).slice(before.length);
  assert.is(after.length, 5);
  assert.ok(after.every((p) => p.spi === spi), 'on the same SA');
  const last = Math.max(...before.map((p) => p.seq));
  assert.ok(after.every((p) => p.seq > last + SEQ_MARGIN), `sequence numbers resume above ${last} + ${SEQ_MARGIN}: ${after.map((p) => p.seq)}`);
  for (let k = 1; k < after.length; k++) assert.ok(after[k].seq > after[k - 1].seq, 'strictly increasing');
  assert.is(o.off.underlay.filter((p) => p.data[9] === 17).length, kxBefore, 'no key-exchange message: the SAs came along');

  const h2 = o.off.hosts.get('h2')!;
  o.off.receiveUnderlay([{ data: Buffer.from(before[2].data), to: h2.address, timeUs: 0, tag: -1 }]);
  assert.is(h2.ingress.counters.dropsByName()['esp/replay'], 1, 'a packet the old process took, replayed to the new one, is a replay: the window came along');
  o.off.receiveUnderlay([{ data: Buffer.from(after[0].data), to: h2.address, timeUs: 0, tag: -1 }]);
  assert.is(h2.ingress.counters.dropsByName()['esp/replay'], 2, 'and so is one the new process took');
  assert.is(h2Delivered(), 11, 'neither was delivered');
  o.off.close();
});

test('a cable whose checks fail in the new process is not taken over, and its key goes', async () => {
  const o = await openOffline();
  await o.off.sendFrames('web1', frames([echoFrame(o.config, 'web1', 'web2', 1)]));
  const h1 = o.off.hosts.get('h1')!;
  assert.ok([...h1.egressCables.all()].some((c) => c.plugged && c.sa), 'plugged on ESP');
  // The new process sees web2's binding withdrawn: the cable cannot be verified again.
  const web2 = o.config.vms.get('web2')!;
  const rec = await o.off.cloud.store.lookup(web2.identityText);
  assert.ok(await o.off.cloud.store.withdraw(web2.identityText, rec!.epoch));
  const r = await o.off.handOver('h1');
  assert.is(r.egress, 0);
  assert.is(r.refused.length, 2, 'both directions: web1 -> web2 egress, and the reply cable h2 plugged at once');
  assert.ok(r.refused.every((x) => x.includes(web2.identityText)), r.refused.join('; '));
  const h1b = o.off.hosts.get('h1')!;
  assert.is([...h1b.egressCables.all()].filter((c) => c.plugged).length, 0, 'nothing plugged');
  o.off.close();
});

test('an ESP ingress cable verified again (its refresh) keeps the host its SA was made with, and is taken over with it', async () => {
  const o = await openOffline();
  await o.off.sendFrames('web1', frames([echoFrame(o.config, 'web1', 'web2', 1)]));
  const h2 = o.off.hosts.get('h2')!;
  const esp = (): Cable | undefined => [...h2.ingressCables.all()].find((c) => c.plugged && c.srcText === o.config.vms.get('web1')!.identityText);
  const before = esp()!;
  assert.is(before.peerHost, 'h1');
  h2.upcall.refresh(before);
  for (let k = 0; k < 200 && esp() === before; k++) await new Promise((r) => setTimeout(r, 5));
  const after = esp()!;
  assert.ok(after !== before, 'the refresh plugged a new cable');
  assert.is(after.peerHost, 'h1', 'with the host its SA was made with');
  const r = await o.off.handOver('h2');
  assert.equal(r.refused, []);
  assert.is(r.inbound, 1, 'h2 took the inbound SA over, on the cable plugged again');
  o.off.close();
});

test('an initiate-only flow opened before the handover of both hosts still lets its replies through after it', async () => {
  const o = await openOffline();
  const delivered = (): number => [...o.off.hosts.values()].reduce((n, h) => n + h.egress.counters.delivered + h.ingress.counters.delivered, 0);
  await o.off.sendFrames('web1', frames([echoFrame(o.config, 'web1', 'db1', 1)]));
  assert.is(delivered(), 1, 'web1 opened a flow to db1');
  await o.off.handOver('h1');
  await o.off.handOver('h2');
  const reply = echoFrame(o.config, 'db1', 'web1', 1);
  reply[54] = 129; // echo reply, same identifier and sequence
  reply.writeUInt16BE(0, 56);
  reply.writeUInt16BE(icmp6Checksum(reply, 14, 54, reply.length - 54), 56);
  await o.off.sendFrames('db1', frames([reply]));
  assert.is(delivered(), 1, 'the counters start again with the new hosts');
  const h1 = o.off.hosts.get('h1')!;
  assert.is(h1.ingress.counters.delivered, 1, 'the reply reached web1: the flow came along');
  await o.off.sendFrames('db1', frames([echoFrame(o.config, 'db1', 'web1', 9)]));
  assert.is(o.off.hosts.get('h2')!.egress.counters.drops[Drop.PolicyInitiateOnly], 1, 'db1 still cannot open one');
  o.off.close();
});

test('a handover is refused under systemd, whose unit would stop the new process with the old one', () => {
  assert.match(handoverRefusal({ INVOCATION_ID: '0123456789abcdef' }) ?? '', /systemd service.*systemctl restart/);
  assert.is(handoverRefusal({}), undefined);
});

test.run();
