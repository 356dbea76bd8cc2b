// The key exchange's sockets of a host of several data-path threads (src/native/kx_sockets.c):
// the kernel gives each datagram to the socket kxWorker() names (workers/kx-route.ts), for
// INITs, ANSWERs, NOTIFYs, short and unknown messages alike; a worker's key exchange on its
// socket (worker-kx.ts); and what cannot be opened says why. Real sockets on 127.0.0.1.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createSocket, type Socket } from 'node:dgram';
import { KX_ANSWER, KX_INIT, KX_NOTIFY } from '../src/esp/handshake.js';
import { loadNative } from '../src/native/addon.js';
import { kxWorker } from '../src/switch/workers/kx-route.js';
import { WorkerKx } from '../src/switch/workers/worker-kx.js';
import { UdpTransport } from '../src/switch/transports.js';
import { rng } from './rng.js';

const native = loadNative();
const LOOPBACK = 0x7f000001;

function bound(socket: Socket, how: { port?: number; fd?: number; address?: string }): Promise<Socket> {
  return new Promise((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(how, () => {
      socket.off('error', reject);
      resolve(socket);
    });
  });
}

/** A port free on 127.0.0.1 now. */
async function freePort(): Promise<number> {
  const s = await bound(createSocket('udp4'), { port: 0, address: '127.0.0.1' });
  const port = s.address().port;
  s.close();
  return port;
}

/** A message of a random kind: INIT or ANSWER (long, short, any id), NOTIFY, unknown, empty. */
function message(int: (n: number) => number, k: number): Buffer {
  const kind = int(6);
  const len = kind === 5 ? 0 : [120, 60, 52, 51, 5, 4, 3][int(7)];
  const m = Buffer.from(Array.from({ length: len }, () => int(256)));
  if (len > 0) m[0] = [KX_INIT, KX_ANSWER, KX_NOTIFY, KX_INIT, KX_ANSWER, 9][kind];
  if (m[0] === KX_ANSWER && len > 4 && int(2) === 0) m[4] = int(5); // often a worker's index, sometimes not
  if (len >= 8) m.writeUInt32BE(k, len - 4 >= 52 ? 56 : len - 4); // unique, away from the bytes that steer (when it can be)
  return m;
}

for (const count of [2, 3, 4]) {
  test(`${count} sockets: the kernel gives each of 400 random messages to the socket kxWorker() names`, async () => {
    const port = await freePort();
    const fds = native.kxSocketsOpen(LOOPBACK, port, count);
    assert.is(fds.length, count);
    const got = new Map<string, number[]>();
    const sockets = await Promise.all(fds.map((fd, index) => bound(createSocket('udp4'), { fd }).then((s) => {
      s.on('message', (m) => {
        const key = m.toString('hex');
        got.set(key, [...(got.get(key) ?? []), index]);
      });
      return s;
    })));
    const sender = await bound(createSocket('udp4'), { port: 0, address: '127.0.0.1' });
    try {
      const r = rng(count);
      const int = (n: number): number => Math.floor(r() * n);
      const sent: Buffer[] = [];
      for (let k = 0; k < 400; k++) {
        const m = message(int, k);
        if (sent.some((x) => x.equals(m))) continue; // only the empty message repeats
        sent.push(m);
        await new Promise<void>((resolve, reject) => sender.send(m, port, '127.0.0.1', (e) => (e ? reject(e) : resolve())));
        // One at a time: a burst of hundreds would overflow a socket's receive buffer.
        for (let t = 0; t < 200 && !got.has(m.toString('hex')); t++) await new Promise((r) => setTimeout(r, 1));
      }
      await new Promise((r) => setTimeout(r, 20)); // a second copy, if any, would show now
      for (const m of sent) {
        assert.equal(got.get(m.toString('hex')), [kxWorker(m, count)], `type ${m[0]}, ${m.length} B, ${m.subarray(0, 8).toString('hex')}`);
      }
      const kinds = new Set(sent.map((m) => kxWorker(m, count)));
      assert.is(kinds.size, count, 'every socket got messages');
    } finally {
      sender.close();
      for (const s of sockets) s.close();
    }
  });
}

test('WorkerKx on two sockets of a group: each sends from the group\'s port (a key exchange takes nothing else); an INIT reaches its worker alone; a NOTIFY reaches worker 0, which shares it, and worker 1 takes it', async () => {
  const port = await freePort();
  const fds = native.kxSocketsOpen(LOOPBACK, port, 2);
  const got: [number, string][] = [];
  const shared: Buffer[] = [];
  const workers = [0, 1].map((k) => {
    const w = new WorkerKx(UdpTransport.pending(port), (msg) => shared.push(Buffer.from(msg)));
    w.onMessage((msg) => got.push([k, msg.toString('hex')]));
    return w;
  });
  await Promise.all(workers.map((w, k) => w.adopt(fds[k])));
  try {
    const init = Buffer.alloc(60);
    init[0] = KX_INIT;
    init.writeUInt32BE(7, 48); // the destination's last word 7: worker 1 of 2
    const notify = Buffer.from([KX_NOTIFY, 1, 2, 3, 4, 5, 6, 7]);
    workers[0].send(init, LOOPBACK); // to this host's own group, from its port: the receiver takes it
    for (let t = 0; t < 200 && got.length < 1; t++) await new Promise((r) => setTimeout(r, 5));
    workers[1].send(notify, LOOPBACK);
    for (let t = 0; t < 200 && got.length < 2; t++) await new Promise((r) => setTimeout(r, 5));
    assert.equal(got, [[1, init.toString('hex')], [0, notify.toString('hex')]]);
    assert.equal(shared.map((m) => m.toString('hex')), [notify.toString('hex')], 'worker 0 shared the NOTIFY, and only it');
    workers[1].shared(shared[0], LOOPBACK);
    assert.equal(got[2], [1, notify.toString('hex')], 'worker 1 took the shared NOTIFY');
    assert.is(workers[0].fd, fds[0]);
  } finally {
    for (const w of workers) w.close();
  }
});

test('a port another socket holds, or another group (a second switch of the host), or a count out of range, is refused with the step and the reason', async () => {
  const port = await freePort();
  const holder = await bound(createSocket('udp4'), { port, address: '127.0.0.1' });
  try {
    assert.throws(() => native.kxSocketsOpen(LOOPBACK, port, 2), /bind.*(EADDRINUSE|in use)/i);
  } finally {
    holder.close();
  }
  // A second group on a port a group holds (a second switch of the host) is refused, and the first one's steering stays.
  const first = native.kxSocketsOpen(LOOPBACK, port, 2);
  const sockets = await Promise.all(first.map((fd) => bound(createSocket('udp4'), { fd })));
  try {
    assert.throws(() => native.kxSocketsOpen(LOOPBACK, port, 3), /the port must be free.*(EADDRINUSE|in use)/i);
    const got: number[] = [];
    sockets.forEach((s, k) => s.on('message', () => got.push(k)));
    const init = Buffer.alloc(60);
    init[0] = KX_INIT;
    init.writeUInt32BE(4, 48); // the destination's last word 4: worker 0 of 2 (of 3 it would be worker 1)
    const sender = await bound(createSocket('udp4'), { port: 0, address: '127.0.0.1' });
    sender.send(init, port, '127.0.0.1');
    for (let t = 0; t < 200 && got.length === 0; t++) await new Promise((r) => setTimeout(r, 5));
    sender.close();
    assert.equal(got, [0], "the group's own program still steers: 4 mod 2");
  } finally {
    for (const s of sockets) s.close();
  }
  assert.throws(() => native.kxSocketsOpen(LOOPBACK, port, 1), /2-256 sockets/);
  assert.throws(() => native.kxSocketsOpen(LOOPBACK, 0, 2), /port 1-65535/);
  assert.throws(() => native.kxSocketsOpen(0x0a0b0c0d, port, 2), /bind.*(EADDRNOTAVAIL|assign)/i);
});

test.run();
