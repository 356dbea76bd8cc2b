// Initiate-only flows on the data path: the opener's packets open flows, the other side may
// only answer them, and this holds whether the two VMs are on one host or on two.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Drop } from '../src/base/drops.js';
import { icmp6Checksum } from '../src/wire/icmpv6.js';
import { echoFrame, frames, openOffline, type Offline } from './offline-fixture.js';

/** An echo reply from `from` to `to` answering echo request `seq` (identifier 0x4e56, as echoFrame). */
function echoReply(o: Offline, from: string, to: string, seq: number): Buffer {
  const f = echoFrame(o.config, from, to, seq);
  f[54] = 129;
  f.writeUInt16BE(0, 56);
  f.writeUInt16BE(icmp6Checksum(f, 14, 54, f.length - 54), 56);
  return f;
}

for (const [where, opener, responder, host] of [['on one host', 'web2', 'db1', 'h2'], ['on two hosts', 'web1', 'db1', 'h2']] as const) {
  test(`initiate-only ${where}: replies to an opened flow pass, the responder cannot open one`, async () => {
    const o = await openOffline();
    const responderHost = o.off.hosts.get(host)!;
    const delivered = (): number => [...o.off.hosts.values()].reduce((n, h) => n + h.egress.counters.delivered + h.ingress.counters.delivered, 0);
    await o.off.sendFrames(opener, frames([echoFrame(o.config, opener, responder, 1)]));
    assert.is(delivered(), 1, 'the opener reaches the responder');
    await o.off.sendFrames(responder, frames([echoReply(o, responder, opener, 1)]));
    assert.is(delivered(), 2, 'the reply to the opened flow passes');
    await o.off.sendFrames(responder, frames([echoFrame(o.config, responder, opener, 9)]));
    assert.is(delivered(), 2, 'a request from the responder does not');
    assert.is(responderHost.egress.counters.drops[Drop.PolicyInitiateOnly], 1);
    o.off.close();
  });
}

test.run();
