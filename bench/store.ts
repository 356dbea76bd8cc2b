// Store benchmark (issue 8): the miss path with each store, pushes from etcd, a 100k-binding
// replica.
//
//   npx tsc -p . && node --expose-gc dist/bench/store.js [--rounds 100] [--pushes 50]
//       [--bindings 100000] [--parts miss,push,scale]                                (root)
//
// 1. miss: the first packet of a new pair, end to end, in the lab (prefix nvi-b-) with the
//    embedded store and then with etcd on the fabric. Each round flushes both switches'
//    cables (cables --flush), then web1 pings web2 once and the round trip is read: both
//    hosts' miss paths (lookup in the replica, verification, policy, the key exchange with the
//    other side's checks, the plug) and the packet's crossings. A second ping on the plugged
//    cables is the baseline. The verifier keeps its caches across rounds (a binding verified
//    before costs ~6 us instead of ~180 us: bench/verify.ts).
// 2. push: in the etcd lab with web1 -> web2 plugged, a writer in h2's namespace publishes
//    web2's binding at the next epoch, --pushes times, 200 ms apart (bench/store/push-writer.ts).
//    After each write the bench polls h1's cables over its control socket (every 1 ms) until
//    web1 -> web2 shows the new epoch: the time from the store accepting the write to h1's
//    cable verified against it. The writer's and the bench's clocks are the same machine's.
// 3. scale: --bindings bindings of real size (a VM certificate each; the replica does not
//    verify) written into a fresh single-member etcd in a namespace of its own (and into a
//    fresh SQLite file); then a host's replica starts: the time to its first complete list, and
//    the JS heap and RSS it adds.
// Figures: p50 / p99 / max over the rounds. Nothing of the bench outlives it: the labs go down
// and the etcd namespace is deleted, also on failure or SIGINT.

import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseDocument } from 'yaml';
import { systemClock } from '../src/base/clock.js';
import { loadConfig, type CloudConfig } from '../src/config/config.js';
import { labDown, labUp } from '../src/lab/lab.js';
import { EtcdClient } from '../src/store/etcd-client.js';
import { EtcdStore } from '../src/store/etcd-store.js';
import { StoreReplica } from '../src/store/replica.js';
import { SqliteStore } from '../src/store/sqlite-store.js';
import type { MappingStore } from '../src/store/store.js';
import type { CableInfo } from '../src/switch/cable-info.js';
import { controlRequest } from '../src/switch/control.js';
import { controlPath } from '../src/switch/paths.js';
import { vmCredentials } from '../src/switch/host-keys.js';
import { makeBinding } from '../src/trust/binding.js';
import { EtcdCluster } from '../test/etcd-fixture.js';
import { benchOptions, integer, refuse } from './options.js';

const PREFIX = 'nvi-b-';
const BINARY = fileURLToPath(new URL('../../bin/nvi-switch.js', import.meta.url));
const REPO = fileURLToPath(new URL('../../', import.meta.url));
const PARTS = ['miss', 'push', 'scale'] as const;
type Part = (typeof PARTS)[number];

const v = benchOptions({ rounds: { type: 'string' }, pushes: { type: 'string' }, bindings: { type: 'string' }, parts: { type: 'string' } });
const ROUNDS = integer('rounds', v.rounds ?? '100');
const PUSHES = integer('pushes', v.pushes ?? '50');
const BINDINGS = integer('bindings', v.bindings ?? '100000');
const parts = (v.parts ?? PARTS.join(',')).split(',') as Part[];
for (const p of parts) if (!PARTS.includes(p)) refuse(`--parts: unknown part ${JSON.stringify(p)} (${PARTS.join(', ')})`);

const dir = mkdtempSync(join(tmpdir(), 'nvi-bench-store-'));
const cleanups: (() => Promise<void> | void)[] = [];
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    void (async () => {
      for (const c of cleanups.reverse()) await c();
      process.exit(130);
    })();
  });
}

function quantiles(xs: number[]): { p50: number; p99: number; max: number } {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number): number => s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)];
  return { p50: q(0.5), p99: q(0.99), max: s[s.length - 1] };
}

const fmt = (q: { p50: number; p99: number; max: number }, unit: string): string =>
  `p50 ${q.p50.toFixed(2)} ${unit}, p99 ${q.p99.toFixed(2)} ${unit}, max ${q.max.toFixed(2)} ${unit}`;

/** A temp copy of nvi-switch.yaml: our prefix, absolute pki dir, the embedded store or etcd on the fabric. */
function labConfig(kind: 'embedded' | 'etcd'): CloudConfig {
  const source = join(REPO, 'nvi-switch.yaml');
  const doc = parseDocument(readFileSync(source, 'utf8'));
  doc.setIn(['pki', 'dir'], resolve(dirname(source), String(doc.getIn(['pki', 'dir']))));
  doc.setIn(['lab', 'prefix'], PREFIX);
  const sub = join(dir, kind);
  doc.setIn(['store'], doc.createNode(kind === 'etcd' ? { kind: 'etcd', endpoints: ['http://10.77.0.250:2379'], prefix: '/nvi/' } : { kind: 'embedded', path: join(sub, 'lab.db') }));
  // The lab keeps its state beside its config: one folder per lab.
  rmSync(sub, { recursive: true, force: true });
  mkdirSync(sub, { recursive: true });
  const file = join(sub, 'nvi-switch.yaml');
  writeFileSync(file, doc.toString());
  return loadConfig(file);
}

async function withLab<T>(kind: 'embedded' | 'etcd', f: (cfg: CloudConfig) => Promise<T>): Promise<T> {
  const cfg = labConfig(kind);
  const down = async (): Promise<void> => {
    await labDown(cfg, () => {});
  };
  cleanups.push(down);
  await labUp(cfg, BINARY, () => {});
  try {
    return await f(cfg);
  } finally {
    await down();
    cleanups.splice(cleanups.indexOf(down), 1);
  }
}

function run(cmd: string, args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((res) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    c.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    c.on('close', (code) => res({ code: code ?? -1, stdout, stderr }));
  });
}

/** One ping from VM `from` to `to`'s identity: its round trip in ms, or undefined when none came back. */
async function pingOnce(cfg: CloudConfig, from: string, to: string): Promise<number | undefined> {
  const r = await run('ip', ['netns', 'exec', `${PREFIX}${from}`, 'ping', '-6', '-c', '1', '-W', '2', cfg.vms.get(to)!.identityText]);
  const m = /time=([\d.]+) ms/.exec(r.stdout);
  return m ? Number(m[1]) : undefined;
}

async function flush(cfg: CloudConfig): Promise<void> {
  for (const h of cfg.hosts.keys()) await controlRequest(controlPath(cfg, h), { cmd: 'flush' });
}

async function missPart(kind: 'embedded' | 'etcd'): Promise<string> {
  return withLab(kind, async (cfg) => {
    const first: number[] = [];
    const second: number[] = [];
    let lost = 0;
    await pingOnce(cfg, 'web1', 'web2'); // warm: certificates parsed and cached once
    for (let k = 0; k < ROUNDS; k++) {
      await flush(cfg);
      const a = await pingOnce(cfg, 'web1', 'web2');
      const b = await pingOnce(cfg, 'web1', 'web2');
      if (a === undefined || b === undefined) lost++;
      else {
        first.push(a);
        second.push(b);
      }
    }
    return `  ${kind.padEnd(8)} first packet of a new pair (both hosts' miss paths + key exchange): ${fmt(quantiles(first), 'ms')}; ` +
      `next packet: ${fmt(quantiles(second), 'ms')}; rounds ${ROUNDS}, lost ${lost}`;
  });
}

async function pushPart(): Promise<string> {
  return withLab('etcd', async (cfg) => {
    await pingOnce(cfg, 'web1', 'web2');
    const h1 = controlPath(cfg, 'h1');
    const epochNow = async (): Promise<number | undefined> =>
      ((await controlRequest(h1, { cmd: 'cables' })) as CableInfo[]).find((c) => c.direction === 'egress' && c.srcVm === 'web1' && c.dstVm === 'web2')?.epoch;
    const writer = spawn('ip', ['netns', 'exec', `${PREFIX}h2`, process.execPath, fileURLToPath(new URL('./store/push-writer.js', import.meta.url)), cfg.file, 'web2', String(PUSHES), '200'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const latencies: number[] = [];
    let buf = '';
    const pending: { epoch: number; writtenAt: number }[] = [];
    writer.stdout.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        pending.push(JSON.parse(buf.slice(0, nl)) as { epoch: number; writtenAt: number });
        buf = buf.slice(nl + 1);
      }
    });
    const done = new Promise<void>((r) => writer.on('close', () => r()));
    let finished = false;
    void done.then(() => (finished = true));
    while (latencies.length < PUSHES && !(finished && pending.length === 0)) {
      const w = pending.shift();
      if (!w) {
        await new Promise((r) => setTimeout(r, 1));
        continue;
      }
      const deadline = Date.now() + 5000;
      for (;;) {
        const e = await epochNow();
        if (e !== undefined && e >= w.epoch) {
          latencies.push(Date.now() - w.writtenAt);
          break;
        }
        if (Date.now() > deadline) throw new Error(`h1 never showed epoch ${w.epoch}`);
        await new Promise((r) => setTimeout(r, 1));
      }
    }
    await done;
    const st = (await controlRequest(controlPath(cfg, 'h2'), { cmd: 'stats' })) as { cables: { reverifiedByPush: number } };
    return `  push: write accepted by etcd -> h1's cable verified against the new epoch: ${fmt(quantiles(latencies), 'ms')} over ${latencies.length} writes; ` +
      `h2 (no cable whose far end is web2) re-verified ${st.cables.reverifiedByPush} cables by push`;
  });
}

async function scalePart(): Promise<string[]> {
  // A real binding of the lab (web1's, signed, with its certificate) as the size of every record.
  const lab = loadConfig(join(REPO, 'nvi-switch.yaml'));
  const web1 = lab.vms.get('web1')!;
  const template = makeBinding(vmCredentials(lab, 'web1'), web1, lab.hosts.get(web1.host)!, 1, Date.now(), 86_400) as unknown as Record<string, unknown>;
  const rec = (k: number): string => JSON.stringify({ ...template, identity: `fd9a:3c7e:51b2:2::${k.toString(16)}`, vm: `vm${k}` });
  const out: string[] = [];
  const measure = async (kind: string, store: MappingStore): Promise<void> => {
    const gc = (globalThis as { gc?: () => void }).gc;
    gc?.();
    const heap0 = process.memoryUsage().heapUsed;
    const rss0 = process.memoryUsage().rss;
    const t0 = performance.now();
    const replica = new StoreReplica(store, systemClock, { change: () => {}, state: () => {} }, { host: 'h1' });
    await replica.start();
    const ms = performance.now() - t0;
    gc?.();
    const heap = process.memoryUsage().heapUsed - heap0;
    const rss = process.memoryUsage().rss - rss0;
    replica.stop();
    out.push(`  ${kind.padEnd(8)} replica of ${replica.bindings.size} bindings: first list in ${(ms / 1000).toFixed(2)} s; +${(heap / 2 ** 20).toFixed(0)} MB heap (${Math.round(heap / replica.bindings.size)} B/binding), +${(rss / 2 ** 20).toFixed(0)} MB RSS${gc ? '' : ' (run with --expose-gc for exact heap figures)'}`);
  };
  // etcd
  const cluster = await EtcdCluster.start(1);
  cleanups.push(() => cluster.destroy());
  const client = new EtcdClient(cluster.endpoints, { timeoutMs: 10_000 });
  const t0 = Date.now();
  for (let k = 0; k < BINDINGS; k += 256) {
    await Promise.all(Array.from({ length: Math.min(256, BINDINGS - k) }, (_, j) => client.put(`/nvi/binding/fd9a:3c7e:51b2:2::${(k + j).toString(16)}`, rec(k + j))));
  }
  out.push(`  etcd     ${BINDINGS} bindings written in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  client.close();
  const etcd = new EtcdStore({ endpoints: cluster.endpoints, prefix: '/nvi/', timeoutMs: 10_000 });
  await measure('etcd', etcd);
  await etcd.close();
  await cluster.destroy();
  // embedded
  const sqlite = SqliteStore.open(join(dir, 'scale.db'));
  for (let k = 0; k < BINDINGS; k++) await sqlite.publish(JSON.parse(rec(k)));
  await measure('embedded', sqlite);
  await sqlite.close();
  return out;
}

try {
  if (process.getuid?.() !== 0) refuse('bench/store needs root (namespaces, TAPs, raw sockets)');
  const lines: string[] = [];
  if (parts.includes('miss')) {
    lines.push('miss latency (ping round trip, ms):');
    lines.push(await missPart('embedded'));
    lines.push(await missPart('etcd'));
  }
  if (parts.includes('push')) lines.push(await pushPart());
  if (parts.includes('scale')) lines.push(...(await scalePart()));
  process.stdout.write(`${lines.join('\n')}\n`);
} finally {
  for (const c of cleanups.reverse()) await c();
  rmSync(dir, { recursive: true, force: true });
}
