// The fixtures' manifest (fixtures/pcap/manifest.yaml): which VM port each capture enters,
// and what should become of its frames. Replaying a list of entries through an
// OfflineCloud gives each frame's verdict and each file's totals, checked against the
// manifest when it states expectations.

import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { NviError } from '../base/errors.js';
import { LINKTYPE_ETHERNET, readPcap } from '../io/pcap.js';
import type { OfflineCloud, Verdict } from './offline-cloud.js';

export interface FixtureEntry {
  readonly file: string;
  readonly port: string;
  readonly about?: string;
  readonly expect?: { readonly delivered?: number; readonly consumed?: number; readonly drops?: Record<string, number> };
}

export interface FileResult {
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

export interface FrameVerdict {
  readonly tag: number;
  readonly file: string;
  readonly frame: number;
  readonly port: string;
  readonly data: Buffer;
  readonly verdict: Verdict;
}

/** The default manifest: fixtures/pcap/manifest.yaml beside the config file. */
export function defaultManifest(configFile: string): string {
  return join(dirname(configFile), 'fixtures', 'pcap', 'manifest.yaml');
}

export function readManifest(manifest: string): FixtureEntry[] {
  if (!existsSync(manifest)) throw new NviError('NVI_ERR_USAGE', `no manifest at ${manifest}`);
  const doc = parseYaml(readFileSync(manifest, 'utf8')) as unknown;
  const list = Array.isArray(doc) ? doc : (doc as { fixtures?: unknown }).fixtures;
  if (!Array.isArray(list)) throw new NviError('NVI_ERR_CONFIG', `${manifest}: expected a list of fixtures`);
  return list.map((raw, k) => {
    const e = raw as FixtureEntry;
    if (typeof e.file !== 'string' || typeof e.port !== 'string') throw new NviError('NVI_ERR_CONFIG', `${manifest}: fixtures[${k}] needs file and port`);
    return { ...e, file: resolve(dirname(manifest), e.file) };
  });
}

/** Replay every entry in order through `off`; frames are tagged 0, 1, 2... across all files. */
export async function replayEntries(off: OfflineCloud, entries: readonly FixtureEntry[]): Promise<{ files: FileResult[]; frames: FrameVerdict[] }> {
  const files: FileResult[] = [];
  const frames: FrameVerdict[] = [];
  let tag = 0;
  for (const e of entries) {
    const pcap = readPcap(e.file);
    if (pcap.linkType !== LINKTYPE_ETHERNET) throw new NviError('NVI_ERR_PCAP', `${e.file}: link type ${pcap.linkType}, expected Ethernet (1)`);
    const first = tag;
    const input = pcap.records.map((r) => ({ data: r.data, timeUs: r.timeUs, tag: tag++ }));
    await off.sendFrames(e.port, input);
    const mine = input.map((f) => ({ tag: f.tag, file: e.file, frame: f.tag - first + 1, port: e.port, data: f.data, verdict: off.verdicts.get(f.tag)! }));
    frames.push(...mine);
    files.push(summarize(e, mine.map((m) => m.verdict)));
  }
  return { files, frames };
}

export function summarize(e: FixtureEntry, verdicts: readonly Verdict[]): FileResult {
  const count = (f: Verdict['fate']): number => verdicts.filter((v) => v.fate === f).length;
  const drops: Record<string, number> = {};
  for (const v of verdicts) {
    if (v.fate !== 'dropped') continue;
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
