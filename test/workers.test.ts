// The pieces of several data-path threads per host (src/switch/workers/): who owns a VM, the
// SPIs and request ids a worker's key exchange hands out, which worker's socket each
// key-exchange message is for, the workers' shares of the host's bounds, and how their stats
// add up.

import { createPublicKey } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseIpv6Address } from '../src/base/address.js';
import { systemClock, systemRandom } from '../src/base/clock.js';
import { Drop } from '../src/base/drops.js';
import { loadConfig } from '../src/config/config.js';
import { Cable, CableDirection } from '../src/dataplane/cable.js';
import { KX_ANSWER, KX_INIT, KX_NOTIFY, encodeNotify } from '../src/esp/handshake.js';
import { NodeEspCipher } from '../src/esp/esp-cipher.js';
import { DEFAULT_HARD_SEQ } from '../src/esp/sa.js';
import { hostPrivateKey } from '../src/switch/cloud.js';
import { DEFAULT_KX, KeyExchangeEngine, type KxTransport } from '../src/switch/key-exchange.js';
import { MemoryHub } from '../src/switch/transports.js';
import { forEveryWorker, kxWorker } from '../src/switch/workers/kx-route.js';
import { mergeStats } from '../src/switch/workers/merge-stats.js';
import { ownerOf, spiForShard, type Shard } from '../src/switch/workers/shard.js';
import { shareOf, verdictLimits, workerConfig } from '../src/switch/workers/share.js';
import { VERDICT_LIMITS } from '../src/switch/verdicts.js';

const SHIPPED = fileURLToPath(new URL('../../nvi-switch.yaml', import.meta.url));
const cfg = loadConfig(SHIPPED);

test('a VM belongs to the last word of its identity mod the worker count, and the lab spreads over two workers', () => {
  const id = parseIpv6Address('fd9a:3c7e:51b2:1:f63b:ba70:5b22:fa85');
  assert.is(ownerOf(id, 1), 0);
  assert.is(ownerOf(id, 2), 0x5b22fa85 % 2);
  assert.is(ownerOf(id, 7), 0x5b22fa85 % 7);
  const framed = Buffer.concat([Buffer.alloc(5), id]);
  assert.is(ownerOf(framed, 7, 5), ownerOf(id, 7), 'at an offset, as in a message');
  const owners = [...cfg.vms.values()].map((vm) => ownerOf(vm.identity, 2));
  assert.ok(owners.includes(0) && owners.includes(1), `the lab's VMs fall on both workers: ${owners}`);
});

test('spiForShard: an SPI of the worker (mod count), in [256, 2^30), within one count of the random one', () => {
  fc.assert(fc.property(fc.integer({ min: 0, max: 2 ** 30 - 1 }), fc.integer({ min: 1, max: 64 }), fc.nat(), (spi, count, k) => {
    const shard: Shard = { count, index: k % count };
    const s = spiForShard(spi, shard);
    return s % count === shard.index && s >= 256 && s < 2 ** 30 && (spi < 256 || spi >= 2 ** 30 - count || Math.abs(s - spi) < count);
  }), { numRuns: 5000 });
  assert.is(spiForShard(0, { count: 64, index: 63 }), 319);
  assert.is(spiForShard(2 ** 30 - 1, { count: 64, index: 0 }), 2 ** 30 - 64);
});

test('kxWorker: an INIT to its destination\'s owner, an ANSWER to the worker its id names, anything else to worker 0; a NOTIFY is for every worker', () => {
  const dst = parseIpv6Address('fd9a:3c7e:51b2:1:2789:55aa:5f71:9793');
  const init = Buffer.alloc(120);
  init[0] = KX_INIT;
  dst.copy(init, 36);
  assert.is(kxWorker(init, 3), 0x5f719793 % 3);
  const answer = Buffer.alloc(100);
  answer[0] = KX_ANSWER;
  answer[4] = 2;
  assert.is(kxWorker(answer, 3), 2);
  answer[4] = 3;
  assert.is(kxWorker(answer, 3), 0, 'an id naming no worker goes to worker 0, which ignores it and counts it');
  const notify = encodeNotify({ reason: 0, spi: 0x1234, timeMs: 1, host: 'h2' }, hostPrivateKey(cfg, 'h2'));
  assert.is(notify[0], KX_NOTIFY);
  assert.is(kxWorker(notify, 3), 0, 'a NOTIFY reaches worker 0');
  assert.ok(forEveryWorker(notify), 'which hands it to the others');
  assert.not.ok(forEveryWorker(init) || forEveryWorker(answer));
  assert.is(kxWorker(init.subarray(0, 40), 3), 0, 'an INIT too short to name its destination');
  assert.is(kxWorker(Buffer.from([9, 1, 2]), 3), 0, 'no known type');
  assert.is(kxWorker(Buffer.alloc(0), 3), 0, 'empty');
});

test('two workers\' key exchanges: the responder picks SPIs its kernel filter gives it, and each INIT\'s id names the initiator\'s worker', async () => {
  const H1 = 0x0a4d0001;
  const H2 = 0x0a4d0002;
  const hub = new MemoryHub();
  const spis: number[] = [];
  const inits: Buffer[] = [];
  const vm = cfg.vms.get('web1')!;
  const engine = (name: string, address: number, shard: Shard, transport: KxTransport): KeyExchangeEngine => new KeyExchangeEngine(
    { name, address }, hostPrivateKey(cfg, name), transport,
    { hostKey: async (host) => ({ drop: Drop.None, key: createPublicKey(hostPrivateKey(cfg, host)) }) },
    { accept: async (req) => ({ ok: true, cable: new Cable(CableDirection.Ingress, parseIpv6Address(req.src), parseIpv6Address(req.dst), Drop.None, 'test', null, 0) }) },
    { installInbound: (_c, spi) => spis.push(spi), spiInUse: () => false, sendsOn: () => false, spiRejected: () => {} },
    new NodeEspCipher(), { alg: 'aes-128-gcm', limits: { softPackets: 1e9, softBytes: 1e12, softAgeMs: 3.6e6, hardSeq: DEFAULT_HARD_SEQ }, ...DEFAULT_KX, shard }, systemClock, systemRandom,
  );
  const t1 = hub.transport(H1);
  const e1 = engine('h1', H1, { count: 3, index: 2 }, { ...t1, send: (msg, to) => (msg[0] === KX_INIT && inits.push(Buffer.from(msg)), t1.send(msg, to)) });
  const e2 = engine('h2', H2, { count: 3, index: 1 }, hub.transport(H2));
  const port = { index: 0, name: 'web1', tenant: vm.tenant, mac: vm.mac, identity: vm.identity, identityText: vm.identityText, mtu: 1400 };
  for (let k = 0; k < 20; k++) {
    const r = await e1.establish({ srcPort: port, dst: cfg.vms.get('web2')!.identityText, peerHost: 'h2', peerAddress: H2 });
    assert.ok(r.ok, JSON.stringify(r));
    if (r.ok) assert.is(r.sa.spi % 3, 1, `SPI 0x${r.sa.spi.toString(16)} is worker 1's`);
  }
  assert.is(spis.length, 20);
  assert.ok(spis.every((s) => s % 3 === 1 && s >= 256 && s < 2 ** 30));
  assert.is(new Set(spis).size, 20, 'still random');
  assert.is(inits.length, 20);
  assert.ok(inits.every((m) => m[4] === 2), 'every request id starts with the initiator worker\'s index');
  e1.close();
  e2.close();
});

test('mergeStats: counters add up, port lists join, histogram buckets add bucket by bucket, the host\'s own figures are kept once', () => {
  const one = (rx: number, port: string, le: number[]) => ({
    host: 'h1', policyRevision: 3, egress: { in: rx, drops: { 'policy/cross-tenant': 1 } },
    store: { revision: 40, fresh: true }, ports: [{ name: port, rx }],
    upcall: { latency: { buckets: le.map((count, k) => ({ le: [0.001, 0.01][k], count })), sum: 0.5, count: le[1] } },
    memory: { rss: 1000, heapUsed: 10 },
  });
  const a = one(5, 'nvi-web3', [1, 2]);
  const b = { ...one(7, 'nvi-web1', [3, 4]), store: { revision: 40, fresh: false } };
  assert.equal(mergeStats([a, b]), {
    host: 'h1', policyRevision: 3, egress: { in: 12, drops: { 'policy/cross-tenant': 2 } },
    store: { revision: 40, fresh: false }, ports: [{ name: 'nvi-web3', rx: 5 }, { name: 'nvi-web1', rx: 7 }],
    upcall: { latency: { buckets: [{ le: 0.001, count: 4 }, { le: 0.01, count: 6 }], sum: 1, count: 6 } },
    memory: { rss: 1000, heapUsed: 20 },
  });
  assert.equal(mergeStats([a]), a, 'one worker: its own stats');
});


test("a worker's config splits the host's memory bounds among the workers, and leaves the rest as it is", () => {
  assert.is(workerConfig(cfg, 1), cfg, 'one worker: the config itself');
  const w = workerConfig(cfg, 3);
  const sw = cfg.switch;
  assert.is(w.switch.cables.max, Math.ceil(sw.cables.max / 3));
  assert.is(w.switch.upcall.queueTotal, Math.ceil(sw.upcall.queueTotal / 3));
  assert.ok(w.switch.cables.max * 3 >= sw.cables.max && (w.switch.cables.max - 1) * 3 < sw.cables.max, 'three shares hold the bound, and no more than 2 beyond it');
  assert.is(w.switch.cables.perPort, Math.min(sw.cables.perPort, w.switch.cables.max), "a port's quota is no more than its worker's cables");
  assert.is(w.switch.upcall.verifyPerSecond, sw.upcall.verifyPerSecond, 'rates stay per worker');
  assert.is(w.switch.upcall.portMissesPerSecond, sw.upcall.portMissesPerSecond);
  assert.is(w.switch.cables.ttl, sw.cables.ttl);
  assert.is(w.vms, cfg.vms);
  assert.is(w.hosts, cfg.hosts);
  const tiny = workerConfig({ ...cfg, switch: { ...sw, cables: { ...sw.cables, max: 2, perPort: 2 } } }, 64);
  assert.equal([tiny.switch.cables.max, tiny.switch.cables.perPort], [1, 1], 'never 0');
  assert.is(shareOf(10, 4), 3);
});

test("a worker's verdict stream gets its share of the host's events a second and events kept: N workers' streams joined make one host's", () => {
  assert.equal(verdictLimits(1), { ...VERDICT_LIMITS });
  assert.equal(verdictLimits(2), { rate: VERDICT_LIMITS.rate / 2, keep: VERDICT_LIMITS.keep / 2 });
  const three = verdictLimits(3);
  assert.ok(three.rate * 3 >= VERDICT_LIMITS.rate && three.rate * 3 < VERDICT_LIMITS.rate + 3);
  assert.equal(verdictLimits(4096), { rate: 1, keep: 1 }, 'never 0');
});

test.run();
