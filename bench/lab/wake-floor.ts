// The least a wake-up costs a Node process: the switch's own readiness watcher (src/native/poll.c,
// uv_poll and a callback into JS) on a FIFO, the callback reading what came with the native
// batch read the TAP ports use. No pipeline: what it touches per byte written to the FIFO is
// the event loop's part and the entry into JS, which every traversal of a switch pays too.
//
//   node dist/bench/lab/wake-floor.js FIFO     (bench/footprint.ts starts and stops it by PID)

import { constants, openSync } from 'node:fs';
import { loadNative } from '../../src/native/addon.js';

const path = process.argv[2];
if (path === undefined) {
  process.stderr.write('usage: wake-floor.js FIFO\n');
  process.exit(2);
}
const native = loadNative();
const fd = openSync(path, constants.O_RDWR | constants.O_NONBLOCK);
const buf = new Uint8Array(4096);
const lens = new Int32Array(1);
let reads = 0;
const w = native.pollCreate(fd, () => {
  if (native.tapRead(fd, buf, 0, 4096, 4096, 1, lens, 0) > 0) reads++;
});
native.pollStart(w, 1);
process.on('SIGTERM', () => {
  native.pollClose(w);
  process.stdout.write(`reads ${reads}\n`);
  process.exit(0);
});
process.stdout.write('ready\n');
