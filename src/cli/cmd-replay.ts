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

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig } from '../config/config.js';
import { NviError } from '../base/errors.js';
import { wiresharkSaRecord, type SaKeys } from '../esp/wireshark-sa.js';
import { MemoryLogger } from '../base/log.js';
import { chooseCipher } from '../esp/choose-cipher.js';
import { OfflineCloud } from '../replay/offline-cloud.js';
import { defaultManifest, readManifest, replayEntries, type FileResult, type FixtureEntry, type FrameVerdict } from '../replay/manifest.js';
import { CONFIG_OPTION, parseOptions } from './args.js';

export async function run(argv: string[]): Promise<number> {
  const { values } = parseOptions(argv, {
    ...CONFIG_OPTION, in: { type: 'string' }, port: { type: 'string' }, manifest: { type: 'string' }, out: { type: 'string' }, cipher: { type: 'string' }, at: { type: 'string' },
    json: { type: 'boolean' }, quiet: { type: 'boolean' }, 'one-host': { type: 'boolean' },
  });
  const config = loadConfig(values.config);
  const input = values.in;
  const port = values.port;
  if (input !== undefined && port === undefined) throw new NviError('NVI_ERR_USAGE', '--in needs --port VM (the VM whose port the frames were captured on)');
  const entries: FixtureEntry[] = input !== undefined ? [{ file: input, port: port! }] : readManifest(values.manifest ?? defaultManifest(config.file));
  const at = values.at;
  const fixed = at === undefined ? undefined : Date.parse(at);
  if (fixed !== undefined && Number.isNaN(fixed)) throw new NviError('NVI_ERR_USAGE', `--at ${at}: not a time (use ISO 8601)`);
  const clock = { now: () => fixed ?? Date.now() };
  const sas: SaKeys[] = [];
  const cipher = chooseCipher(values.cipher);
  const off = await OfflineCloud.open(config, {
    cipher, clock, log: new MemoryLogger(), carry: !values['one-host'], exportKeys: (k) => sas.push(k),
  });
  try {
    const { files: results, frames: lines } = await replayEntries(off, entries);
    const outDir = values.out;
    if (outDir) {
      off.writeCaptures(outDir);
      writeFileSync(join(outDir, 'esp_sa'), sas.map((s) => `${wiresharkSaRecord(s)}\n`).join(''), { mode: 0o600 });
    }
    const counters = Object.fromEntries([...off.hosts].map(([name, h]) => [name, {
      egress: h.egress.counters.snapshot(), ingress: h.ingress.counters.snapshot(), kx: { accepted: h.kx.counters.accepted, refused: sum(h.kx.counters.refusals) },
    }]));
    if (values.json) {
      process.stdout.write(`${JSON.stringify({ files: results, counters, verdicts: lines.map((l) => ({ file: l.file, frame: l.frame, port: l.port, ...l.verdict })) }, null, 2)}\n`);
    } else {
      if (!values.quiet) printVerdicts(lines);
      printFiles(results);
      printCounters(counters);
      if (outDir) process.stdout.write(`\nwrote ${join(outDir, 'underlay.pcap')}, delivered.pcap, replies.pcap and esp_sa (${sas.length} SAs)\n`);
    }
    return results.some((r) => r.check && !r.check.ok) ? 1 : 0;
  } finally {
    off.close();
  }
}

function printVerdicts(lines: readonly FrameVerdict[]): void {
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
