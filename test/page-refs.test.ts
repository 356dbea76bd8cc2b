// bench/lab/page-refs.ts: the pages a process touched, per region, from /proc/PID/smaps after
// clear_refs. The parser on a sample of smaps, then a real process: a buffer it writes after
// clearing shows up as touched pages, one it leaves alone does not.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ownTotal, parseSmaps, regionOf } from '../bench/lab/page-refs.js';

const PAGE_REFS = fileURLToPath(new URL('../bench/lab/page-refs.js', import.meta.url));

const NODE = '/usr/bin/node';

const SAMPLE = `00b72000-025fe000 r-xp 00772000 fe:01 1234   /usr/bin/node
Size:              27184 kB
Referenced:          188 kB
02601000-0563a000 r--p 02201000 fe:01 1234   /usr/bin/node
Referenced:           36 kB
10be7000-1138e000 rw-p 00000000 00:00 0      [heap]
Referenced:          296 kB
7fb87e0c3000-7fb87e0ff000 rwxp 00000000 00:00 0
Referenced:           96 kB
7c2e3ac0000-7c2e3b00000 rw-p 00000000 00:00 0
Referenced:           76 kB
7fb8a4e44000-7fb8a4f9a000 r-xp 00028000 fe:01 99     /usr/lib/x86_64-linux-gnu/libc.so.6
Referenced:         1072 kB
7fb8a523e000-7fb8a524a000 r-xp 00002000 fe:01 77     /work/main/build/Release/nvi_native.node
Referenced:           12 kB
7ffe716af000-7ffe716d0000 rw-p 00000000 00:00 0      [stack]
Referenced:           16 kB
7ffe71700000-7ffe71702000 r-xp 00000000 00:00 0      [vdso]
Referenced:            4 kB
`;

test('regions: node, malloc, JIT, anonymous, addons, libraries, stack', () => {
  assert.is(regionOf('r-xp', NODE, NODE), 'node code');
  assert.is(regionOf('r--p', NODE, NODE), 'node data');
  assert.is(regionOf('rwxp', '', NODE), 'JIT code');
  assert.is(regionOf('rw-p', '', NODE), 'anonymous');
  assert.is(regionOf('r-xp', '/usr/lib/x86_64-linux-gnu/libc.so.6', NODE), 'shared libraries');
  assert.is(regionOf('r-xp', '/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30', NODE), 'shared libraries');
  assert.is(regionOf('r-xp', '/a/b/x.node', NODE), 'addons');
  assert.is(regionOf('r-xp', '[vdso]', NODE), 'other');
});

test('parseSmaps adds up Referenced per region, in 4 KB pages', () => {
  const p = parseSmaps(SAMPLE, NODE);
  assert.is(p.get('node code'), 47);
  assert.is(p.get('node data'), 9);
  assert.is(p.get('malloc heap'), 74);
  assert.is(p.get('JIT code'), 24);
  assert.is(p.get('anonymous'), 19);
  assert.is(p.get('shared libraries'), 268);
  assert.is(p.get('addons'), 3);
  assert.is(p.get('stack'), 4);
  assert.is(p.get('other'), 1);
  assert.is(ownTotal(p), 47 + 9 + 74 + 24 + 19 + 3 + 4 + 1, 'shared libraries are left out');
});

test('parseSmaps refuses a Referenced line it cannot read', () => {
  assert.throws(() => parseSmaps('00400000-00401000 r-xp 0 fe:01 1 /usr/bin/node\nReferenced: lots kB\n', NODE), /unreadable line/);
});

test('a process that writes a buffer after clear_refs: its pages are counted, the buffer it left alone is not', () => {
  // A child of its own: in the test runner other tests' threads and the GC touch pages meanwhile.
  const child = `
    import { clearReferenced, ownTotal, referencedPages } from ${JSON.stringify(PAGE_REFS)};
    const touched = new Uint8Array(8 << 20), untouched = new Uint8Array(8 << 20);
    touched.fill(1); untouched.fill(1);
    clearReferenced(process.pid);
    const quiet = ownTotal(referencedPages(process.pid));
    clearReferenced(process.pid);
    for (let i = 0; i < touched.length; i += 4096) touched[i] = 2;
    const busy = ownTotal(referencedPages(process.pid));
    process.stdout.write(JSON.stringify({ quiet, busy, left: untouched[0] }));`;
  const out = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', child], { encoding: 'utf8' })) as { quiet: number; busy: number; left: number };
  // The count around the writes varies by some hundred pages from one read of smaps to the
  // next (its parsing allocates): the bounds are the buffers' own 2,048 pages each.
  assert.ok(out.busy >= 2048, `8 MB (2,048 pages) written after the clear: ${out.busy} pages touched, ${out.quiet} without the writes`);
  assert.ok(out.busy < 4096, `the 8 MB left alone is not counted: ${out.busy} pages touched, ${out.quiet} without the writes`);
  assert.is(out.left, 1);
});

test.run();
