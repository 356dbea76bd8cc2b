// The native addon's event-loop watcher (uv_poll) and loader, on a FIFO: callbacks once per
// readiness event while data waits, none after close, an unref'd watcher lets the process
// exit, busy polling keeps the loop turning for its window after a readiness event and no
// longer (each thread its own), wake times count a callback's read and first write, and a
// missing addon says how to build it.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, constants, copyFileSync, mkdirSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { POLL_READABLE, TX_STATUS_LEN, loadNative } from '../src/native/addon.js';
import { wakeTimes } from '../src/switch/wake-times.js';

const native = loadNative();
const dir = mkdtempSync(join(tmpdir(), 'nvi-native-'));
let fifoCount = 0;

/** A FIFO opened read-write and non-blocking: both ends in one fd, never blocks on open. */
function fifo(): number {
  const path = join(dir, `f${fifoCount++}`);
  execFileSync('mkfifo', [path]);
  return openSync(path, constants.O_RDWR | constants.O_NONBLOCK);
}

function drain(fd: number): void {
  const b = Buffer.alloc(4096);
  try {
    while (readSync(fd, b, 0, b.length, null) > 0);
  } catch {
    // EAGAIN: empty
  }
}

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test('a watcher calls back on every loop turn while data waits, and stops once it is drained', async () => {
  const fd = fifo();
  let calls = 0;
  const w = native.pollCreate(fd, (status, events) => {
    assert.is(status, 0);
    assert.is(events & POLL_READABLE, POLL_READABLE);
    calls++;
  });
  native.pollStart(w, POLL_READABLE);
  await sleep(20);
  assert.is(calls, 0, 'no data, no callback');
  writeSync(fd, 'x');
  await sleep(20);
  assert.ok(calls >= 2, `level-triggered: called ${calls} times while the byte waits`);
  drain(fd);
  await turn();
  const after = calls;
  await sleep(20);
  assert.is(calls, after, 'no callback once drained');
  native.pollClose(w);
  closeSync(fd);
});

test('no callback runs after close, even when close is called from inside the callback', async () => {
  const fd = fifo();
  let calls = 0;
  const w = native.pollCreate(fd, () => {
    calls++;
    native.pollClose(w);
    native.pollClose(w); // idempotent
  });
  native.pollStart(w, POLL_READABLE);
  writeSync(fd, 'x');
  await sleep(30);
  assert.is(calls, 1);
  assert.throws(() => native.pollStart(w, POLL_READABLE), /closed/);
  closeSync(fd);
});

test('a stopped watcher is silent and can be started again', async () => {
  const fd = fifo();
  let calls = 0;
  const w = native.pollCreate(fd, () => {
    calls++;
    drain(fd);
  });
  native.pollStart(w, POLL_READABLE);
  native.pollStop(w);
  writeSync(fd, 'x');
  await sleep(20);
  assert.is(calls, 0);
  native.pollStart(w, POLL_READABLE);
  await sleep(20);
  assert.is(calls, 1);
  native.pollClose(w);
  closeSync(fd);
});

test('an exception thrown by the callback reaches uncaughtException and the loop goes on', async () => {
  const fd = fifo();
  const seen: unknown[] = [];
  const handler = (e: unknown) => seen.push(e);
  process.on('uncaughtException', handler);
  const w = native.pollCreate(fd, () => {
    drain(fd);
    throw new Error('from the callback');
  });
  native.pollStart(w, POLL_READABLE);
  writeSync(fd, 'x');
  await sleep(30);
  process.off('uncaughtException', handler);
  native.pollClose(w);
  closeSync(fd);
  assert.is(seen.length, 1);
  assert.match((seen[0] as Error).message, 'from the callback');
});

test('the process exits while an unref\'d watcher is started, and does not while a ref\'d one is', () => {
  const nativeJs = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'native', 'addon.js');
  const script = (unref: boolean) => `
    import { openSync, constants } from 'node:fs';
    const { loadNative } = await import(${JSON.stringify(nativeJs)});
    const n = loadNative();
    const fd = openSync(${JSON.stringify(join(dir, 'exit-fifo'))}, constants.O_RDWR | constants.O_NONBLOCK);
    const w = n.pollCreate(fd, () => {});
    n.pollStart(w, 1);
    ${unref ? 'n.pollRef(w, false);' : ''}
  `;
  execFileSync('mkfifo', [join(dir, 'exit-fifo')]);
  const free = spawnSync(process.execPath, ['--input-type=module', '-e', script(true)], { timeout: 5000 });
  assert.is(free.status, 0, `unref'd: ${free.stderr}`);
  const held = spawnSync(process.execPath, ['--input-type=module', '-e', script(false)], { timeout: 1000 });
  assert.is(held.signal, 'SIGTERM', 'a ref\'d watcher keeps the process alive until killed');
});

test('a watcher on an fd that is not open is refused with EBADF', () => {
  assert.throws(() => native.pollCreate(1 << 20, () => {}), (e: Error & { errno?: number }) => e.errno === 9);
});

test('without the built addon, loading says to run npm install', () => {
  // The loader copied to a directory with no binding.gyp above it finds no addon.
  const here = dirname(fileURLToPath(import.meta.url));
  const root = mkdtempSync(join(tmpdir(), 'nvi-noaddon-'));
  try {
    for (const f of ['src/native/addon.js', 'src/base/errors.js']) {
      mkdirSync(dirname(join(root, f)), { recursive: true });
      copyFileSync(join(here, '..', f), join(root, f));
    }
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', `
      const { loadNative } = await import(${JSON.stringify(join(root, 'src/native/addon.js'))});
      try { loadNative(); } catch (e) { console.log(e.code + ' ' + e.message); }
    `], { encoding: 'utf8' });
    assert.match(r.stdout, /^NVI_ERR_NATIVE_MISSING .*run npm install \(builds the native addon\)/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});


test('wake times: a callback that reads and writes is one sample of each; one that only reads, and a write outside any callback, are none', async () => {
  const bounds = native.wakeTimeBounds();
  assert.ok(bounds.length > 10 && bounds.every((b, k) => b > 0 && (k === 0 || b > bounds[k - 1]!)), `ascending bounds: ${bounds}`);
  const counts = (): [number, number, number] => {
    const t = wakeTimes(native);
    return [t.entry.count, t.pipeline.count, t.pipeline.sum];
  };
  const inFd = fifo();
  const outFd = fifo();
  const buf = Buffer.alloc(4 * 2048);
  const lens = new Int32Array(4);
  const start = Int32Array.of(0);
  const idx = Int32Array.of(0);
  const status = new Int32Array(TX_STATUS_LEN);
  let echo = true;
  const w = native.pollCreate(inFd, () => {
    const n = native.tapRead(inFd, buf, 0, 2048, 2048, 4, lens, 0);
    if (echo && n > 0) native.tapWrite(outFd, buf, start, Int32Array.of(lens[0]!), idx, 1, 0, status);
  });
  native.pollStart(w, POLL_READABLE);
  try {
    const [e0, p0, s0] = counts();
    writeSync(inFd, 'frame');
    await sleep(20);
    const [e1, p1, s1] = counts();
    assert.is(e1 - e0, 1, 'one wake, one entry');
    assert.is(p1 - p0, 1, 'and one pipeline');
    assert.ok(s1 - s0 > 0 && s1 - s0 < 1, `its time: ${s1 - s0} s`);
    assert.is(readSync(outFd, Buffer.alloc(64), 0, 64, null), 5, 'the frame went out');
    echo = false;
    writeSync(inFd, 'frame');
    await sleep(20);
    native.tapWrite(outFd, buf, start, Int32Array.of(5), idx, 1, 0, status); // not in a callback
    assert.equal(counts().slice(0, 2), [e1, p1], 'a read with no write, a write with no wake: no sample');
  } finally {
    native.pollClose(w);
    closeSync(inFd);
    closeSync(outFd);
  }
});

test('busy polling: after a readiness event or a touch the loop turns without sleeping for the window, then sleeps again', async () => {
  const fd = fifo();
  const w = native.pollCreate(fd, () => drain(fd));
  native.pollStart(w, POLL_READABLE);
  try {
    native.busyPoll(0);
    const off = native.busyPollTurns();
    writeSync(fd, 'x');
    await sleep(30);
    assert.is(native.busyPollTurns(), off, 'off: the loop sleeps as soon as it is idle');

    native.busyPoll(20_000);
    const before = native.busyPollTurns();
    await sleep(30);
    assert.is(native.busyPollTurns(), before, 'no readiness event, no busy polling');
    writeSync(fd, 'x');
    await sleep(60); // the 20 ms window, and then some
    const spun = native.busyPollTurns() - before;
    assert.ok(spun > 100, `the loop turned ${spun} times in the window`);
    const after = native.busyPollTurns();
    await sleep(40);
    assert.is(native.busyPollTurns(), after, 'the window is over: the loop sleeps again');

    native.busyPollTouch(); // a key-exchange message: as a readiness event
    await sleep(60);
    assert.ok(native.busyPollTurns() - after > 100, 'a touch opens the window as well');
    native.busyPoll(0);
    const still = native.busyPollTurns();
    native.busyPollTouch();
    await sleep(30);
    assert.is(native.busyPollTurns(), still, 'off: a touch does nothing');
  } finally {
    native.busyPoll(0);
    native.pollClose(w);
    closeSync(fd);
  }
});

test('busy polling is per thread: a worker thread spins its own loop with its own window and count, the main thread sleeps, and the worker ends cleanly', async () => {
  const path = join(dir, 'worker-fifo');
  execFileSync('mkfifo', [path]);
  const addon = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'native', 'addon.js');
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    const { openSync, readSync, writeSync, closeSync, constants } = require('node:fs');
    (async () => {
      const { loadNative } = await import(workerData.addon);
      const n = loadNative();
      const fd = openSync(workerData.path, constants.O_RDWR | constants.O_NONBLOCK);
      const start = n.busyPollTurns();
      n.busyPoll(20000);
      const w = n.pollCreate(fd, () => { try { readSync(fd, Buffer.alloc(64)); } catch {} });
      n.pollStart(w, 1);
      writeSync(fd, 'x');
      setTimeout(() => {
        const spun = n.busyPollTurns() - start;
        n.pollClose(w);
        closeSync(fd);
        parentPort.postMessage({ start, spun });
      }, 60);
    })();
  `;
  native.busyPoll(0);
  const mainBefore = native.busyPollTurns();
  const { Worker } = await import('node:worker_threads');
  const worker = new Worker(code, { eval: true, workerData: { addon, path } });
  const got = await new Promise<{ start: number; spun: number }>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  const code2 = await new Promise<number>((resolve) => worker.once('exit', resolve));
  assert.is(got.start, 0, "a new thread's count starts at 0: not the main thread's");
  assert.ok(got.spun > 100, `the worker's loop turned ${got.spun} times in its window`);
  assert.is(native.busyPollTurns(), mainBefore, "the main thread's loop did not spin");
  assert.is(code2, 0, 'the worker ended, its busy polling freed with it');

  // The main thread's own window still works after the worker's went.
  const fd = fifo();
  const w = native.pollCreate(fd, () => drain(fd));
  native.pollStart(w, POLL_READABLE);
  try {
    native.busyPoll(20_000);
    writeSync(fd, 'x');
    await sleep(60);
    assert.ok(native.busyPollTurns() - mainBefore > 100, 'the main thread busy-polls on its own window');
  } finally {
    native.busyPoll(0);
    native.pollClose(w);
    closeSync(fd);
  }
});

test('busy polling: a window over 10 s is refused, and a busy-polling loop does not keep the process alive', () => {
  assert.throws(() => native.busyPoll(10_000_001), /at most 10000000/);
  assert.throws(() => native.busyPoll(-1), /at most 10000000/);
  const nativeJs = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'native', 'addon.js');
  execFileSync('mkfifo', [join(dir, 'busy-fifo')]);
  const script = `
    import { openSync, writeSync, constants } from 'node:fs';
    const { loadNative } = await import(${JSON.stringify(nativeJs)});
    const n = loadNative();
    const fd = openSync(${JSON.stringify(join(dir, 'busy-fifo'))}, constants.O_RDWR | constants.O_NONBLOCK);
    n.busyPoll(10_000_000);
    const w = n.pollCreate(fd, () => { n.pollClose(w); });
    n.pollStart(w, 1);
    writeSync(fd, 'x');
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { timeout: 5000 });
  assert.is(r.status, 0, `exits within its 10 s window: ${r.signal ?? ''} ${r.stderr}`);
});

test.after(() => rmSync(dir, { recursive: true, force: true }));

test.run();
