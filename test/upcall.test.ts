// The miss path's answers when the far end's binding changes while the resolver works (a
// migration seen half-way): the answer may rest on the old binding, so it is asked again
// and the held packets wait for the new answer instead of a stale refusal standing for the
// negative TTL.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Drop } from '../src/base/drops.js';
import { Batch, FRAME_OFFSET } from '../src/dataplane/batch.js';
import { Cable, CableDirection } from '../src/dataplane/cable.js';
import { CableCache } from '../src/dataplane/cable-cache.js';
import { pairHash } from '../src/dataplane/pair-hash.js';
import { Upcall, type HeldPacket, type MissResolver, type UpcallLimits } from '../src/dataplane/upcall.js';
import { ETH_HLEN } from '../src/wire/ethernet.js';

const ME = Buffer.from('fd000000000000010000000000000001', 'hex');
const PEER = Buffer.from('fd000000000000010000000000000002', 'hex');
const OTHER = Buffer.from('fd000000000000010000000000000003', 'hex');

/** A resolver whose answers the test gives, one per question, in order. */
class Asked implements MissResolver {
  readonly questions: { previous: Cable | undefined; answer: (c: Cable) => void }[] = [];
  plugEgress(_port: number, _dst: Buffer, previous: Cable | undefined): Promise<Cable> {
    return new Promise((answer) => this.questions.push({ previous, answer }));
  }
  plugIngress(): Promise<Cable> {
    return new Promise(() => {});
  }
}

function cable(drop: Drop, dst = PEER): Cable {
  return new Cable(CableDirection.Egress, ME, dst, drop, drop === Drop.None ? 'allow' : 'refused', null, 0);
}

function setup(limits: Partial<UpcallLimits> = {}): { upcall: Upcall; asked: Asked; egress: CableCache; released: HeldPacket[]; unused: [Cable, Cable | undefined][] } {
  const asked = new Asked();
  const egress = new CableCache(64);
  const released: HeldPacket[] = [];
  const unused: [Cable, Cable | undefined][] = [];
  const upcall = new Upcall(
    asked, { egress, ingress: new CableCache(16) }, { perCable: 4, total: 64, maxPending: 64, ...limits }, (_d, p) => released.push(...p),
    (err) => { throw err; }, () => {}, (c, kept) => unused.push([c, kept]),
  );
  return { upcall, asked, egress, released, unused };
}

/** Offer one frame src -> dst from `port` to the upcall; what it said. */
function offer(upcall: Upcall, src: Buffer, dst: Buffer, port: number): Drop {
  const f = Buffer.alloc(ETH_HLEN + 48);
  f.writeUInt16BE(0x86dd, 12);
  f[ETH_HLEN] = 0x60;
  src.copy(f, ETH_HLEN + 8);
  dst.copy(f, ETH_HLEN + 24);
  const b = new Batch();
  b.push(f, FRAME_OFFSET, port, 0);
  b.l3[0] = b.start[0] + ETH_HLEN;
  return upcall.holdEgress(b, 0, pairHash(src, 0, dst, 0));
}

/** Hold one frame ME -> PEER on port 0. */
function miss(upcall: Upcall): void {
  assert.is(offer(upcall, ME, PEER, 0), Drop.None, 'held');
}

/** The identity fd00:0:0:1::k. */
function nth(k: number): Buffer {
  const b = Buffer.from(PEER);
  b.writeUInt16BE(k, 14);
  return b;
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

test('a miss whose far end moved while it was resolved is asked again; the stale refusal is never installed', async () => {
  const { upcall, asked, egress, released, unused } = setup();
  miss(upcall);
  assert.is(asked.questions.length, 1);
  upcall.bindingChanged(PEER, []);
  const stale = cable(Drop.SaNegotiationFailed);
  asked.questions[0].answer(stale); // the old host refused: the VM left it
  await tick();
  assert.is(asked.questions.length, 2, 'asked again');
  assert.is(egress.size, 0, 'the refusal was not installed');
  assert.equal(unused, [[stale, undefined]], 'and handed back as unused (its SA, if any, released)');
  assert.is(upcall.queued, 1, 'the packet still waits');
  asked.questions[1].answer(cable(Drop.None));
  await tick();
  assert.ok(egress.findCable(cable(Drop.None))?.plugged, 'the new answer is installed');
  assert.is(released.length, 1, 'and the held packet released');
  assert.is(upcall.counts.restarted, 1);
});

test('a change of another identity leaves a miss alone; an unchanged miss installs its answer at once', async () => {
  const { upcall, asked, egress } = setup();
  miss(upcall);
  upcall.bindingChanged(OTHER, []);
  asked.questions[0].answer(cable(Drop.SaNegotiationFailed));
  await tick();
  assert.is(asked.questions.length, 1);
  assert.is(egress.findCable(cable(Drop.None))?.drop, Drop.SaNegotiationFailed);
  assert.is(upcall.counts.restarted, 0);
});

test('a far end that keeps changing: the miss is asked again at most 3 times, then its answer stands', async () => {
  const { upcall, asked, egress, released } = setup();
  miss(upcall);
  for (let k = 0; k < 4; k++) {
    upcall.bindingChanged(PEER, []);
    asked.questions[k].answer(cable(Drop.SaNegotiationFailed));
    await tick();
  }
  assert.is(asked.questions.length, 4);
  assert.is(egress.findCable(cable(Drop.None))?.drop, Drop.SaNegotiationFailed);
  assert.is(released.length, 1);
});

test('a refresh in flight when the far end moves is verified once more; its stale answer is dropped', async () => {
  const { upcall, asked, egress, unused } = setup();
  const plugged = cable(Drop.None);
  egress.insert(plugged);
  upcall.refresh(plugged);
  upcall.bindingChanged(PEER, egress.cablesOf('fd00:0:0:1::2'));
  asked.questions[0].answer(cable(Drop.SaNegotiationFailed));
  await tick();
  assert.is(asked.questions.length, 2, 'verified again');
  assert.is(asked.questions[1].previous, plugged, 'as a refresh of the plugged cable');
  assert.is(egress.findCable(plugged), plugged, 'which kept forwarding');
  const next = cable(Drop.None);
  asked.questions[1].answer(next);
  await tick();
  assert.is(egress.findCable(plugged), next);
  assert.is(unused.length, 1, 'the stale answer was handed back as unused');
  assert.is(unused[0][1], plugged, 'beside the cable that kept forwarding (whose SA it may share)');
});

test('a port past its quota of misses a second is refused as upcall/port-quota; another port is not', () => {
  const { upcall, asked } = setup({ portMissesPerSecond: 5 });
  const said = Array.from({ length: 10 }, (_, k) => offer(upcall, ME, nth(100 + k), 0));
  assert.equal(said, [...Array(5).fill(Drop.None), ...Array(5).fill(Drop.UpcallPortQuota)]);
  assert.is(offer(upcall, ME, nth(100), 0), Drop.None, 'a packet for a pair already resolving joins it: no new miss');
  assert.is(offer(upcall, OTHER, nth(1), 1), Drop.None, 'port 1 has its own budget');
  assert.is(asked.questions.length, 6);
});

test("a port's egress cables past its quota evict its own oldest, never another port's", async () => {
  const { upcall, asked, egress } = setup({ perPortCables: 3 });
  const theirs = new Cable(CableDirection.Egress, OTHER, PEER, Drop.None, 'allow', null, 0);
  theirs.srcPort = 1;
  egress.insert(theirs);
  for (let k = 0; k < 5; k++) {
    assert.is(offer(upcall, ME, nth(200 + k), 0), Drop.None);
    const c = new Cable(CableDirection.Egress, ME, nth(200 + k), Drop.ResolveNotFound, 'no binding', null, 0);
    c.srcPort = 0;
    asked.questions[k].answer(c);
    await tick();
  }
  assert.is(egress.portCount(0), 3, "port 0 holds its quota");
  assert.is(upcall.counts.portEvictions, 2);
  assert.is(egress.findCable(theirs), theirs, "port 1's cable stayed");
  const left = [...egress.all()].filter((c) => c.srcPort === 0).map((c) => c.dst.readUInt16BE(14)).sort();
  assert.equal(left, [202, 203, 204], 'the oldest went first');
});

test.run();
