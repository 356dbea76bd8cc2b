// The verdict stream (src/switch/verdicts.ts) on a real pipeline's counters: a dropped packet
// becomes an event with its reason, stage and identity pair (names from the bindings); an
// installed cable becomes plugged or unplugged; the rate limit decides before an event is
// made and counts what it refuses; a watcher that cannot keep up loses events, counted; the
// filters; the kept events are bounded.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseIpv6Address } from '../src/base/address.js';
import { Drop } from '../src/base/drops.js';
import { Batch, Next } from '../src/dataplane/batch.js';
import { Cable, CableDirection } from '../src/dataplane/cable.js';
import { Pipeline } from '../src/dataplane/pipeline.js';
import type { Stage } from '../src/dataplane/stage.js';
import { drop } from '../src/dataplane/stage.js';
import { matches, parseFilter, VerdictStream, type Verdict } from '../src/switch/verdicts.js';

const WEB1 = 'fd9a:3c7e:51b2:1:f63b:ba70:5b22:fa85';
const VAULT1 = 'fd9a:3c7e:51b2:2::7';
const WHO = new Map([[WEB1, { vm: 'web1', tenant: 'blue' }], [VAULT1, { vm: 'vault1', tenant: 'green' }]]);

/** A one-stage pipeline whose stage drops every packet for `reason`. */
function dropping(reason: Drop): Pipeline {
  const stage: Stage = { name: 'cable-lookup', drops: [reason], outputs: [], process: (b: Batch) => { for (let i = 0; i < b.count; i++) drop(b, i, reason); } } as unknown as Stage;
  return new Pipeline('egress', [stage]);
}

/** A batch of `n` IPv6 packets web1 -> vault1 (ICMPv6), parsed as far as l3/l4. */
function batch(n: number): Batch {
  const b = new Batch();
  const pkt = Buffer.alloc(48);
  pkt[0] = 0x60;
  pkt[6] = 58;
  parseIpv6Address(WEB1).copy(pkt, 8);
  parseIpv6Address(VAULT1).copy(pkt, 24);
  for (let k = 0; k < n; k++) {
    const i = b.push(pkt, 64, 0, 0);
    b.l3[i] = b.start[i];
    b.l4[i] = b.start[i] + 40;
    b.proto[i] = 58;
  }
  return b;
}

function stream(now: { t: number }, rate = 1000, keep = 512): VerdictStream {
  return new VerdictStream('h1', { now: () => now.t }, (id) => WHO.get(id), { rate, keep });
}

test('a dropped packet is an event with its reason, stage, pair, VM names, tenants and protocol', () => {
  const now = { t: 1_700_000_000_000 };
  const v = stream(now);
  const p = dropping(Drop.PolicyCrossTenant);
  const upcall = { onInstall: null };
  v.attach([p], upcall);
  p.process(batch(1), 0);
  const [e] = v.last({});
  assert.equal(e, {
    time: new Date(now.t).toISOString(), host: 'h1', verdict: 'dropped', direction: 'egress', reason: 'policy/cross-tenant', stage: 'cable-lookup',
    src: WEB1, dst: VAULT1, srcVm: 'web1', dstVm: 'vault1', srcTenant: 'blue', dstTenant: 'green', proto: 58, peer: undefined,
  });
});

test('an installed cable is plugged (with its rule and peer) or unplugged (with its reason), its event made after the installing code is done', async () => {
  const now = { t: 0 };
  const v = stream(now);
  const upcall: { onInstall: ((c: Cable) => void) | null } = { onInstall: null };
  v.attach([], upcall);
  const src = parseIpv6Address(WEB1);
  const dst = parseIpv6Address(VAULT1);
  const plugged = new Cable(CableDirection.Egress, src, dst, Drop.None, 'blue/web-mesh', null, 0);
  plugged.peerHost = 'h2';
  upcall.onInstall!(plugged);
  now.t = 1000;
  upcall.onInstall!(new Cable(CableDirection.Ingress, dst, src, Drop.PolicyCrossTenant, 'cross-tenant', null, 0));
  now.t = 5000;
  assert.is(v.last({}).length, 0, 'nothing made while the installing code runs (it releases the packets that waited next)');
  await Promise.resolve();
  const [a, b] = v.last({});
  assert.equal([a.time, b.time], ['1970-01-01T00:00:00.000Z', '1970-01-01T00:00:01.000Z'], 'each at its install');
  assert.equal([a.verdict, a.rule, a.peer, a.reason, a.direction], ['plugged', 'blue/web-mesh', 'h2', '', 'egress']);
  assert.equal([b.verdict, b.rule, b.reason, b.direction, b.srcVm], ['unplugged', 'cross-tenant', 'policy/cross-tenant', 'ingress', 'vault1']);
});

test('a flood: the token bucket admits `rate` events a second and counts the rest as lost; the counters still see every drop', () => {
  const now = { t: 0 };
  const v = stream(now, 100);
  const p = dropping(Drop.SpoofSource);
  v.attach([p], { onInstall: null });
  for (let k = 0; k < 4; k++) p.process(batch(200), 0); // 800 drops at one instant
  assert.is(v.counts.emitted, 100);
  assert.is(v.counts.lost, 700);
  assert.is(p.counters.dropsByName()['spoof/source'], 800);
  now.t += 500; // half a second: 50 more tokens
  p.process(batch(200), 0);
  assert.is(v.counts.emitted, 150);
});

test('a watcher gets the events its filter takes; one that cannot take more loses them, counted', () => {
  const v = stream({ t: 0 });
  const p = dropping(Drop.PolicyCrossTenant);
  v.attach([p], { onInstall: null });
  const got: Verdict[] = [];
  const w = v.watch({ tenant: 'green', verdict: 'dropped' }, (e) => {
    got.push(e);
    return got.length < 3;
  });
  const other = v.watch({ tenant: 'red' }, () => true);
  p.process(batch(5), 0);
  assert.is(got.length, 5);
  assert.is(w.lost(), 3, 'the last three were refused by the watcher');
  assert.is(other.lost(), 0);
  w.stop();
  p.process(batch(1), 0);
  assert.is(got.length, 5, 'a stopped watcher gets nothing');
});

test('filters: vm on either side, tenant, verdict, reason exact or by family; a bad filter is refused by name', () => {
  const e = { verdict: 'dropped', reason: 'policy/cross-tenant', srcVm: 'web1', dstVm: 'vault1', srcTenant: 'blue', dstTenant: 'green' } as Verdict;
  assert.ok(matches(e, { vm: 'vault1' }));
  assert.ok(!matches(e, { vm: 'web2' }));
  assert.ok(matches(e, { reason: 'policy/' }));
  assert.ok(matches(e, { reason: 'policy/cross-tenant' }));
  assert.ok(!matches(e, { reason: 'policy/cross' }));
  assert.ok(!matches(e, { verdict: 'plugged' }));
  assert.throws(() => parseFilter({ verdict: 'droped' }), /verdict is one of dropped, plugged, unplugged, got "droped"/);
  assert.throws(() => parseFilter({ vm: 7 }), /vm must be a non-empty string/);
});

test('the kept events are bounded; a batch with no drop costs no event', () => {
  const v = stream({ t: 0 }, 10_000, 16);
  const p = dropping(Drop.SpoofSource);
  v.attach([p], { onInstall: null });
  p.process(batch(100), 0);
  assert.is(v.last({}).length, 16);
  const quiet = new Pipeline('egress', [{ name: 'pass', drops: [], outputs: [Next.Consumed], process: (b: Batch) => { for (let i = 0; i < b.count; i++) { b.next[i] = Next.Consumed; b.by[i] = b.stage; } } } as unknown as Stage]);
  v.attach([quiet], { onInstall: null });
  quiet.process(batch(10), 0);
  assert.is(v.counts.emitted, 100);
});

test.run();
