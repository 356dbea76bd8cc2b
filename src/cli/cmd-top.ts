// A live view of one running switch, refreshed every second (as `tinc top`):
//   nvi-switch top [--host H] [--interval S] [-c nvi-switch.yaml]
// Cables sorted by rate (pair, direction, peer, rule, packets/s, bits/s, drops/s), drops by
// reason with their rate, upcalls and key exchanges a second. Keys: p packets, b bytes,
// d drops, n pair (sort); t rates/totals; q quit. Reads `stats` and `cables` from the
// control socket: nothing of the switch changes.

import { existsSync } from 'node:fs';
import { NviError } from '../base/errors.js';
import { loadConfig } from '../config/config.js';
import type { CableInfo } from '../switch/cable-info.js';
import { controlRequest } from '../switch/control.js';
import { controlPath } from '../switch/paths.js';
import { CONFIG_OPTION, parseOptions } from './args.js';

type SortKey = 'packets' | 'bytes' | 'drops' | 'pair';
const SORT_KEYS: Record<string, SortKey> = { p: 'packets', b: 'bytes', d: 'drops', n: 'pair' };

interface Sample {
  readonly at: number;
  readonly cables: readonly CableInfo[];
  readonly drops: Readonly<Record<string, number>>;
  readonly upcalls: number;
  readonly keyExchanges: number;
}

export interface View {
  sort: SortKey;
  totals: boolean;
}

interface Stats {
  egress: { drops: Record<string, number> };
  ingress: { drops: Record<string, number> };
  upcall: { misses: number };
  kx: { initsSent: number; accepted: number };
}

async function sample(path: string): Promise<Sample> {
  const s = (await controlRequest(path, { cmd: 'stats' })) as Stats;
  const cables = (await controlRequest(path, { cmd: 'cables' })) as CableInfo[];
  const drops: Record<string, number> = { ...s.egress.drops };
  for (const [k, n] of Object.entries(s.ingress.drops)) drops[k] = (drops[k] ?? 0) + n;
  return { at: Date.now(), cables, drops, upcalls: s.upcall.misses, keyExchanges: s.kx.initsSent + s.kx.accepted };
}

const key = (c: CableInfo): string => `${c.direction} ${c.src} ${c.dst}`;

function human(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)}G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

/** The screen for `now` against `before` (rates over the time between), `rows` lines at most. */
export function render(host: string, before: Sample, now: Sample, view: View, rows: number): string {
  const dt = Math.max(0.001, (now.at - before.at) / 1000);
  const prev = new Map(before.cables.map((c) => [key(c), c]));
  const rate = (v: number, was: number | undefined): number => (view.totals ? v : Math.max(0, v - (was ?? v)) / dt);
  const lines = now.cables.map((c) => {
    const p = prev.get(key(c));
    return { c, pps: rate(c.packets, p?.packets), bps: rate(c.bytes, p?.bytes) * 8, dps: rate(c.drops, p?.drops) };
  });
  const by: Record<SortKey, (a: (typeof lines)[number], b: (typeof lines)[number]) => number> = {
    packets: (a, b) => b.pps - a.pps,
    bytes: (a, b) => b.bps - a.bps,
    drops: (a, b) => b.dps - a.dps,
    pair: (a, b) => `${a.c.srcVm}${a.c.dstVm}`.localeCompare(`${b.c.srcVm}${b.c.dstVm}`),
  };
  lines.sort(by[view.sort]);
  const unit = view.totals ? '' : '/s';
  const out: string[] = [];
  out.push(`nvi-switch top  ${host}  ${new Date(now.at).toISOString()}  ${view.totals ? 'totals' : 'rates'}, sorted by ${view.sort}`);
  out.push(`keys: p packets  b bytes  d drops  n pair  t rates/totals  q quit`);
  out.push(`upcalls ${human(rate(now.upcalls, before.upcalls))}${unit}  key exchanges ${human(rate(now.keyExchanges, before.keyExchanges))}${unit}  cables ${now.cables.length}`);
  out.push('');
  const head = ['PAIR', 'DIR', 'PEER', 'RULE', `PACKETS${unit}`, `BITS${unit}`, `DROPS${unit}`];
  const cells = lines.map((l) => [`${l.c.srcVm ?? l.c.src} -> ${l.c.dstVm ?? l.c.dst}`, l.c.direction === 'egress' ? 'out' : 'in', l.c.peer, l.c.rule.length > 40 ? `${l.c.rule.slice(0, 39)}…` : l.c.rule, human(l.pps), human(l.bps), human(l.dps)]);
  const reasons = Object.entries(now.drops).map(([r, n]) => ({ r, n, per: rate(n, before.drops[r] ?? 0) })).sort((a, b) => b.per - a.per || b.n - a.n);
  const room = Math.max(1, rows - out.length - 4 - Math.min(reasons.length, 8));
  out.push(...columns(head, cells.slice(0, room)));
  if (cells.length > room) out.push(`  ... ${cells.length - room} more`);
  out.push('');
  out.push(...columns(['DROP REASON', `RATE/s`, 'TOTAL'], reasons.slice(0, 8).map((x) => [x.r, human(x.per), human(x.n)])));
  return `${out.join('\n')}\n`;
}

function columns(head: string[], rows: string[][]): string[] {
  const w = head.map((h, k) => Math.max(h.length, ...rows.map((r) => r[k].length)));
  return [head, ...rows].map((r) => r.map((c, k) => c.padEnd(w[k])).join('  ').trimEnd());
}

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseOptions(argv, { ...CONFIG_OPTION, host: { type: 'string' }, interval: { type: 'string' } });
  if (positionals.length > 0) throw new NviError('NVI_ERR_USAGE', 'usage: nvi-switch top [--host H] [--interval SECONDS] [-c nvi-switch.yaml]');
  const cfg = loadConfig(values.config);
  const interval = values.interval === undefined ? 1 : Number(values.interval);
  if (!(interval >= 0.2 && interval <= 60)) throw new NviError('NVI_ERR_USAGE', `--interval: seconds from 0.2 to 60, got "${values.interval}"`);
  const host = values.host ?? [...cfg.hosts.keys()].find((h) => existsSync(controlPath(cfg, h)));
  if (host === undefined) throw new NviError('NVI_ERR_CONTROL', `no switch of ${cfg.file} is running`);
  if (!cfg.hosts.has(host)) throw new NviError('NVI_ERR_USAGE', `--host ${host}: no such host in ${cfg.file}`);
  const path = controlPath(cfg, host);
  const view: View = { sort: 'packets', totals: false };
  let before = await sample(path);
  let now = before;
  let quit: () => void = () => {};
  const done = new Promise<void>((r) => (quit = r));
  const draw = (): void => {
    process.stdout.write(`\x1b[H\x1b[2J${render(host, before, now, view, process.stdout.rows || 40)}`);
  };
  if (process.stdin.isTTY) process.stdin.setRawMode(true);
  process.stdin.setEncoding('utf8').on('data', (k: string) => {
    if (k === 'q' || k === '\x03') quit();
    else if (SORT_KEYS[k]) view.sort = SORT_KEYS[k];
    else if (k === 't') view.totals = !view.totals;
    else return;
    draw();
  });
  process.once('SIGTERM', () => quit());
  const timer = setInterval(() => {
    sample(path).then(
      (s) => {
        before = now;
        now = s;
        draw();
      },
      (e: Error) => {
        process.stdout.write(`\x1b[H\x1b[2Jnvi-switch top ${host}: ${e.message}\n`);
      },
    );
  }, interval * 1000);
  draw();
  await done;
  clearInterval(timer);
  if (process.stdin.isTTY) process.stdin.setRawMode(false);
  process.stdin.pause();
  process.stdout.write('\n');
  return 0;
}
