// Pipeline throughput in one process, no I/O: (a) frames from a VM port through its host's
// egress to underlay packets, (b) those packets through the peer host's ingress to the
// destination VM's port, (c) both back to back; plain IPv6-in-IPv4 and ESP (node:crypto and
// native ciphers); 10, 100k and 1M cables in the cache.
//
//   npx tsc -p . && node dist/bench/pipeline.js [--quick] [--runs 5] [--ms 500]
//       [--cables 10,100000,1000000] [--sizes 64,512,1400] [--modes plain,node,native]
//       [--measure egress,ingress,both] [--pool 65536] [--key-pool 0] [--seed 1] [--heap-dir DIR]
//       [--workers 1,2] [--big-counters] [--windows idle|in-order|few-lost|lossy|reordered]
//
// --windows: what every SA has carried before the runs. A replay window takes its 256 bytes
// of blocks only when it has more than 6 holes at once (numbers inside it, below its top, not
// received: src/esp/replay-window.ts). idle (the default): nothing; in-order: 40 packets;
// few-lost: 40 packets, 6 of them lost, the most a window keeps without blocks; lossy: 40
// packets, 7 of them lost, so every window holds its blocks; reordered: the same 7 arrive
// late, after the other 33, so every window took its blocks and has no hole left: the
// sweep gives them back (ReplayWindow.shrink), timed here over every window, and the pair is
// measured again. At 1M cables the runs themselves bring an SA 0.7 packets.
//
// --big-counters: as on a host that has run a while, one cable and its SAs have counted more
// than 2^31 bytes before the runs. V8 keeps a field that ever held a number beyond its small
// integers as a double, boxed, in every object of the class: the other cables' and SAs'
// counters then cost a box each.
//
// --workers W,...: the same bench in W worker threads at once, each a shard with its own
// cloud, cables (N / W of them), SAs, native cipher table and frame pool (--pool / W), nothing
// shared: the shared-nothing design of several data-path threads (issue 13, item 1), measured
// without I/O. Every timed run starts at a barrier, so the shards' runs overlap; a shard's
// figures are its medians, the row's figure their sum. The switch itself still runs one
// data-path thread: this measures how far the pipeline scales when it is sharded.
//
// Setup, without a single upcall:
//   1. The cloud of nvi-switch.yaml in one process (OfflineCloud.open: the real Host objects,
//      store, policy), with switch.cables.max raised to N when N is larger. Sinks discard.
//   2. N cables built the way the resolver builds them and inserted straight into the caches:
//      web1 (h1) -> N synthetic identities in blue's prefix; the egress cable on h1, the
//      ingress cable on h2 (delivered to web2's port). Decisions: the real compiled policy for
//      web1 -> web2 (its port filter runs per packet), with encryption turned off for plain.
//   3. ESP: one key per SA (--key-pool K: K keys shared round-robin), installed with
//      cipher.addKey; h1's OutboundSa and h2's InboundSa use the same handle because both
//      hosts share one cipher object here. SPIs are random in [256, 2^30), as the key
//      exchange draws them.
// Traffic: a pool of --pool ICMPv6 echo requests from web1 (valid MAC, source and checksum),
// each to a cable drawn at random, cut into 256-frame batches sent round-robin, so that the
// hot set is min(N, pool) cables. Frames are copied into the batch before every egress run
// (egress writes headers in place); that copy is timed, and measured alone as "fill".
// Ingress alone is fed the packets h1's egress made from the pool, regenerated (untimed) for
// every pass since ESP sequence numbers may not repeat; its timed part includes copying them
// into the batch ("fill" again). egress+ingress hands the egress batch straight to h2's
// ingress (no copy between): it costs fill(e) + egress + ingress.
// Checks: one pass of the pool through both hosts before timing, every delivered frame
// compared with what was sent; then every timed run's counters (nothing dropped or held,
// every packet in delivered or sent). Figures are medians of --runs runs of --ms ms after a
// warm-up; sizes are IPv6 packet sizes and Gbit/s counts IPv6 bytes. alloc B/pkt: JS heap
// bytes allocated per packet in the timed part (v8.GCProfiler; about 0 when nothing is);
// GC %: share of the timed part spent in GC.
//
// Installing the 1M native keys takes well under a second (0.2 s on 2 cores): addKey resumes
// its search for a free slot at a hint below which every slot is taken (src/native/esp_gcm.c,
// O(1) amortized), and a key's OpenSSL contexts are made when it is first used. A full run
// took about 11 minutes on 2 cores and 5 GB of RSS at 1M cables when measured before that
// (adds scanned the table from slot 0, 3 of those minutes, and keyed both contexts of every
// key at once): expect less of both.
// --quick: 3 runs of 150 ms and at most 65,536 distinct ESP keys (shared round-robin, so
// nonces repeat under a key: fine for throwaway keys in a benchmark), about 3 minutes.

import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import v8 from 'node:v8';
import vm from 'node:vm';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { loadConfig, type CloudConfig } from '../src/config/config.js';
import { NodeEspCipher, type EspCipher } from '../src/esp/esp-cipher.js';
import { espLength } from '../src/wire/esp.js';
import { NativeEspCipher } from '../src/esp/native-esp-cipher.js';
import { DEFAULT_HARD_SEQ, InboundSa, OutboundSa, type SaLimits } from '../src/esp/sa.js';
import { MAX_HOLES, ReplayWindow } from '../src/esp/replay-window.js';
import { Batch, BATCH_MAX, FRAME_OFFSET, Next, UNDERLAY_OFFSET } from '../src/dataplane/batch.js';
import { Cable, CableDirection } from '../src/dataplane/cable.js';
import type { CableCache } from '../src/dataplane/cable-cache.js';
import type { CableLookup } from '../src/dataplane/egress/cable-lookup.js';
import type { PipelineCounters } from '../src/dataplane/counters.js';
import { Drop } from '../src/base/drops.js';
import { ETH_HLEN, ETH_OFF_SRC } from '../src/wire/ethernet.js';
import { IPV4_HLEN, makeOuterTemplate } from '../src/wire/ipv4.js';
import { PROTO_ESP, PROTO_IPV6 } from '../src/wire/ipv6.js';
import { ROUTER_MAC } from '../src/dataplane/vm-port.js';
import { nativeAvailable } from '../src/native/addon.js';
import { MemoryLogger } from '../src/base/log.js';
import type { DirectionDecision } from '../src/dataplane/decision.js';
import { OfflineCloud } from '../src/replay/offline-cloud.js';
import { SWEEP_INTERVAL_MS, type Host } from '../src/switch/host.js';
import { SHRINK_WINDOWS, TRIM_KEYS } from '../src/switch/sa-table.js';
import type { PacketSink } from '../src/switch/tx.js';
import { CONFIG_FILE, echoBetween } from '../test/offline-fixture.js';
import { benchOptions, integer, refuse } from './options.js';

// ---- Options ------------------------------------------------------------------------------

const opt = benchOptions({
  quick: { type: 'boolean' }, runs: { type: 'string' }, ms: { type: 'string' },
  cables: { type: 'string', default: '10,100000,1000000' }, sizes: { type: 'string', default: '64,512,1400' },
  modes: { type: 'string', default: 'plain,node,native' }, measure: { type: 'string', default: 'egress,ingress,both' },
  pool: { type: 'string', default: '65536' }, 'key-pool': { type: 'string' }, seed: { type: 'string', default: '1' },
  'heap-dir': { type: 'string' }, workers: { type: 'string' }, 'big-counters': { type: 'boolean' },
  windows: { type: 'string', default: 'idle' },
});

/** The comma-separated items of --`name` (empty items ignored); at least one. */
function list(name: string, text: string): string[] {
  const items = text.split(',').filter((s) => s !== '');
  if (items.length === 0) refuse(`--${name}: expected a comma-separated list, got ${JSON.stringify(text)}`);
  return items;
}

function oneOf<T extends string>(name: string, text: string, allowed: readonly T[]): T[] {
  return list(name, text).map((x) => (allowed.includes(x as T) ? (x as T) : refuse(`--${name}: ${JSON.stringify(x)} is not one of ${allowed.join(', ')}`)));
}

type Mode = 'plain' | 'node' | 'native';
type Measure = 'egress' | 'ingress' | 'both';

const QUICK = opt.quick === true;
const RUNS = integer('runs', opt.runs ?? (QUICK ? '3' : '5'));
const MS = integer('ms', opt.ms ?? (QUICK ? '150' : '500'));
const CABLES = list('cables', opt.cables).map((n) => integer('cables', n));
/** IPv6 packet sizes: an echo request with no payload is 48 bytes. */
const SIZES = list('sizes', opt.sizes).map((n) => integer('sizes', n, 48));
const MODES = oneOf<Mode>('modes', opt.modes, ['plain', 'node', 'native']);
const MEASURES = oneOf<Measure>('measure', opt.measure, ['egress', 'ingress', 'both']);
/** In a worker of --workers: which shard this is, of how many, and the barrier they share. */
interface Shard {
  readonly index: number;
  readonly of: number;
  /** [arrived, generation] */
  readonly sync: Int32Array;
}
const SHARD: Shard | null = isMainThread ? null : (workerData as Shard);
const WORKERS = opt.workers === undefined ? null : list('workers', opt.workers).map((n) => integer('workers', n));
const POOL = Math.ceil(integer('pool', opt.pool) / (SHARD?.of ?? 1) / BATCH_MAX) * BATCH_MAX;
/** Distinct ESP keys at most (0: one per SA); --quick caps it at 65,536. */
const KEY_POOL = integer('key-pool', opt['key-pool'] ?? (QUICK ? '65536' : '0'), 0);
const SEED = integer('seed', opt.seed, 0);
/** What every SA has carried before the runs (--windows). */
const WINDOWS = oneOf<'idle' | 'in-order' | 'few-lost' | 'lossy' | 'reordered'>('windows', opt.windows, ['idle', 'in-order', 'few-lost', 'lossy', 'reordered'])[0];
/**
 * The numbers of the first 40 each SA lost (--windows lossy; reordered: got late): one more
 * than a window keeps as holes without blocks. few-lost: one fewer, the most it keeps.
 */
const LOST = new Set(Array.from({ length: MAX_HOLES + (WINDOWS === 'few-lost' ? 0 : 1) }, (_, k) => 5 * (k + 1)));

const SRC_VM = 'web1';
const DST_VM = 'web2';
const NOW = Date.now();
if (opt['big-counters']) countedPast2G();
const T_US = NOW * 1000;

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

/** One cable and its SAs count 2^31 bytes (--big-counters), before any other is made. */
function countedPast2G(): void {
  const z = Buffer.alloc(16);
  const c = new Cable(CableDirection.Egress, z, z, Drop.None, 'x', null, NOW);
  const out = new OutboundSa(256, 0, NOW, { softPackets: 1e9, softBytes: 1e12, softAgeMs: 1e9, hardSeq: DEFAULT_HARD_SEQ });
  const inb = new InboundSa(256, 0, 1, c);
  for (const r of [c, out, inb]) r.bytes = 2 ** 31;
  inb.release();
}

/** Print, unless this is a shard (the main thread prints the shards' sums). */
function say(text: string): void {
  if (SHARD === null) console.log(text);
}

/** Wait until every shard is here (a no-op outside --workers), so that their timed runs overlap. */
function barrier(): void {
  if (SHARD === null) return;
  const a = SHARD.sync;
  const generation = Atomics.load(a, 1);
  if (Atomics.add(a, 0, 1) === SHARD.of - 1) {
    Atomics.store(a, 0, 0);
    Atomics.add(a, 1, 1);
    Atomics.notify(a, 1);
  } else if (Atomics.wait(a, 1, generation, 600_000) === 'timed-out') {
    throw new Error(`shard ${SHARD.index}: the other shards did not reach the barrier in 10 minutes`);
  }
}

/** Seeded xorshift32: the same pool and SPIs every run. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x1_0000_0000;
  };
}

// ---- Sinks --------------------------------------------------------------------------------

const enum WireMode {
  Discard = 0,
  /** Copy into the capture arena at the packet's pool index (tag), for ingress alone. */
  Capture = 1,
}

/** h1's underlay port. */
class Wire implements PacketSink {
  mode = WireMode.Discard;
  capture: Buffer = Buffer.alloc(0);
  captureLen = 0;

  send(b: Batch, idx: Int32Array, n: number): number {
    if (this.mode !== WireMode.Capture) return n;
    for (let k = 0; k < n; k++) {
      const i = idx[k];
      if (b.len[i] !== this.captureLen) throw new Error(`underlay packet of ${b.len[i]} bytes, expected ${this.captureLen}`);
      // Not b.data.copy(): Node 20's Buffer.copy makes a Uint8Array view per call.
      this.capture.set(b.data.subarray(b.start[i], b.start[i] + b.len[i]), b.tag[i] * this.captureLen);
    }
    return n;
  }
}

/**
 * egress+ingress: the egress batch itself becomes the ingress batch, no copy in between.
 * Every packet must be on its way to the underlay (the run's counter check says so too).
 */
function handOver(b: Batch): void {
  for (let i = 0; i < b.count; i++) {
    if (b.next[i] !== Next.Underlay) throw new Error(`packet ${i} of an egress batch did not go to the underlay`);
    const tag = b.tag[i];
    b.init(i, b.start[i], b.len[i], 0, b.time[i]);
    b.tag[i] = tag;
  }
}

/** web2's port on h2: discards, or (for the check pass) compares each frame with what web1 sent. */
class Receiver implements PacketSink {
  checking = false;
  checked = 0;
  wrong = 0;
  pool: Buffer[] = [];

  constructor(private readonly mac: Buffer) {}

  send(b: Batch, idx: Int32Array, n: number): number {
    if (!this.checking) return n;
    for (let k = 0; k < n; k++) {
      const i = idx[k];
      const sent = this.pool[b.tag[i]];
      const at = b.start[i];
      const ok = b.len[i] === sent.length &&
        b.data.compare(this.mac, 0, 6, at, at + 6) === 0 &&
        b.data.compare(ROUTER_MAC, 0, 6, at + ETH_OFF_SRC, at + ETH_OFF_SRC + 6) === 0 &&
        b.data.compare(sent, ETH_HLEN, sent.length, at + ETH_HLEN, at + b.len[i]) === 0;
      this.checked++;
      if (!ok) this.wrong++;
    }
    return n;
  }
}

const discard: PacketSink = { send: (_b, _idx, n) => n };

// ---- The rig: two hosts, N cables ------------------------------------------------------------

interface Rig {
  readonly off: OfflineCloud;
  readonly h1: Host;
  readonly h2: Host;
  readonly srcPort: number;
  readonly cipher: EspCipher;
  readonly keys: number[];
  readonly wire: Wire;
  readonly receiver: Receiver;
  /** Egress batch (frames) and ingress batch (underlay packets). */
  readonly b: Batch;
  readonly ib: Batch;
}

/** Synthetic identity k (< 2^32) in the tenant prefix: prefix | be4c:0000 | k (pooled, as the upcall's copies are). */
function identity(prefix: Buffer, k: number): Buffer {
  const id = Buffer.allocUnsafe(16);
  prefix.copy(id, 0, 0, 8);
  id.writeUInt32BE(0xbe4c0000, 8);
  id.writeUInt32BE(k >>> 0, 12);
  return id;
}

function withCableMax(config: CloudConfig, n: number): CloudConfig {
  const cables = { ...config.switch.cables, max: Math.max(config.switch.cables.max, n) };
  return { ...config, switch: { ...config.switch, cables } };
}

function heapMb(): number {
  gc();
  return process.memoryUsage().heapUsed / 2 ** 20;
}

async function openRig(config: CloudConfig, n: number, mode: Mode): Promise<Rig> {
  const cipher = mode === 'native' ? new NativeEspCipher() : new NodeEspCipher();
  const off = await OfflineCloud.open(withCableMax(config, n), {
    cipher, clock: { now: () => NOW }, log: new MemoryLogger(), carry: false,
  });
  const src = config.vms.get(SRC_VM)!;
  const dst = config.vms.get(DST_VM)!;
  const h1 = off.hosts.get(src.host)!;
  const h2 = off.hosts.get(dst.host)!;
  const b = new Batch();
  const ib = new Batch();
  const wire = new Wire();
  const receiver = new Receiver(dst.mac);
  h1.attach(wire, h1.ports.all().map(() => discard));
  h2.attach(discard, h2.ports.all().map((p) => (p.identityText === dst.identityText ? receiver : discard)));
  return { off, h1, h2, srcPort: h1.portIndex(src.identityText)!, cipher, keys: [], wire, receiver, b, ib };
}

/** JS heap bytes per cable after plugging: an egress cable on h1, an ingress cable on h2, each with its SA. */
interface CableHeap {
  readonly egress: number;
  readonly ingress: number;
  /** Bytes per pair of typed arrays outside the JS heap (the caches' and SPI tables' keys), window blocks left out. */
  readonly typed: number;
}

/** Bytes of ArrayBuffers outside the JS heap, but the replay windows' chunks (counted on their own). */
function typedBytes(): number {
  return process.memoryUsage().arrayBuffers - ReplayWindow.stored.chunks * 2 ** 20;
}

/** What --windows made every SA carry, for the header. */
function windowsText(): string {
  const lost = LOST.size;
  if (WINDOWS === 'few-lost') return `${lost} of them lost: the most holes a replay window keeps without blocks`;
  if (WINDOWS === 'lossy') return `${lost} of them lost: every replay window with its blocks`;
  if (WINDOWS === 'reordered') return `${lost} of them late: every replay window took its blocks, then its holes were filled`;
  return 'in order';
}

/**
 * What a pair costs on a host (ESP, n >= 1000): its two cables with their SAs (heap at plug
 * time); the typed arrays that grew with them outside the heap (the cable caches' hashes, the
 * SPI tables' keys); the native cipher's entries of their two keys (one per SA; the bench's two hosts
 * share one key a pair, so a key's share of the table counts twice), free slots included;
 * and its share of the replay windows' blocks, which live outside the JS heap in 1-MB chunks
 * (src/esp/replay-window.ts). Then the cipher contexts alive: one for each key the runs used,
 * about 1 KB, until the sweep finds the key idle for a minute.
 */
function pairLine(heap: CableHeap, n: number, when: string, cipher: EspCipher): string {
  const { windows, chunks } = ReplayWindow.stored;
  const blocks = (chunks * 2 ** 20) / n;
  const keyBytes = cipher instanceof NativeEspCipher && cipher.keyCount > 0 ? cipher.tableBytes / cipher.keyCount : 0;
  return `  a pair ${when}: ${Math.round(heap.egress + heap.ingress + heap.typed + 2 * keyBytes + blocks)} B (cables with SAs ${Math.round(heap.egress)} + ${Math.round(heap.ingress)}, ` +
    `typed arrays ${Math.round(heap.typed)}, keys in C 2 x ${Math.round(keyBytes)}, window blocks ${Math.round(blocks)}: ${windows} windows with blocks, ${chunks} chunks of 1 MB); ` +
    `cipher contexts alive ${cipher.contexts}`;
}

/** The sweep's trim once the keys the runs used are idle: passes of TRIM_KEYS keys until no context is left, timed, and the RSS before and after. */
function trimLine(rig: Rig): string {
  const rssMb = (): number => process.memoryUsage().rss / 2 ** 20;
  const contexts = rig.cipher.contexts;
  const before = rssMb();
  const times: number[] = [];
  while (rig.cipher.contexts > 0 && times.length < 100_000) {
    const t0 = performance.now();
    rig.cipher.trim(1, TRIM_KEYS); // idle for a pass: every context the runs made
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return `  the sweep's trim of idle cipher contexts, ${TRIM_KEYS} keys a sweep: ${contexts} contexts freed in ${times.length} sweeps, ` +
    `${times[times.length >> 1].toFixed(2)} ms a sweep (at most ${times[times.length - 1].toFixed(2)}); rss ${before.toFixed(0)} -> ${rssMb().toFixed(0)} MB`;
}

/** The sweep's pass over every window with blocks (SHRINK_WINDOWS a sweep), timed; then the pair again, with the chunks freed given back. */
function shrinkLine(heap: CableHeap, n: number, rig: Rig): string {
  const windows = ReplayWindow.stored.windows;
  let gave = 0;
  let calls = 0;
  const t0 = performance.now();
  for (let asked = 0; asked < windows; asked += SHRINK_WINDOWS, calls++) gave += ReplayWindow.shrink(SHRINK_WINDOWS);
  const ms = performance.now() - t0;
  while (ReplayWindow.compact(64) > 0);
  return `  the sweep's shrink, ${SHRINK_WINDOWS} windows a sweep: ${gave} of ${windows} windows gave their blocks back, ${(ms / Math.max(1, calls)).toFixed(2)} ms a sweep\n` +
    pairLine(heap, n, 'after it', rig.cipher);
}

/** Insert N plugged cable pairs (and SAs); prints what it cost. */
function plugCables(rig: Rig, config: CloudConfig, n: number, mode: Mode): CableHeap {
  const { h1, h2 } = rig;
  const src = config.vms.get(SRC_VM)!;
  const dstVm = config.vms.get(DST_VM)!;
  const prefix = config.tenants.get(src.tenant)!.prefix.bytes;
  const port = h1.ports.at(rig.srcPort);
  const dstPort = h2.portIndex(dstVm.identityText)!;
  const esp = mode !== 'plain';
  const real = (h: Host): DirectionDecision => {
    const d = h.policy.decide(src.identityText, dstVm.identityText, NOW);
    if (d.drop !== Drop.None) throw new Error(`policy refuses ${SRC_VM} -> ${DST_VM}: ${d.rule}`);
    return esp ? d : { ...d, encrypt: false };
  };
  const egressDecision = real(h1);
  const ingressDecision = real(h2);
  const s = config.switch;
  const limits: SaLimits = {
    softPackets: s.esp.rekey.packets, softBytes: s.esp.rekey.bytes, softAgeMs: s.esp.rekey.seconds * 1000, hardSeq: DEFAULT_HARD_SEQ,
  };
  const ttl = s.cables.ttl * 1000;
  const random = rng(SEED * 7919);
  const spis = new Set<number>();

  const t0 = performance.now();
  let keyMs = 0;
  if (esp) {
    const distinct = KEY_POOL > 0 ? Math.min(KEY_POOL, n) : n;
    const material = randomBytes(20 * distinct);
    const k0 = performance.now();
    for (let k = 0; k < distinct; k++) {
      rig.keys.push(rig.cipher.addKey(s.esp.cipher, material.subarray(20 * k, 20 * k + 16), material.subarray(20 * k + 16, 20 * k + 20)));
    }
    keyMs = performance.now() - k0;
  }
  const heap0 = heapMb();
  const typed0 = typedBytes();
  const live = (c: Cable): void => {
    c.lasts(NOW, NOW + ttl, NOW + 2 * ttl);
  };
  const outbound: (OutboundSa | null)[] = [];
  const outer = makeOuterTemplate(h1.address, h2.address, esp ? PROTO_ESP : PROTO_IPV6); // one per peer, as the resolver keeps them
  for (let k = 0; k < n; k++) {
    const dst = identity(prefix, k + 1);
    const c = new Cable(CableDirection.Egress, port.identity, dst, Drop.None, egressDecision.rule, egressDecision, NOW);
    c.srcPort = rig.srcPort;
    c.peerAddr = h2.address;
    c.peerHost = h2.name;
    c.outer = outer;
    live(c);
    if (esp) {
      let spi: number;
      do spi = Math.floor(random() * 0x4000_0000); while (spi < 256 || spis.has(spi));
      spis.add(spi);
      c.sa = new OutboundSa(spi, rig.keys[k % rig.keys.length], NOW, limits);
    }
    outbound.push(c.sa);
    h1.egressCables.insert(c);
  }
  const heap1 = heapMb();
  for (let k = 0; k < n; k++) {
    const srcId = Buffer.from(src.identity);
    const dst = identity(prefix, k + 1);
    const c = new Cable(CableDirection.Ingress, srcId, dst,
      Drop.None, ingressDecision.rule, ingressDecision, NOW);
    c.localPort = dstPort;
    c.peerAddr = h1.address;
    c.peerHost = h1.name;
    live(c);
    const sa = outbound[k];
    if (sa) {
      const inbound = h2.sas.installInbound(c, sa.spi, sa.key, h1.address); // the inbound SA with the same SPI and key: into the cache with it
      if (WINDOWS !== 'idle') {
        sa.resumeAfter(0, 40);
        for (let seq = 1; seq <= 40; seq++) if (WINDOWS === 'in-order' || !LOST.has(seq)) inbound.accept(0, seq);
        if (WINDOWS === 'reordered') for (const seq of LOST) inbound.accept(0, seq);
      }
    } else {
      h2.ingressCables.insert(c);
    }
  }
  outbound.length = 0;
  const heap2 = heapMb();
  const perCable = (mb: number): string => (n >= 1000 ? `${Math.round((mb * 2 ** 20) / n)} B/cable` : 'too few to say per cable');
  say(
    `  ${fmtCount(n)} cables, ${label(mode)}: plugged in ${((performance.now() - t0) / 1000).toFixed(1)} s` +
      (esp ? ` (${rig.keys.length} keys in ${(keyMs / 1000).toFixed(1)} s)` : '') +
      `; heapUsed ${heap2.toFixed(0)} MB: h1 egress +${(heap1 - heap0).toFixed(0)} MB (${perCable(heap1 - heap0)}` +
      `${esp ? ' with OutboundSa' : ''}), h2 ingress +${(heap2 - heap1).toFixed(0)} MB (${perCable(heap2 - heap1)}` +
      `${esp ? ' with InboundSa' : ''}); rss ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MB`,
  );
  if (h1.egressCables.evictions + h2.ingressCables.evictions > 0) throw new Error('cables were evicted: the cache is too small');
  const heap = { egress: ((heap1 - heap0) * 2 ** 20) / n, ingress: ((heap2 - heap1) * 2 ** 20) / n, typed: (typedBytes() - typed0) / n };
  if (esp && n >= 1000) say(pairLine(heap, n, 'after plugging', rig.cipher));
  if (esp && n >= 1000 && WINDOWS === 'reordered') say(shrinkLine(heap, n, rig));
  if (n >= REPLUGS) say(`  sweep of a host (expired cables and SAs, every ${SWEEP_INTERVAL_MS} ms; nothing due): ${sweepMs(rig).toFixed(2)} ms, median of 5`);
  if (n >= REPLUGS) say(`  re-plug of an ingress cable (a refresh: the new cable into the cache, its SAs handed over): ${replugUs(rig, n).toFixed(1)} µs each, ${REPLUGS} of them`);
  return heap;
}

/** Host.sweep() of h1 and of h2 (ms, the median of 5 each, summed): how long a sweep holds the event loop. */
function sweepMs(rig: Rig): number {
  const time = (h: Rig['h1']): number => {
    const ms: number[] = [];
    for (let k = 0; k < 5; k++) {
      const t0 = performance.now();
      h.sweep();
      ms.push(performance.now() - t0);
    }
    return ms.sort((a, b) => a - b)[2];
  };
  return time(rig.h1) + time(rig.h2);
}

/** Cables re-plugged by replugUs, and unplugged by notifyUs. */
const REPLUGS = 200;

/** REPLUGS cables of `cache` (which holds n), chosen at random with `seed`. */
function pickCables(cache: CableCache, n: number, seed: number): Cable[] {
  const random = rng(seed);
  const picks = new Set<number>();
  while (picks.size < REPLUGS) picks.add(Math.floor(random() * n));
  return [...cache.all()].filter((_, k) => picks.has(k));
}

/** h1 told by h2 that REPLUGS random SPIs are unknown there (src/switch/sa-table.ts spiRejected); µs each. */
function notifyUs(rig: Rig, n: number): number {
  const { h1 } = rig;
  const sas = pickCables(h1.egressCables, n, 11).map((c) => ({ spi: c.sa!.spi, peer: c.peerAddr }));
  const before = h1.egressCables.size;
  const t0 = performance.now();
  for (const sa of sas) h1.sas.spiRejected(sa.spi, sa.peer);
  const us = ((performance.now() - t0) * 1000) / sas.length;
  if (h1.egressCables.size !== before - sas.length) throw new Error(`NOTIFY unplugged ${before - h1.egressCables.size} cables, not ${sas.length}`);
  return us;
}

/**
 * Replace REPLUGS random ingress cables with new ones of the same pair, as a refresh or a
 * policy change does (src/dataplane/upcall.ts install, src/switch/reevaluate.ts); µs each.
 */
function replugUs(rig: Rig, n: number): number {
  const { h2 } = rig;
  const olds = pickCables(h2.ingressCables, n, 7);
  const t0 = performance.now();
  for (const old of olds) {
    const next = new Cable(old.direction, old.src, old.dst, old.drop, old.rule, old.decision, NOW);
    next.localPort = old.localPort;
    next.peerAddr = old.peerAddr;
    next.peerHost = old.peerHost;
    next.refreshTick = old.refreshTick;
    next.expiresTick = old.expiresTick;
    h2.ingressCables.insert(next);
    h2.sas.replaced(old, next);
  }
  return ((performance.now() - t0) * 1000) / olds.length;
}

function closeRig(rig: Rig): void {
  for (const k of rig.keys) rig.cipher.removeKey(k);
  rig.off.close();
}

// ---- Traffic ------------------------------------------------------------------------------

interface Pool {
  readonly size: number;
  /** Pristine frames (views of one arena), rewritten only between configurations. */
  readonly frames: Buffer[];
  readonly arena: Buffer;
}

/** Room for --pool frames of `size` IPv6 bytes; allocated once, before any cable exists. */
function allocPool(size: number): Pool {
  const stride = ETH_HLEN + size;
  const arena = Buffer.alloc(POOL * stride);
  const frames: Buffer[] = [];
  for (let j = 0; j < POOL; j++) frames.push(arena.subarray(j * stride, (j + 1) * stride));
  return { size, frames, arena };
}

/** Echo requests from web1 (valid MAC, identity and checksum), each to a random one of the n cables. */
function fillPool(pool: Pool, config: CloudConfig, n: number): void {
  const src = config.vms.get(SRC_VM)!;
  const prefix = config.tenants.get(src.tenant)!.prefix.bytes;
  const random = rng(SEED);
  for (let j = 0; j < POOL; j++) {
    const dst = identity(prefix, 1 + Math.floor(random() * n));
    echoBetween(src.mac, src.identity, dst, j, pool.size - 40 - 8).copy(pool.frames[j]);
  }
}

function fillEgress(rig: Rig, pool: Pool, k: number): void {
  const b = rig.b;
  b.reset();
  const base = k * BATCH_MAX;
  for (let i = 0; i < BATCH_MAX; i++) b.push(pool.frames[base + i], FRAME_OFFSET, rig.srcPort, T_US, base + i);
}

/** Underlay packets made from the pool, as fed to ingress alone. */
interface Captured {
  readonly packets: Buffer[];
  readonly arena: Buffer;
  readonly len: number;
}

/** Room for the underlay packets made from a pool, ESP (the larger) or plain. */
function allocCapture(size: number): Buffer {
  return Buffer.alloc(POOL * (IPV4_HLEN + espLength(size)));
}

function captureViews(arena: Buffer, size: number, esp: boolean): Captured {
  const len = IPV4_HLEN + (esp ? espLength(size) : size);
  const packets: Buffer[] = [];
  for (let j = 0; j < POOL; j++) packets.push(arena.subarray(j * len, (j + 1) * len));
  return { packets, arena, len };
}

/** Send the whole pool through h1's egress (untimed) and keep what it puts on the underlay. */
function capture(rig: Rig, pool: Pool, cap: Captured): void {
  rig.wire.mode = WireMode.Capture;
  rig.wire.capture = cap.arena;
  rig.wire.captureLen = cap.len;
  for (let k = 0; k < POOL / BATCH_MAX; k++) {
    fillEgress(rig, pool, k);
    rig.h1.runEgress(rig.b);
  }
  rig.wire.mode = WireMode.Discard;
}

function fillIngress(rig: Rig, cap: Captured, k: number): void {
  const b = rig.ib;
  b.reset();
  const base = k * BATCH_MAX;
  for (let i = 0; i < BATCH_MAX; i++) b.push(cap.packets[base + i], UNDERLAY_OFFSET, 0, T_US, base + i);
}

// ---- Measuring ----------------------------------------------------------------------------

/** JS heap bytes allocated between begin() and end(), from the GCs in between, and their time. */
class AllocMeter {
  bytes = 0;
  gcMs = 0;
  private profiler: v8.GCProfiler | null = null;
  private startUsed = 0;

  begin(): void {
    this.startUsed = v8.getHeapStatistics().used_heap_size;
    this.profiler = new v8.GCProfiler();
    this.profiler.start();
  }

  end(): void {
    const stats = (this.profiler!.stop() as unknown as GcStats).statistics;
    const endUsed = v8.getHeapStatistics().used_heap_size;
    let prev = this.startUsed;
    for (const s of stats) {
      this.gcMs += s.cost / 1000;
      this.bytes += Math.max(0, s.beforeGC.heapStatistics.usedHeapSize - prev);
      prev = s.afterGC.heapStatistics.usedHeapSize;
    }
    this.bytes += Math.max(0, endUsed - prev);
    this.profiler = null;
  }
}

interface GcStats {
  statistics: { cost: number; beforeGC: { heapStatistics: { usedHeapSize: number } }; afterGC: { heapStatistics: { usedHeapSize: number } } }[];
}

interface Run {
  readonly packets: number;
  readonly ms: number;
  readonly allocBytes: number;
  readonly gcMs: number;
}

interface Snapshot {
  readonly eIn: number;
  readonly eUnderlay: number;
  readonly eDropped: number;
  readonly eHeld: number;
  readonly iIn: number;
  readonly iDelivered: number;
  readonly iDropped: number;
  readonly iHeld: number;
}

function snapshot(rig: Rig): Snapshot {
  const e: PipelineCounters = rig.h1.egress.counters;
  const i: PipelineCounters = rig.h2.ingress.counters;
  return {
    eIn: e.in, eUnderlay: e.underlay, eDropped: e.dropped(), eHeld: e.held,
    iIn: i.in, iDelivered: i.delivered, iDropped: i.dropped(), iHeld: i.held,
  };
}

/** Every packet of the run went where it should: nothing dropped, held or lost. */
function checkRun(rig: Rig, before: Snapshot, what: string): Snapshot {
  const a = snapshot(rig);
  const d = (k: keyof Snapshot): number => a[k] - before[k];
  const bad = d('eDropped') + d('iDropped') + d('eHeld') + d('iHeld') > 0 || d('eUnderlay') !== d('eIn') || d('iDelivered') !== d('iIn');
  if (bad) {
    throw new Error(`${what}: egress ${JSON.stringify(rig.h1.egress.counters.snapshot())}, ingress ${JSON.stringify(rig.h2.ingress.counters.snapshot())}`);
  }
  return a;
}

function runEgress(rig: Rig, pool: Pool, ms: number, fillOnly: boolean): Run {
  const batches = POOL / BATCH_MAX;
  const meter = new AllocMeter();
  let packets = 0;
  let k = 0;
  meter.begin();
  const t0 = performance.now();
  let t = t0;
  do {
    fillEgress(rig, pool, k);
    if (!fillOnly) rig.h1.runEgress(rig.b);
    packets += rig.b.count;
    k = k + 1 === batches ? 0 : k + 1;
    t = performance.now();
  } while (t - t0 < ms);
  meter.end();
  return { packets, ms: t - t0, allocBytes: meter.bytes, gcMs: meter.gcMs };
}

function runIngress(rig: Rig, pool: Pool, cap: Captured, esp: boolean, ms: number, fillOnly: boolean): Run {
  const batches = POOL / BATCH_MAX;
  const meter = new AllocMeter();
  let packets = 0;
  let spent = 0;
  while (spent < ms) {
    if (esp && !fillOnly) capture(rig, pool, cap); // fresh sequence numbers for every pass
    meter.begin();
    const t0 = performance.now();
    let t = t0;
    for (let k = 0; k < batches && spent + (t - t0) < ms; k++) {
      fillIngress(rig, cap, k);
      if (!fillOnly) rig.h2.runIngress(rig.ib);
      packets += rig.ib.count;
      t = performance.now();
    }
    meter.end();
    spent += t - t0;
  }
  return { packets, ms: spent, allocBytes: meter.bytes, gcMs: meter.gcMs };
}

function runBoth(rig: Rig, pool: Pool, ms: number): Run {
  const batches = POOL / BATCH_MAX;
  const meter = new AllocMeter();
  let packets = 0;
  let k = 0;
  meter.begin();
  const t0 = performance.now();
  let t = t0;
  do {
    fillEgress(rig, pool, k);
    rig.h1.runEgress(rig.b);
    handOver(rig.b);
    rig.h2.runIngress(rig.b);
    packets += rig.b.count;
    k = k + 1 === batches ? 0 : k + 1;
    t = performance.now();
  } while (t - t0 < ms);
  meter.end();
  return { packets, ms: t - t0, allocBytes: meter.bytes, gcMs: meter.gcMs };
}

/** One pass of the pool through egress and ingress, every delivered frame compared with what was sent. */
function verify(rig: Rig, pool: Pool, what: string): void {
  const before = snapshot(rig);
  const r = rig.receiver;
  r.pool = pool.frames;
  r.checking = true;
  r.checked = 0;
  r.wrong = 0;
  for (let k = 0; k < POOL / BATCH_MAX; k++) {
    fillEgress(rig, pool, k);
    rig.h1.runEgress(rig.b);
    handOver(rig.b);
    rig.h2.runIngress(rig.b);
  }
  r.checking = false;
  checkRun(rig, before, `${what}: check pass`);
  if (r.checked !== POOL || r.wrong > 0) throw new Error(`${what}: ${r.checked} of ${POOL} frames delivered, ${r.wrong} differ from what was sent`);
}

interface Figures {
  pps: number;
  allocPerPacket: number;
  /** Share of the run spent in GC, percent. */
  gc: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** A warm-up run, then RUNS runs, each checked; the medians. `after` sees each run's starting counters. */
function measure(rig: Rig, what: string, run: () => Run, check: boolean, after?: (before: Snapshot) => void): Figures {
  barrier();
  run();
  const pps: number[] = [];
  const alloc: number[] = [];
  const gcShare: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    const before = snapshot(rig);
    barrier();
    const x = run();
    if (check) checkRun(rig, before, what);
    after?.(before);
    pps.push((x.packets * 1000) / x.ms);
    alloc.push(x.allocBytes / x.packets);
    gcShare.push((100 * x.gcMs) / x.ms);
  }
  return { pps: median(pps), allocPerPacket: median(alloc), gc: median(gcShare) };
}

// ---- Output -------------------------------------------------------------------------------

const label = (m: Mode): string => (m === 'plain' ? 'plain 6in4' : `ESP ${m === 'node' ? 'node-crypto' : 'native'}`);
const fmtCount = (n: number): string => (n >= 1e6 ? `${n / 1e6}M` : n >= 1e3 ? `${n / 1e3}k` : String(n));
const mpps = (f: Figures | undefined): string => (f ? (f.pps / 1e6).toFixed(3) : '-');
const gbps = (f: Figures | undefined, size: number): string => (f ? ((f.pps * size * 8) / 1e9).toFixed(2) : '-');
const nsPer = (f: Figures | undefined): string => (f ? (1e9 / f.pps).toFixed(0) : '-');
const alloc = (f: Figures | undefined): string => (f ? f.allocPerPacket.toFixed(f.allocPerPacket < 10 ? 1 : 0) : '-');
const gcPct = (f: Figures | undefined): string => (f ? f.gc.toFixed(0) : '-');

interface Row {
  cables: number;
  mode: Mode;
  size: number;
  egress?: Figures;
  ingress?: Figures;
  both?: Figures;
  fillE?: Figures;
  fillI?: Figures;
}

const HEADER = [
  'cables', 'encap', 'cipher', 'IPv6 B', 'egress Mpps', 'Gbit/s', 'ingress Mpps', 'Gbit/s', 'e+i Mpps', 'Gbit/s',
  'fill ns/pkt e|i', 'alloc B/pkt e|i|e+i', 'GC % e|i|e+i',
];

function cells(r: Row): string[] {
  return [
    fmtCount(r.cables), r.mode === 'plain' ? '6in4' : 'ESP', r.mode === 'plain' ? '-' : r.mode === 'node' ? 'node-crypto' : 'native',
    String(r.size), mpps(r.egress), gbps(r.egress, r.size), mpps(r.ingress), gbps(r.ingress, r.size), mpps(r.both), gbps(r.both, r.size),
    `${nsPer(r.fillE)}|${nsPer(r.fillI)}`, `${alloc(r.egress)}|${alloc(r.ingress)}|${alloc(r.both)}`,
    `${gcPct(r.egress)}|${gcPct(r.ingress)}|${gcPct(r.both)}`,
  ];
}

function table(rows: string[][]): string {
  const w = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  const line = (r: string[]): string => `| ${r.map((x, c) => (c < 3 ? x.padEnd(w[c]) : x.padStart(w[c]))).join(' | ')} |`;
  return [line(rows[0]), `|${w.map((n, c) => (c < 3 ? `:${'-'.repeat(n + 1)}` : `${'-'.repeat(n + 1)}:`)).join('|')}|`, ...rows.slice(1).map(line)].join('\n');
}

function ratios(rows: Row[]): string {
  const out: string[][] = [['cables', 'IPv6 B', 'native/node e', 'native/node i', 'native/node e+i', 'ESP native/plain e', 'ESP native/plain i', 'ESP native/plain e+i']];
  const find = (n: number, m: Mode, s: number): Row | undefined => rows.find((r) => r.cables === n && r.mode === m && r.size === s);
  const ratio = (a: Figures | undefined, b: Figures | undefined): string => (a && b ? `${(a.pps / b.pps).toFixed(2)}x` : '-');
  for (const n of CABLES) {
    for (const s of SIZES) {
      const nat = find(n, 'native', s);
      const node = find(n, 'node', s);
      const plain = find(n, 'plain', s);
      out.push([
        fmtCount(n), String(s), ratio(nat?.egress, node?.egress), ratio(nat?.ingress, node?.ingress), ratio(nat?.both, node?.both),
        ratio(nat?.egress, plain?.egress), ratio(nat?.ingress, plain?.ingress), ratio(nat?.both, plain?.both),
      ]);
    }
  }
  return table(out);
}

function describeCounters(rig: Rig, before: Snapshot, what: string): string {
  const a = snapshot(rig);
  const lookup = rig.h1.egress.stage<CableLookup>('cable-lookup');
  return (
    `counters of one run (${what}): h1 egress in ${a.eIn - before.eIn}, underlay ${a.eUnderlay - before.eUnderlay}, ` +
      `dropped ${a.eDropped - before.eDropped}, held ${a.eHeld - before.eHeld}; h2 ingress in ${a.iIn - before.iIn}, ` +
      `delivered ${a.iDelivered - before.iDelivered}, dropped ${a.iDropped - before.iDropped}, held ${a.iHeld - before.iHeld}; ` +
      `h1 cable-lookup since plugging: hits ${lookup.hits}, misses ${lookup.misses}`
  );
}

// ---- Main ---------------------------------------------------------------------------------

/**
 * Every size and measurement for N cables in one mode. A function of its own, so that nothing
 * in main's frame (a register across an await) keeps this rig alive while the next is built.
 */
async function benchRig(
  config: CloudConfig, n: number, mode: Mode, pools: Pool[], arenas: Buffer[],
): Promise<{ rows: Row[]; counters: string }> {
  const esp = mode !== 'plain';
  const rig = await openRig(config, n, mode);
  const heap = plugCables(rig, config, n, mode);
  if (opt['heap-dir']) say(`  heap snapshot after plugging: ${v8.writeHeapSnapshot(join(opt['heap-dir'], `cables-${n}-${mode}.heapsnapshot`))}`);
  const rows: Row[] = [];
  let counters = '';
  for (const [p, pool] of pools.entries()) {
    gc(); // no marking left over from setup or the last size
    const what = `${fmtCount(n)} cables, ${label(mode)}, ${pool.size} B`;
    verify(rig, pool, what);
    const row: Row = { cables: n, mode, size: pool.size };
    const cap = captureViews(arenas[p], pool.size, esp);
    row.fillE = measure(rig, what, () => runEgress(rig, pool, MS / 2, true), false);
    if (MEASURES.includes('egress')) row.egress = measure(rig, `${what}, egress`, () => runEgress(rig, pool, MS, false), true);
    if (MEASURES.includes('ingress')) {
      capture(rig, pool, cap); // plain packets carry no state: this one capture serves every pass
      row.fillI = measure(rig, what, () => runIngress(rig, pool, cap, esp, MS / 2, true), false);
      row.ingress = measure(rig, `${what}, ingress`, () => runIngress(rig, pool, cap, esp, MS, false), true);
    }
    if (MEASURES.includes('both')) {
      const last = (before: Snapshot): void => {
        counters = describeCounters(rig, before, `${what}, egress+ingress`);
      };
      row.both = measure(rig, `${what}, egress+ingress`, () => runBoth(rig, pool, MS), true, last);
    }
    rows.push(row);
    say(`  ${table([HEADER, cells(row)]).split('\n')[2]}`);
  }
  if (esp && n >= 1000) say(pairLine(heap, n, 'after the runs', rig.cipher));
  if (esp && n >= 1000 && rig.cipher.contexts > 0) say(trimLine(rig));
  // Last, as it unplugs cables: a peer's NOTIFY for an SPI it no longer knows.
  if (esp && n >= REPLUGS) say(`  NOTIFY of an unknown SPI (the egress cable with it unplugged): ${notifyUs(rig, n).toFixed(1)} µs each, ${REPLUGS} of them`);
  closeRig(rig);
  return { rows, counters };
}

async function main(): Promise<void> {
  const config = loadConfig(CONFIG_FILE);
  const modes = MODES.filter((m) => m !== 'native' || nativeAvailable());
  if (modes.length < MODES.length) say('native addon not built: native mode skipped');
  say(
    `pipeline bench: ${RUNS} runs of ${MS} ms (median, after a warm-up), pool ${POOL} frames in ${POOL / BATCH_MAX} batches of ${BATCH_MAX}, ` +
      `${KEY_POOL > 0 ? `ESP keys shared: at most ${KEY_POOL} distinct` : 'one ESP key per SA'}, ${SRC_VM} (h1) -> N identities, delivered to ${DST_VM} (h2)` +
      (opt['big-counters'] ? '; counters past 2^31 before the runs (--big-counters)' : '') +
      (WINDOWS === 'idle' ? '' : `; every SA 40 packets along before the runs, ${windowsText()} (--windows ${WINDOWS})`),
  );
  const rows: Row[] = [];
  let counters = '';
  const started = performance.now();
  // The big arenas first: allocating them later would start a full GC over a heap of cables.
  const pools = SIZES.map(allocPool);
  const arenas = SIZES.map(allocCapture);
  for (const n of CABLES) {
    const mine = SHARD === null ? n : Math.max(1, Math.ceil(n / SHARD.of)); // a shard's part of the cables
    pools.forEach((p) => fillPool(p, config, mine));
    for (const mode of modes) {
      const r = await benchRig(config, mine, mode, pools, arenas);
      rows.push(...r.rows.map((row) => ({ ...row, cables: n })));
      counters = r.counters || counters;
      gc();
    }
  }
  if (SHARD !== null) {
    parentPort!.postMessage(rows);
    return;
  }
  if (counters) say(`\n${counters}\nevery timed run was checked the same way: nothing dropped or held`);
  say(`\n${table([HEADER, ...rows.map(cells)])}`);
  say(`\nratios (packets/s)\n${ratios(rows)}`);
  say(`\ntotal ${((performance.now() - started) / 1000).toFixed(0)} s`);
}

// ---- --workers: shards in worker threads ----------------------------------------------------

/** This bench's arguments without --workers, for a shard. */
function shardArgv(): string[] {
  const out: string[] = [];
  const args = process.argv.slice(2);
  for (let k = 0; k < args.length; k++) {
    if (args[k] === '--workers') k++;
    else if (!args[k].startsWith('--workers=')) out.push(args[k]);
  }
  return out;
}

/** One shard's rows; fails if it throws or exits before it sends them. */
function runShard(index: number, of: number, sync: Int32Array): Promise<Row[]> {
  return new Promise((resolve, reject) => {
    const w = new Worker(new URL(import.meta.url), { argv: shardArgv(), workerData: { index, of, sync } satisfies Shard });
    let rows: Row[] | undefined;
    w.on('message', (m: Row[]) => (rows = m));
    w.on('error', reject);
    w.on('exit', (code) => (rows && code === 0 ? resolve(rows) : reject(new Error(`shard ${index} of ${of} exited with ${code} before its figures`))));
  });
}

/** The shards' rows added up: packets/s summed, allocation and GC averaged. */
function sumShards(shards: Row[][]): Row[] {
  const add = (fs: (Figures | undefined)[]): Figures | undefined => {
    const got = fs.filter((f): f is Figures => f !== undefined);
    if (got.length < fs.length) return undefined;
    return {
      pps: got.reduce((t, f) => t + f.pps, 0),
      allocPerPacket: got.reduce((t, f) => t + f.allocPerPacket, 0) / got.length,
      gc: got.reduce((t, f) => t + f.gc, 0) / got.length,
    };
  };
  return shards[0].map((r, k) => {
    const same = shards.map((rows) => rows[k]);
    return {
      ...r, egress: add(same.map((x) => x.egress)), ingress: add(same.map((x) => x.ingress)), both: add(same.map((x) => x.both)),
      fillE: add(same.map((x) => x.fillE)), fillI: add(same.map((x) => x.fillI)),
    };
  });
}

async function sharded(counts: readonly number[]): Promise<void> {
  const started = performance.now();
  say(`pipeline bench in worker threads (--workers ${counts.join(',')}): each shard ${RUNS} runs of ${MS} ms after a warm-up, started together; N / W cables and --pool / W frames a shard`);
  const byCount = new Map<number, Row[]>();
  for (const w of counts) {
    const sync = new Int32Array(new SharedArrayBuffer(8));
    const rows = sumShards(await Promise.all(Array.from({ length: w }, (_, k) => runShard(k, w, sync))));
    byCount.set(w, rows);
    say(`\n${w} worker${w === 1 ? '' : 's'}\n${table([HEADER, ...rows.map(cells)])}`);
  }
  const base = counts[0];
  const out: string[][] = [['cables', 'encap', 'cipher', 'IPv6 B', ...counts.slice(1).flatMap((w) => [`e ${w}/${base}`, `i ${w}/${base}`, `e+i ${w}/${base}`])]];
  const ratio = (a: Figures | undefined, b: Figures | undefined): string => (a && b ? `${(a.pps / b.pps).toFixed(2)}x` : '-');
  byCount.get(base)!.forEach((r, k) => {
    const c = cells(r);
    out.push([...c.slice(0, 4), ...counts.slice(1).flatMap((w) => {
      const x = byCount.get(w)![k];
      return [ratio(x.egress, r.egress), ratio(x.ingress, r.ingress), ratio(x.both, r.both)];
    })]);
  });
  say(`\npackets/s against ${base} worker${base === 1 ? '' : 's'}\n${table(out)}`);
  say(`\ntotal ${((performance.now() - started) / 1000).toFixed(0)} s`);
}

if (WORKERS !== null && SHARD === null) await sharded(WORKERS);
else await main();
