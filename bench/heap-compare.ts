// Two V8 heap snapshots of one process (bench/churn.ts --heap-dir), compared by what holds the
// memory: objects grouped by type and constructor (or string, array, closure, ...), with their
// count and self size in each, sorted by growth. A snapshot is taken after a full GC, so what
// grows between them is retained.
//
//   node dist/bench/heap-compare.js --before A.heapsnapshot --after B.heapsnapshot [--top 25]

import { readFileSync } from 'node:fs';
import { benchOptions, integer, refuse } from './options.js';

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

type Groups = Map<string, { count: number; bytes: number }>;

function groups(file: string): { groups: Groups; total: number } {
  const s = JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
  const f = s.snapshot.meta.node_fields;
  const width = f.length;
  const [iType, iName, iSize] = [f.indexOf('type'), f.indexOf('name'), f.indexOf('self_size')];
  const types = s.snapshot.meta.node_types[0];
  const out: Groups = new Map();
  let total = 0;
  for (let k = 0; k < s.nodes.length; k += width) {
    const type = types[s.nodes[k + iType]];
    const name = type === 'object' || type === 'closure' ? s.strings[s.nodes[k + iName]] : '';
    const key = name ? `${type} ${name}` : type;
    const g = out.get(key) ?? { count: 0, bytes: 0 };
    g.count++;
    g.bytes += s.nodes[k + iSize];
    total += s.nodes[k + iSize];
    out.set(key, g);
  }
  return { groups: out, total };
}

const values = benchOptions({ before: { type: 'string' }, after: { type: 'string' }, top: { type: 'string' } });
const { before, after } = values;
if (!before || !after) refuse('--before and --after: the two .heapsnapshot files');
const top = integer('top', values.top ?? '25');
const a = groups(before!);
const b = groups(after!);
const rows = [...new Set([...a.groups.keys(), ...b.groups.keys()])].map((key) => {
  const x = a.groups.get(key) ?? { count: 0, bytes: 0 };
  const y = b.groups.get(key) ?? { count: 0, bytes: 0 };
  return { key, count: [x.count, y.count], bytes: [x.bytes, y.bytes], grew: y.bytes - x.bytes };
}).sort((p, q) => q.grew - p.grew);
const kb = (n: number): string => (n / 1024).toFixed(1);
process.stdout.write(`self size in all: ${kb(a.total)} KB -> ${kb(b.total)} KB (${b.total >= a.total ? '+' : ''}${kb(b.total - a.total)} KB)\n`);
process.stdout.write('grew most (KB before -> after, count before -> after):\n');
for (const r of rows.slice(0, top)) process.stdout.write(`  ${r.key.slice(0, 60).padEnd(60)} ${kb(r.bytes[0]).padStart(9)} -> ${kb(r.bytes[1]).padStart(9)}   ${String(r.count[0]).padStart(7)} -> ${String(r.count[1]).padStart(7)}\n`);
