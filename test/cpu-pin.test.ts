// A data-path thread pinned to its host's CPUs (src/switch/cpu-pin.ts, src/native/affinity.c):
// the thread that asks is pinned and no other; thread i takes cpus[i mod length]; a CPU the
// process may not run on is a config error naming hosts.<name>.cpus. Each case runs in a
// worker thread of its own, so that the test runner's threads keep their CPUs.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { loadNative } from '../src/native/addon.js';

const CPUS = availableParallelism();
const PIN = new URL('../src/switch/cpu-pin.js', import.meta.url).href;

/** Run `body` (the text of an async function of `pinDataPath` and `threadCpus`) in a worker; its result. */
function inWorker(body: string): Promise<unknown> {
  const code = `
    import { parentPort } from 'node:worker_threads';
    import { readFileSync } from 'node:fs';
    import { pinDataPath, threadCpus } from ${JSON.stringify(PIN)};
    const allowed = () => /Cpus_allowed_list:\\s*(\\S+)/.exec(readFileSync('/proc/thread-self/status', 'utf8'))[1];
    try {
      parentPort.postMessage({ ok: await (${body})(pinDataPath, threadCpus, allowed) });
    } catch (e) {
      parentPort.postMessage({ error: e.message, code: e.code });
    }`;
  return new Promise((resolve, reject) => {
    const w = new Worker(new URL(`data:text/javascript,${encodeURIComponent(code)}`));
    w.once('message', resolve);
    w.once('error', reject);
  });
}

const mainAllowed = (): string => /Cpus_allowed_list:\s*(\S+)/.exec(readFileSync('/proc/self/status', 'utf8'))![1];

test('thread i of a host runs on cpus[i mod length], that thread alone', async () => {
  const before = mainAllowed();
  const last = CPUS - 1;
  const host = { name: 'h1', address: 0, addressText: '10.0.0.1', keyDir: '/nonexistent', cpus: [last, 0] };
  const r = (await inWorker(`async (pin, cpus, allowed) => [pin(${JSON.stringify(host)}, 2), cpus(), allowed(), pin(${JSON.stringify(host)}, 1), cpus()]`)) as { ok: unknown[] };
  assert.equal(r.ok, [last, [last], String(last), 0, [0]], JSON.stringify(r));
  assert.is(mainAllowed(), before, "the main thread's CPUs did not change");
  assert.ok(loadNative().threadCpus().length === CPUS || CPUS > 1024, 'this thread may still run on every CPU');
});

test('a host without cpus leaves the thread where it was', async () => {
  const r = (await inWorker(`async (pin, cpus) => [pin({ name: 'h1', address: 0, addressText: '10.0.0.1', keyDir: '/x' }), cpus().length]`)) as { ok: unknown[] };
  assert.equal(r.ok, [undefined, CPUS]);
});

test('a CPU the process cannot run on is a config error that names hosts.<name>.cpus and the CPUs it may use', async () => {
  const r = (await inWorker(`async (pin) => pin({ name: 'h7', address: 0, addressText: '10.0.0.1', keyDir: '/x', cpus: [${CPUS + 5}] })`)) as { error?: string; code?: string };
  assert.is(r.code, 'NVI_ERR_CONFIG', JSON.stringify(r));
  assert.match(r.error!, /^hosts\.h7\.cpus: CPU \d+ cannot run this switch \(it may run on 0/);
  assert.match(r.error!, /sched_setaffinity: Invalid argument/);
});

test('the native call refuses a CPU outside what a CPU set can hold, and an empty list', () => {
  const n = loadNative();
  assert.throws(() => n.setThreadCpus(Int32Array.of(1 << 20)), /outside/);
  assert.throws(() => n.setThreadCpus(new Int32Array(0)), /no CPU/);
  assert.throws(() => n.setThreadCpus(Int32Array.of(-1)), /outside/);
});

test.run();
