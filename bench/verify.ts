// What one upcall's verification costs (SDN Algorithms 1 and 2, step 3):
//   cold    the first verify() of a new binding with a new certificate (parse, chain, names,
//           identity, signature; the host certificate is cached after the first)
//   cached  the same binding again (no signature or chain check)
// and the primitives under them: a raw Ed25519 verify, and for certificates our DER reader and
// crypto.verify over the TBS bytes against @peculiar/x509's parser and verify().
// Median of 5 runs; each run times N operations.
//
//   npx tsc -p . && node dist/bench/verify.js

import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { sign, verify } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { signBinding } from '../src/trust/binding.js';
import { parseCertificateX509 } from '../src/trust/certificate.js';
import { generateKey, isIssuedBy, parseCertificate } from '../src/trust/pki.js';
import { BindingVerifier } from '../src/trust/verifier.js';
import { Drop } from '../src/base/drops.js';
import type { BindingRecord } from '../src/trust/records.js';
import { FakeClock, fields, makePki, makeVm, type TestVm } from '../test/pki-fixture.js';

const RUNS = 5;
const N = 400;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** µs per operation: median over RUNS of (time for `n` calls of `op`) / n. */
async function measure(n: number, setup: (run: number) => Promise<(k: number) => unknown>): Promise<number> {
  const per: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    const op = await setup(run);
    const t0 = performance.now();
    for (let k = 0; k < n; k++) {
      const r = op(k);
      if (r instanceof Promise) await r;
    }
    per.push(((performance.now() - t0) * 1000) / n);
  }
  return median(per);
}

const pki = await makePki();
const rows: [string, number][] = [];

// Raw Ed25519.
{
  const { privateKey, publicKey } = generateKey();
  const msg = Buffer.alloc(200, 1);
  const sig = sign(null, msg, privateKey);
  rows.push(['Ed25519 verify (crypto.verify, 200 B)', await measure(N * 5, async () => () => verify(null, msg, publicKey, sig))]);
}

// Certificates.
const certPem = pki.web1.certificate;
const cert = parseCertificate(certPem);
rows.push(['certificate parse: DER reader (certificate.ts)', await measure(N * 5, async () => () => parseCertificate(certPem))]);
rows.push(['certificate parse: @peculiar/x509, same fields', await measure(N, async () => () => parseCertificateX509(certPem))]);
rows.push(['certificate signature: crypto.verify over TBS', await measure(N * 5, async () => () => isIssuedBy(cert, pki.ca.parsed))]);
{
  const pc = new x509.X509Certificate(certPem);
  const caKey = new x509.X509Certificate(pki.ca.certificate).publicKey;
  if (!(await pc.verify({ publicKey: caKey, signatureOnly: true }))) throw new Error('peculiar verify failed');
  rows.push(['certificate signature: @peculiar/x509 verify()', await measure(N, async () => () => pc.verify({ publicKey: caKey, signatureOnly: true }))]);
}

// The verifier, cold and cached.
const clock = new FakeClock();
const limits = { verifyPerSecond: 1e6, burst: 1e9 };
const vms: TestVm[][] = [];
for (let run = 0; run < RUNS; run++) {
  const list: TestVm[] = [];
  for (let k = 0; k < N; k++) list.push(await makeVm(pki.ca, `vm${k}`));
  vms.push(list);
}
const records: BindingRecord[][] = vms.map((list) => list.map((vm) => signBinding(fields(vm), vm.key)));
async function ok(v: BindingVerifier, r: BindingRecord): Promise<void> {
  if ((await v.verify(r, { hostAddress: '10.77.0.1' })) !== Drop.None) throw new Error('bench binding refused');
}
rows.push([
  'verify() cold: new binding, new certificate',
  await measure(N, async (run) => {
    const v = new BindingVerifier(pki.ca.certificate, pki.hosts, clock, limits);
    await ok(v, signBinding(fields(pki.web1), pki.web1.key)); // warm the host certificate
    return (k) => ok(v, records[run][k]);
  }),
]);
rows.push([
  'verify() cold, certificate cached: new binding',
  await measure(N, async (run) => {
    const v = new BindingVerifier(pki.ca.certificate, pki.hosts, clock, limits);
    for (const r of records[run]) await ok(v, r);
    const again = records[run].map((_, k) => signBinding(fields(vms[run][k], { epoch: 2 }), vms[run][k].key));
    return (k) => ok(v, again[k]);
  }),
]);
rows.push([
  'verify() cached: same binding again',
  await measure(N, async (run) => {
    const v = new BindingVerifier(pki.ca.certificate, pki.hosts, clock, limits);
    for (const r of records[run]) await ok(v, r);
    return (k) => ok(v, records[run][k]);
  }),
]);

const w = Math.max(...rows.map(([n]) => n.length));
process.stdout.write(`${'operation'.padEnd(w)}  ${'µs/op'.padStart(9)}  ${'ops/s'.padStart(9)}\n`);
process.stdout.write(`${'-'.repeat(w)}  ${'-'.repeat(9)}  ${'-'.repeat(9)}\n`);
for (const [name, us] of rows) {
  process.stdout.write(`${name.padEnd(w)}  ${us.toFixed(1).padStart(9)}  ${Math.round(1e6 / us).toString().padStart(9)}\n`);
}
process.stdout.write(`\nmedian of ${RUNS} runs; node ${process.version}\n`);
