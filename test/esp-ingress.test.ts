// The receiving host's ESP checks, fed with tampered copies of a real ESP stream: each bad
// packet is dropped under its own reason and none of them moves the anti-replay window.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ESP_HLEN, ESP_ICV_LEN } from '../src/wire/esp.js';
import { BATCH_MAX } from '../src/dataplane/batch.js';
import { EspJobs, NodeEspCipher } from '../src/esp/esp-cipher.js';
import { REPLAY_WINDOW } from '../src/esp/replay-window.js';
import { checksum } from '../src/wire/checksum.js';
import { DROP_INFO, Drop } from '../src/base/drops.js';
import { IPV4_HLEN } from '../src/wire/ipv4.js';
import type { Host } from '../src/switch/host.js';
import { echoFrame, frames, openOffline, type Offline } from './offline-fixture.js';

const ESP = 50;

/** A real ESP stream web1 -> web2 from h1, not delivered, and h2 to receive it. */
async function stream(n: number): Promise<{ o: Offline; packets: Buffer[]; h2: Host }> {
  const o = await openOffline({ carry: false, spares: 0 }); // the pair's own SA, negotiated by INIT, its key exported
  const list = Array.from({ length: n }, (_, k) => echoFrame(o.config, 'web1', 'web2', k + 1));
  // One packet plugs the cable (a burst to an unplugged pair would overflow the upcall queue).
  await o.off.sendFrames('web1', frames(list.slice(0, 1)));
  await o.off.sendFrames('web1', frames(list.slice(1)));
  const packets = o.off.underlay.filter((p) => p.data[9] === ESP).map((p) => p.data);
  assert.is(packets.length, n, 'every echo request became an ESP packet');
  return { o, packets, h2: o.off.hosts.get('h2')! };
}

function receive(o: Offline, h2: Host, ...packets: Buffer[]): void {
  o.off.receiveUnderlay(packets.map((data) => ({ data: Buffer.from(data), to: h2.address, timeUs: 0, tag: -1 })));
}

function drops(h2: Host): Record<string, number> {
  return h2.ingress.counters.dropsByName();
}

function top(h2: Host): [number, number] {
  const sas = [...h2.sas.spis.values()];
  assert.is(sas.length, 1);
  return sas[0].top();
}

test('a flipped bit anywhere in the ESP part is dropped: SPI bits as unknown SPI, every other bit as failed authentication', async () => {
  const { o, packets, h2 } = await stream(2);
  const pkt = packets[0];
  const byReason: Record<string, number> = {};
  for (let bit = IPV4_HLEN * 8; bit < pkt.length * 8; bit++) {
    const bad = Buffer.from(pkt);
    bad[bit >> 3] ^= 0x80 >> (bit & 7);
    const before = h2.ingress.counters.dropped();
    receive(o, h2, bad);
    assert.is(h2.ingress.counters.dropped(), before + 1, `bit ${bit} was not dropped`);
    const inSpi = bit < (IPV4_HLEN + 4) * 8;
    const last = Object.entries(drops(h2)).find(([k, v]) => v !== (byReason[k] ?? 0));
    assert.ok(last, `bit ${bit}: no counter moved`);
    const [reason] = last!;
    byReason[reason] = last![1];
    const inSeq = bit >= (IPV4_HLEN + 4) * 8 && bit < (IPV4_HLEN + 8) * 8;
    if (inSpi) assert.is(reason, 'esp/unknown-spi', `bit ${bit}`);
    else if (!inSeq) assert.is(reason, 'esp/auth-failed', `bit ${bit}`);
    else assert.ok(['esp/auth-failed', 'esp/left-of-window', 'esp/replay'].includes(reason), `bit ${bit}: ${reason}`); // a flipped sequence bit may name a seen or an old number
  }
  assert.is(h2.ingress.counters.delivered, 0);
  assert.equal(top(h2), [0, 0], 'no tampered packet moved the window');
  receive(o, h2, pkt);
  assert.is(h2.ingress.counters.delivered, 1, 'the untouched packet still gets through');
  o.off.close();
});

test('a replayed packet is dropped as a replay and does not move the window', async () => {
  const { o, packets, h2 } = await stream(3);
  receive(o, h2, packets[0], packets[2]);
  assert.equal(top(h2), [0, 3]);
  receive(o, h2, packets[0], packets[2]);
  assert.is(drops(h2)['esp/replay'], 2);
  receive(o, h2, packets[1]); // late, inside the window: fine
  assert.is(h2.ingress.counters.delivered, 3);
  assert.equal(top(h2), [0, 3]);
  o.off.close();
});

test('a packet left of the window is dropped as such and does not move it', async () => {
  const n = REPLAY_WINDOW + 10;
  const { o, packets, h2 } = await stream(n);
  receive(o, h2, packets[n - 1]);
  assert.equal(top(h2), [0, n]);
  receive(o, h2, packets[0], packets[5]);
  assert.is(drops(h2)['esp/left-of-window'], 2);
  receive(o, h2, packets[n - REPLAY_WINDOW + 1]); // the oldest number still inside
  assert.is(h2.ingress.counters.delivered, 2);
  assert.equal(top(h2), [0, n]);
  o.off.close();
});

test('an unknown SPI is dropped, counted, and answered with a NOTIFY to the sender', async () => {
  const { o, packets, h2 } = await stream(1);
  const bad = Buffer.from(packets[0]);
  bad.writeUInt32BE(0xdead0001, IPV4_HLEN);
  receive(o, h2, bad);
  assert.is(drops(h2)['esp/unknown-spi'], 1);
  assert.is(h2.kx.counters.notifiesSent, 1);
  assert.equal(top(h2), [0, 0]);
  o.off.close();
});

test('an ESP packet from another host address than the SA peer is dropped as wrong peer', async () => {
  const { o, packets, h2 } = await stream(1);
  const bad = Buffer.from(packets[0]);
  bad.writeUInt32BE(0x0a4d0063, 12); // 10.77.0.99
  bad.writeUInt16BE(0, 10);
  bad.writeUInt16BE(checksum(bad, 0, IPV4_HLEN), 10);
  receive(o, h2, bad);
  assert.is(drops(h2)['esp/wrong-peer'], 1);
  assert.equal(top(h2), [0, 0]);
  o.off.close();
});

test('an authentic packet whose inner source is not the cable pair is dropped and does not move the window', async () => {
  const { o, packets, h2 } = await stream(1);
  const sa = o.sas[0];
  const cipher = new NodeEspCipher();
  const key = cipher.addKey(sa.alg, sa.key, sa.salt);
  const pkt = Buffer.from(packets[0]);
  const esp = IPV4_HLEN;
  const ptLen = pkt.length - IPV4_HLEN - ESP_HLEN - ESP_ICV_LEN;
  const jobs = new EspJobs(BATCH_MAX);
  jobs.add(key, esp, ptLen, 0, 0);
  cipher.open(pkt, jobs);
  assert.is(jobs.ok[0], 1, 'the exported key opens the packet');
  // Speak for web3 (also a VM of h1) on web1's cable, with a fresh sequence number.
  o.config.vms.get('web3')!.identity.copy(pkt, esp + ESP_HLEN + 8);
  pkt.writeUInt32BE(7, esp + 4);
  pkt.writeUInt32BE(0, esp + 8);
  pkt.writeUInt32BE(7, esp + 12);
  jobs.count = 0;
  jobs.add(key, esp, ptLen, 0, 0);
  cipher.seal(pkt, jobs);
  receive(o, h2, pkt);
  assert.is(drops(h2)['inner/pair-mismatch'], 1);
  assert.is(h2.ingress.counters.delivered, 0);
  assert.equal(top(h2), [0, 0]);
  receive(o, h2, packets[0]);
  assert.is(h2.ingress.counters.delivered, 1);
  o.off.close();
});

test('every reason used above is a declared reason with a description', () => {
  for (const name of ['esp/unknown-spi', 'esp/auth-failed', 'esp/replay', 'esp/left-of-window', 'esp/wrong-peer', 'inner/pair-mismatch']) {
    assert.ok(Object.values(DROP_INFO).some(([n, what]) => n === name && what.length > 10), name);
  }
  assert.is(DROP_INFO[Drop.EspReplay][0], 'esp/replay');
});

test.run();
