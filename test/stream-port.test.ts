// StreamPort, QEMU's stream netdev framing (4-byte big-endian length, then the frame), over a
// real unix socket: a client here plays QEMU. Frames split across writes, many in one write,
// bad lengths, a QEMU that reconnects, a link with nobody behind it.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Batch, BATCH_MAX, MAX_PACKET } from '../src/dataplane/batch.js';
import { StreamPort } from '../src/io/stream-port.js';
import { atExit } from './at-exit.js';

const dir = mkdtempSync(join(tmpdir(), 'nvi-stream-'));
atExit(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

/** A frame of `len` bytes carrying sequence number `seq` at offset 14. */
function frame(seq: number, len = 60): Buffer {
  const f = Buffer.alloc(len, 0xab);
  f.writeUInt32BE(seq, 14);
  return f;
}

function framed(...frames: Buffer[]): Buffer {
  return Buffer.concat(frames.flatMap((f) => [Buffer.from([0, 0, f.length >> 8, f.length & 0xff]), f]));
}

const tick = (ms = 20): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await tick(5);
  assert.ok(cond(), 'timed out');
}

interface Rig {
  port: StreamPort;
  seqs: number[];
  events: string[];
  calls: number;
  qemu(): Promise<Socket>;
}

/** A listening port whose reader collects the sequence numbers of what it reads. */
function rig(): Rig {
  const events: string[] = [];
  const port = StreamPort.listen(join(dir, `p${n++}.sock`), { onEvent: (e) => events.push(e) });
  const r: Rig = {
    port,
    seqs: [],
    events,
    calls: 0,
    qemu: () => new Promise((res, rej) => {
      const s = connect(port.name, () => res(s));
      s.on('error', rej);
    }),
  };
  const b = new Batch();
  port.onReadable(() => {
    r.calls++;
    b.reset();
    const got = port.read(b, 3, 0);
    for (let i = 0; i < got; i++) {
      assert.is(b.port[i], 3);
      r.seqs.push(b.data.readUInt32BE(b.start[i] + 14));
    }
  });
  return r;
}

test('frames split anywhere across writes arrive whole and in order', async () => {
  const r = rig();
  const q = await r.qemu();
  const bytes = framed(...Array.from({ length: 20 }, (_, k) => frame(k, 60 + k * 50)));
  for (let at = 0; at < bytes.length; at += 7) {
    q.write(bytes.subarray(at, at + 7));
    await tick(1);
  }
  await until(() => r.seqs.length === 20);
  assert.equal(r.seqs, Array.from({ length: 20 }, (_, k) => k));
  q.destroy();
  r.port.close();
});

test('more frames than a batch in one write are read a batch at a time', async () => {
  const r = rig();
  const q = await r.qemu();
  q.write(framed(...Array.from({ length: 3 * BATCH_MAX + 5 }, (_, k) => frame(k))));
  await until(() => r.seqs.length === 3 * BATCH_MAX + 5);
  assert.equal(r.seqs, Array.from({ length: 3 * BATCH_MAX + 5 }, (_, k) => k));
  assert.ok(r.calls >= 4, `${r.calls} reads`);
  assert.is(r.port.rxFrames, 3 * BATCH_MAX + 5);
  q.destroy();
  r.port.close();
});

test('a frame shorter than an Ethernet header or longer than a slot is counted and skipped; the next one is read', async () => {
  const r = rig();
  const q = await r.qemu();
  q.write(framed(frame(1), Buffer.alloc(10), frame(2, MAX_PACKET + 1), frame(3)));
  await until(() => r.seqs.length === 2);
  assert.equal(r.seqs, [1, 3]);
  assert.is(r.port.rxMalformed, 1);
  assert.is(r.port.rxTooBig, 1);
  q.destroy();
  r.port.close();
});

test('a length no frame has drops the connection (counted), and a new connection works', async () => {
  const r = rig();
  const q = await r.qemu();
  q.write(Buffer.concat([framed(frame(1)), Buffer.from([0x7f, 0, 0, 0]), Buffer.alloc(100)]));
  await until(() => r.port.broken === 1 && !r.port.up);
  assert.equal(r.seqs, [1]);
  assert.ok(r.events.includes('port-stream-broken'));
  const q2 = await r.qemu();
  q2.write(framed(frame(2)));
  await until(() => r.seqs.length === 2);
  q.destroy();
  q2.destroy();
  r.port.close();
});

test('the switch writes length-prefixed frames; with nobody connected the link is down and writes nothing', async () => {
  const r = rig();
  const b = new Batch();
  const idx = Int32Array.from([0, 1, 2]);
  for (let k = 0; k < 3; k++) {
    const at = Batch.slot(k) + 64;
    frame(100 + k, 80 + k).copy(b.data, at);
    b.init(k, at, 80 + k, 0, 0);
  }
  b.count = 3;
  assert.is(r.port.up, false);
  assert.is(r.port.write(b, idx, 3), 0, 'down: refused');
  const q = await r.qemu();
  await until(() => r.port.up);
  let got = Buffer.alloc(0);
  q.on('data', (d: Buffer) => (got = Buffer.concat([got, d])));
  assert.is(r.port.write(b, idx, 3), 3);
  await until(() => got.length === 3 * 4 + 80 + 81 + 82);
  assert.equal(got, framed(frame(100, 80), frame(101, 81), frame(102, 82)));
  q.destroy();
  await until(() => !r.port.up);
  assert.equal(r.events, ['port-connected', 'port-disconnected']);
  r.port.close();
});

test('a QEMU that connects again replaces the one before', async () => {
  const r = rig();
  const q1 = await r.qemu();
  await until(() => r.port.up);
  const q2 = await r.qemu();
  let closed = false;
  q1.on('close', () => (closed = true));
  await until(() => closed);
  q2.write(framed(frame(7)));
  await until(() => r.seqs.length === 1);
  assert.is(r.port.connections, 2);
  assert.ok(r.events.includes('port-reconnected'));
  q2.destroy();
  r.port.close();
});

test.run();
