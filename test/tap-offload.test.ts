// A TAP with offloads against the kernel's own TCP: the guest (a namespace) sends TSO
// super-frames and partial checksums; the switch's read makes them wire frames. The test
// plays a minimal TCP peer on the switch side (SYN-ACK, cumulative ACKs) so that a real
// connection carries 400 KB, and checks every frame it got.

import { execFileSync, spawn } from 'node:child_process';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Batch, BATCH_MAX } from '../src/dataplane/batch.js';
import { finishChecksum, onesSum } from '../src/dataplane/checksum.js';
import { ETH_HLEN, writeEthIpv6 } from '../src/dataplane/ethernet.js';
import { parseIpv6Address, PROTO_TCP } from '../src/dataplane/ipv6.js';
import { TapPort } from '../src/io/tap.js';

const NS = `nvi-tg-${process.pid}`;
const TAP = 'nvi-tso0';
const GUEST = parseIpv6Address('fd00:77::1');
const PEER = parseIpv6Address('fd00:77::2');
const GUEST_MAC = Buffer.from('020000000001', 'hex');
const PEER_MAC = Buffer.from('024e56490001', 'hex');
const MTU = 1446;
const BYTES = 400_000;

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

test('the kernel hands over TSO super-frames and the switch reads them as valid wire frames of one unchanged stream', async () => {
  cleanup();
  ip('netns', 'add', NS);
  const tap = TapPort.open(TAP, { netns: NS, mtu: MTU, mac: GUEST_MAC, offload: true });
  try {
    ip('-n', NS, 'link', 'set', 'lo', 'up');
    ip('-n', NS, '-6', 'addr', 'add', 'fd00:77::1/64', 'dev', TAP, 'nodad');
    ip('-n', NS, 'link', 'set', TAP, 'up');
    ip('-n', NS, '-6', 'neigh', 'add', 'fd00:77::2', 'lladdr', '02:4e:56:49:00:01', 'dev', TAP, 'nud', 'permanent');
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

test.run();
