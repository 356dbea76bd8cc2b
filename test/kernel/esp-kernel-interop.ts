// Our ESP against the Linux kernel's own (net/ipv4/esp4.c, rfc4106(gcm(aes)), 64-bit ESN):
// an independent check that the packets are exactly RFC 4303 / RFC 4106 with extended
// sequence numbers (AAD = SPI | seq high | seq low, RFC 4106 5), in both directions.
//
//   us (nvi-xi-<pid>-us)                        kernel (nvi-xi-<pid>-k)
//   10.99.0.1, RawUnderlay  ------ veth ------  10.99.0.2, xfrm states + policies
//   inner fd00:99::1                            inner fd00:99::2 on lo, a UDP receiver
//
// 1. Inbound to the kernel: packets sealed by NodeEspCipher and NativeEspCipher (inner
//    IPv6/UDP, ESP tunnel mode, outer IPv4 from makeOuterTemplate/writeOuter) are sent
//    from a raw socket; the kernel must authenticate them (state packet counter moves,
//    `failed` does not) and deliver the datagram to the receiver.
// 2. ESN: the kernel's states start with a non-zero high half (replay-seq-hi); it infers
//    the high half of each packet (RFC 4303 A2) and puts it in the AAD. Packets sealed
//    with seqHi = the kernel's must pass, across a wrap of the low half too; the same
//    packet with another high half, or with the 8-byte AAD of 32-bit sequence numbers,
//    must fail integrity. A control SA without ESN shows the reverse (the 8-byte reference
//    passes there, ours fails), so the negative cases fail for the reason they claim.
// 3. Outbound from the kernel: a datagram sent through an ESN state with oseq-hi 1, oseq
//    2^32 - 2 (so the second packet carries high half 2, low half 0) is captured with a raw
//    socket and opened by both our ciphers with the high half the kernel used.
//
// Needs a kernel with ESP (esp4, gcm, xfrm_user) and the native addon (raw sockets). When
// the kernel has no ESP every test FAILS and says so; test/kernel/kernel-vm.sh runs this file
// under a distribution kernel in a VM.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync, spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createCipheriv } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { release } from 'node:os';
import { gunzipSync } from 'node:zlib';
import { ESP_HLEN, ESP_ICV_LEN, ESP_OFF_IV, ESP_OFF_SEQ, ESP_OFF_SPI, readEspTrailer, writeEspTrailer } from '../../src/wire/esp.js';
import { EspJobs, NodeEspCipher, type EspAlgorithm, type EspCipher } from '../../src/esp/esp-cipher.js';
import { NativeEspCipher } from '../../src/esp/native-esp-cipher.js';
import { Batch, BATCH_MAX, UNDERLAY_OFFSET } from '../../src/dataplane/batch.js';
import { finishChecksum, onesSum } from '../../src/wire/checksum.js';
import { IPV4_HLEN, IPV4_OFF_DST, IPV4_OFF_PROTO, IPV4_OFF_SRC, makeOuterTemplate, readU32, writeOuter } from '../../src/wire/ipv4.js';
import { parseIpv4Address } from '../../src/base/address.js';
import { IPV6_HLEN, IPV6_OFF_DST, IPV6_OFF_HOPS, IPV6_OFF_NEXT, IPV6_OFF_PLEN, IPV6_OFF_SRC, PROTO_ESP, PROTO_UDP } from '../../src/wire/ipv6.js';
import { parseIpv6Address } from '../../src/base/address.js';
import { RawUnderlay } from '../../src/io/raw-underlay.js';

const NS_US = `nvi-xi-${process.pid}-us`;
const NS_K = `nvi-xi-${process.pid}-k`;
const VETH_US = `nvixi${process.pid}u`.slice(-15);
const VETH_K = `nvixi${process.pid}k`.slice(-15);
const UNDER_US = '10.99.0.1';
const UNDER_K = '10.99.0.2';
const INNER_US = 'fd00:99::1';
const INNER_K = 'fd00:99::2';
const UDP_PORT = 7777;
const WAIT_MS = 15000; // generous: the VM of test/kernel/kernel-vm.sh runs without KVM

/** One SA as both ends see it. `seqHi`/`seqLo`: the kernel's replay state when it is added. */
interface Sa {
  readonly spi: number;
  readonly alg: EspAlgorithm;
  readonly key: Buffer;
  readonly salt: Buffer;
  readonly esn: boolean;
  readonly seqHi: number;
  readonly seqLo: number;
}

const hex = (s: string): Buffer => Buffer.from(s, 'hex');

/** us -> kernel, AES-128, ESN, the kernel's window at (1, 0x100). */
const SA_128: Sa = {
  spi: 0x4e560128, alg: 'aes-128-gcm', key: hex('0f1e2d3c4b5a69788796a5b4c3d2e1f0'), salt: hex('a1b2c3d4'),
  esn: true, seqHi: 1, seqLo: 0x100,
};
/** us -> kernel, AES-256, ESN, the kernel's window 128 below the end of high half 7. */
const SA_256: Sa = {
  spi: 0x4e560256, alg: 'aes-256-gcm', key: hex('00112233445566778899aabbccddeeff0123456789abcdeffedcba9876543210'),
  salt: hex('5a17c0de'), esn: true, seqHi: 7, seqLo: 0xffffff80,
};
/** us -> kernel, AES-128 without ESN: the control for the 8-byte AAD. */
const SA_NO_ESN: Sa = {
  spi: 0x4e560032, alg: 'aes-128-gcm', key: hex('d00dfeedd00dfeedd00dfeedd00dfeed'), salt: hex('01020304'),
  esn: false, seqHi: 0, seqLo: 0x100,
};
/** kernel -> us, AES-256, ESN, next sequence numbers (1, 0xffffffff) then (2, 0). */
const SA_OUT: Sa = {
  spi: 0x4e56f00d, alg: 'aes-256-gcm', key: hex('fedcba98765432100123456789abcdef00112233445566778899aabbccddeeff'),
  salt: hex('c0ffee00'), esn: true, seqHi: 1, seqLo: 0xfffffffe,
};

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** `ip` with the failure's stderr in the error message. */
function ipOrExplain(args: string[]): string {
  try {
    return ip(...args);
  } catch (e) {
    const err = e as Error & { stderr?: string };
    throw new Error(`ip ${args.join(' ')}: ${(err.stderr ?? err.message).trim().replace(/\.$/, '')}`);
  }
}

/** `ip xfrm state add` arguments for an SA from `src` to `dst` (tunnel mode, inner IPv6 selector). */
function stateArgs(sa: Sa, src: string, dst: string, reqid: number, innerSrc: string, innerDst: string, outbound: boolean): string[] {
  const args = [
    'xfrm', 'state', 'add', 'src', src, 'dst', dst, 'proto', 'esp', 'spi', `0x${sa.spi.toString(16)}`,
    'reqid', String(reqid), 'mode', 'tunnel',
    'aead', 'rfc4106(gcm(aes))', `0x${Buffer.concat([sa.key, sa.salt]).toString('hex')}`, String(ESP_ICV_LEN * 8),
  ];
  if (sa.esn) {
    args.push('replay-window', '128', 'flag', 'esn');
    if (outbound) args.push('replay-oseq-hi', `0x${sa.seqHi.toString(16)}`, 'replay-oseq', `0x${sa.seqLo.toString(16)}`);
    else args.push('replay-seq-hi', `0x${sa.seqHi.toString(16)}`, 'replay-seq', `0x${sa.seqLo.toString(16)}`);
  } else {
    args.push('replay-window', '32');
    if (!outbound) args.push('replay-seq', `0x${sa.seqLo.toString(16)}`);
  }
  args.push('sel', 'src', `${innerSrc}/128`, 'dst', `${innerDst}/128`);
  return args;
}

/** What this kernel says about ESP, for the failure message. */
function kernelEspConfig(): string {
  try {
    const config = gunzipSync(readFileSync('/proc/config.gz')).toString('utf8');
    const lines = config.split('\n').filter((l) => /\bCONFIG_(INET_ESP|CRYPTO_GCM|XFRM_USER|MODULES)\b/.test(l));
    return lines.join('; ') || 'no ESP options in /proc/config.gz';
  } catch {
    return '/proc/config.gz not readable';
  }
}

function cleanup(): void {
  for (const ns of [NS_US, NS_K]) {
    try {
      ip('netns', 'del', ns); // takes its end of the veth, and so the pair, with it
    } catch {
      // already gone
    }
  }
}
process.on('exit', cleanup);

async function until(done: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!done() && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  return done();
}

// ---- the kernel's view: counters of a state, of the namespace, the UDP receiver ----

interface StateStats {
  packets: number;
  failed: number;
  replay: number;
}

function stateStats(sa: Sa, src: string, dst: string): StateStats {
  const text = ip('-n', NS_K, '-s', 'xfrm', 'state', 'get', 'src', src, 'dst', dst, 'proto', 'esp', 'spi', `0x${sa.spi.toString(16)}`);
  const life = /(\d+)\(bytes\), (\d+)\(packets\)/.exec(text);
  const stats = /replay-window \d+ replay (\d+) failed (\d+)/.exec(text);
  if (!life || !stats) throw new Error(`cannot read the counters of SPI 0x${sa.spi.toString(16)}:\n${text}`);
  return { packets: Number(life[2]), replay: Number(stats[1]), failed: Number(stats[2]) };
}

const inStats = (sa: Sa): StateStats => stateStats(sa, UNDER_US, UNDER_K);

/** Non-zero lines of the kernel namespace's /proc/net/xfrm_stat (why a packet was dropped). */
function xfrmErrors(): string {
  const text = execFileSync('ip', ['netns', 'exec', NS_K, 'cat', '/proc/net/xfrm_stat'], { encoding: 'utf8' });
  return text.split('\n').map((l) => l.trim().split(/\s+/)).filter(([k, v]) => k && v !== '0').map(([k, v]) => `${k} ${v}`).join(', ')
    || 'none';
}

/** Datagram payloads (as text) the receiver in the kernel namespace got, in order. */
const received: string[] = [];
let receiver: ChildProcessWithoutNullStreams | null = null;

/** A UDP socket on [fd00:99::2]:7777 inside the kernel namespace, one node process (stopped by PID in after()). */
async function startReceiver(): Promise<void> {
  const script = `const s = require('node:dgram').createSocket({ type: 'udp6' });
s.on('message', (m) => process.stdout.write(m.toString('hex') + '\\n'));
s.bind(${UDP_PORT}, '${INNER_K}', () => process.stdout.write('ready\\n'));`;
  const child = spawn('ip', ['netns', 'exec', NS_K, process.execPath, '-e', script], { stdio: ['pipe', 'pipe', 'pipe'] });
  receiver = child;
  let ready = false;
  let errors = '';
  let rest = '';
  child.stdout.on('data', (chunk: Buffer) => {
    const lines = (rest + chunk.toString('utf8')).split('\n');
    rest = lines.pop()!;
    for (const line of lines) {
      if (line === 'ready') ready = true;
      else received.push(Buffer.from(line, 'hex').toString('utf8'));
    }
  });
  child.stderr.on('data', (chunk: Buffer) => {
    errors += chunk.toString('utf8');
  });
  if (!(await until(() => ready || child.exitCode !== null, WAIT_MS))) throw new Error('the UDP receiver did not start');
  if (!ready) throw new Error(`the UDP receiver failed: ${errors}`);
}

// ---- our side: packets sealed by our code ----

/** UDP checksum over the IPv6 pseudo-header (RFC 8200 8.1); 0 for a datagram whose checksum verifies. */
function udp6Checksum(buf: Uint8Array, ip6: number, udpLen: number): number {
  const sum = onesSum(buf, ip6 + IPV6_OFF_SRC, 32, udpLen + PROTO_UDP);
  return finishChecksum(onesSum(buf, ip6 + IPV6_HLEN, udpLen, sum));
}

/** Write IPv6/UDP fd00:99::1 -> [fd00:99::2]:7777 carrying `text` at `at`; returns its length. */
function writeInner(buf: Buffer, at: number, text: string): number {
  const payload = Buffer.from(text, 'utf8');
  const udpLen = 8 + payload.length;
  buf.fill(0, at, at + IPV6_HLEN);
  buf[at] = 0x60;
  buf.writeUInt16BE(udpLen, at + IPV6_OFF_PLEN);
  buf[at + IPV6_OFF_NEXT] = PROTO_UDP;
  buf[at + IPV6_OFF_HOPS] = 64;
  parseIpv6Address(INNER_US).copy(buf, at + IPV6_OFF_SRC);
  parseIpv6Address(INNER_K).copy(buf, at + IPV6_OFF_DST);
  const u = at + IPV6_HLEN;
  buf.writeUInt16BE(40000, u);
  buf.writeUInt16BE(UDP_PORT, u + 2);
  buf.writeUInt16BE(udpLen, u + 4);
  buf.writeUInt16BE(0, u + 6);
  payload.copy(buf, u + 8);
  buf.writeUInt16BE(udp6Checksum(buf, at, udpLen) || 0xffff, u + 6); // 0 means "none", not allowed in IPv6
  return IPV6_HLEN + udpLen;
}

/** How the AAD of a packet is made. */
type Aad =
  | { kind: 'esn'; seqHi: number } // ours: SPI | seqHi | seq low (12 bytes), sealed by the cipher under test
  | { kind: 'no-esn' }; // reference for 32-bit sequence numbers: SPI | seq low (8 bytes), sealed with node:crypto here

interface Send {
  sa: Sa;
  /** The packet's real 64-bit sequence number: low half on the wire, IV = hi | lo as our egress writes it. */
  seqHi: number;
  seqLo: number;
  aad: Aad;
  text: string;
}

/**
 * Build each packet in its batch slot the way egress does (outer IPv4 | SPI | seq low |
 * IV | IPv6 | trailer | ICV), seal the ESN ones with `cipher` in one call, and send them
 * all from our namespace in order.
 */
function sendPackets(us: RawUnderlay, cipher: EspCipher, sends: readonly Send[]): void {
  const b = new Batch();
  const jobs = new EspJobs(BATCH_MAX);
  const handles = new Map<Sa, number>();
  const template = makeOuterTemplate(parseIpv4Address(UNDER_US), parseIpv4Address(UNDER_K), PROTO_ESP);
  sends.forEach((s, k) => {
    const buf = b.data;
    const outer = Batch.slot(k) + UNDERLAY_OFFSET;
    const esp = outer + IPV4_HLEN;
    const inner = esp + ESP_HLEN;
    const innerLen = writeInner(buf, inner, s.text);
    const ptLen = writeEspTrailer(buf, inner + innerLen, innerLen) - inner;
    const total = IPV4_HLEN + ESP_HLEN + ptLen + ESP_ICV_LEN;
    writeOuter(buf, outer, template, total, 0);
    buf.writeUInt32BE(s.sa.spi, esp + ESP_OFF_SPI);
    buf.writeUInt32BE(s.seqLo, esp + ESP_OFF_SEQ);
    buf.writeUInt32BE(s.seqHi, esp + ESP_OFF_IV);
    buf.writeUInt32BE(s.seqLo, esp + ESP_OFF_IV + 4);
    if (s.aad.kind === 'esn') {
      let h = handles.get(s.sa);
      if (h === undefined) handles.set(s.sa, (h = cipher.addKey(s.sa.alg, s.sa.key, s.sa.salt)));
      jobs.add(h, esp, ptLen, s.aad.seqHi, k);
    } else {
      sealShortAad(buf, esp, ptLen, s.sa);
    }
    b.init(k, outer, total, 0, 0);
    b.peer[k] = parseIpv4Address(UNDER_K);
  });
  b.count = sends.length;
  cipher.seal(b.data, jobs);
  const idx = Int32Array.from(sends, (_, k) => k);
  assert.is(us.send(b, idx, sends.length), sends.length, `sent (errno ${us.lastErrno})`);
}

/** RFC 4106 5 without ESN: AAD = SPI | 32-bit sequence number. Independent of EspCipher on purpose. */
function sealShortAad(buf: Buffer, esp: number, ptLen: number, sa: Sa): void {
  const nonce = Buffer.concat([sa.salt, buf.subarray(esp + ESP_OFF_IV, esp + ESP_OFF_IV + 8)]);
  const c = createCipheriv(sa.alg, sa.key, nonce, { authTagLength: ESP_ICV_LEN });
  c.setAAD(Buffer.from(buf.subarray(esp, esp + 8)));
  const p = esp + ESP_HLEN;
  c.update(buf.subarray(p, p + ptLen)).copy(buf, p);
  c.final();
  c.getAuthTag().copy(buf, p + ptLen);
}

/**
 * Send, then wait until the kernel has decided on every packet: `accepted` more packets
 * on the state and `failed` more integrity failures. Returns the texts delivered meanwhile.
 */
async function sendAndSettle(cipher: EspCipher, sa: Sa, sends: readonly Send[], accepted: number, failed: number): Promise<string[]> {
  const before = inStats(sa);
  const from = received.length;
  sendPackets(us, cipher, sends);
  const want = (s: StateStats) => s.packets === before.packets + accepted && s.failed === before.failed + failed;
  let now = before;
  const settled = await until(() => want((now = inStats(sa))) && received.length >= from + accepted, WAIT_MS);
  assert.ok(settled, `SPI 0x${sa.spi.toString(16)}: expected +${accepted} packets and +${failed} integrity failures, got `
    + `+${now.packets - before.packets} and +${now.failed - before.failed}; ${received.length - from} delivered; `
    + `xfrm_stat: ${xfrmErrors()}`);
  await new Promise((r) => setTimeout(r, 100)); // a late delivery would show up as an extra text below
  return received.slice(from);
}

const esnSend = (sa: Sa, seqHi: number, seqLo: number, text: string, aadHi = seqHi): Send =>
  ({ sa, seqHi, seqLo, text, aad: { kind: 'esn', seqHi: aadHi } });

// ---- setup: both namespaces, the kernel's SAs and policies; a failure fails every test ----

let setupError: string | null = null;
let us: RawUnderlay;
const ciphers: EspCipher[] = [];

function setup(): void {
  cleanup();
  ip('netns', 'add', NS_US);
  ip('netns', 'add', NS_K);
  ip('link', 'add', VETH_US, 'netns', NS_US, 'type', 'veth', 'peer', 'name', VETH_K, 'netns', NS_K);
  for (const [ns, dev, addr] of [[NS_US, VETH_US, UNDER_US], [NS_K, VETH_K, UNDER_K]]) {
    ip('-n', ns, 'addr', 'add', `${addr}/24`, 'dev', dev);
    ip('-n', ns, 'link', 'set', dev, 'up');
    ip('-n', ns, 'link', 'set', 'lo', 'up');
  }
  ip('-n', NS_K, 'addr', 'add', `${INNER_K}/128`, 'dev', 'lo', 'nodad');
  ip('-n', NS_K, 'route', 'add', `${INNER_US}/128`, 'dev', VETH_K); // for the outbound datagram; xfrm takes it from there
  try {
    ipOrExplain(['-n', NS_K, ...stateArgs(SA_128, UNDER_US, UNDER_K, 1, INNER_US, INNER_K, false)]);
  } catch (e) {
    throw new Error(`the kernel's ESP (xfrm, esp4, rfc4106(gcm(aes)) with ESN) is not usable here, so nothing can be `
      + `checked against it: ${(e as Error).message}. Kernel ${release()}: ${kernelEspConfig()}. `
      + 'Run this test under a kernel with ESP, e.g. test/kernel/kernel-vm.sh.');
  }
  ipOrExplain(['-n', NS_K, ...stateArgs(SA_256, UNDER_US, UNDER_K, 1, INNER_US, INNER_K, false)]);
  ipOrExplain(['-n', NS_K, ...stateArgs(SA_NO_ESN, UNDER_US, UNDER_K, 1, INNER_US, INNER_K, false)]);
  ipOrExplain(['-n', NS_K, 'xfrm', 'policy', 'add', 'src', `${INNER_US}/128`, 'dst', `${INNER_K}/128`, 'dir', 'in',
    'tmpl', 'src', UNDER_US, 'dst', UNDER_K, 'proto', 'esp', 'reqid', '1', 'mode', 'tunnel']);
  ipOrExplain(['-n', NS_K, ...stateArgs(SA_OUT, UNDER_K, UNDER_US, 2, INNER_K, INNER_US, true)]);
  ipOrExplain(['-n', NS_K, 'xfrm', 'policy', 'add', 'src', `${INNER_K}/128`, 'dst', `${INNER_US}/128`, 'dir', 'out',
    'tmpl', 'src', UNDER_K, 'dst', UNDER_US, 'proto', 'esp', 'reqid', '2', 'mode', 'tunnel']);
  us = RawUnderlay.open(UNDER_US, { netns: NS_US });
  ciphers.push(new NodeEspCipher(), new NativeEspCipher());
}

test.before(async () => {
  try {
    setup();
    await startReceiver();
  } catch (e) {
    setupError = (e as Error).message;
  }
});

test.after(() => {
  if (receiver?.pid !== undefined && receiver.exitCode === null) receiver.kill();
  us?.close();
  cleanup();
});

function requireKernel(): void {
  if (setupError !== null) assert.unreachable(setupError);
}

// ---- 1 and 2: the kernel receives ----

test('the kernel accepts ESN packets sealed by each of our ciphers and delivers the inner datagrams', async () => {
  requireKernel();
  for (const [c, cipher] of ciphers.entries()) {
    for (const sa of [SA_128, SA_256]) {
      const base = sa.seqLo + 1 + c * 8;
      const sends = [0, 1, 2].map((k) => esnSend(sa, sa.seqHi, base + k, `${cipher.name} ${sa.alg} ${sa.seqHi}:${base + k}`));
      const got = await sendAndSettle(cipher, sa, sends, 3, 0);
      assert.equal(got, sends.map((s) => s.text), `${cipher.name} ${sa.alg}`);
    }
  }
});

test('the kernel infers the high half across a wrap of the low half and so does our AAD (RFC 4303 A2)', async () => {
  requireKernel();
  const hi = SA_256.seqHi;
  for (const cipher of ciphers) {
    const lo = cipher === ciphers[0] ? 0 : 10;
    // The kernel's window ends in high half 7, so low half 0 or 10 means high half 8.
    const got = await sendAndSettle(cipher, SA_256, [
      esnSend(SA_256, hi, 0xfffffff0 + lo, `${cipher.name} last of ${hi}`),
      esnSend(SA_256, hi + 1, lo, `${cipher.name} first of ${hi + 1}`),
      esnSend(SA_256, hi + 1, lo + 1, `${cipher.name} second of ${hi + 1}`),
    ], 3, 0);
    assert.equal(got, [`${cipher.name} last of ${hi}`, `${cipher.name} first of ${hi + 1}`, `${cipher.name} second of ${hi + 1}`]);
  }
});

test('a packet whose AAD carries another high half than the kernel infers fails integrity and is not delivered', async () => {
  requireKernel();
  for (const [c, cipher] of ciphers.entries()) {
    const lo = SA_128.seqLo + 0x40 + c * 8;
    // Same SPI, sequence number and IV as a good packet: only the AAD's high half differs.
    const got = await sendAndSettle(cipher, SA_128, [
      esnSend(SA_128, 1, lo, `${cipher.name} AAD hi 0`, 0),
      esnSend(SA_128, 1, lo + 1, `${cipher.name} AAD hi 2`, 2),
      esnSend(SA_128, 1, lo + 2, `${cipher.name} AAD hi 1`, 1),
    ], 1, 2);
    assert.equal(got, [`${cipher.name} AAD hi 1`]);
  }
});

test('a packet with the 8-byte AAD of 32-bit sequence numbers fails integrity on an ESN SA', async () => {
  requireKernel();
  const lo = SA_128.seqLo + 0x60;
  const got = await sendAndSettle(ciphers[0], SA_128, [
    { sa: SA_128, seqHi: 1, seqLo: lo, aad: { kind: 'no-esn' }, text: '8-byte AAD' },
    esnSend(SA_128, 1, lo + 1, '12-byte AAD'),
  ], 1, 1);
  assert.equal(got, ['12-byte AAD']);
});

test('control: an SA without ESN takes the 8-byte AAD and refuses ours even with high half 0', async () => {
  requireKernel();
  for (const cipher of ciphers) {
    const lo = SA_NO_ESN.seqLo + (cipher === ciphers[0] ? 1 : 0x11);
    const got = await sendAndSettle(cipher, SA_NO_ESN, [
      esnSend(SA_NO_ESN, 0, lo, `${cipher.name} ESN AAD`),
      { sa: SA_NO_ESN, seqHi: 0, seqLo: lo + 1, aad: { kind: 'no-esn' }, text: `${cipher.name} 8-byte AAD` },
    ], 1, 1);
    assert.equal(got, [`${cipher.name} 8-byte AAD`]);
  }
});

// ---- 3: the kernel sends ----

test("the kernel's ESN packets open with each of our ciphers, across a wrap of the low half", async () => {
  requireKernel();
  const captured: Buffer[] = [];
  const rx = new Batch();
  us.onReadable(() => {
    rx.reset();
    us.read(rx, 0);
    for (let i = 0; i < rx.count; i++) captured.push(Buffer.from(rx.view(i)));
  });
  const texts = ['kernel one', 'kernel two'];
  const script = `const s = require('node:dgram').createSocket({ type: 'udp6' });
const texts = ${JSON.stringify(texts)};
s.bind(0, '${INNER_K}', () => {
  let n = 0;
  for (const t of texts) s.send(Buffer.from(t), ${UDP_PORT}, '${INNER_US}', (e) => { if (e) throw e; if (++n === texts.length) s.close(); });
});`;
  const r = spawnSync('ip', ['netns', 'exec', NS_K, process.execPath, '-e', script], { encoding: 'utf8', timeout: WAIT_MS });
  assert.is(r.status, 0, `sender in the kernel namespace: ${r.stderr}`);
  assert.ok(await until(() => captured.length >= texts.length, WAIT_MS),
    `captured ${captured.length} ESP packets of ${texts.length}; state ${JSON.stringify(stateStats(SA_OUT, UNDER_K, UNDER_US))}`);
  const expected: [number, number][] = [[1, 0xffffffff], [2, 0]]; // (oseq-hi 1, oseq 2^32 - 2) + 1, + 2
  for (const [k, pkt] of captured.entries()) {
    assert.is(pkt[IPV4_OFF_PROTO], PROTO_ESP);
    assert.is(readU32(pkt, IPV4_OFF_SRC), parseIpv4Address(UNDER_K));
    assert.is(readU32(pkt, IPV4_OFF_DST), parseIpv4Address(UNDER_US));
    const esp = (pkt[0] & 0x0f) * 4;
    const [hi, lo] = expected[k];
    assert.is(readU32(pkt, esp + ESP_OFF_SPI), SA_OUT.spi, `packet ${k}: SPI`);
    assert.is(readU32(pkt, esp + ESP_OFF_SEQ), lo, `packet ${k}: low half of the sequence number`);
    const ptLen = pkt.length - esp - ESP_HLEN - ESP_ICV_LEN;
    for (const cipher of ciphers) {
      const h = cipher.addKey(SA_OUT.alg, SA_OUT.key, SA_OUT.salt);
      const open = (seqHi: number): [number, Buffer] => {
        const copy = Buffer.from(pkt);
        const jobs = new EspJobs(BATCH_MAX);
        jobs.add(h, esp, ptLen, seqHi, 0);
        cipher.open(copy, jobs);
        return [jobs.ok[0], copy];
      };
      assert.is(open((hi + 1) >>> 0)[0], 0, `${cipher.name} packet ${k}: verified with the wrong high half`);
      assert.is(open(0)[0], 0, `${cipher.name} packet ${k}: verified with high half 0`);
      const [ok, plain] = open(hi);
      assert.is(ok, 1, `${cipher.name} packet ${k}: the kernel's ICV does not verify with AAD high half ${hi}`);
      const inner = esp + ESP_HLEN;
      const innerLen = readEspTrailer(plain, inner, inner + ptLen);
      assert.ok(innerLen >= IPV6_HLEN + 8, `${cipher.name} packet ${k}: trailer (${innerLen})`);
      assert.is(plain[inner] >> 4, 6);
      assert.ok(plain.subarray(inner + IPV6_OFF_SRC, inner + IPV6_OFF_SRC + 16).equals(parseIpv6Address(INNER_K)));
      assert.ok(plain.subarray(inner + IPV6_OFF_DST, inner + IPV6_OFF_DST + 16).equals(parseIpv6Address(INNER_US)));
      assert.is(plain[inner + IPV6_OFF_NEXT], PROTO_UDP);
      const u = inner + IPV6_HLEN;
      assert.is(plain.readUInt16BE(u + 2), UDP_PORT);
      assert.is(udp6Checksum(plain, inner, innerLen - IPV6_HLEN), 0, 'UDP checksum');
      assert.is(plain.subarray(u + 8, inner + innerLen).toString('utf8'), texts[k]);
      cipher.removeKey(h);
    }
  }
  assert.is(captured.length, texts.length);
});

test.run();
