// Identity and trust on the plug path (issue 3): a ping from web1 (h1) to web2 (h2) with
// one bad binding in the store. Each refusal is counted under its own reason and leaves
// the cable unplugged at the end that detected it: the sender (h1) checks the binding of
// the destination (SDN Algorithm 1 step 3); the receiver (h2) checks the binding of the
// source, against the host the request came from (Algorithm 2 step 3).

import Database from 'better-sqlite3';
import type { KeyObject } from 'node:crypto';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { signBinding, type BindingFields } from '../src/trust/binding.js';
import { createCa, issueVmCertificate, loadCa, readHostCertificate, validityFrom, type Validity } from '../src/trust/pki.js';
import { vmCredentials } from '../src/switch/host-keys.js';
import { CableDirection, type Cable } from '../src/dataplane/cable.js';
import { Drop, dropName } from '../src/base/drops.js';
import { tickOf } from '../src/base/ticks.js';
import type { BindingRecord } from '../src/trust/records.js';
import type { Host } from '../src/switch/host.js';
import { echoFrame, frames, openOffline, type Offline } from './offline-fixture.js';

const DAY = 86_400_000;

interface Case {
  o: Offline;
  h1: Host;
  h2: Host;
}

async function open(): Promise<Case> {
  const o = await openOffline({ spares: 0 }); // counts the key exchanges the sender starts: a pair's INITs only
  return { o, h1: o.off.hosts.get('h1')!, h2: o.off.hosts.get('h2')! };
}

/** Publish a binding for `vm`, one epoch up, built by `edit` and signed by `key` (default: the VM's own). */
async function publish(o: Offline, vm: string, opts: { certificate?: string; key?: KeyObject; edit?: (f: BindingFields) => BindingFields; after?: (r: BindingRecord) => BindingRecord } = {}): Promise<BindingRecord> {
  const store = o.off.cloud.store;
  const cfg = o.config;
  const v = cfg.vms.get(vm)!;
  const prev = (await store.lookup(v.identityText))!;
  const creds = vmCredentials(cfg, vm);
  const now = Date.now();
  const fields: BindingFields = {
    identity: v.identityText, tenant: v.tenant, vm, host: prev.host, hostAddress: prev.hostAddress, epoch: prev.epoch + 1,
    notBefore: new Date(now - 60_000).toISOString(), notAfter: new Date(now + DAY).toISOString(),
    certificate: opts.certificate ?? creds.certificate,
  };
  let rec = signBinding(opts.edit ? opts.edit(fields) : fields, opts.key ?? creds.privateKey);
  if (opts.after) rec = opts.after(rec);
  await store.publish(rec);
  return rec;
}

async function vmCert(o: Offline, vm: string, identityOf: string, key: KeyObject, validity: Validity, ca = loadCa(o.config.pkiDir)): Promise<string> {
  const v = o.config.vms.get(vm)!;
  return issueVmCertificate(ca, { vm, tenant: v.tenant, identity: o.config.vms.get(identityOf)!.identityText, publicKey: key, validity });
}

async function ping(o: Offline, from = 'web1', to = 'web2', n = 1): Promise<void> {
  await o.off.sendFrames(from, frames(Array.from({ length: n }, (_, k) => echoFrame(o.config, from, to, k + 1))));
}

function cable(h: Host, dir: CableDirection, src: string, dst: string, o: Offline): Cable | undefined {
  const cache = dir === CableDirection.Egress ? h.egressCables : h.ingressCables;
  const s = o.config.vms.get(src)!.identityText;
  const d = o.config.vms.get(dst)!.identityText;
  return [...cache.all()].find((c) => c.srcText === s && c.dstText === d);
}

/**
 * The sender refused: h1's cable web1 -> web2 is unplugged for `reason`, h1 counted it, and
 * nothing reached h2's ingress. `inits`: the key exchanges h1 started with h2 ahead of the
 * checks (its INIT leaves while the binding is verified, once h2's certificate is checked);
 * h1 keeps no key of such an exchange.
 */
function refusedBySender(c: Case, reason: Drop, inits: number): void {
  const egress = cable(c.h1, CableDirection.Egress, 'web1', 'web2', c.o);
  assert.ok(egress, 'h1 has a cable web1 -> web2');
  assert.is(dropName(egress!.drop), dropName(reason), 'the cable is unplugged for the reason');
  assert.is(c.h1.egress.counters.drops[reason], 1, 'h1 counted the packet under it');
  assert.is(egress!.sa, null);
  assert.is(c.h2.kx.counters.initsReceived, inits, 'the key exchanges h1 started ahead of the checks');
  assert.is(c.h1.sas.cipherKeys, c.h2.sas.spis.size, "no key of h1's is left in the hosts' shared cipher, only h2's inbound ones");
  assert.is(c.h2.ingress.counters.in, 0, 'nothing reached h2');
  c.o.off.close();
}

/** The receiver refused: h2 counted `reason` for the key exchange; h1's cable is unplugged as refused by h2. */
function refusedByReceiver(c: Case, reason: Drop): void {
  assert.is(c.h2.kx.counters.refusals[reason], 1, `h2 refused for ${dropName(reason)}`);
  assert.is(c.h2.kx.counters.accepted, 0);
  assert.is(c.h2.sas.spis.size, 0, 'h2 installed no SA');
  assert.is(cable(c.h2, CableDirection.Ingress, 'web1', 'web2', c.o), undefined, 'h2 plugged nothing');
  const egress = cable(c.h1, CableDirection.Egress, 'web1', 'web2', c.o)!;
  assert.is(egress.drop, Drop.SaNegotiationFailed);
  assert.match(egress.rule, `h2 refused: ${dropName(reason)}`);
  assert.is(c.h1.egress.counters.underlay, 0, 'nothing left h1 unencrypted or otherwise');
  c.o.off.close();
}

test('with every binding intact the ping is delivered (the control case)', async () => {
  const c = await open();
  await ping(c.o);
  assert.is(c.h2.ingress.counters.delivered, 1);
  assert.ok(cable(c.h1, CableDirection.Egress, 'web1', 'web2', c.o)?.plugged);
  c.o.off.close();
});

test('a destination certificate from an unknown CA is refused by the sender', async () => {
  const c = await open();
  const other = await createCa({ name: 'not the lab CA', validity: validityFrom(Date.now() - DAY, 10) });
  const key = vmCredentials(c.o.config, 'web2').privateKey;
  await publish(c.o, 'web2', { certificate: await vmCert(c.o, 'web2', 'web2', key, validityFrom(Date.now() - DAY, 10), other) });
  await ping(c.o);
  refusedBySender(c, Drop.VerifyUnknownCa, 1);
});

test('an expired destination certificate is refused by the sender', async () => {
  const c = await open();
  const key = vmCredentials(c.o.config, 'web2').privateKey;
  await publish(c.o, 'web2', { certificate: await vmCert(c.o, 'web2', 'web2', key, { notBefore: Date.now() - 10 * DAY, notAfter: Date.now() - DAY }) });
  await ping(c.o);
  refusedBySender(c, Drop.VerifyExpired, 1);
});

test('a destination certificate not yet valid is refused by the sender', async () => {
  const c = await open();
  const key = vmCredentials(c.o.config, 'web2').privateKey;
  await publish(c.o, 'web2', { certificate: await vmCert(c.o, 'web2', 'web2', key, { notBefore: Date.now() + DAY, notAfter: Date.now() + 10 * DAY }) });
  await ping(c.o);
  refusedBySender(c, Drop.VerifyNotYetValid, 1);
});

test('a certificate whose subjectAltName is another identity is refused by the sender', async () => {
  const c = await open();
  const key = vmCredentials(c.o.config, 'web2').privateKey;
  await publish(c.o, 'web2', { certificate: await vmCert(c.o, 'web2', 'web3', key, validityFrom(Date.now() - DAY, 10)) });
  await ping(c.o);
  refusedBySender(c, Drop.VerifySanMismatch, 1);
});

test('an identity not derived from the certified key is refused by the sender, even with a CA-issued certificate', async () => {
  const c = await open();
  const web3 = vmCredentials(c.o.config, 'web3').privateKey;
  const cert = await vmCert(c.o, 'web2', 'web2', web3, validityFrom(Date.now() - DAY, 10)); // web2's identity, web3's key
  await publish(c.o, 'web2', { certificate: cert, key: web3 });
  await ping(c.o);
  refusedBySender(c, Drop.VerifyIdentityNotDerived, 1);
});

test('a binding signed by another key is refused by the sender', async () => {
  const c = await open();
  await publish(c.o, 'web2', { key: vmCredentials(c.o.config, 'web3').privateKey });
  await ping(c.o);
  refusedBySender(c, Drop.VerifyBadSignature, 1);
});

test('a binding signed for another host address than it claims is refused by the sender', async () => {
  const c = await open();
  await publish(c.o, 'web2', { edit: (f) => ({ ...f, hostAddress: '10.77.0.9' }), after: (r) => ({ ...r, hostAddress: '10.77.0.2' }) });
  await ping(c.o);
  refusedBySender(c, Drop.VerifyBadSignature, 1);
});

test('an older binding replayed by the store after a newer one was seen is refused by the sender', async () => {
  const c = await open();
  const store = c.o.off.cloud.store as unknown as { path: string };
  const v = c.o.config.vms.get('web2')!.identityText;
  const old = (await c.o.off.cloud.store.lookup(v))!;
  await publish(c.o, 'web2'); // epoch + 1: a migration, say
  await ping(c.o);
  assert.is(c.h2.ingress.counters.delivered, 1, 'the newer binding plugged the cable');
  // A compromised store serves the old signed binding again.
  const db = new Database(store.path);
  db.prepare('UPDATE bindings SET epoch = ?, not_before = ?, not_after = ?, signature = ? WHERE identity = ?').run(old.epoch, old.notBefore, old.notAfter, old.signature, v);
  db.close();
  assert.is((await c.o.off.cloud.store.lookup(v))!.epoch, old.epoch);
  const egress = cable(c.h1, CableDirection.Egress, 'web1', 'web2', c.o)!;
  egress.expiresTick = tickOf(c.h1.clock.now()); // make the next packet verify again
  await ping(c.o);
  const now = cable(c.h1, CableDirection.Egress, 'web1', 'web2', c.o)!;
  assert.is(dropName(now.drop), dropName(Drop.VerifyOldEpoch));
  assert.is(c.h1.egress.counters.drops[Drop.VerifyOldEpoch], 1);
  assert.is(c.h2.ingress.counters.delivered, 1, 'nothing more was delivered');
  c.o.off.close();
});

test('a host certificate that does not match the binding host is refused by the sender', async () => {
  const c = await open();
  const h1cert = readHostCertificate(c.o.config.pkiDir, 'h1')!;
  await c.o.off.cloud.store.publishHost({ host: 'h2', address: '10.77.0.2', certificate: h1cert });
  await ping(c.o);
  refusedBySender(c, Drop.VerifyHostCertMismatch, 0); // no INIT to a host whose certificate does not match
});

test('a source binding that places it at another host address is refused by the receiver', async () => {
  const c = await open();
  await publish(c.o, 'web1', { edit: (f) => ({ ...f, host: 'h2', hostAddress: '10.77.0.2' }) }); // properly signed, but h1 sends
  await ping(c.o);
  refusedByReceiver(c, Drop.VerifyWrongHostAddress);
});

test('a source binding with an expired certificate is refused by the receiver', async () => {
  const c = await open();
  const key = vmCredentials(c.o.config, 'web1').privateKey;
  await publish(c.o, 'web1', { certificate: await vmCert(c.o, 'web1', 'web1', key, { notBefore: Date.now() - 10 * DAY, notAfter: Date.now() - DAY }) });
  await ping(c.o);
  refusedByReceiver(c, Drop.VerifyExpired);
});

test('a source binding signed by another key is refused by the receiver', async () => {
  const c = await open();
  await publish(c.o, 'web1', { key: vmCredentials(c.o.config, 'web3').privateKey });
  await ping(c.o);
  refusedByReceiver(c, Drop.VerifyBadSignature);
});

test('policy at the receiver: the reverse of the diode is refused where it is detected first, the sender', async () => {
  const c = await open();
  await ping(c.o, 'vault1', 'sensor1');
  const egress = cable(c.h2, CableDirection.Egress, 'vault1', 'sensor1', c.o)!;
  assert.not.ok(egress.plugged);
  assert.ok(egress.drop === Drop.PolicyLevel || egress.drop === Drop.PolicyDiode, dropName(egress.drop));
  assert.is(c.h1.kx.counters.initsReceived, 0);
  c.o.off.close();
});

test.run();
