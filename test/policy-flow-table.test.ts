// FlowTable: numbered steps on one table, then a random run against a plain Map.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Drop } from '../src/base/drops.js';
import { FlowTable } from '../src/policy/flow-table.js';

const TCP = 6;
const UDP = 17;
const ICMP = 58;
const SYN = 0x02;
const ACK = 0x10;
const SYN_ACK = SYN | ACK;
const T0 = 1_700_000_000;

type Step =
  | readonly ['open', number, number, number, number, Drop]
  | readonly ['reply', number, number, number, number, number, boolean];

/** [op, proto, ports..., flags?, nowSec, expected]. open: opener port, responder port. reply: sport, dport, tcp flags. */
const STEPS: readonly (readonly [string, Step])[] = [
  ['a reply before any flow is not a reply', ['reply', TCP, 5432, 40000, SYN_ACK, T0, false]],
  ['the opener opens a TCP flow', ['open', TCP, 40000, 5432, T0, Drop.None]],
  ['the SYN-ACK from the responder is a reply', ['reply', TCP, 5432, 40000, SYN_ACK, T0, true]],
  ['a bare SYN from the responder is never a reply', ['reply', TCP, 5432, 40000, SYN, T0, false]],
  ['a reply from another port is not a reply', ['reply', TCP, 5433, 40000, ACK, T0, false]],
  ['a reply to another opener port is not a reply', ['reply', TCP, 5432, 40001, ACK, T0, false]],
  ['a UDP packet does not match a TCP flow', ['reply', UDP, 5432, 40000, 0, T0, false]],
  ['a TCP flow idle for 300 s still answers', ['reply', TCP, 5432, 40000, ACK, T0 + 300, true]],
  ['a TCP flow idle for 301 s has expired', ['reply', TCP, 5432, 40000, ACK, T0 + 601, false]],
  ['and stays expired', ['reply', TCP, 5432, 40000, ACK, T0 + 601, false]],
  ['the opener opens a UDP flow', ['open', UDP, 5353, 53, T0, Drop.None]],
  ['a UDP answer is a reply', ['reply', UDP, 53, 5353, 0, T0 + 60, true]],
  ['a UDP flow idle for 61 s has expired', ['reply', UDP, 53, 5353, 0, T0 + 121, false]],
  ['an ICMPv6 echo request opens on its identifier', ['open', ICMP, 0x1234, 0, T0, Drop.None]],
  ['the echo reply with that identifier is a reply', ['reply', ICMP, 0, 0x1234, 0, T0 + 30, true]],
  ['an echo reply with another identifier is not', ['reply', ICMP, 0, 0x1235, 0, T0 + 30, false]],
  ['an echo idle for 31 s has expired', ['reply', ICMP, 0, 0x1234, 0, T0 + 61, false]],
  ['a later fragment opens nothing and passes', ['open', UDP, -1, -1, T0, Drop.None]],
  ['a later fragment is never a reply', ['reply', UDP, -1, -1, 0, T0, false]],
  ['another protocol opens nothing and passes', ['open', 47, -1, -1, T0, Drop.None]],
  ['another protocol is never a reply', ['reply', 47, -1, -1, 0, T0, false]],
];

test('flow steps, in order, on one table', () => {
  const t = new FlowTable(16);
  STEPS.forEach(([says, s], k) => {
    if (s[0] === 'open') assert.is(t.opened(s[1], s[2], s[3], s[4]), s[5], `${k + 1}. ${says}`);
    else assert.is(t.isReply(s[1], s[2], s[3], s[4], s[5]), s[6], `${k + 1}. ${says}`);
  });
});

test('a full table refuses new flows but refreshes the ones it has', () => {
  const t = new FlowTable(2);
  assert.is(t.opened(TCP, 1000, 80, T0), Drop.None);
  assert.is(t.opened(TCP, 1001, 80, T0), Drop.None);
  assert.is(t.opened(TCP, 1002, 80, T0 + 10), Drop.PolicyFlowTableFull);
  assert.is(t.opened(TCP, 1000, 80, T0 + 10), Drop.None);
  assert.is(t.size, 2);
});

test('a full table sweeps expired flows to make room', () => {
  const t = new FlowTable(2);
  t.opened(UDP, 1000, 53, T0);
  t.opened(TCP, 1001, 80, T0);
  assert.is(t.opened(TCP, 1002, 80, T0 + 61), Drop.None, 'the UDP flow expired and was swept');
  assert.is(t.size, 2);
  assert.is(t.isReply(TCP, 80, 1001, ACK, T0 + 61), true, 'the TCP flow survived the sweep');
  assert.is(t.isReply(UDP, 53, 1000, 0, T0 + 61), false);
});

test('a reply refreshes its flow', () => {
  const t = new FlowTable(4);
  t.opened(UDP, 1000, 53, T0);
  assert.ok(t.isReply(UDP, 53, 1000, 0, T0 + 50));
  assert.ok(t.isReply(UDP, 53, 1000, 0, T0 + 100), 'idle 50 s since the last reply');
});

test('a port above 32767 keys the same as any other', () => {
  const t = new FlowTable(4);
  t.opened(TCP, 65535, 65535, T0);
  assert.ok(t.isReply(TCP, 65535, 65535, ACK, T0));
  assert.not.ok(t.isReply(TCP, 65535, 65534, ACK, T0));
});

test('the table answers as a plain Map through growth, expiry and sweeps', () => {
  let seed = 12345;
  const next = (n: number): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  const MAX = 100;
  const TIMEOUT: Record<number, number> = { [TCP]: 300, [UDP]: 60, [ICMP]: 30 };
  const t = new FlowTable(MAX);
  const ref = new Map<string, number>(); // "proto opener responder" -> last seen
  let now = T0;
  let full = 0;
  let expired = 0;
  for (let i = 0; i < 200_000; i++) {
    now += next(50) === 0 ? 20 + next(40) : next(2);
    const proto = [TCP, UDP, ICMP][next(3)];
    const op = 1 + next(600);
    const rp = proto === ICMP ? 0 : [53, 80, 443][next(3)];
    const key = `${proto} ${op} ${rp}`;
    if (next(2) === 0) {
      let want: Drop = Drop.None;
      if (!ref.has(key)) {
        if (ref.size >= MAX) for (const [k, seen] of ref) if (now - seen > TIMEOUT[Number(k.split(' ')[0])]) ref.delete(k);
        if (ref.size >= MAX) want = Drop.PolicyFlowTableFull;
      }
      if (want === Drop.None) ref.set(key, now);
      else full++;
      assert.is(t.opened(proto, op, rp, now), want, `step ${i}: open ${key}`);
    } else {
      const seen = ref.get(key);
      const live = seen !== undefined && now - seen <= TIMEOUT[proto];
      if (seen !== undefined && !live) {
        ref.delete(key);
        expired++;
      }
      if (live) ref.set(key, now);
      assert.is(t.isReply(proto, rp, op, ACK, now), live, `step ${i}: reply ${key}`);
    }
    assert.is(t.size, ref.size, `step ${i}: size`);
  }
  assert.ok(full > 100 && expired > 100, `the run must fill the table (${full}) and expire flows (${expired})`);
});

test.run();
