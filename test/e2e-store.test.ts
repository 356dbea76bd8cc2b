// End to end with the mapping store on a 3-member etcd cluster on the lab's fabric (issue 8):
// the switches reach etcd over the underlay, keep a replica of it, and are pushed what changes.
//
//   1. the lab comes up on etcd (3 members)
//   2. a binding re-published (epoch + 1) is pushed at once to the host with a cable to the
//      VM, which re-verifies it; the host without one does no per-cable work
//   3. losing one member of three changes nothing: new cables plug, the replicas stay current
//   4. every member stopped for 60 s: a ping and a TCP transfer on a plugged cable lose
//      nothing; a new destination fails closed under resolve/store-unavailable; with etcd
//      back it plugs within 5 s; the outage and the recovery are logged once each
//   5. a policy without a valid signature, and an older signed revision, written into etcd,
//      are refused by both switches, which keep forwarding under the policy they had
//   6. an old (valid, signed) binding replayed into the store is refused by every watching
//      replica (traffic goes on); a switch restarted after it refuses it from its epoch memory
//      on disk, under verify/old-epoch
//   7. a VM spraying random identities for 10 s: another VM's new cable plugs within about
//      its usual time, and etcd serves (almost) no reads for the flood
//   8. lab down leaves nothing

import { readFileSync, writeFileSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parse, stringify } from 'yaml';
import { BIN, dropDelta, labNamespaces, newLab, ROUTER_MAC_TEXT, sleep, switchProcesses, until, type HostStats, type Lab } from './e2e-fixture.js';

let lab: Lab;
const id = (vm: string): string => lab.vm(vm).id;

test.after(async () => {
  if (lab?.running) await lab.down();
});

async function ping(from: string, to: string, count = 3, wait = 2): Promise<{ sent: number; received: number }> {
  const r = await lab.inNs(lab.vm(from).ns, 'ping', ['-6', '-c', String(count), '-i', '0.2', '-W', String(wait), id(to)], 30);
  const m = /(\d+) packets transmitted, (\d+) received/.exec(r.stdout);
  assert.ok(m, `ping ${from} -> ${to} printed no summary: ${r.stdout}${r.stderr}`);
  return { sent: Number(m![1]), received: Number(m![2]) };
}

/** The nvi-switch CLI as the operator of a host (inside its namespace, where etcd is reached). */
function asHost(host: string, args: readonly string[], timeoutS = 30) {
  return lab.inNs(lab.hostNs(host), process.execPath, [BIN, ...args, '-c', lab.config], timeoutS);
}

async function etcdGet(key: string): Promise<string> {
  const r = await lab.etcdctl(['get', key, '--print-value-only']);
  assert.is(r.code, 0, r.stderr);
  return r.stdout.replace(/\n$/, '');
}

async function etcdPut(key: string, value: string): Promise<void> {
  const r = await lab.etcdctl(['put', key, value]);
  assert.is(r.code, 0, r.stderr);
}

/** The epoch host `host`'s egress cable src -> dst was verified at. */
async function cableEpoch(host: string, src: string, dst: string): Promise<number | undefined> {
  const cables = await lab.cables();
  return cables[host]?.find((c) => c.direction === 'egress' && c.srcVm === src && c.dstVm === dst)?.epoch;
}

interface StoreStats { fresh: boolean; revision: number; policyRefusals: Record<string, number>; watchEnds: number }
const store = (s: HostStats): StoreStats => (s as unknown as { store: StoreStats }).store;
const pushed = (s: HostStats): number => (s.cables as unknown as { reverifiedByPush: number }).reverifiedByPush;
const replays = (s: HostStats): number => (store(s) as unknown as { replaysRefused: number }).replaysRefused;
const ahead = (s: HostStats): number => (s as unknown as { verifier: { verifiedAhead: number } }).verifier.verifiedAhead;

test('lab up with the store on a 3-member etcd cluster on the fabric', async () => {
  lab = newLab('store', { etcd: 3 });
  await lab.up();
  assert.is(lab.etcdPids().length, 3);
  const s = await lab.stats();
  for (const h of ['h1', 'h2']) assert.ok(store(s[h]).fresh, `${h}'s replica is current`);
});

test("a binding re-published with the next epoch is pushed to the host with a cable to it, not to the other", async () => {
  assert.equal(await ping('web1', 'web2', 2), { sent: 2, received: 2 });
  const before = await lab.stats();
  const epoch = (await cableEpoch('h1', 'web1', 'web2'))!;
  assert.ok(epoch >= 1, `h1's cable web1 -> web2 was verified at epoch ${epoch}`);
  const t0 = Date.now();
  const r = await asHost('h2', ['vm', 'create', 'web2', '--tenant', 'blue', '--host', 'h2']);
  assert.is(r.code, 0, r.stderr);
  await until(() => cableEpoch('h1', 'web1', 'web2'), (e) => e === epoch + 1, 5000, 20);
  const ms = Date.now() - t0;
  assert.is(await cableEpoch('h1', 'web1', 'web2'), epoch + 1, 'h1 re-verified the cable against the new binding');
  const after = await lab.stats();
  assert.ok(pushed(after.h1) > pushed(before.h1), 'h1 re-verified by push');
  assert.is(pushed(after.h2), pushed(before.h2), 'h2 holds no cable whose far end is web2: no per-cable work');
  assert.is(ahead(after.h2), ahead(before.h2) + 1, 'h2 (VMs of blue there, no cable to web2) verified the new binding as the store published it');
  assert.ok(ahead(after.h1) - ahead(before.h1) <= 1, "h1 verified it once: by the cable's push, or ahead if that came first");
  assert.equal(await ping('web1', 'web2', 2), { sent: 2, received: 2 });
  process.stdout.write(`\n  push: web2 epoch ${epoch} -> ${epoch + 1}; h1's cable showed it ${ms} ms after vm create started (the CLI's own start-up included)\n`);
});

test('one etcd member of three stopped changes nothing: new cables plug and the replicas stay current', async () => {
  const m = lab.etcdPids()[1];
  process.kill(m.pid, 'SIGTERM');
  await until(async () => { try { process.kill(m.pid, 0); return true; } catch { return false; } }, (alive) => !alive, 5000);
  const before = await lab.stats();
  assert.equal(await ping('web3', 'web2', 3), { sent: 3, received: 3 }, 'a new cable web3 -> web2 plugs');
  await sleep(3500); // longer than the replicas' staleness bound
  const after = await lab.stats();
  for (const h of ['h1', 'h2']) {
    assert.ok(store(after[h]).fresh, `${h} is still current with two members`);
    assert.equal(dropDelta(before[h].egress, after[h].egress), {}, `${h} dropped nothing`);
  }
  for (const h of ['h1', 'h2']) assert.not.ok(lab.logOf(h).includes('"store-down"'), `${h} logged no outage`);
  lab.startEtcd(1); // back, on its kept data
  await lab.etcdHealthy();
});

test('every etcd member stopped for 60 s: the plugged cable loses nothing, a new one fails closed as resolve/store-unavailable, and plugs within 5 s of etcd coming back', async () => {
  await lab.flush();
  assert.equal(await ping('web1', 'web2', 1), { sent: 1, received: 1 }, 'web1 -> web2 plugged');
  const sink = await lab.pyServer('web2', ['tcp-sink', 5100, 120], 130);
  // 700 pings at 0.1 s (70 s, through the whole outage); ping ends by itself once the last reply
  // is in, so no request is still in flight when the count is read (a SIGINT could catch one).
  const pinger = lab.bg(lab.vm('web1').ns, 'ping', ['-6', '-i', '0.1', '-c', '700', '-W', '2', id('web2')], 120);
  // 72 MB paced at 8 Mbit/s: about 75 s, through the whole outage.
  const transfer = lab.py('web1', ['tcp-send', id('web2'), 5100, 72 * 1000 * 1000, '--mbps=8', '--timeout=110'], 120);
  await sleep(1000);
  const t0 = Date.now();
  for (let k = 0; k < 3; k++) await lab.stopEtcd(k);
  await until(() => lab.stats(), (s) => !store(s.h1).fresh && !store(s.h2).fresh, 10_000);
  const downAt = Date.now() - t0;
  const before = await lab.stats();
  const refused = await ping('web3', 'web2', 2, 1);
  assert.is(refused.received, 0, 'a new destination gets nothing while the store is away');
  const mid = await lab.stats();
  const d = dropDelta(before.h1.egress, mid.h1.egress);
  assert.ok((d['resolve/store-unavailable'] ?? 0) >= 1, `h1 counted the new pair under resolve/store-unavailable: ${JSON.stringify(d)}`);
  await sleep(Math.max(0, 60_000 - (Date.now() - t0)));
  for (let k = 0; k < 3; k++) lab.startEtcd(k);
  const back = Date.now();
  await lab.etcdHealthy();
  let plugged = 0;
  for (let tries = 0; tries < 30 && plugged === 0; tries++) plugged = (await ping('web3', 'web2', 1, 1)).received;
  const recovery = Date.now() - back;
  assert.is(plugged, 1, 'after the store is back, the new cable plugs');
  assert.ok(recovery < 5000, `the new cable plugged ${recovery} ms after etcd was started again`);
  const sent = await transfer;
  const got = await sink.result();
  const pings = await pinger.done;
  const m = /(\d+) packets transmitted, (\d+) received/.exec(pings.stdout);
  assert.ok(m, pings.stdout);
  assert.is(Number(m![1]), 700, `the pinger ran its whole count: ${m![0]}`);
  assert.is(Number(m![2]), Number(m![1]), `every ping on the plugged cable came back: ${m![0]}`);
  assert.is(got.bytes, sent.sent, 'the TCP transfer on the plugged cable completed');
  assert.is(got.sha256, sent.sha256);
  for (const h of ['h1', 'h2']) {
    const log = lab.logOf(h).split('\n');
    assert.is(log.filter((l) => l.includes('"store-down"')).length, 1, `${h} logged the outage once`);
    assert.is(log.filter((l) => l.includes('"store-up"')).length, 2, `${h} logged the store up at start and once after the outage`);
  }
  process.stdout.write(`\n  outage: replicas stale ${downAt} ms after the members stopped; ${m![0]} on the plugged cable over 60 s; ${got.bytes} B of TCP intact; new cable plugged ${recovery} ms after etcd restarted\n`);
});

test('a policy without a valid signature, and an older signed revision, written into etcd are refused; the switches keep the policy they run', async () => {
  const current = JSON.parse(await etcdGet('/nvi/policy')) as { revision: number; document: string; signature: string };
  const before = await lab.stats();
  // An unsigned one, and one whose document was changed after signing (every rule dropped).
  await etcdPut('/nvi/policy', JSON.stringify({ revision: current.revision + 10, document: current.document, signature: '' }));
  const emptied = current.document.replace(/"rules":\[[^\]]*\]/g, '"rules":[]');
  await etcdPut('/nvi/policy', JSON.stringify({ revision: current.revision + 11, document: emptied, signature: current.signature }));
  // A newer signed revision (the operator's), then the older one replayed.
  const doc = parse(readFileSync(lab.config, 'utf8')) as { tenants: { blue: { rules: unknown[] } } };
  doc.tenants.blue.rules.push({ name: 'extra', from: 'web1', to: 'web3', action: 'plug' });
  writeFileSync(lab.config, stringify(doc));
  const apply = await asHost('h1', ['policy', 'apply']);
  assert.is(apply.code, 0, apply.stderr + apply.stdout);
  const applied = Number(/revision (\d+)/.exec(apply.stdout)![1]);
  await until(() => lab.stats(), (s) => s.h1.cables !== undefined && (s.h1 as unknown as { policyRevision?: number }).policyRevision === applied, 5000);
  await etcdPut('/nvi/policy', JSON.stringify(current));
  const after = await until(() => lab.stats(), (s) => ['h1', 'h2'].every((h) => Object.values(store(s[h]).policyRefusals).reduce((a, b) => a + b, 0) >= 3), 5000);
  for (const h of ['h1', 'h2']) {
    const r = store(after[h]).policyRefusals;
    const b = store(before[h]).policyRefusals;
    assert.is(r.unsigned - b.unsigned, 1, `${h}: the unsigned policy refused`);
    assert.is(r['bad-signature'] - b['bad-signature'], 1, `${h}: the altered document refused`);
    assert.is(r['older-revision'] - b['older-revision'], 1, `${h}: the older revision refused`);
    assert.is((after[h] as unknown as { policyRevision: number }).policyRevision, applied, `${h} runs the operator's revision ${applied}`);
  }
  assert.equal(await ping('web1', 'web2', 2), { sent: 2, received: 2 }, 'traffic goes on under the policy they kept');
});

test("an old binding replayed into etcd is refused by every watching replica; a switch restarted after the replay refuses it from its epoch memory on disk", async () => {
  assert.equal(await ping('web1', 'web2', 1), { sent: 1, received: 1 });
  const key = `/nvi/binding/${id('web2')}`;
  const old = await etcdGet(key);
  const oldEpoch = (JSON.parse(old) as { epoch: number }).epoch;
  const r = await asHost('h2', ['vm', 'create', 'web2', '--tenant', 'blue', '--host', 'h2']);
  assert.is(r.code, 0, r.stderr);
  await until(() => cableEpoch('h1', 'web1', 'web2'), (e) => e === oldEpoch + 1, 5000, 20);
  const s0 = await lab.stats();
  await etcdPut(key, old); // a compromised store puts the older, still valid, signed binding back
  const s1 = await until(() => lab.stats(), (s) => ['h1', 'h2'].every((h) => replays(s[h]) > replays(s0[h])), 5000);
  for (const h of ['h1', 'h2']) assert.ok(replays(s1[h]) > replays(s0[h]), `${h}'s replica refused the replay`);
  assert.equal(await ping('web1', 'web2', 2), { sent: 2, received: 2 }, 'traffic goes on to where web2 is');
  // h1 restarts: its new replica only knows the replayed record; its epoch memory on disk does not take it.
  const restart = await lab.cli(['lab', 'restart', 'h1'], 60);
  assert.is(restart.code, 0, restart.stderr + restart.stdout);
  const before = await lab.stats();
  const p = await ping('web1', 'web2', 2, 1);
  assert.is(p.received, 0, 'the restarted h1 does not plug web1 -> web2 on the replayed binding');
  const after = await lab.stats();
  assert.ok((dropDelta(before.h1.egress, after.h1.egress)['verify/old-epoch'] ?? 0) >= 1, `h1 refused it as old: ${JSON.stringify(dropDelta(before.h1.egress, after.h1.egress))}`);
  // The owner publishes the next epoch: traffic resumes.
  const again = await asHost('h2', ['vm', 'create', 'web2', '--tenant', 'blue', '--host', 'h2']);
  assert.is(again.code, 0, again.stderr);
  let ok = 0;
  for (let k = 0; k < 20 && ok === 0; k++) ok = (await ping('web1', 'web2', 1, 1)).received;
  assert.is(ok, 1, 'web2 reachable again at the newer epoch');
});

test('a VM spraying 10 s of packets at random identities: its port\'s quotas refuse most, another VM\'s cables stay plugged and its new cable plugs at its usual speed, and etcd serves almost no reads for it', async () => {
  const metric = async (): Promise<number> => {
    const r = await lab.inNs(lab.fabric, 'curl', ['-s', `${lab.cfg.store.endpoints[0]}/metrics`]);
    const m = /^etcd_mvcc_range_total (\d+)/m.exec(r.stdout);
    assert.ok(m, 'etcd reports its range count');
    return Number(m![1]);
  };
  const rtt = async (from: string, to: string): Promise<number> => {
    const r = await lab.inNs(lab.vm(from).ns, 'ping', ['-6', '-c', '1', '-W', '2', id(to)], 10);
    const m = /time=([\d.]+) ms/.exec(r.stdout);
    assert.ok(m, `${from} -> ${to}: ${r.stdout}`);
    return Number(m![1]);
  };
  await lab.flush();
  const usual = await rtt('web3', 'web2'); // a first packet, without a flood
  await lab.flush();
  await rtt('web3', 'web1'); // a plugged cable of another VM, which the flood must not evict
  const before = await lab.stats();
  const reads0 = await metric();
  const web1 = lab.vm('web1');
  const spray = lab.py('web1', ['spray', web1.tap, ROUTER_MAC_TEXT, web1.mac, web1.id, 'fd9a:3c7e:51b2:1::', 20000, 10, 7], 60);
  await sleep(3000);
  const during = await rtt('web3', 'web2'); // the same first packet, during the flood
  const sent = await spray;
  const reads = (await metric()) - reads0;
  const after = await lab.stats();
  const d = dropDelta(before.h1.egress, after.h1.egress);
  const quota = d['upcall/port-quota'] ?? 0;
  const notFound = d['resolve/not-found'] ?? 0;
  assert.ok(quota + notFound >= Number(sent.sent) * 0.9, `the flood was refused at h1: ${JSON.stringify(d)}`);
  assert.ok(quota > Number(sent.sent) / 2, `most of it by web1's quota of misses (2000 a second): ${quota}`);
  const cables = (await lab.cables()).h1;
  assert.ok(cables.some((c) => c.srcVm === 'web3' && c.dstVm === 'web1' && c.state.startsWith('plugged')), "web3's cable stayed plugged");
  const fromWeb1 = cables.filter((c) => c.srcVm === 'web1').length;
  assert.ok(fromWeb1 <= 16_384, `web1's own cables stay within its quota: ${fromWeb1}`);
  assert.ok(during < Math.max(20, usual * 2), `a first packet during the flood took ${during} ms (without: ${usual} ms)`);
  assert.ok(reads < 50, `etcd served ${reads} range requests during the flood`);
  process.stdout.write(`\n  miss flood: web1 sent ${sent.sent} frames to random identities in ${sent.seconds} s; h1 refused ${quota} by web1's quota of misses and ${notFound} as not found, web1 holds ${fromWeb1} cables; etcd range requests meanwhile: ${reads}; first ping of a new pair ${usual} ms before, ${during} ms during\n`);
});

test('lab down stops the etcd members and leaves no namespace', async () => {
  const pids = lab.etcdPids().map((m) => m.pid);
  await lab.down();
  for (const pid of pids) assert.throws(() => process.kill(pid, 0), 'etcd member stopped');
  assert.equal(labNamespaces(), []);
  assert.equal(switchProcesses(lab.dir), [], 'no switch of the lab left');
});

test.run();
