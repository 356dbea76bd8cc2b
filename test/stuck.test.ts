// What `lab down` says of a switch that ignores SIGTERM (src/lab/stuck.ts): a process spinning
// in user space is running, in no system call, at about a core; one asleep in the kernel is
// sleeping in its system call and burns nothing.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { describeStuck } from '../src/lab/stuck.js';

test('a process spinning in JavaScript: running in user space, burning CPU', async () => {
  const child = spawn(process.execPath, ['-e', 'process.on("SIGTERM", () => {}); for (;;) {}'], { stdio: 'ignore' });
  try {
    await new Promise((r) => setTimeout(r, 300));
    const said = await describeStuck(child.pid!);
    assert.match(said, /^state R, system call none \(user space\)/, said);
    const busy = Number(/(\d+)% of a core/.exec(said)?.[1]);
    assert.ok(busy >= 20, `${busy}% of a core: ${said}`);
  } finally {
    child.kill('SIGKILL');
  }
});

test('a process asleep in a system call: sleeping in it, burning nothing; one that is gone is said to be', async () => {
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  try {
    await new Promise((r) => setTimeout(r, 200));
    const said = await describeStuck(child.pid!, 300);
    assert.match(said, /^state S, system call \d+, kernel wait \S+, 0% of a core over 300 ms/, said);
  } finally {
    child.kill('SIGKILL');
  }
  await new Promise((r) => child.once('exit', r));
  assert.is(await describeStuck(child.pid!, 10), 'gone');
});

test.run();
