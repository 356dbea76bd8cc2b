// The switch's helper threads yield to its packet threads (src/switch/thread-policy.ts,
// src/native/thread_policy.c): after yieldHelperThreads() every thread of the process runs
// under SCHED_BATCH but those that marked themselves, which keep SCHED_OTHER. Each case runs
// in a child process, so that the test runner's threads keep their policy.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';

const POLICY = new URL('../src/switch/thread-policy.js', import.meta.url).href;
const OTHER = 0;
const BATCH = 3;

interface Child { pid: number; main: number; worker: number; first: number; second: number; policies: Record<string, number> }

/** A child process: its main thread and one worker thread mark themselves, then the helpers yield (twice). */
function child(): Child {
  const code = `
    import { Worker } from 'node:worker_threads';
    import { readdirSync, readFileSync } from 'node:fs';
    import { markPacketThread, yieldHelperThreads } from ${JSON.stringify(POLICY)};
    const main = markPacketThread();
    const w = new Worker(\`import { parentPort } from 'node:worker_threads';
      const m = await import(\${JSON.stringify(${JSON.stringify(POLICY)})});
      parentPort.postMessage(m.markPacketThread());
      parentPort.on('message', () => process.exit(0));\`, { eval: true });
    const worker = await new Promise((resolve) => w.once('message', resolve));
    const first = await yieldHelperThreads();
    const second = await yieldHelperThreads();
    const policy = (tid) => Number(readFileSync('/proc/self/task/' + tid + '/stat', 'utf8').split(') ')[1].split(' ')[38]);
    const policies = Object.fromEntries(readdirSync('/proc/self/task').map((t) => [t, policy(t)]));
    console.log(JSON.stringify({ pid: process.pid, main, worker, first, second, policies }));
    w.postMessage('exit');`;
  return JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8' })) as Child;
}

test('the threads that marked themselves keep SCHED_OTHER; every other thread of the process runs under SCHED_BATCH', () => {
  const c = child();
  assert.is(c.main, c.pid, "the main thread's id is the process id");
  assert.is.not(c.worker, c.main);
  assert.is(c.policies[c.main], OTHER, JSON.stringify(c));
  assert.is(c.policies[c.worker], OTHER, JSON.stringify(c));
  const helpers = Object.entries(c.policies).filter(([t]) => Number(t) !== c.main && Number(t) !== c.worker);
  assert.ok(helpers.length >= 4, `V8's platform workers and libuv's pool at least: ${JSON.stringify(c.policies)}`);
  for (const [tid, p] of helpers) assert.is(p, BATCH, `thread ${tid}: ${JSON.stringify(c.policies)}`);
  assert.is(c.first, helpers.length, 'the count is of the helpers under SCHED_BATCH');
  assert.is(c.second, c.first, 'a second call finds them there and moves nothing else');
});

test.run();
