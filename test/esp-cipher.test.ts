// NativeEspCipher against NodeEspCipher and against published test vectors: the same
// ciphertext and ICV for the same input, each opens the other's output, any flipped bit
// fails open and leaves the buffer as it was.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BATCH_MAX } from '../src/dataplane/batch.js';
import { EspJobs, NodeEspCipher, keyLength, type EspAlgorithm, type EspCipher } from '../src/esp/esp-cipher.js';
import { ESP_HLEN, ESP_ICV_LEN } from '../src/wire/esp.js';
import { NativeEspCipher } from '../src/esp/native-esp-cipher.js';
import { rng } from './rng.js';


function randomBytes(r: () => number, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (r() * 256) | 0;
  return b;
}

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/** One ESP job laid out in a buffer: header (SPI, seq low, IV) then text then ICV room. */
interface Case {
  alg: EspAlgorithm;
  key: Buffer;
  salt: Buffer;
  seqHi: number;
  espOff: number;
  ptLen: number;
}

const SLOT = 1600 + ESP_HLEN + ESP_ICV_LEN;

/** A buffer of `count` random jobs (sizes 0..1500, both key sizes, random ESN high half). */
function randomBatch(seed: number, count: number): { buf: Buffer; cases: Case[] } {
  const r = rng(seed);
  const buf = randomBytes(r, count * SLOT + 64);
  const cases: Case[] = [];
  for (let j = 0; j < count; j++) {
    const alg: EspAlgorithm = r() < 0.5 ? 'aes-128-gcm' : 'aes-256-gcm';
    // Edges first, then random sizes.
    const ptLen = j === 0 ? 0 : j === 1 ? 1500 : j === 2 ? 1 : (r() * 1501) | 0;
    cases.push({
      alg,
      key: randomBytes(r, keyLength(alg)),
      salt: randomBytes(r, 4),
      seqHi: (r() * 4294967296) >>> 0,
      espOff: j * SLOT + ((r() * 32) | 0),
      ptLen,
    });
  }
  return { buf, cases };
}

function jobsFor(cipher: EspCipher, cases: Case[]): EspJobs {
  const jobs = new EspJobs(BATCH_MAX);
  cases.forEach((c, j) => jobs.add(cipher.addKey(c.alg, c.key, c.salt), c.espOff, c.ptLen, c.seqHi, j));
  return jobs;
}

test('native seal produces the same ciphertext and ICV as node:crypto for random packets', () => {
  for (let seed = 1; seed <= 8; seed++) {
    const { buf, cases } = randomBatch(seed, 40);
    const a = Buffer.from(buf);
    const b = Buffer.from(buf);
    const native = new NativeEspCipher();
    const node = new NodeEspCipher();
    native.seal(a, jobsFor(native, cases));
    node.seal(b, jobsFor(node, cases));
    assert.ok(a.equals(b), `seed ${seed}: outputs differ`);
    assert.not.ok(a.equals(buf), `seed ${seed}: nothing was encrypted`);
  }
});

test('each cipher opens what the other sealed and restores the plaintext', () => {
  for (let seed = 20; seed <= 24; seed++) {
    const { buf, cases } = randomBatch(seed, 40);
    for (const [sealer, opener] of [
      [new NativeEspCipher(), new NodeEspCipher()],
      [new NodeEspCipher(), new NativeEspCipher()],
    ] as const) {
      const x = Buffer.from(buf);
      sealer.seal(x, jobsFor(sealer, cases));
      const jobs = jobsFor(opener, cases);
      opener.open(x, jobs);
      for (let j = 0; j < cases.length; j++) assert.is(jobs.ok[j], 1, `${opener.name} job ${j}`);
      // Plaintext is back; the ICV room still holds the ICV, everything else is untouched.
      for (const c of cases) {
        const p = c.espOff + ESP_HLEN;
        assert.ok(x.subarray(c.espOff, p + c.ptLen).equals(buf.subarray(c.espOff, p + c.ptLen)));
      }
    }
  }
});

test('a flipped bit in header, IV, ciphertext or ICV fails open and leaves the buffer unchanged', () => {
  const { buf, cases } = randomBatch(99, 48);
  const sealer = new NodeEspCipher();
  sealer.seal(buf, jobsFor(sealer, cases));
  const r = rng(7);
  const regions = ['spi', 'seq', 'iv', 'text', 'icv'] as const;
  for (const cipher of [new NativeEspCipher(), new NodeEspCipher()]) {
    const x = Buffer.from(buf);
    // Job j gets a flip in region j % 5 (text only when there is some); jobs with j % 6 == 5 stay intact.
    const flipped: boolean[] = [];
    cases.forEach((c, j) => {
      const region = regions[j % regions.length];
      if (j % 6 === 5 || (region === 'text' && c.ptLen === 0)) {
        flipped.push(false);
        return;
      }
      const [from, len] = region === 'spi' ? [0, 4] : region === 'seq' ? [4, 4] : region === 'iv' ? [8, 8]
        : region === 'text' ? [ESP_HLEN, c.ptLen] : [ESP_HLEN + c.ptLen, ESP_ICV_LEN];
      const at = c.espOff + from + ((r() * len) | 0);
      x[at] ^= 1 << ((r() * 8) | 0);
      flipped.push(true);
    });
    const before = Buffer.from(x);
    const jobs = jobsFor(cipher, cases);
    cipher.open(x, jobs);
    cases.forEach((c, j) => {
      const span = (b: Buffer) => b.subarray(c.espOff, c.espOff + ESP_HLEN + c.ptLen + ESP_ICV_LEN);
      if (flipped[j]) {
        assert.is(jobs.ok[j], 0, `${cipher.name} job ${j} (${regions[j % 5]}) verified after a flip`);
        assert.ok(span(x).equals(span(before)), `${cipher.name} job ${j}: buffer changed after a failed open`);
      } else {
        assert.is(jobs.ok[j], 1, `${cipher.name} job ${j} should verify`);
      }
    });
  }
});

test('the high half of the ESN is authenticated: a wrong seqHi fails open', () => {
  const { buf, cases } = randomBatch(5, 6);
  const native = new NativeEspCipher();
  native.seal(buf, jobsFor(native, cases));
  const wrong = cases.map((c) => ({ ...c, seqHi: (c.seqHi + 1) >>> 0 }));
  const jobs = jobsFor(native, wrong);
  native.open(buf, jobs);
  assert.equal(Array.from(jobs.ok.subarray(0, cases.length)), [0, 0, 0, 0, 0, 0]);
});

// draft-mcgrew-gcm-test-01 section 4: ESP packets with a 64-bit ESN (12-byte AAD).
// The packet bytes are SPI | seq low | IV | ciphertext | ICV; the key material is key | salt.
const VECTORS = [
  {
    name: 'AES-128, test case 1',
    alg: 'aes-128-gcm' as const,
    key: '4c80cdefbb5d10da906ac73c3613a634',
    salt: '2e443b68',
    seqHi: 0x87654321,
    packet: `00004321000000004956ed7e3b244cfe`,
    plaintext: `45000048699a000080114db7c0a80102 c0a801010a9bf15638d3010000010000
      00000000045f736970045f7564700373 69700963796265726369747902646b00 0021000101020201`,
    ciphertextIcv: `fecf537e729d5b07dc30df528dd22b76 8d1b98736696a6fd348509fa13ceac34
      cfa2436f14a3f3cf65925bf1f4a13c5d 15b21e1884f5ff6247aeabb786b93bce
      61bc17d768fd9732459018148f6cbe72 2fd04796562dfdb4`,
  },
  {
    name: 'AES-256, test case 6',
    alg: 'aes-256-gcm' as const,
    key: 'abbccddef00112233445566778899aababbccddef00112233445566778899aab',
    salt: '73616c74',
    seqHi: 0x156f3126,
    packet: `17405e67dd0db99b616e640169766563`,
    plaintext: `45080028732c00004006e9f90a010612 0a01038f06b88023dd6bafbecb712602 50101f646d540001`,
    ciphertextIcv: `f2d69ecdbd5a0d5b8d5ef38bad4da58d 1f278fde98ef67549d524a3018d9a57f
      f4d3a31ce673119e451626c2415771e3 b7eebca614c89b35`,
  },
  {
    name: 'AES-256, test case 12 (sequence number all ones)',
    alg: 'aes-256-gcm' as const,
    key: '6c6567616c697a656d6172696a75616e61616e64646f69746265666f72656961',
    salt: '7475726e',
    seqHi: 0xffffffff,
    packet: `796b6963ffffffff333021696765746d`,
    plaintext: `45000030da3a00008001df3bc0a80005 c0a800010800c6cd0200070061626364
      65666768696a6b6c6d6e6f7071727374 01020201`,
    ciphertextIcv: `f97ab2aa356d8edce17644ac8c78e25d d24dedbb29ebf1b64a274b39b49c3a86
      4cd3d78ca4ae68a32b42458fb57dbe82 1dcc63b9d0937ba2945f669368661a32 9fb4c053`,
  },
];

for (const v of VECTORS) {
  for (const make of [() => new NativeEspCipher(), () => new NodeEspCipher()]) {
    const cipher = make();
    test(`${cipher.name} seals and opens the ${v.name} vector of draft-mcgrew-gcm-test-01`, () => {
      const header = hex(v.packet);
      const pt = hex(v.plaintext);
      const expected = hex(v.ciphertextIcv);
      const espOff = 8;
      const buf = Buffer.alloc(espOff + ESP_HLEN + pt.length + ESP_ICV_LEN + 8);
      header.copy(buf, espOff);
      pt.copy(buf, espOff + ESP_HLEN);
      const k = cipher.addKey(v.alg, hex(v.key), hex(v.salt));
      const jobs = new EspJobs(BATCH_MAX);
      jobs.add(k, espOff, pt.length, v.seqHi, 0);
      cipher.seal(buf, jobs);
      assert.is(buf.subarray(espOff + ESP_HLEN, espOff + ESP_HLEN + expected.length).toString('hex'),
        expected.toString('hex'));
      jobs.ok[0] = 0;
      cipher.open(buf, jobs);
      assert.is(jobs.ok[0], 1);
      assert.is(buf.subarray(espOff + ESP_HLEN, espOff + ESP_HLEN + pt.length).toString('hex'), pt.toString('hex'));
    });
  }
}

test('seal reports every job it sealed with ok = 1, in both ciphers', () => {
  const { buf, cases } = randomBatch(31, 40);
  for (const cipher of [new NativeEspCipher(), new NodeEspCipher()]) {
    const jobs = jobsFor(cipher, cases);
    jobs.ok.fill(7, 0, cases.length); // neither 0 nor 1: each job's flag must be written
    cipher.seal(Buffer.from(buf), jobs);
    assert.equal(Array.from(jobs.ok.subarray(0, cases.length)), cases.map(() => 1), cipher.name);
  }
});

test('native: a key keeps a context once used (either way); trim gives back those idle for `idle` passes, a bounded number of keys at a time, and a trimmed key seals as before', () => {
  const { buf, cases } = randomBatch(41, 40);
  const native = new NativeEspCipher();
  const node = new NodeEspCipher();
  const handles = cases.map((c) => native.addKey(c.alg, c.key, c.salt));
  const jobsOf = (which: number[], h = handles): EspJobs => {
    const jobs = new EspJobs(BATCH_MAX);
    for (const j of which) jobs.add(h[j], cases[j].espOff, cases[j].ptLen, cases[j].seqHi, j);
    return jobs;
  };
  const all = cases.map((_, j) => j);
  assert.is(native.contexts, 0, 'no context before a key is used');
  const sealed = Buffer.from(buf);
  native.seal(sealed, jobsOf(all));
  assert.is(native.contexts, 40, 'a context a key'); 
  const opens = jobsOf(all.slice(0, 10));
  native.open(Buffer.from(sealed), opens);
  assert.equal(Array.from(opens.ok.subarray(0, 10)), new Array(10).fill(1));
  assert.is(native.contexts, 40, 'the same context opens');

  assert.is(native.trim(3, 1000), 0, 'pass 1: nothing idle for 3 passes yet');
  native.seal(Buffer.from(buf), jobsOf(all.slice(0, 20))); // keys 0-19 used in pass 1
  assert.is(native.trim(3, 1000), 0, 'pass 2');
  assert.is(native.trim(3, 1000), 20, 'pass 3: keys 20-39, unused since pass 0, give back their contexts');
  assert.is(native.contexts, 20);
  assert.is(native.keyCount, 40, 'the keys stay');
  assert.is(native.trim(1, 8), 8, 'a pass that looks at 8 slots: keys 0-7, idle for a pass');
  assert.is(native.trim(1, 1000), 12, 'the next looks at every slot: the rest');
  assert.is(native.contexts, 0);

  const again = Buffer.from(buf);
  native.seal(again, jobsOf(all));
  const reference = Buffer.from(buf);
  const nodeHandles = cases.map((c) => node.addKey(c.alg, c.key, c.salt));
  node.seal(reference, jobsOf(all, nodeHandles));
  assert.ok(again.equals(reference) && again.equals(sealed), 'a key whose context went seals to the same bytes as before, and as node:crypto');
  assert.is(native.contexts, 40);
  const reopened = Buffer.from(sealed);
  const jobs = jobsOf(all);
  native.open(reopened, jobs);
  const texts = (b: Buffer): Buffer[] => cases.map((c) => b.subarray(c.espOff + ESP_HLEN, c.espOff + ESP_HLEN + c.ptLen));
  assert.ok(jobs.ok.subarray(0, 40).every((x) => x === 1), 'and opens');
  assert.equal(texts(reopened), texts(buf), 'to the plaintext');
  native.removeKey(handles[0]);
  assert.is(native.contexts, 39, 'a removed key gives back its context');
  assert.is(native.tableBytes, 64 * 48, '40 keys in 64 slots of 48 bytes');
  assert.throws(() => native.trim(0, 10), /1 <= idle <= 32767/);
});

test('a removed key handle cannot be used and is handed out again, in both ciphers', () => {
  for (const cipher of [new NativeEspCipher(), new NodeEspCipher()]) {
    const key = Buffer.alloc(16, 1);
    const salt = Buffer.alloc(4, 2);
    const good = cipher.addKey('aes-128-gcm', key, salt);
    const h = cipher.addKey('aes-128-gcm', key, salt);
    assert.is(cipher.keyCount, 2, `${cipher.name} counts its keys`);
    cipher.removeKey(h);
    cipher.removeKey(h); // twice: the second does nothing
    assert.is(cipher.keyCount, 1, `${cipher.name} counts a removed key once`);
    const buf = Buffer.alloc(128, 7);
    const jobs = new EspJobs(BATCH_MAX);
    jobs.add(good, 0, 16, 0, 0); // a good job first: nothing of it may be written either
    jobs.add(h, 64, 16, 0, 1);
    assert.throws(() => cipher.seal(buf, jobs), /not installed/, `${cipher.name} seal`);
    assert.throws(() => cipher.open(buf, jobs), /not installed/, `${cipher.name} open`);
    assert.ok(buf.equals(Buffer.alloc(128, 7)), `${cipher.name}: a job was touched`);
    assert.is(cipher.addKey('aes-128-gcm', key, salt), h, cipher.name);
  }
});

test('exportKey gives back the key, salt and algorithm of an installed handle, and nothing for a removed one, in both ciphers', () => {
  for (const cipher of [new NativeEspCipher(), new NodeEspCipher()]) {
    const k128 = Buffer.alloc(16, 0x11);
    const k256 = Buffer.from(Array.from({ length: 32 }, (_, i) => i + 1));
    const salt = Buffer.from([9, 8, 7, 6]);
    const a = cipher.addKey('aes-128-gcm', k128, salt);
    const b = cipher.addKey('aes-256-gcm', k256, salt);
    k128.fill(0); // the caller zeroes its copy: the cipher keeps its own
    assert.equal(cipher.exportKey(a), { alg: 'aes-128-gcm', key: Buffer.alloc(16, 0x11), salt }, cipher.name);
    const m = cipher.exportKey(b)!;
    assert.equal(m, { alg: 'aes-256-gcm', key: k256, salt }, cipher.name);
    m.key.fill(0); // an exported copy is the caller's: zeroing it changes nothing inside
    assert.equal(cipher.exportKey(b)!.key, k256, `${cipher.name}: the export is a copy`);
    cipher.removeKey(a);
    assert.is(cipher.exportKey(a), undefined, `${cipher.name}: a removed key`);
    assert.is(cipher.exportKey(12345), undefined, `${cipher.name}: a handle never given`);
    assert.is(cipher.keyCount, 1, cipher.name);
  }
});

test('a job that runs past the buffer throws before any packet is touched, in both ciphers', () => {
  for (const cipher of [new NativeEspCipher(), new NodeEspCipher()]) {
    const h = cipher.addKey('aes-128-gcm', Buffer.alloc(16, 1), Buffer.alloc(4, 2));
    const buf = Buffer.alloc(200, 7);
    const jobs = new EspJobs(BATCH_MAX);
    jobs.add(h, 0, 32, 0, 0);
    jobs.add(h, 100, 100, 0, 1); // 100 + 16 + 100 + 16 > 200
    // A predicate, not the class: uvu calls a function `expects` with the error.
    const outside = (e: unknown) => e instanceof RangeError && /lies outside the buffer/.test(e.message);
    assert.throws(() => cipher.seal(buf, jobs), outside, `${cipher.name} seal`);
    assert.throws(() => cipher.open(buf, jobs), outside, `${cipher.name} open`);
    assert.ok(buf.equals(Buffer.alloc(200, 7)), `${cipher.name}: a job was touched`);
  }
});

test('a key of the wrong length is refused with the same message as node:crypto', () => {
  for (const cipher of [new NativeEspCipher(), new NodeEspCipher()]) {
    assert.throws(() => cipher.addKey('aes-256-gcm', Buffer.alloc(16), Buffer.alloc(4)), /needs a 32-byte key, got 16/);
    assert.throws(() => cipher.addKey('aes-128-gcm', Buffer.alloc(16), Buffer.alloc(3)), /salt must be 4 bytes/);
  }
});

test.run();
