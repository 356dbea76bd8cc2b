import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  BINDING_BACKDATE_MS,
  BINDING_CONTEXT,
  encodeBinding,
  makeBinding,
  signBinding,
  signatureBytes,
  verifyBindingSignature,
  type BindingFields,
} from '../src/trust/binding.js';
import { createPublicKey } from 'node:crypto';
import { HOUR, T0, fields, makePki } from './pki-fixture.js';

const pki = await makePki();
const vm = pki.web1;

test('the encoding starts with the context label and is the same for the same fields', () => {
  const a = encodeBinding(fields(vm));
  const b = encodeBinding({ ...fields(vm) });
  assert.ok(a.subarray(0, BINDING_CONTEXT.length).equals(BINDING_CONTEXT));
  assert.ok(a.equals(b));
});

test('changing any one field changes the signed message', () => {
  const base = encodeBinding(fields(vm));
  const changes: Partial<BindingFields>[] = [
    { identity: pki.web2.identity },
    { tenant: 'blu' },
    { vm: 'web2' },
    { host: 'h2' },
    { hostAddress: '10.77.0.2' },
    { epoch: 2 },
    { notBefore: new Date(T0 - HOUR).toISOString() },
    { notAfter: new Date(T0 + HOUR).toISOString() },
    { certificate: pki.web2.certificate },
  ];
  for (const c of changes) assert.not.ok(encodeBinding(fields(vm, c)).equals(base), JSON.stringify(c));
});

test('length prefixes keep adjacent names apart', () => {
  const a = encodeBinding(fields(vm, { tenant: 'ab', vm: 'c' }));
  const b = encodeBinding(fields(vm, { tenant: 'a', vm: 'bc' }));
  assert.not.ok(a.equals(b));
});

test('a signed binding verifies with the VM key and not with another', () => {
  const r = signBinding(fields(vm), vm.key);
  const sig = signatureBytes(r.signature)!;
  assert.is(sig.length, 64);
  assert.ok(verifyBindingSignature(encodeBinding(r), sig, createPublicKey(vm.key)));
  assert.not.ok(verifyBindingSignature(encodeBinding(r), sig, createPublicKey(pki.web2.key)));
});

const refusals: [string, Partial<BindingFields> | Record<string, unknown>, RegExp][] = [
  ['an identity in upper case', { identity: vm.identity.toUpperCase() }, /not canonical/],
  ['an identity that is not an address', { identity: 'web1' }, /not an IPv6 address/],
  ['a host address with leading zeros', { hostAddress: '10.77.0.01' }, /not (canonical|an IPv4)/],
  ['a time that is not toISOString', { notBefore: '2030-06-01T12:00:00Z' }, /not canonical ISO 8601/],
  ['a window that ends before it starts', { notAfter: new Date(T0 - HOUR).toISOString() }, /not after notBefore/],
  ['epoch 0', { epoch: 0 }, /epoch must be an integer from 1/],
  ['a fractional epoch', { epoch: 1.5 }, /epoch must be an integer/],
  ['an empty tenant', { tenant: '' }, /tenant must be a non-empty string/],
  ['a certificate that is not PEM', { certificate: 'hello' }, /one PEM certificate/],
];
for (const [what, over, message] of refusals) {
  test(`encoding refuses ${what}`, () => {
    assert.throws(() => encodeBinding(fields(vm, over as Partial<BindingFields>)), message);
  });
}

test('signatureBytes refuses anything but base64 of 64 bytes', () => {
  assert.is(signatureBytes('AAAA'), undefined);
  assert.is(signatureBytes(Buffer.alloc(65).toString('base64')), undefined);
  assert.is(signatureBytes(42), undefined);
  assert.ok(signatureBytes(Buffer.alloc(64, 7).toString('base64')));
});

test('makeBinding signs for the VM on the host, from now less the backdate, for the validity', () => {
  const r = makeBinding(
    { certificate: vm.certificate, privateKey: vm.key },
    { name: 'web1', tenant: 'blue', identityText: vm.identity },
    { name: 'h2', addressText: '10.77.0.2' },
    3,
    T0,
    600,
  );
  assert.is(r.host, 'h2');
  assert.is(r.hostAddress, '10.77.0.2');
  assert.is(r.epoch, 3);
  assert.is(r.notBefore, new Date(T0 - BINDING_BACKDATE_MS).toISOString());
  assert.is(r.notAfter, new Date(T0 + 600_000).toISOString());
  assert.ok(verifyBindingSignature(encodeBinding(r), signatureBytes(r.signature)!, createPublicKey(vm.key)));
});

test('makeBinding refuses a key that is not the certificate key', () => {
  assert.throws(
    () =>
      makeBinding(
        { certificate: vm.certificate, privateKey: pki.web2.key },
        { name: 'web1', tenant: 'blue', identityText: vm.identity },
        { name: 'h1', addressText: '10.77.0.1' },
        1,
        T0,
        600,
      ),
    /not the key of its certificate/,
  );
});

test('makeBinding refuses a certificate for another identity', () => {
  assert.throws(
    () =>
      makeBinding(
        { certificate: vm.certificate, privateKey: vm.key },
        { name: 'web1', tenant: 'blue', identityText: pki.web2.identity },
        { name: 'h1', addressText: '10.77.0.1' },
        1,
        T0,
        600,
      ),
    /not its identity/,
  );
});

test.run();
