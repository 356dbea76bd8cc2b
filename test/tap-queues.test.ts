// A multi-queue TAP (TapPort.openQueues) against the kernel, in a namespace the test creates
// (nvi-tn-<pid>-q, removed at the end, also when a test fails). The namespace's stack sends
// UDP flows out through the device; each queue is read as a data-path thread would read its
// own. What the design of several threads rests on: every frame of a flow comes out of one
// queue, the flows spread over the queues, and a flow follows the queue where the switch
// wrote its other direction.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { Batch, FRAME_OFFSET } from '../src/dataplane/batch.js';
import { ETHERTYPE_IPV6, ETH_HLEN, ETH_OFF_TYPE } from '../src/wire/ethernet.js';
import { IPV6_HLEN, IPV6_OFF_NEXT, PROTO_UDP } from '../src/wire/ipv6.js';
import { parseIpv6Address, parseMac } from '../src/base/address.js';
import { ROUTER_MAC } from '../src/dataplane/vm-port.js';
import { TapPort } from '../src/io/tap.js';
import { guardedSetup } from './guarded-setup.js';
import { udpFrame } from './udp-frame.js';
import { atExit } from './at-exit.js';

const NS = `nvi-tn-${process.pid}-q`;
const TAP = 'nvi-tq0';
const VM_MAC = '02:00:00:00:00:0b';
const VM_ADDR = 'fd00:4e56:2::1';
const PEER_ADDR = 'fd00:4e56:2::2';
const PEER_PORT = 9000;
const FLOWS = 64;
const PER_FLOW = 4;

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function cleanup(): void {
  try {
    ip('netns', 'del', NS); // the device goes with it (and with its last queue's fd)
  } catch {
    // already gone
  }
}
atExit(cleanup);

/** `count` datagrams from the VM's side on each of ports first.. first+flows-1 to the peer. */
function send(firstPort: number, flows: number, count: number): void {
  const script = `
import socket
for p in range(${firstPort}, ${firstPort + flows}):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.bind(('${VM_ADDR}', p))
    for k in range(${count}):
        s.sendto(b'x' * 32, ('${PEER_ADDR}', ${PEER_PORT}))
    s.close()
`;
  execFileSync('ip', ['netns', 'exec', NS, '/usr/bin/python3', '-c', script], { stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Read every queue until `want` UDP frames to the peer came out; source port -> queues it came out of, with counts. */
async function readQueues(queues: TapPort[], want: number): Promise<Map<number, number[]>> {
  const seen = new Map<number, number[]>();
  const b = new Batch();
  let got = 0;
  const end = Date.now() + 5000;
  while (got < want && Date.now() < end) {
    for (let q = 0; q < queues.length; q++) {
      b.reset();
      const n = queues[q].read(b, q, 0);
      for (let i = 0; i < n; i++) {
        const s = b.start[i];
        if (b.data.readUInt16BE(s + ETH_OFF_TYPE) !== ETHERTYPE_IPV6 || b.data[s + ETH_HLEN + IPV6_OFF_NEXT] !== PROTO_UDP) continue;
        const sport = b.data.readUInt16BE(s + ETH_HLEN + IPV6_HLEN);
        const per = seen.get(sport) ?? new Array<number>(queues.length).fill(0);
        per[q]++;
        seen.set(sport, per);
        got++;
      }
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  assert.is(got, want, `UDP frames read from the queues`);
  return seen;
}

let queues: TapPort[] = [];

guardedSetup(test, () => {
  cleanup();
  ip('netns', 'add', NS);
  ip('-n', NS, 'link', 'set', 'lo', 'up');
  queues = TapPort.openQueues(TAP, 2, { mtu: 1400, netns: NS, mac: parseMac(VM_MAC) });
  ip('-n', NS, 'addr', 'add', `${VM_ADDR}/64`, 'dev', TAP, 'nodad');
  // The peer is a permanent neighbour behind the switch: no neighbour discovery in the way.
  ip('-n', NS, 'neigh', 'replace', PEER_ADDR, 'lladdr', '02:00:00:00:00:01', 'dev', TAP, 'nud', 'permanent');
});

test.after(() => {
  for (const q of queues) q.close();
  cleanup();
});

test('two queues: two fds on one device, which the kernel reports as two queues', () => {
  assert.is(queues.length, 2);
  assert.is.not(queues[0].fd, queues[1].fd);
  const info = JSON.parse(ip('-n', NS, '-d', '-j', 'link', 'show', TAP)) as { num_tx_queues?: number; linkinfo?: { info_data?: { multi_queue?: boolean } } }[];
  assert.ok(info[0].linkinfo?.info_data?.multi_queue, `multi_queue in ${JSON.stringify(info[0].linkinfo)}`);
});

test(`every frame of a flow comes out of one queue, and ${FLOWS} flows use both queues`, async () => {
  send(40000, FLOWS, PER_FLOW);
  const seen = await readQueues(queues, FLOWS * PER_FLOW);
  assert.is(seen.size, FLOWS);
  for (const [port, per] of seen) assert.is(per.filter((c) => c > 0).length, 1, `flow from port ${port}: ${per}`);
  const onQueue = [0, 1].map((q) => [...seen.values()].filter((per) => per[q] > 0).length);
  assert.ok(onQueue[0] > 0 && onQueue[1] > 0, `flows per queue: ${onQueue}`);
});

test("a flow moves to the queue where the switch wrote its other direction, and stays there", async () => {
  const first = await readQueues(queues, 0); // nothing left over
  assert.is(first.size, 0);
  send(41000, 16, 1);
  const before = await readQueues(queues, 16);
  // For each flow, write its reply on the other queue; its next frames come out of that one.
  const moved = new Map<number, number>();
  for (const [port, per] of before) {
    const from = per[0] > 0 ? 0 : 1;
    const to = 1 - from;
    const f = udpFrame({
      dstMac: parseMac(VM_MAC), srcMac: ROUTER_MAC, src: parseIpv6Address(PEER_ADDR), dst: parseIpv6Address(VM_ADDR),
      sport: PEER_PORT, dport: port, payload: Buffer.from('reply'),
    });
    const b = new Batch();
    b.push(f, FRAME_OFFSET, 0, 0);
    assert.is(queues[to].write(b, Int32Array.of(0), 1), 1, `reply of flow ${port} written on queue ${to}`);
    moved.set(port, to);
  }
  send(41000, 16, PER_FLOW);
  const after = await readQueues(queues, 16 * PER_FLOW);
  for (const [port, per] of after) assert.is(per[moved.get(port)!], PER_FLOW, `flow ${port} after its reply on queue ${moved.get(port)}: ${per}`);
});

test('queues are checked: 0 and more than the kernel allows are refused before a device is made', () => {
  for (const n of [0, 1.5, 257]) {
    assert.throws(() => TapPort.openQueues('nvi-tq9', n, { netns: NS }), (e: Error & { code?: string }) => e.code === 'NVI_ERR_TAP_QUEUES' && e.message.includes(String(n)));
  }
  assert.throws(() => ip('-n', NS, 'link', 'show', 'nvi-tq9'));
});

test('a device opened with one queue cannot take a second, with the queue and the errno named', () => {
  const one = TapPort.open('nvi-tq1', { netns: NS });
  try {
    assert.throws(() => TapPort.openQueues('nvi-tq1', 2, { netns: NS }),
      (e: Error & { code?: string }) => e.code === 'NVI_ERR_TAP_OPEN' && /queue 0 of 2/.test(e.message) && /EINVAL|EBUSY/.test(e.message));
  } finally {
    one.close();
  }
});

test.run();
