// The layers of src/, bottom to top, and a checker: an import may only point at its own
// layer or one below, and no chain of imports may lead back to where it started.
//
//   node dist/test/layers.js        prints every violation; exit status 1 if there is one

import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Folders of src/ by rank: each may import its own rank and those before it. */
export const LAYERS: readonly (readonly string[])[] = [
  ['base'], // drop reasons, errors, clock and random, addresses, trace, token bucket, log
  ['native'], // the typed loader of the C addon
  ['wire'], // codecs: Ethernet, IPv4, IPv6, ICMPv6, ESP header and trailer
  ['esp'], // ciphers, SAs, replay window, key-exchange messages
  ['trust'], // identities, certificates, bindings, the verifier
  ['dataplane'], // batches, stages, cables, the upcall; declares what policy implements
  ['policy'], // tenant policy: model, compiler, decisions, filters, flow tables
  ['io'], // TAPs, raw sockets, pcap files
  ['config'], // nvi-switch.yaml
  ['store'], // the mapping store and its backends
  ['switch'], // one host's switch: SDN Algorithms 1 and 2, SAs, the live process
  ['lab', 'replay', 'console'], // tools built on the switch
  ['cli'], // the nvi-switch command
];

export interface Violation {
  readonly kind: 'upward' | 'cycle' | 'unlayered';
  readonly text: string;
}

/** Relative imports of one TypeScript source, as paths relative to `root` (".ts"). */
export function importsOf(file: string, source: string): string[] {
  const out: string[] = [];
  const re = /(?:^|\n)\s*(?:import|export)\b[^;'"]*?\bfrom\s+'(\.{1,2}\/[^']+)'/g;
  for (let m = re.exec(source); m; m = re.exec(source)) {
    out.push(normalize(join(dirname(file), m[1])).replace(/\.js$/, '.ts'));
  }
  return out;
}

function layerOf(file: string): number {
  const top = file.includes('/') ? file.slice(0, file.indexOf('/')) : '';
  return LAYERS.findIndex((names) => names.includes(top));
}

/** Check a tree given as path (relative to src/) -> source text. */
export function checkLayers(files: ReadonlyMap<string, string>): Violation[] {
  const out: Violation[] = [];
  const graph = new Map<string, string[]>();
  for (const [file, source] of files) {
    const from = layerOf(file);
    if (from < 0) {
      out.push({ kind: 'unlayered', text: `${file} is in no layer (put it in one of ${LAYERS.flat().join(', ')})` });
      continue;
    }
    const deps = importsOf(file, source).filter((d) => files.has(d));
    graph.set(file, deps);
    for (const d of deps) {
      const to = layerOf(d);
      if (to > from) out.push({ kind: 'upward', text: `${file} (${LAYERS[from].join('/')}) imports ${d} (${LAYERS[to].join('/')}), a higher layer` });
    }
  }
  for (const files of cycles(graph)) out.push({ kind: 'cycle', text: `import cycle among ${files.join(', ')}` });
  return out;
}

/** The files of every import cycle (strongly connected components of more than one file, or a file importing itself). */
function cycles(graph: ReadonlyMap<string, readonly string[]>): string[][] {
  // Tarjan's algorithm, iterative over the files in sorted order so the report is stable.
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  let next = 0;
  const visit = (v: string): void => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) !== index.get(v)) return;
    const scc: string[] = [];
    for (let w = stack.pop()!; ; w = stack.pop()!) {
      onStack.delete(w);
      scc.push(w);
      if (w === v) break;
    }
    if (scc.length > 1 || (graph.get(v) ?? []).includes(v)) found.push(scc.sort());
  };
  for (const v of [...graph.keys()].sort()) if (!index.has(v)) visit(v);
  return found;
}

/** Every .ts file under `dir`, keyed by its path relative to `dir`. */
export function readTree(dir: string): Map<string, string> {
  const files = new Map<string, string>();
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts')) files.set(relative(dir, p), readFileSync(p, 'utf8'));
    }
  };
  walk(dir);
  return files;
}

/** src/ of this checkout (dist/test/layers.js -> ../../src). */
export const SRC_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src');

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const v = checkLayers(readTree(SRC_DIR));
  for (const x of v) console.log(`${x.kind}: ${x.text}`);
  console.log(v.length === 0 ? 'layers: every import points down or sideways, no cycles' : `layers: ${v.length} violation(s)`);
  process.exitCode = v.length === 0 ? 0 : 1;
}
