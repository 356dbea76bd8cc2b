// A TAP with offloads against the kernel's own TCP, both ways. Sending, the guest (a
// namespace) hands over TSO super-frames and partial checksums, which the switch's read
// makes wire frames; receiving, the switch writes runs of segments as super-frames, which
// the guest's stack takes whole. The test plays a minimal TCP peer on the switch side.
// UDP: runs of datagrams written as super-frames reach the guest's sockets as the same
// datagrams, and the checksums the kernel makes for them as it forwards them verify.

import { execFileSync, spawn } from 'node:child_process';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Batch, BATCH_MAX } from '../src/dataplane/batch.js';
import { finishChecksum, onesSum } from '../src/wire/checksum.js';
import { ETH_HLEN, writeEthIpv6 } from '../src/wire/ethernet.js';
import { PROTO_TCP, PROTO_UDP, pseudoHeaderChecksum } from '../src/wire/ipv6.js';
import { parseIpv6Address } from '../src/base/address.js';
import { TapPort } from '../src/io/tap.js';
import { udpFrame } from './udp-frame.js';

const NS = `nvi-tg-${process.pid}`;
const TAP = 'nvi-tso0';
const GUEST = parseIpv6Address('fd00:77::1');
const PEER = parseIpv6Address('fd00:77::2');
const GUEST_MAC = Buffer.from('020000000001', 'hex');
const PEER_MAC = Buffer.from('024e56490001', 'hex');
const MTU = 1446;
const BYTES = 400_000;

import { createHash } from 'node:crypto';

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: 'ignore' });
}

function cleanup(): void {
  try {
    execFileSync('ip', ['netns', 'delete', NS], { stdio: 'ignore' });
  } catch {
    /* already gone */
  }
}

function tcpChecksumOk(f: Buffer): boolean {
  const l4Len = f.readUInt16BE(ETH_HLEN + 4);
  return finishChecksum(onesSum(f, ETH_HLEN + 40, l4Len, onesSum(f, ETH_HLEN + 8, 32, 0) + l4Len + PROTO_TCP)) === 0;
}

/** A TCP segment from the peer to the guest. */
function segment(b: Batch, sport: number, dport: number, seq: number, ack: number, flags: number, mss?: number): void {
  const opts = mss ? 4 : 0;
  const f = Buffer.alloc(ETH_HLEN + 40 + 20 + opts);
  writeEthIpv6(f, 0, GUEST_MAC, PEER_MAC);
  f[14] = 0x60;
  f.writeUInt16BE(20 + opts, 18);
  f[20] = PROTO_TCP;
  f[21] = 64;
  PEER.copy(f, 22);
  GUEST.copy(f, 38);
  const t = 54;
  f.writeUInt16BE(sport, t);
  f.writeUInt16BE(dport, t + 2);
  f.writeUInt32BE(seq >>> 0, t + 4);
  f.writeUInt32BE(ack >>> 0, t + 8);
  f[t + 12] = ((20 + opts) / 4) << 4;
  f[t + 13] = flags;
  f.writeUInt16BE(65535, t + 14);
  if (mss) f.set([2, 4, mss >> 8, mss & 0xff], t + 20);
  const sum = onesSum(f, 22, 32, 0) + 20 + opts + PROTO_TCP;
  f.writeUInt16BE(finishChecksum(onesSum(f, t, 20 + opts, sum)), t + 16);
  b.push(f, 66, 0, 0);
}

test.after(cleanup);

/** A fresh namespace with the offloading TAP as the guest's only interface. */
function guest(offloadUdp = true): TapPort {
  cleanup();
  ip('netns', 'add', NS);
  const tap = TapPort.open(TAP, { netns: NS, mtu: MTU, mac: GUEST_MAC, offload: true, offloadUdp });
  ip('-n', NS, 'link', 'set', 'lo', 'up');
  ip('-n', NS, '-6', 'addr', 'add', 'fd00:77::1/64', 'dev', TAP, 'nodad');
  ip('-n', NS, 'link', 'set', TAP, 'up');
  ip('-n', NS, '-6', 'neigh', 'add', 'fd00:77::2', 'lladdr', '02:4e:56:49:00:01', 'dev', TAP, 'nud', 'permanent');
  return tap;
}

function rxPackets(): number {
  const out = execFileSync('ip', ['-n', NS, '-s', '-j', 'link', 'show', TAP], { encoding: 'utf8' });
  return (JSON.parse(out) as { stats64: { rx: { packets: number } } }[])[0].stats64.rx.packets;
}

/** A TCP data segment from the peer to the guest, in the batch. */
function data(b: Batch, sport: number, dport: number, seq: number, ack: number, payload: Buffer, flags = 0x10): void {
  segment(b, sport, dport, seq, ack, flags);
  const i = b.count - 1;
  const at = b.start[i];
  b.data.set(payload, at + b.len[i]);
  b.len[i] += payload.length;
  const f = b.data;
  f[at + 18] = (20 + payload.length) >> 8;
  f[at + 19] = (20 + payload.length) & 0xff;
  f[at + 70] = 0;
  f[at + 71] = 0;
  const sum = onesSum(f, at + 22, 32, 0) + 20 + payload.length + PROTO_TCP;
  const c = finishChecksum(onesSum(f, at + 54, 20 + payload.length, sum));
  f[at + 70] = c >> 8;
  f[at + 71] = c & 0xff;
}

test('runs of segments written as super-frames reach the guest\'s socket as one unchanged stream', async () => {
  const tap = guest();
  try {
    const receiver = spawn('ip', ['netns', 'exec', NS, 'python3', '-c', [
      'import socket, hashlib',
      's = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)',
      's.bind(("fd00:77::1", 5002)); s.listen(1)',
      'c, _ = s.accept(); h = hashlib.sha256(); n = 0',
      'while True:',
      '    d = c.recv(1 << 16)',
      '    if not d: break',
      '    h.update(d); n += len(d)',
      'print(n, h.hexdigest(), flush=True)',
    ].join('\n')], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    receiver.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    await new Promise((r) => setTimeout(r, 300));
    const mss = MTU - 60;
    const payload = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 13 + 5) % 251));
    const rx = new Batch();
    const tx = new Batch();
    const idx = Int32Array.from({ length: BATCH_MAX }, (_, k) => k);
    const before = rxPackets();
    let guestSeq = -1;
    let acked = 0;
    let sent = 0;
    let segments = 0;
    let finSent = false;
    const ISN = 5000;
    tx.reset();
    segment(tx, 40001, 5002, ISN, 0, 0x02, mss); // SYN
    tap.write(tx, idx, tx.count);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`stalled at ${acked} of ${payload.length} bytes acked`)), 20_000);
      const push = (): void => {
        tx.reset();
        // Up to 40 segments in flight: a window the guest's buffer takes at once.
        while (sent < payload.length && sent - acked < 40 * mss && tx.count < BATCH_MAX) {
          const n = Math.min(mss, payload.length - sent);
          data(tx, 40001, 5002, ISN + 1 + sent, guestSeq + 1, payload.subarray(sent, sent + n));
          sent += n;
          segments++;
        }
        if (sent === payload.length && acked === payload.length && !finSent) {
          // FIN, once: the guest answers each FIN with an ACK, which would ask for another one
          // until its own FIN comes (a loop that runs as long as the receiver takes to close).
          segment(tx, 40001, 5002, ISN + 1 + sent, guestSeq + 1, 0x11);
          finSent = true;
        }
        if (tx.count > 0) tap.write(tx, idx, tx.count);
      };
      tap.onReadable(() => {
        rx.reset();
        tap.read(rx, 0, 0);
        for (let i = 0; i < rx.count; i++) {
          const f = Buffer.from(rx.view(i));
          if (f.readUInt16BE(12) !== 0x86dd || f[20] !== PROTO_TCP) continue;
          const flags = f[67];
          if (flags & 0x02) {
            guestSeq = f.readUInt32BE(58);
            tx.reset();
            segment(tx, 40001, 5002, ISN + 1, guestSeq + 1, 0x10);
            tap.write(tx, idx, tx.count);
          }
          const ack = (f.readUInt32BE(62) - ISN - 1) >>> 0; // bytes of ours the guest has
          if ((flags & 0x10) && ack <= payload.length) acked = Math.max(acked, ack);
          if (flags & 0x01) {
            clearTimeout(timer);
            resolve();
            return;
          }
        }
        if (guestSeq >= 0) push();
      });
    });
    await new Promise((r) => receiver.once('exit', r));
    const [n, hash] = stdout.trim().split(' ');
    assert.is(Number(n), payload.length, 'every byte arrived');
    assert.is(hash, createHash('sha256').update(payload).digest('hex'), 'unchanged, in order');
    const frames = rxPackets() - before;
    assert.ok(frames < segments / 4, `the guest received ${frames} frames for ${segments} data segments: super-frames`);
  } finally {
    tap.close();
    cleanup();
  }
});

test('the kernel hands over TSO super-frames and the switch reads them as valid wire frames of one unchanged stream', async () => {
  const tap = guest();
  try {
    const features = execFileSync('ip', ['netns', 'exec', NS, 'ethtool', '-k', TAP], { encoding: 'utf8' });
    assert.match(features, /tcp-segmentation-offload: on/, 'the guest side offers TSO');

    const sender = spawn('ip', ['netns', 'exec', NS, 'python3', '-c', [
      'import socket',
      `s = socket.create_connection(("fd00:77::2", 5001), timeout=20)`,
      `data = bytes((i * 7 + i // 251) % 256 for i in range(${BYTES}))`,
      's.sendall(data)',
      's.shutdown(socket.SHUT_WR)',
      's.recv(1)',
    ].join('\n')], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    sender.stderr.on('data', (d: Buffer) => (stderr += d.toString()));

    const expected = Buffer.from(Array.from({ length: BYTES }, (_, i) => (i * 7 + Math.floor(i / 251)) % 256));
    const received = Buffer.alloc(BYTES);
    let isn = -1;
    let acked = 0; // bytes received in order
    let frames = 0;
    let largest = 0;
    let badChecksum = 0;
    let finished = false;
    const rx = new Batch();
    const tx = new Batch();
    const idx = Int32Array.from({ length: BATCH_MAX }, (_, k) => k);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no end of stream after 20 s: ${acked} of ${BYTES} bytes; ${stderr}`)), 20_000);
      tap.onReadable(() => {
        rx.reset();
        tx.reset();
        tap.read(rx, 0, 0);
        let sport = 0;
        let fin = false;
        for (let i = 0; i < rx.count; i++) {
          const f = Buffer.from(rx.view(i));
          if (f.readUInt16BE(12) !== 0x86dd || f[20] !== PROTO_TCP) continue;
          frames++;
          largest = Math.max(largest, f.length - ETH_HLEN);
          if (!tcpChecksumOk(f)) badChecksum++;
          sport = f.readUInt16BE(54);
          const seq = f.readUInt32BE(58);
          const flags = f[67];
          const data = f.subarray(54 + (f[66] >> 4) * 4);
          if (flags & 0x02) {
            isn = seq;
            segment(tx, 5001, sport, 1000, seq + 1, 0x12, MTU - 60); // SYN-ACK
            continue;
          }
          const off = (seq - isn - 1) >>> 0;
          if (data.length > 0 && off === acked && off + data.length <= BYTES) {
            data.copy(received, off);
            acked += data.length;
          }
          if (flags & 0x01) fin = true;
        }
        if (isn >= 0 && sport !== 0 && (acked > 0 || fin)) segment(tx, 5001, sport, 1001, isn + 1 + acked + (fin && acked === BYTES ? 1 : 0), fin && acked === BYTES ? 0x11 : 0x10);
        if (tx.count > 0) tap.write(tx, idx, tx.count);
        if (fin && acked === BYTES && !finished) {
          finished = true;
          clearTimeout(timer);
          resolve();
        }
      });
    });
    assert.ok(received.equals(expected), 'the stream arrived unchanged');
    assert.is(badChecksum, 0, 'every segment has a correct TCP checksum');
    assert.ok(largest <= MTU, `largest IPv6 packet ${largest} fits the MTU ${MTU}`);
    assert.ok(tap.rxKernelFrames < frames, `the kernel sent super-frames: ${tap.rxKernelFrames} reads made ${frames} wire frames`);
    assert.is(tap.rxMalformed + tap.rxTooBig, 0);
    sender.kill();
  } finally {
    tap.close();
    cleanup();
  }
});

const NS2 = `nvi-tg2-${process.pid}`;
const BEYOND = parseIpv6Address('fd00:78::2');

/** A UDP datagram from the peer (fd00:77::2) to `dst`, port 5300, its payload `payload`. */
function datagram(b: Batch, dst: Buffer, payload: Buffer): void {
  b.push(udpFrame({ dstMac: GUEST_MAC, srcMac: PEER_MAC, src: PEER, dst, sport: 40002, dport: 5300, payload }), 66, 0, 0);
}

/** A UDP socket on `addr`:5300 in `ns` that prints the hex of every datagram it gets (one per line) after a quiet second. */
function udpSink(ns: string, addr: string): { lines: () => Promise<string[]> } {
  const p = spawn('ip', ['netns', 'exec', ns, 'python3', '-c', [
    'import socket',
    's = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)',
    `s.bind(("${addr}", 5300)); s.settimeout(1.5)`,
    'got = []',
    'try:',
    '    while True: got.append(s.recv(65536).hex())',
    'except socket.timeout: pass',
    'print("\\n".join(got), flush=True)',
  ].join('\n')], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const done = new Promise<string[]>((r) => p.once('exit', () => r(out.split('\n').filter((l) => l !== ''))));
  return { lines: () => done };
}

function udp6InCsumErrors(ns: string): number {
  const text = execFileSync('ip', ['netns', 'exec', ns, 'cat', '/proc/net/snmp6'], { encoding: 'utf8' });
  return Number(/^Udp6InCsumErrors\s+(\d+)/m.exec(text)?.[1] ?? NaN);
}

test('runs of UDP datagrams written as super-frames reach the guest as the same datagrams, and their checksums verify where the kernel forwards them', async () => {
  const tap = guest();
  try {
    assert.ok(tap.uso, 'this kernel takes UDP super-frames on a TAP (Linux >= 6.2)');
    // Beyond the guest: a second namespace over a veth without checksum or segmentation
    // offload, so the guest's kernel cuts the super-frame and computes every checksum itself,
    // and the far side checks them.
    ip('netns', 'add', NS2);
    ip('-n', NS, 'link', 'add', 'nvi-fw0', 'type', 'veth', 'peer', 'name', 'nvi-fw1', 'netns', NS2);
    execFileSync('ip', ['netns', 'exec', NS, 'ethtool', '-K', 'nvi-fw0', 'tx', 'off', 'gso', 'off', 'tso', 'off'], { stdio: 'ignore' });
    execFileSync('ip', ['netns', 'exec', NS, 'sysctl', '-qw', 'net.ipv6.conf.all.forwarding=1']);
    ip('-n', NS, '-6', 'addr', 'add', 'fd00:78::1/64', 'dev', 'nvi-fw0', 'nodad');
    ip('-n', NS, 'link', 'set', 'nvi-fw0', 'up');
    ip('-n', NS2, '-6', 'addr', 'add', 'fd00:78::2/64', 'dev', 'nvi-fw1', 'nodad');
    ip('-n', NS2, 'link', 'set', 'nvi-fw1', 'up');
    ip('-n', NS2, 'link', 'set', 'lo', 'up');
    ip('-n', NS2, '-6', 'route', 'add', 'fd00:77::/64', 'via', 'fd00:78::1');
    const farMac = (JSON.parse(execFileSync('ip', ['-n', NS2, '-j', 'link', 'show', 'nvi-fw1'], { encoding: 'utf8' })) as { address: string }[])[0].address;
    ip('-n', NS, '-6', 'neigh', 'add', 'fd00:78::2', 'lladdr', farMac, 'dev', 'nvi-fw0', 'nud', 'permanent'); // no datagram waits for ND
    const local = udpSink(NS, 'fd00:77::1');
    const far = udpSink(NS2, 'fd00:78::2');
    await new Promise((r) => setTimeout(r, 400));
    const csumBefore = udp6InCsumErrors(NS2);
    const payloads = Array.from({ length: 100 }, (_, k) => Buffer.alloc(k % 50 === 49 ? 17 : 64, k)); // two runs each, a short one ending each
    const idx = Int32Array.from({ length: BATCH_MAX }, (_, k) => k);
    const before = rxPackets();
    for (const dst of [GUEST, BEYOND]) {
      const b = new Batch();
      for (const p of payloads) datagram(b, dst, p);
      assert.is(tap.write(b, idx, b.count), payloads.length);
    }
    const frames = rxPackets() - before;
    const want = payloads.map((p) => p.toString('hex'));
    assert.equal(await local.lines(), want, 'the guest got every datagram, unchanged, in order');
    assert.equal(await far.lines(), want, 'forwarded on: every datagram, unchanged, in order');
    assert.is(udp6InCsumErrors(NS2) - csumBefore, 0, 'no checksum error where they were checked');
    assert.ok(frames <= 8, `the TAP took ${frames} frames for ${2 * payloads.length} datagrams`);
  } finally {
    tap.close();
    execFileSync('ip', ['netns', 'delete', NS2], { stdio: 'ignore' });
    cleanup();
  }
});

test('with offloadUdp off, each UDP datagram is its own frame and arrives the same', async () => {
  const tap = guest(false);
  try {
    assert.not.ok(tap.uso);
    const local = udpSink(NS, 'fd00:77::1');
    await new Promise((r) => setTimeout(r, 400));
    const payloads = Array.from({ length: 30 }, (_, k) => Buffer.alloc(64, k));
    const b = new Batch();
    for (const p of payloads) datagram(b, GUEST, p);
    const before = rxPackets();
    assert.is(tap.write(b, Int32Array.from({ length: BATCH_MAX }, (_, k) => k), b.count), payloads.length);
    assert.is(rxPackets() - before, payloads.length, 'one frame per datagram');
    assert.equal(await local.lines(), payloads.map((p) => p.toString('hex')));
  } finally {
    tap.close();
    cleanup();
  }
});

/** Frame `f` is IPv6/UDP to port `port`. */
function udpTo(f: Buffer, port: number): boolean {
  return f.readUInt16BE(12) === 0x86dd && f[20] === PROTO_UDP && f.readUInt16BE(56) === port;
}

/** Run `lines` in python in the guest, after `s` is made a UDP/IPv6 socket. */
function fromGuest(lines: string[]): void {
  execFileSync('ip', ['netns', 'exec', NS, 'python3', '-c', ['import socket', 's = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)', ...lines].join('\n')]);
}

test('a guest\'s UDP super-frame (UDP_SEGMENT) is read as its datagrams with valid checksums; without offloadUdp the kernel cuts it', async () => {
  const payload = Buffer.from(Array.from({ length: 1000 }, (_, i) => (i * 7 + 3) & 0xff));
  for (const offloadUdp of [true, false]) {
    const tap = guest(offloadUdp);
    try {
      const rx = new Batch();
      const got: Buffer[] = [];
      let others = 0;
      const kernelBefore = tap.rxKernelFrames;
      const done = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`offloadUdp ${offloadUdp}: ${got.length} datagrams read`)), 5000);
        tap.onReadable(() => {
          rx.reset();
          tap.read(rx, 0, 0);
          for (let i = 0; i < rx.count; i++) {
            const f = Buffer.from(rx.view(i));
            if (udpTo(f, 5301)) got.push(f);
            else others++;
          }
          if (got.length >= 4) {
            clearTimeout(timer);
            resolve();
          }
        });
      });
      fromGuest([
        's.setsockopt(17, 103, 300)  # SOL_UDP, UDP_SEGMENT: datagrams of 300 bytes',
        `s.sendto(bytes.fromhex("${payload.toString('hex')}"), ("fd00:77::2", 5301))`,
      ]);
      await done;
      assert.equal(got.map((f) => f.length), [362, 362, 362, 162], `offloadUdp ${offloadUdp}: 300 + 300 + 300 + 100`);
      for (const f of got) {
        const l4 = f.readUInt16BE(58);
        assert.is(f.readUInt16BE(18), l4, 'IPv6 and UDP lengths agree');
        assert.is(pseudoHeaderChecksum(f, ETH_HLEN, 54, l4, PROTO_UDP), 0, 'a complete, valid checksum');
      }
      assert.ok(Buffer.concat(got.map((f) => f.subarray(62))).equals(payload), 'the payload, in order');
      const kernelFrames = tap.rxKernelFrames - kernelBefore - others;
      assert.is(kernelFrames, offloadUdp ? 1 : 4, `offloadUdp ${offloadUdp}: frames the kernel handed over for the send`);
    } finally {
      tap.close();
      cleanup();
    }
  }
});

test('a super-frame read when the batch had no room for its datagrams is handed over in the same turn, not at the next frame', async () => {
  const tap = guest();
  try {
    const rx = new Batch();
    // The guest's own frames (MLD reports, neighbour discovery) come in the first second or
    // two after its link comes up: let them pass, so the queue holds only the test's frames.
    let last = Date.now();
    tap.onReadable(() => {
      rx.reset();
      tap.read(rx, 0, 0);
      last = Date.now();
    });
    for (const end = Date.now() + 6000; Date.now() - last < 1200 && Date.now() < end;) await new Promise((r) => setTimeout(r, 100));
    const got: number[] = [];
    let calls = 0;
    let pendingAfterFirst = false;
    let turnOver = false;
    let laterTurn = false;
    const done = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${got.length} of 5 datagrams read in ${calls} calls`)), 3000);
      tap.onReadable(() => {
        rx.reset();
        if (calls++ === 0) {
          // Room for 3 frames: the lone datagram takes one, and the super-frame's 4 datagrams
          // do not fit the 2 left, so it is read from the kernel but waits.
          rx.count = BATCH_MAX - 3;
          setImmediate(() => (turnOver = true));
        } else if (turnOver) {
          laterTurn = true;
        }
        const first = rx.count;
        tap.read(rx, 0, 0);
        if (calls === 1) pendingAfterFirst = tap.pending;
        for (let i = first; i < rx.count; i++) {
          const f = Buffer.from(rx.view(i));
          if (udpTo(f, 5302)) got.push(f.length);
        }
        if (got.length >= 5) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    // Both sends queue before the event loop turns: one readiness event for the two.
    fromGuest([
      's.sendto(bytes(100), ("fd00:77::2", 5302))',
      's.setsockopt(17, 103, 300)  # SOL_UDP, UDP_SEGMENT: datagrams of 300 bytes',
      's.sendto(bytes(1000), ("fd00:77::2", 5302))',
    ]);
    await done;
    assert.equal(got, [162, 362, 362, 362, 162], 'the lone datagram, then the super-frame\'s four, in order');
    assert.ok(pendingAfterFirst, 'the first read kept the super-frame for later');
    assert.is(laterTurn, false, 'the super-frame was handed over before the event loop turned (no frame came to wake it)');
    assert.is(tap.pending, false, 'nothing left over at the end');
    assert.is(tap.rxTooBig, 0, 'nothing refused');
  } finally {
    tap.close();
    cleanup();
  }
});

test.run();
