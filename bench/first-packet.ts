// First packet (issue 13): how long a new pair's first frame takes from the sending VM to the
// receiving VM, cross host, embedded store, next to a frame on the plugged cable.
//
//   npx tsc -p . && node dist/bench/first-packet.js [--pairs 200] [--reverify] [--no-prefetch] [--busy-poll-us N] [--workers N] [--profile DIR]
//       [--node-args=ARGS] [--logs DIR]   (root)
//
// web1 (h1) sends web2 (h2) a UDP datagram stamped with its send time; web2 takes the kernel's
// receive stamp (the namespaces share one clock: test/e2e/net.py stamp-send / stamp-recv).
// Before each first datagram both switches forget every cable and SA (`cables --flush`), so it
// takes the whole miss path: lookup, verification, policy, the key exchange with h2 (which
// makes its own checks), SA install, release. A second datagram right after it, on the
// plugged cable, is the baseline. --reverify: the switches also forget the bindings and VM
// certificates they verified (`cables --flush --reverify`), so each first packet verifies
// web1's and web2's from scratch at both ends, as for a new pair of VMs on hosts that know
// each other (host certificates stay known). --no-prefetch: h2 does not plug the reply's
// cable as it accepts the request's (switch.upcall.prefetchReplies). --busy-poll-us N: both switches with
// switch.busyPollUs N (off by default). --workers N: both switches with switch.workers N
// (web1 is then on worker 1 of h1, web2 on worker 0 of h2). --profile DIR: each switch runs under
// node --cpu-prof and writes its profile to DIR/h1.cpuprofile and DIR/h2.cpuprofile as it
// stops (open them in Chrome's DevTools). --node-args=ARGS: more options for the switches' node,
// space-separated (e.g. --node-args=--trace-gc; the = is needed). --logs DIR: the switches' logs (their stdout too) are copied to DIR before the
// lab (prefix nvi-b-) is removed at the end.

import { spawn } from 'node:child_process';
import { cpSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { controlRequest } from '../src/switch/control.js';
import { controlPath, stateDir } from '../src/switch/paths.js';
import { BenchLab, PREFIX, REPO } from './lab/bench-lab.js';
import { quantilesUs } from './lab/probe.js';
import { benchOptions, integer, refuse } from './options.js';

const NET_PY = join(REPO, 'test', 'e2e', 'net.py');
const v = benchOptions({ pairs: { type: 'string' }, reverify: { type: 'boolean' }, 'no-prefetch': { type: 'boolean' }, 'busy-poll-us': { type: 'string' }, workers: { type: 'string' }, profile: { type: 'string' }, 'node-args': { type: 'string' }, logs: { type: 'string' } });
const PAIRS = integer('pairs', v.pairs ?? '200');
const PORT = 7100;
const lab = new BenchLab('first-packet');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

try {
  if (process.getuid?.() !== 0) refuse('bench/first-packet needs root');
  const busyPollUs = v['busy-poll-us'] === undefined ? undefined : integer('busy-poll-us', v['busy-poll-us']);
  lab.config((doc) => {
    if (v['no-prefetch']) doc.setIn(['switch', 'upcall', 'prefetchReplies'], false);
    if (busyPollUs !== undefined) doc.setIn(['switch', 'busyPollUs'], busyPollUs);
    if (v.workers !== undefined) doc.setIn(['switch', 'workers'], integer('workers', v.workers));
  });
  const nodeArgs = (v['node-args'] ?? '').split(' ').filter((a) => a !== '');
  if (v.profile !== undefined) nodeArgs.push('--cpu-prof', `--cpu-prof-dir=${resolve(v.profile)}`, '--cpu-prof-name={host}.cpuprofile');
  const c = await lab.up(nodeArgs);
  if (v.logs !== undefined) {
    const to = resolve(v.logs);
    lab.atEnd(async () => {
      mkdirSync(to, { recursive: true });
      for (const h of ['h1', 'h2']) cpSync(join(stateDir(c), 'lab', `${h}.log`), join(to, `${h}.log`));
    });
  }
  const web2 = c.vms.get('web2')!.identityText;
  const recv = spawn('ip', ['netns', 'exec', `${PREFIX}web2`, 'python3', NET_PY, 'stamp-recv', String(PORT), String(PAIRS * 2 + 60)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const send = spawn('ip', ['netns', 'exec', `${PREFIX}web1`, 'python3', NET_PY, 'stamp-send', web2, String(PORT)], { stdio: ['pipe', 'pipe', 'inherit'] });
  lab.children.push(recv, send);
  let gone = '';
  recv.once('exit', (code) => (gone = `stamp-recv in web2 exited (${code})`));
  send.once('exit', (code) => (gone = `stamp-send in web1 exited (${code})`));
  const arrived = new Map<number, number>();
  let listening = false;
  createInterface({ input: recv.stdout! }).on('line', (line) => {
    const m = JSON.parse(line) as { seq?: number; us?: number; listening?: number };
    if (m.listening !== undefined) listening = true;
    if (m.seq !== undefined) arrived.set(m.seq, m.us!);
  });
  while (!listening) {
    if (gone) throw new Error(gone);
    await sleep(20);
  }
  const datagram = async (seq: number): Promise<number | undefined> => {
    if (gone) throw new Error(gone);
    send.stdin!.write(`${seq}\n`);
    for (let t = 0; t < 200 && !arrived.has(seq); t++) await sleep(5);
    return arrived.get(seq);
  };
  // Warm up: the paths, the JIT, the replicas.
  for (let k = 0; k < 20; k++) await datagram(900_000 + k);
  const dropsBefore = await drops(c);
  const first: number[] = [];
  const warm: number[] = [];
  let lost = 0;
  const lostWhich: string[] = [];
  for (let k = 0; k < PAIRS; k++) {
    for (const h of ['h1', 'h2']) await controlRequest(controlPath(c, h), { cmd: 'flush', ...(v.reverify ? { reverify: true } : {}) });
    await sleep(30);
    const a = await datagram(2 * k);
    await sleep(10);
    const b = await datagram(2 * k + 1);
    if (a === undefined || b === undefined) lost++;
    if (a === undefined) lostWhich.push(`pair ${k}: the first datagram`);
    if (b === undefined) lostWhich.push(`pair ${k}: the next one`);
    if (a !== undefined) first.push(a);
    if (b !== undefined) warm.push(b);
  }
  const h1 = (await controlRequest(controlPath(c, 'h1'), { cmd: 'stats' })) as { upcall: { latency: { count: number; sum: number } } };
  const dropped = dropsSince(dropsBefore, await drops(c));
  const med = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
  process.stdout.write(`first packet of a new pair, web1 (h1) -> web2 (h2), UDP, ${PAIRS} pairs (cables and SAs flushed before each${v.reverify ? ', and what was verified' : ''})${v['no-prefetch'] ? ', no prefetch of replies' : ''}${busyPollUs === undefined ? '' : `, switch.busyPollUs ${busyPollUs}`}:\n` +
    `  first datagram:             ${quantilesUs(first)}\n` +
    `  next one, plugged cable:    ${quantilesUs(warm)}\n` +
    `  first / plugged (medians):  ${(med(first) / med(warm)).toFixed(1)}x\n` +
    `  lost ${lost}${lost > 0 ? ` (${lostWhich.join(', ')})` : ''}; h1's misses resolved ${h1.upcall.latency.count}, mean ${((h1.upcall.latency.sum / Math.max(1, h1.upcall.latency.count)) * 1000).toFixed(2)} ms\n` +
    `  dropped by the switches meanwhile: ${dropped.length === 0 ? 'nothing' : dropped.join(', ')}\n`);
  send.stdin!.end();
} finally {
  await lab.cleanup();
}

/** Every drop counter of both switches, as "h1 egress reason" -> count. */
async function drops(c: Parameters<typeof controlPath>[0]): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const h of ['h1', 'h2']) {
    const s = (await controlRequest(controlPath(c, h), { cmd: 'stats' })) as Record<'egress' | 'ingress', { drops: Record<string, number> }>;
    for (const pipe of ['egress', 'ingress'] as const) for (const [reason, n] of Object.entries(s[pipe].drops)) out.set(`${h} ${pipe} ${reason}`, n);
  }
  return out;
}

/** "h1 ingress reason +n" for each counter that moved. */
function dropsSince(before: Map<string, number>, after: Map<string, number>): string[] {
  return [...after].filter(([k, n]) => n !== (before.get(k) ?? 0)).map(([k, n]) => `${k} +${n - (before.get(k) ?? 0)}`);
}
