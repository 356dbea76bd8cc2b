// The offloading TAP read (tapReadGso, src/native/tap.c) on a FIFO standing in for the tun
// fd: what it does with records a tun device would never hand over. A record shorter than
// the 10-byte virtio-net header is refused and counted as malformed, the end of the stream
// ends the read, and a leftover length the read could never have kept is refused as a
// broken invariant; none of them puts a frame in the batch.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RX_COUNTS_LEN, RX_FRAMES, VNET_HDR_LEN, loadNative } from '../src/native/addon.js';

const native = loadNative();
const dir = mkdtempSync(join(tmpdir(), 'nvi-readgso-'));
let fifoCount = 0;

const SLOTS = 4;
const STRIDE = 2048;
const CAP = 1600;

function fifoPath(): string {
  const path = join(dir, `f${fifoCount++}`);
  execFileSync('mkfifo', [path]);
  return path;
}

/** What one call to tapReadGso needs, with the batch slots and lengths filled with a marker. */
function reader() {
  const r = {
    scratch: Buffer.alloc(VNET_HDR_LEN + 65536),
    state: new Int32Array(1),
    buf: Buffer.alloc(SLOTS * STRIDE, 0xee),
    lens: new Int32Array(SLOTS).fill(-1),
    counts: new Int32Array(RX_COUNTS_LEN),
    read(fd: number): number {
      return native.tapReadGso(fd, r.scratch, r.state, r.buf, 0, STRIDE, CAP, SLOTS, r.lens, r.counts);
    },
  };
  return r;
}

/** A plain frame behind a zero virtio-net header (no offload): what the tun fd hands over. */
function record(frameLen: number): Buffer {
  const b = Buffer.alloc(VNET_HDR_LEN + frameLen);
  for (let k = 0; k < frameLen; k++) b[VNET_HDR_LEN + k] = k & 0xff;
  return b;
}

test('a record shorter than the virtio-net header is counted as malformed and no frame enters the batch', () => {
  const fd = openSync(fifoPath(), constants.O_RDWR | constants.O_NONBLOCK);
  const r = reader();
  for (let len = 1; len < VNET_HDR_LEN; len++) {
    writeSync(fd, Buffer.alloc(len, 0xab));
    assert.is(r.read(fd), 0, `${len} bytes: no frame`);
    assert.equal(Array.from(r.counts), [0, len, 0], `${len} bytes: counted as malformed once`); // [frames, malformed, too big]
    assert.is(r.state[0], 0, `${len} bytes: nothing kept for the next call`);
  }
  assert.equal(Array.from(r.lens), [-1, -1, -1, -1], 'no length written');
  assert.ok(r.buf.equals(Buffer.alloc(SLOTS * STRIDE, 0xee)), 'no slot written');
  // The reader goes on: a well-formed record after them is read as one frame.
  writeSync(fd, record(60));
  assert.is(r.read(fd), 1);
  assert.is(r.counts[RX_FRAMES], 1);
  assert.is(r.lens[0], 60);
  assert.ok(r.buf.subarray(0, 60).equals(record(60).subarray(VNET_HDR_LEN)));
  closeSync(fd);
});

test('the end of the stream ends the read instead of reading nothing forever', () => {
  // Run in a child with a time limit: a read loop that does not stop at end of file never returns.
  const addon = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'native', 'addon.js');
  const path = fifoPath();
  const script = `
    import { closeSync, constants, openSync, writeSync } from 'node:fs';
    const { loadNative } = await import(${JSON.stringify(addon)});
    const n = loadNative();
    const rd = openSync(${JSON.stringify(path)}, constants.O_RDONLY | constants.O_NONBLOCK);
    const wr = openSync(${JSON.stringify(path)}, constants.O_WRONLY | constants.O_NONBLOCK);
    writeSync(wr, Buffer.alloc(5, 0xab));
    closeSync(wr); // the last writer is gone: after the 5 bytes, read() returns 0
    const scratch = Buffer.alloc(${VNET_HDR_LEN} + 65536), state = new Int32Array(1);
    const buf = Buffer.alloc(${SLOTS * STRIDE}), lens = new Int32Array(${SLOTS}), counts = new Int32Array(${RX_COUNTS_LEN});
    const out = [];
    for (let call = 0; call < 2; call++) {
      const got = n.tapReadGso(rd, scratch, state, buf, 0, ${STRIDE}, ${CAP}, ${SLOTS}, lens, counts);
      out.push([got, ...counts]);
      counts.fill(0);
    }
    process.stdout.write(JSON.stringify(out));
  `;
  const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { timeout: 5000, encoding: 'utf8' });
  assert.is(child.signal, null, `the read did not return within 5 s (${child.signal})`);
  assert.is(child.status, 0, child.stderr);
  // [slots filled, frames, malformed, too big] per call: the short record once, then nothing.
  assert.equal(JSON.parse(child.stdout), [[0, 0, 1, 0], [0, 0, 0, 0]]);
});

test('a leftover length shorter than the virtio-net header is refused as a broken invariant', () => {
  // state[0] is written only by tapReadGso itself, with the length of a whole record kept for
  // the next call (>= VNET_HDR_LEN); anything in between 0 and that is a caller's bug.
  const fd = openSync(fifoPath(), constants.O_RDWR | constants.O_NONBLOCK);
  for (const left of [1, 5, VNET_HDR_LEN - 1]) {
    const r = reader();
    r.state[0] = left;
    assert.throws(() => r.read(fd), (e: unknown) => e instanceof RangeError && /state/.test(e.message), `state ${left}`);
    assert.equal(Array.from(r.counts), [0, 0, 0], `state ${left}: nothing counted`);
    assert.equal(Array.from(r.lens), [-1, -1, -1, -1], `state ${left}: no frame`);
  }
  closeSync(fd);
});

test.after(() => rmSync(dir, { recursive: true, force: true }));

test.run();
