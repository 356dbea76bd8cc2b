import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { signBinding } from '../src/trust/binding.js';
import { createCa, generateKey } from '../src/trust/pki.js';
import { BindingVerifier, type VerifierLimits } from '../src/trust/verifier.js';
import { Drop, dropName } from '../src/base/drops.js';
import type { BindingRecord } from '../src/trust/records.js';
import { Trace } from '../src/base/trace.js';
import {
  CERT_VALIDITY,
  DAY,
  FakeClock,
  HOUR,
  MINUTE,
  T0,
  bind,
  fields,
  hostRecord,
  identityOf,
  makePki,
  makeVm,
  type TestPki,
} from './pki-fixture.js';

const pki: TestPki = await makePki();

function verifier(opts: { clock?: FakeClock; limits?: Partial<VerifierLimits>; p?: TestPki } = {}) {
  const p = opts.p ?? pki;
  const clock = opts.clock ?? new FakeClock();
  const v = new BindingVerifier(p.ca.certificate, p.hosts, clock, { verifyPerSecond: 1000, ...opts.limits });
  return { v, clock };
}

function is(got: Drop, want: Drop, trace?: Trace): void {
  assert.is(dropName(got), dropName(want), trace?.format());
}

test('a valid binding verifies', async () => {
  const { v } = verifier();
  is(await v.verify(bind(pki.web1)), Drop.None);
  assert.is(v.counters.verified, 1);
  assert.is(v.highestEpoch(pki.web1.identity), 1);
});

test('the trace of a valid verification lists every check in order', async () => {
  const { v } = verifier();
  const trace = new Trace();
  is(await v.verify(bind(pki.web1), { hostAddress: '10.77.0.1', host: 'h1' }, trace), Drop.None, trace);
  const id = pki.web1.identity;
  assert.equal(
    trace.steps.map((s) => `${s.result} ${s.text}`),
    [
      'ok certificate O=blue, CN=web1 chains to O=nvi-switch, CN=test CA',
      'ok certificate O=blue, CN=web1 is valid now (until 2030-06-02T00:00:00.000Z)',
      `ok certificate names ${id}, VM web1 of tenant blue`,
      `ok identity ${id} is derived from the certified key`,
      `ok binding (${id} at h1 10.77.0.1, epoch 1) is signed by the certified key`,
      'ok binding is valid now (until 2030-06-01T12:30:00.000Z)',
      'ok epoch 1 is the first seen',
      'ok host certificate of h1 CN=h1 chains to O=nvi-switch, CN=test CA',
      'ok host certificate names h1 at 10.77.0.1',
      "ok packet came from 10.77.0.1, the binding's host address",
      'ok binding names host h1, as expected',
    ],
  );
});

test('a record with a non-canonical identity is refused as malformed', async () => {
  const { v } = verifier();
  const r = { ...bind(pki.web1), identity: pki.web1.identity.toUpperCase() };
  is(await v.verify(r), Drop.VerifyMalformed);
});

test('a record whose certificate is not a certificate is refused as malformed', async () => {
  const { v } = verifier();
  const junk = '-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n';
  is(await v.verify(bind(pki.web1, { certificate: junk })), Drop.VerifyMalformed);
});

test('a record whose signature is not 64 bytes of base64 is refused as malformed', async () => {
  const { v } = verifier();
  is(await v.verify({ ...bind(pki.web1), signature: 'AAAA' }), Drop.VerifyMalformed);
});

test('a certificate from another CA is refused as unknown CA', async () => {
  const other = await createCa({ name: 'test CA', validity: CERT_VALIDITY }); // same name, other key
  const vm = await makeVm(other, 'web1');
  const { v } = verifier();
  const trace = new Trace();
  is(await v.verify(bind(vm), {}, trace), Drop.VerifyUnknownCa, trace);
  assert.match(trace.format(), 'does not chain to O=nvi-switch, CN=test CA');
});

test('a CA certificate in place of a VM certificate is refused as unknown CA', async () => {
  const { v } = verifier();
  is(await v.verify(bind(pki.web1, { certificate: pki.ca.certificate })), Drop.VerifyUnknownCa);
});

test('an expired VM certificate is refused as expired', async () => {
  const { v, clock } = verifier();
  const vm = await makeVm(pki.ca, 'web1', { validity: { notBefore: T0 - DAY, notAfter: T0 - HOUR } });
  clock.t = T0;
  is(await v.verify(bind(vm)), Drop.VerifyExpired);
});

test('a VM certificate not valid yet is refused as not yet valid', async () => {
  const { v } = verifier();
  const vm = await makeVm(pki.ca, 'web1', { validity: { notBefore: T0 + MINUTE, notAfter: T0 + DAY } });
  is(await v.verify(bind(vm)), Drop.VerifyNotYetValid);
});

test('a binding past its notAfter is refused as expired', async () => {
  const { v, clock } = verifier();
  clock.t = T0 + HOUR; // certificate still valid, binding ended at T0 + 30 min
  is(await v.verify(bind(pki.web1)), Drop.VerifyExpired);
});

test('a binding before its notBefore is refused as not yet valid', async () => {
  const { v, clock } = verifier();
  clock.t = T0 - HOUR;
  is(await v.verify(bind(pki.web1)), Drop.VerifyNotYetValid);
});

test('a certificate whose SAN is another address is refused as SAN mismatch', async () => {
  const key = generateKey().privateKey;
  const identity = identityOf(key);
  const vm = await makeVm(pki.ca, 'web1', { identity: 'fd9a:3c7e:51b2:1::99' });
  const r = signBinding(fields({ ...vm, key }, { identity }), vm.key);
  const { v } = verifier();
  is(await v.verify(r), Drop.VerifySanMismatch);
});

test('a certificate for another VM name or tenant is refused as SAN mismatch', async () => {
  const { v } = verifier();
  is(await v.verify(bind(pki.web1, { vm: 'web9' })), Drop.VerifySanMismatch);
  is(await v.verify(bind(pki.web1, { tenant: 'green' })), Drop.VerifySanMismatch);
});

test('an identity not derived from the certified key is refused', async () => {
  // The CA certified the address for this key, but the address is not the key's hash.
  const vm = await makeVm(pki.ca, 'web1', { identity: 'fd9a:3c7e:51b2:1:1234:5678:9abc:def0' });
  const { v } = verifier();
  is(await v.verify(bind(vm)), Drop.VerifyIdentityNotDerived);
});

test('a binding signed by another key is refused as bad signature', async () => {
  const { v } = verifier();
  is(await v.verify(bind(pki.web1, {}, pki.web2.key)), Drop.VerifyBadSignature);
});

test('a binding whose signature covers another host address than the record says is refused as bad signature', async () => {
  const signed = bind(pki.web1, { host: 'h1', hostAddress: '10.77.0.1' });
  const forged: BindingRecord = { ...signed, host: 'h2', hostAddress: '10.77.0.2' };
  const { v } = verifier();
  is(await v.verify(forged), Drop.VerifyBadSignature);
});

test('a binding for another host address than the packet came from is refused as wrong host address', async () => {
  const { v } = verifier();
  const trace = new Trace();
  is(await v.verify(bind(pki.web1), { hostAddress: '10.77.0.2' }, trace), Drop.VerifyWrongHostAddress, trace);
  assert.match(trace.format(), 'packet came from 10.77.0.2, but the binding places');
});

test('a binding for another host than expected is refused as host certificate mismatch', async () => {
  const { v } = verifier();
  is(await v.verify(bind(pki.web1), { host: 'h2' }), Drop.VerifyHostCertMismatch);
});

test('an older epoch after a newer one was seen is refused as old epoch', async () => {
  const { v } = verifier();
  const old = bind(pki.web1, { epoch: 1, host: 'h1', hostAddress: '10.77.0.1' });
  const moved = bind(pki.web1, { epoch: 2, host: 'h2', hostAddress: '10.77.0.2' });
  is(await v.verify(old), Drop.None);
  is(await v.verify(moved), Drop.None);
  is(await v.verify(old), Drop.VerifyOldEpoch); // cached once, still refused
  is(await v.verify(bind(pki.web1, { epoch: 1, notAfter: new Date(T0 + 20 * MINUTE).toISOString() })), Drop.VerifyOldEpoch);
  assert.is(v.highestEpoch(pki.web1.identity), 2);
});

test('rememberEpoch(): an epoch this host withdrew counts as seen (kept beyond the process), never lowers it, and a binding below it is refused', async () => {
  const saved: [string, number][] = [];
  const memory = { load: () => [], save: (id: string, e: number) => void saved.push([id, e]) };
  const v = new BindingVerifier(pki.ca.certificate, pki.hosts, new FakeClock(), { verifyPerSecond: 1000 }, memory);
  v.rememberEpoch(pki.web1.identity, 3);
  assert.is(v.highestEpoch(pki.web1.identity), 3);
  v.rememberEpoch(pki.web1.identity, 2);
  assert.is(v.highestEpoch(pki.web1.identity), 3, 'a lower epoch does not lower it');
  assert.equal(saved, [[pki.web1.identity, 3]], 'kept on disk once');
  is(await v.verify(bind(pki.web1, { epoch: 2 })), Drop.VerifyOldEpoch);
  is(await v.verify(bind(pki.web1, { epoch: 3 })), Drop.None);
});

test('a refused binding does not raise the highest epoch seen', async () => {
  const { v } = verifier();
  is(await v.verify(bind(pki.web1, { epoch: 5 }), { hostAddress: '10.77.0.9' }), Drop.VerifyWrongHostAddress);
  is(await v.verify(bind(pki.web1, { epoch: 1 })), Drop.None);
});

test('a host certificate with another CN is refused as host certificate mismatch', async () => {
  const p = await makePki();
  p.hosts.hosts.set('h1', { ...(await hostRecord(p.ca, 'h2', '10.77.0.1')), host: 'h1' });
  const { v } = verifier({ p });
  is(await v.verify(bind(p.web1)), Drop.VerifyHostCertMismatch);
});

test('a host certificate with another address is refused as host certificate mismatch', async () => {
  const p = await makePki();
  p.hosts.hosts.set('h1', await hostRecord(p.ca, 'h1', '10.77.0.9'));
  const { v } = verifier({ p });
  const trace = new Trace();
  is(await v.verify(bind(p.web1), {}, trace), Drop.VerifyHostCertMismatch, trace);
  assert.match(trace.format(), 'names 10.77.0.9, not 10.77.0.1');
});

test('a missing host record is refused as host certificate mismatch', async () => {
  const p = await makePki();
  p.hosts.hosts.delete('h1');
  const { v } = verifier({ p });
  is(await v.verify(bind(p.web1)), Drop.VerifyHostCertMismatch);
});

test('a host certificate from another CA is refused as host certificate mismatch', async () => {
  const p = await makePki();
  const other = await createCa({ validity: CERT_VALIDITY });
  p.hosts.hosts.set('h1', await hostRecord(other, 'h1', '10.77.0.1'));
  const { v } = verifier({ p });
  is(await v.verify(bind(p.web1)), Drop.VerifyHostCertMismatch);
});

test('a VM certificate in place of a host certificate is refused as host certificate mismatch', async () => {
  const p = await makePki();
  const vmAsHost = await makeVm(p.ca, 'h1', { identity: '::ffff:10.77.0.1' }); // CN=h1, but no host URI
  p.hosts.hosts.set('h1', { host: 'h1', address: '10.77.0.1', certificate: vmAsHost.certificate });
  const { v } = verifier({ p });
  is(await v.verify(bind(p.web1)), Drop.VerifyHostCertMismatch);
});

test("a host's certificate is decoded once while the store keeps it; a new one in its place is checked afresh", async () => {
  const p = await makePki();
  const { v } = verifier({ p });
  const first = await v.hostKey('h1', '10.77.0.1');
  is(first.drop, Drop.None);
  const hits = v.counters.certCacheHits;
  const trace = new Trace();
  const again = await v.hostKey('h1', '10.77.0.1', trace);
  assert.is(again.key, first.key, 'the same key object: nothing decoded again');
  assert.is(v.counters.certCacheHits, hits + 1);
  assert.match(trace.format(), '(cached)');
  // The host gets a certificate for another address: the cached one no longer stands.
  p.hosts.hosts.set('h1', await hostRecord(p.ca, 'h1', '10.77.0.9'));
  is((await v.hostKey('h1', '10.77.0.1')).drop, Drop.VerifyHostCertMismatch);
  const moved = await v.hostKey('h1', '10.77.0.9');
  is(moved.drop, Drop.None);
  assert.is.not(moved.key, first.key);
  // And one that is not a certificate at all is refused, not served from the cache.
  p.hosts.hosts.set('h1', { host: 'h1', address: '10.77.0.9', certificate: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n' });
  is((await v.hostKey('h1', '10.77.0.9')).drop, Drop.VerifyHostCertMismatch);
});

test('a store that fails to answer for the host makes the binding unverifiable: resolve/store-unavailable', async () => {
  const failing = { lookupHost: async () => Promise.reject(new Error('down')) };
  const v = new BindingVerifier(pki.ca.certificate, failing, new FakeClock(), { verifyPerSecond: 10 });
  is(await v.verify(bind(pki.web1)), Drop.ResolveStoreUnavailable);
});

test('the second verification of the same binding does no signature or chain check', async () => {
  const { v } = verifier();
  const r = bind(pki.web1);
  is(await v.verify(r), Drop.None);
  const { signatureChecks, chainChecks } = v.counters;
  assert.is(signatureChecks, 1);
  assert.is(chainChecks, 2); // VM and host certificates
  is(await v.verify({ ...r }), Drop.None);
  assert.is(v.counters.signatureChecks, 1);
  assert.is(v.counters.chainChecks, 2);
  assert.is(v.counters.bindingCacheHits, 1);
  assert.is(v.counters.verified, 2);
});

test('forgetVerified(): the next verification checks the signature and the VM certificate again, and an older epoch stays refused', async () => {
  const { v } = verifier();
  const old = bind(pki.web1, { epoch: 1 });
  const r = bind(pki.web1, { epoch: 2 });
  is(await v.verify(r), Drop.None);
  assert.is(v.counters.signatureChecks, 1);
  assert.is(v.counters.chainChecks, 2);
  assert.is(v.forgetVerified(), 1, 'one binding forgotten');
  assert.is(v.cachedBindings, 0);
  is(await v.verify({ ...r }), Drop.None);
  assert.is(v.counters.signatureChecks, 2, 'signature checked again');
  assert.is(v.counters.chainChecks, 3, 'the VM certificate chained again; the host certificate stays known');
  assert.is(v.counters.bindingCacheHits, 0);
  v.forgetVerified();
  is(await v.verify(old), Drop.VerifyOldEpoch); // the highest epoch seen is not forgotten
});

test('a new binding for a cached certificate does a signature check but no chain check', async () => {
  const { v } = verifier();
  is(await v.verify(bind(pki.web1, { epoch: 1 })), Drop.None);
  is(await v.verify(bind(pki.web1, { epoch: 2 })), Drop.None);
  assert.is(v.counters.signatureChecks, 2);
  assert.is(v.counters.chainChecks, 2);
  assert.ok(v.counters.certCacheHits >= 2);
});

test('a VM that moves keeps one cached binding: each new epoch replaces the last, and the replaced one is checked again when it returns', async () => {
  const { v } = verifier();
  for (let epoch = 1; epoch <= 50; epoch++) is(await v.verify(bind(pki.web1, { epoch })), Drop.None);
  assert.is(v.cachedBindings, 1);
  const checks = v.counters.signatureChecks;
  is(await v.verify(bind(pki.web1, { epoch: 50 })), Drop.None);
  assert.is(v.counters.signatureChecks, checks, 'the current one is a cache hit');
  is(await v.verify(bind(pki.web1, { epoch: 3 })), Drop.VerifyOldEpoch);
  assert.is(v.cachedBindings, 1);
});

test('a cached binding is refused once it has expired', async () => {
  const { v, clock } = verifier();
  const r = bind(pki.web1);
  is(await v.verify(r), Drop.None);
  clock.t = T0 + HOUR;
  is(await v.verify(r), Drop.VerifyExpired);
  assert.is(v.counters.signatureChecks, 1);
});

test('a record that differs from the cached one in an unsigned way is verified again and refused', async () => {
  const { v } = verifier();
  const r = bind(pki.web1);
  is(await v.verify(r), Drop.None);
  is(await v.verify({ ...r, hostAddress: '10.77.0.2', host: 'h2' }), Drop.VerifyBadSignature);
});

test('verification beyond the rate answers rate limited, without doing the work, and recovers', async () => {
  const { v, clock } = verifier({ limits: { verifyPerSecond: 2, burst: 2 } });
  const a = bind(pki.web1, { epoch: 1 });
  is(await v.verify(a), Drop.None);
  is(await v.verify(bind(pki.web2)), Drop.None);
  const trace = new Trace();
  is(await v.verify(bind(pki.web1, { epoch: 2 }), {}, trace), Drop.UpcallRateLimited, trace);
  assert.is(v.counters.rateLimited, 1);
  assert.is(v.counters.signatureChecks, 2);
  is(await v.verify(a), Drop.None); // cached: costs no token
  clock.t += 499;
  is(await v.verify(bind(pki.web1, { epoch: 2 })), Drop.UpcallRateLimited);
  clock.t += 1; // 500 ms at 2/s: one token
  is(await v.verify(bind(pki.web1, { epoch: 2 })), Drop.None);
  assert.is(v.counters.signatureChecks, 3);
  assert.is(v.counters.rateLimited, 2);
});

test('a binding the store published is verified ahead while the bucket is more than half full; never twice, never from the half a miss may need', async () => {
  const { v, clock } = verifier({ limits: { verifyPerSecond: 4, burst: 4 } });
  const a = bind(pki.web1, { epoch: 1 });
  assert.is(await v.verifyPublished(a), Drop.None);
  assert.ok(v.verified(a), 'a first packet now finds it verified');
  assert.is(v.counters.verifiedAhead, 1);
  assert.is(await v.verifyPublished(a), undefined, 'verified already: nothing to do');
  assert.is(await v.verifyPublished(bind(pki.web2)), Drop.None); // 3 of 4 tokens were left; 2 now: half
  const c = bind(pki.web1, { epoch: 2 });
  assert.is(await v.verifyPublished(c), undefined, 'below half the burst: left to the first packet');
  assert.is(v.counters.notAhead, 1);
  assert.ok(!v.verified(c));
  is(await v.verify(c), Drop.None); // the miss still has its tokens
  assert.is(v.counters.signatureChecks, 3);
  clock.t += 1000;
  assert.is(await v.verifyPublished(bind(pki.web2, { epoch: 2 })), Drop.None, 'the bucket filled again');
  assert.is(v.counters.verifiedAhead, 3);
});

test('a malformed record is refused without taking a token', async () => {
  const { v } = verifier({ limits: { verifyPerSecond: 1, burst: 1 } });
  is(await v.verify({ ...bind(pki.web1), epoch: 0 }), Drop.VerifyMalformed);
  is(await v.verify(bind(pki.web1)), Drop.None);
});

test('a trust anchor that is not a CA is refused at construction', () => {
  assert.throws(() => new BindingVerifier(pki.web1.certificate, pki.hosts, new FakeClock(), { verifyPerSecond: 1 }), /not a CA/);
});

test.run();
