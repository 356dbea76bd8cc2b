// nvi-switch replay: captured VM frames through the real pipeline, offline.
//
//   nvi-switch replay [-c nvi-switch.yaml]                 the shipped fixtures (fixtures/pcap/manifest.yaml)
//   nvi-switch replay --in FILE.pcap --port VM             one capture of VM's port
//   options: --out DIR       write underlay.pcap, delivered.pcap, replies.pcap and esp_sa (SA keys)
//            --one-host      stop at the sender's underlay (do not carry into the peer's ingress)
//            --cipher node|native   --at ISO-TIME   --json   --quiet (no per-packet lines)
//
// Every frame enters the egress pipeline of its VM's host; what goes on the underlay is
// carried into the ingress of the host it is addressed to. At the end: a line per packet
// (its verdict), the totals per file (checked against the manifest when it has
// expectations) and each host's counters.

import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { loadConfig } from '../config/config.js';
import { NviError } from '../config/errors.js';
import { wiresharkSaRecord, type SaKeys } from '../crypto/wireshark-sa.js';
import { LINKTYPE_ETHERNET, LINKTYPE_RAW, PcapWriter, readPcap } from '../io/pcap.js';
import { MemoryLogger } from '../log.js';
import { chooseCipher } from '../crypto/choose-cipher.js';
import { OfflineCloud, type Verdict } from '../replay/offline-cloud.js';
import { DEFAULT_CONFIG, parseArgs } from './args.js';

interface FixtureEntry {
  readonly file: string;
  readonly port: string;
  readonly about?: string;
  readonly expect?: { readonly delivered?: number; readonly consumed?: number; readonly drops?: Record<string, number> };
}

interface FileResult {
  readonly file: string;
  readonly port: string;
  readonly frames: number;
  readonly delivered: number;
  readonly consumed: number;
  readonly dropped: number;
  readonly drops: Record<string, number>;
  readonly pending: number;
  /** null when the manifest has no expectation; else whether it matched, and how not. */
  readonly check: null | { readonly ok: boolean; readonly diff: string };
}

export async function run(argv: string[]): Promise<number> {
  const args = parseArgs(argv, {
    values: { config: 'c', in: null, port: null, manifest: null, out: null, cipher: null, at: null },
    flags: ['json', 'quiet', 'one-host'],
  });
  const config = loadConfig(args.values.get('config') ?? DEFAULT_CONFIG);
  const entries = fixtureList(args.values, config.file);
  const at = args.values.get('at');
  const fixed = at === undefined ? undefined : Date.parse(at);
  if (fixed !== undefined && Number.isNaN(fixed)) throw new NviError('NVI_ERR_USAGE', `--at ${at}: not a time (use ISO 8601)`);
  const clock = { now: () => fixed ?? Date.now() };
  const sas: SaKeys[] = [];
  const cipher = chooseCipher(args.values.get('cipher'));
  const off = await OfflineCloud.open(config, {
    cipher, clock, log: new MemoryLogger(), carry: !args.flags.has('one-host'), exportKeys: (k) => sas.push(k),
  });
  const results: FileResult[] = [];
  const lines: { tag: number; file: string; frame: number; port: string; verdict: Verdict }[] = [];
  try {
    let tag = 0;
    for (const e of entries) {
      const pcap = readPcap(e.file);
      if (pcap.linkType !== LINKTYPE_ETHERNET) throw new NviError('NVI_ERR_PCAP', `${e.file}: link type ${pcap.linkType}, expected Ethernet (1)`);
      const first = tag;
      const frames = pcap.records.map((r) => ({ data: r.data, timeUs: r.timeUs, tag: tag++ }));
      await off.sendFrames(e.port, frames);
      for (let t = first; t < tag; t++) lines.push({ tag: t, file: e.file, frame: t - first + 1, port: e.port, verdict: off.verdicts.get(t)! });
      results.push(summarize(e, lines.slice(lines.length - frames.length).map((l) => l.verdict)));
    }
    const outDir = args.values.get('out');
    if (outDir) writeOutputs(outDir, off, sas);
    const counters = Object.fromEntries([...off.hosts].map(([name, h]) => [name, {
      egress: h.egress.counters.snapshot(), ingress: h.ingress.counters.snapshot(), kx: { accepted: h.kx.counters.accepted, refused: sum(h.kx.counters.refusals) },
    }]));
    if (args.flags.has('json')) {
      process.stdout.write(`${JSON.stringify({ files: results, counters, verdicts: lines.map((l) => ({ file: l.file, frame: l.frame, port: l.port, ...l.verdict })) }, null, 2)}\n`);
    } else {
      if (!args.flags.has('quiet')) printVerdicts(lines);
      printFiles(results);
      printCounters(counters);
      if (outDir) process.stdout.write(`\nwrote ${join(outDir, 'underlay.pcap')}, delivered.pcap, replies.pcap and esp_sa (${sas.length} SAs)\n`);
    }
  } finally {
    off.close();
  }
  return results.some((r) => r.check && !r.check.ok) ? 1 : 0;
}

/** Entries from --in/--port, or the manifest (default: fixtures/pcap/manifest.yaml beside the config). */
function fixtureList(values: Map<string, string>, configFile: string): FixtureEntry[] {
  const input = values.get('in');
  if (input !== undefined) {
    const port = values.get('port');
    if (!port) throw new NviError('NVI_ERR_USAGE', '--in needs --port VM (the VM whose port the frames were captured on)');
    return [{ file: input, port }];
  }
  const manifest = values.get('manifest') ?? join(dirname(configFile), 'fixtures', 'pcap', 'manifest.yaml');
  if (!existsSync(manifest)) throw new NviError('NVI_ERR_USAGE', `no --in given and no manifest at ${manifest}`);
  const doc = parseYaml(readFileSync(manifest, 'utf8')) as unknown;
  const list = Array.isArray(doc) ? doc : (doc as { fixtures?: unknown }).fixtures;
  if (!Array.isArray(list)) throw new NviError('NVI_ERR_CONFIG', `${manifest}: expected a list of fixtures`);
  return list.map((raw, k) => {
    const e = raw as FixtureEntry;
    if (typeof e.file !== 'string' || typeof e.port !== 'string') throw new NviError('NVI_ERR_CONFIG', `${manifest}: fixtures[${k}] needs file and port`);
    return { ...e, file: resolve(dirname(manifest), e.file) };
  });
}

function summarize(e: FixtureEntry, verdicts: Verdict[]): FileResult {
  const count = (f: Verdict['fate']): number => verdicts.filter((v) => v.fate === f).length;
  const drops: Record<string, number> = {};
  for (const v of verdicts) if (v.fate === 'dropped') {
    const name = v.detail.split(' ')[0];
    drops[name] = (drops[name] ?? 0) + 1;
  }
  const delivered = count('delivered');
  const consumed = count('consumed') + count('answered');
  const r = { file: e.file, port: e.port, frames: verdicts.length, delivered, consumed, dropped: count('dropped'), drops, pending: count('pending') };
  if (!e.expect) return { ...r, check: null };
  const want = { delivered: e.expect.delivered ?? 0, consumed: e.expect.consumed ?? 0, drops: e.expect.drops ?? {} };
  const diffs: string[] = [];
  if (want.delivered !== delivered) diffs.push(`delivered ${delivered}, expected ${want.delivered}`);
  if (want.consumed !== consumed) diffs.push(`consumed ${consumed}, expected ${want.consumed}`);
  for (const name of new Set([...Object.keys(want.drops), ...Object.keys(drops)])) {
    if ((want.drops[name] ?? 0) !== (drops[name] ?? 0)) diffs.push(`${name} ${drops[name] ?? 0}, expected ${want.drops[name] ?? 0}`);
  }
  return { ...r, check: { ok: diffs.length === 0, diff: diffs.join('; ') } };
}

function writeOutputs(dir: string, off: OfflineCloud, sas: SaKeys[]): void {
  mkdirSync(dir, { recursive: true });
  const write = (file: string, link: number, recs: readonly { data: Buffer; timeUs: number }[]): void => {
    const w = new PcapWriter(join(dir, file), link);
    for (const r of recs) w.write(r.data, 0, r.data.length, r.timeUs);
    w.close();
  };
  write('underlay.pcap', LINKTYPE_RAW, off.underlay);
  write('delivered.pcap', LINKTYPE_ETHERNET, off.delivered);
  write('replies.pcap', LINKTYPE_ETHERNET, off.replies);
  writeFileSync(join(dir, 'esp_sa'), sas.map((s) => `${wiresharkSaRecord(s)}\n`).join(''), { mode: 0o600 });
}

function printVerdicts(lines: readonly { file: string; frame: number; port: string; verdict: Verdict }[]): void {
  const name = (f: string): string => f.split('/').pop()!;
  const w = Math.max(...lines.map((l) => `${name(l.file)}#${l.frame}`.length), 5);
  process.stdout.write('verdict of each packet\n');
  for (const l of lines) {
    const v = l.verdict;
    process.stdout.write(`  ${`${name(l.file)}#${l.frame}`.padEnd(w)}  ${l.port.padEnd(8)} ${v.fate.padEnd(9)} ${v.path.join('->').padEnd(7)} ${v.detail}\n`);
  }
  process.stdout.write('\n');
}

function printFiles(results: readonly FileResult[]): void {
  const name = (f: string): string => f.split('/').pop()!;
  const w = Math.max(...results.map((r) => name(r.file).length), 4);
  process.stdout.write(`${'file'.padEnd(w)}  port      frames delivered consumed dropped  check\n`);
  for (const r of results) {
    const check = r.check === null ? '-' : r.check.ok ? 'ok' : `MISMATCH: ${r.check.diff}`;
    const drops = Object.entries(r.drops).map(([k, v]) => `${k}=${v}`).join(' ');
    process.stdout.write(
      `${name(r.file).padEnd(w)}  ${r.port.padEnd(8)} ${String(r.frames).padStart(6)} ${String(r.delivered).padStart(9)} ${String(r.consumed).padStart(8)} ${String(r.dropped).padStart(7)}  ${check}${drops ? `  [${drops}]` : ''}\n`,
    );
  }
  const total = (k: 'frames' | 'delivered' | 'consumed' | 'dropped'): number => results.reduce((a, r) => a + r[k], 0);
  process.stdout.write(`${'total'.padEnd(w)}  ${''.padEnd(8)} ${String(total('frames')).padStart(6)} ${String(total('delivered')).padStart(9)} ${String(total('consumed')).padStart(8)} ${String(total('dropped')).padStart(7)}\n`);
}

function printCounters(counters: Record<string, Record<string, unknown>>): void {
  process.stdout.write('\ncounters\n');
  for (const [host, c] of Object.entries(counters)) {
    for (const [dir, snap] of Object.entries(c)) {
      process.stdout.write(`  ${host} ${dir.padEnd(8)} ${JSON.stringify(snap)}\n`);
    }
  }
}

function sum(a: Float64Array): number {
  let n = 0;
  for (const v of a) n += v;
  return n;
}
