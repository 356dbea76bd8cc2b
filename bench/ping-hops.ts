// Where a ping through the lab spends its time, hop by hop (issue 13, item 3: "find where a
// lone packet waits").
//
//   npx tsc -p . && node dist/bench/ping-hops.js [--count 200] [--interval 0.01] [--runs 3] [--esp-udp PORT]   (root)
//
// --esp-udp PORT: the switches carry ESP in UDP to PORT (underlay.espUdpPort); the underlay
// captures then take that port.
// The lab up; four captures with nanosecond kernel stamps (one clock: the namespaces share
// it): web1's TAP, h1's and h2's underlay0 (ESP only), web2's TAP. Then web1 pings web2
// COUNT times at INTERVAL seconds. Each echo request and reply is found in the captures of its
// TAPs by its sequence number; the ESP packet that carried it is the first one after it in the
// direction it went. The hops:
//   h1 egress     web1's request on its TAP -> the ESP packet leaving h1's underlay0
//   fabric ->     leaving h1 -> arriving at h2's underlay0
//   h2 ingress    arriving at h2 -> the request on web2's TAP
//   web2 kernel   the request on web2's TAP -> its reply there
//   h2 egress, fabric <-, h1 ingress: the same for the reply
// Figures: per run the median of each hop over the pings, then the median [min-max] over the
// runs. The captures themselves wake the machine too (four tcpdumps): compare hops with each
// other, and runs with each other, not with a ping alone.

import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { BenchLab, PREFIX } from './lab/bench-lab.js';
import { after, fields, median, needTools, startCaptures, stopCaptures } from './lab/captures.js';
import { benchOptions, integer, refuse } from './options.js';

const v = benchOptions({ count: { type: 'string' }, interval: { type: 'string' }, runs: { type: 'string' }, 'esp-udp': { type: 'string' } });
const ESP_UDP = v['esp-udp'] === undefined ? 0 : integer('esp-udp', v['esp-udp']);
/** The underlay's ESP: a capture filter and a display filter. */
const ESP = ESP_UDP === 0 ? { capture: 'esp', display: 'esp' } : { capture: `udp port ${ESP_UDP}`, display: `udp.port == ${ESP_UDP}` };
const COUNT = integer('count', v.count ?? '200');
const INTERVAL = Number(v.interval ?? '0.01');
if (!(INTERVAL >= 0.002 && INTERVAL <= 10)) refuse(`--interval ${v.interval}: seconds between pings, 0.002 to 10`);
const RUNS = integer('runs', v.runs ?? '3');
const HOPS = ['h1 egress', 'fabric ->', 'h2 ingress', 'web2 kernel', 'h2 egress', 'fabric <-', 'h1 ingress', 'round trip'] as const;

const lab = new BenchLab('ping-hops');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Echo requests (128) and replies (129) on a TAP, by sequence number: their times (s). */
function echoes(file: string): { request: Map<number, number>; reply: Map<number, number> } {
  const request = new Map<number, number>();
  const reply = new Map<number, number>();
  for (const [t, type, seq] of fields(file, 'icmpv6.type == 128 || icmpv6.type == 129', ['frame.time_epoch', 'icmpv6.type', 'icmpv6.echo.sequence_number'])) {
    (type === '128' ? request : reply).set(Number(seq), Number(t));
  }
  return { request, reply };
}

/** ESP packets on an underlay, split by whether `me` sent them: their times (s), in order. */
function esp(file: string, me: string): { out: number[]; in: number[] } {
  const out: number[] = [];
  const inn: number[] = [];
  for (const [t, src] of fields(file, ESP.display, ['frame.time_epoch', 'ip.src'])) (src === me ? out : inn).push(Number(t));
  return { out: out.sort((a, b) => a - b), in: inn.sort((a, b) => a - b) };
}

async function run(k: number, c: ReturnType<BenchLab['config']>): Promise<Map<string, number>> {
  const web1 = c.vms.get('web1')!;
  const web2 = c.vms.get('web2')!;
  const [h1, h2] = [c.hosts.get(web1.host)!, c.hosts.get(web2.host)!];
  const where = [
    { name: 'web1', ns: `${PREFIX}web1`, dev: web1.tap, filter: 'icmp6' },
    { name: 'h1', ns: `${PREFIX}${web1.host}`, dev: 'underlay0', filter: ESP.capture },
    { name: 'h2', ns: `${PREFIX}${web2.host}`, dev: 'underlay0', filter: ESP.capture },
    { name: 'web2', ns: `${PREFIX}web2`, dev: web2.tap, filter: 'icmp6' },
  ];
  const file = (name: string): string => join(lab.dir, `run${k}-${name}.pcap`);
  const dumps = startCaptures(where, file);
  lab.children.push(...dumps);
  await sleep(1500); // the captures are listening
  const ping = spawnSync('ip', ['netns', 'exec', `${PREFIX}web1`, 'ping', '-6', '-n', '-q', '-c', String(COUNT), '-i', String(INTERVAL), web2.identityText], { encoding: 'utf8' });
  if (ping.status !== 0) throw new Error(`ping web1 -> web2: ${ping.stdout}${ping.stderr}`);
  await sleep(500);
  await stopCaptures(dumps);

  const a = echoes(file('web1'));
  const b = echoes(file('web2'));
  const e1 = esp(file('h1'), h1.addressText);
  const e2 = esp(file('h2'), h2.addressText);
  const hops = new Map<string, number[]>(HOPS.map((h) => [h, []]));
  let matched = 0;
  for (const [seq, t0] of a.request) {
    const t3 = b.request.get(seq);
    const t4 = b.reply.get(seq);
    const t7 = a.reply.get(seq);
    if (t3 === undefined || t4 === undefined || t7 === undefined) continue;
    const t1 = after(e1.out, t0);
    const t2 = t1 === undefined ? undefined : after(e2.in, t1);
    const t5 = after(e2.out, t4);
    const t6 = t5 === undefined ? undefined : after(e1.in, t5);
    if (t1 === undefined || t2 === undefined || t5 === undefined || t6 === undefined || t2 > t3 || t6 > t7) continue;
    const times = [t0, t1, t2, t3, t4, t5, t6, t7];
    HOPS.slice(0, 7).forEach((h, i) => hops.get(h)!.push((times[i + 1]! - times[i]!) * 1e6));
    hops.get('round trip')!.push((t7 - t0) * 1e6);
    matched++;
  }
  if (matched < COUNT / 2) throw new Error(`run ${k}: only ${matched} of ${COUNT} pings found in all four captures`);
  process.stdout.write(`run ${k}: ${matched} pings matched; ${HOPS.map((h) => `${h} ${median(hops.get(h)!).toFixed(0)}`).join(', ')} µs\n`);
  return new Map([...hops].map(([h, xs]) => [h, median(xs)]));
}

try {
  if (process.getuid?.() !== 0) refuse('bench/ping-hops needs root');
  needTools(['tcpdump', 'tshark', 'ping'], refuse);
  lab.config((doc) => {
    if (ESP_UDP !== 0) doc.setIn(['underlay', 'espUdpPort'], ESP_UDP);
  });
  const c = await lab.up();
  const warm = spawnSync('ip', ['netns', 'exec', `${PREFIX}web1`, 'ping', '-6', '-c', '3', '-i', '0.2', c.vms.get('web2')!.identityText]);
  if (warm.status !== 0) throw new Error('web1 cannot reach web2');
  const runs: Map<string, number>[] = [];
  for (let k = 1; k <= RUNS; k++) runs.push(await run(k, c));
  process.stdout.write(`\nping web1 -> web2, ESP ${ESP_UDP === 0 ? 'as IP protocol 50' : `in UDP to port ${ESP_UDP}`}, ${COUNT} pings ${INTERVAL} s apart, ${RUNS} runs; per hop: median over the pings, then median [min-max] over the runs (µs):\n`);
  for (const h of HOPS) {
    const xs = runs.map((r) => r.get(h)!);
    process.stdout.write(`  ${h.padEnd(12)} ${median(xs).toFixed(0).padStart(5)} [${Math.min(...xs).toFixed(0)}-${Math.max(...xs).toFixed(0)}]\n`);
  }
} finally {
  await lab.cleanup();
}
