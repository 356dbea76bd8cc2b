// Operator commands against running switches, over their control sockets:
//   nvi-switch cables [-c nvi-switch.yaml] [--host NAME] [--json] [--flush [--reverify]]
//     --flush: forget every cable and SA (each pair goes through the miss path again; spare SAs stay)
//     --reverify: with --flush, forget verified bindings and VM certificates too (each is
//       verified from scratch again; host certificates and the highest epoch seen per identity stay)
//   nvi-switch stats  [-c nvi-switch.yaml] [--host NAME] [--json]
// Without --host: every host of the config whose switch answers.

import { existsSync } from 'node:fs';
import { loadConfig, type CloudConfig } from '../config/config.js';
import { NviError } from '../base/errors.js';
import type { CableInfo } from '../switch/cable-info.js';
import { controlRequest } from '../switch/control.js';
import { controlPath } from '../switch/paths.js';
import { CONFIG_OPTION, parseOptions } from './args.js';

const OPTIONS = { ...CONFIG_OPTION, host: { type: 'string' }, json: { type: 'boolean' } } as const;

/** Ask every selected host's switch; hosts not running are reported, not fatal, unless named. */
async function ask(cfg: CloudConfig, only: string | undefined, cmd: string, extra: Record<string, unknown> = {}): Promise<Map<string, unknown>> {
  const hosts = only ? [only] : [...cfg.hosts.keys()];
  if (only && !cfg.hosts.has(only)) throw new NviError('NVI_ERR_USAGE', `--host ${only}: no such host in ${cfg.file}`);
  const out = new Map<string, unknown>();
  for (const h of hosts) {
    const path = controlPath(cfg, h);
    if (!only && !existsSync(path)) continue;
    out.set(h, await controlRequest(path, { cmd, ...extra }));
  }
  if (out.size === 0) throw new NviError('NVI_ERR_CONTROL', `no switch of ${cfg.file} is running (no control socket under ${controlPath(cfg, '*')})`);
  return out;
}

export const cables = {
  async run(argv: string[]): Promise<number> {
    const { values } = parseOptions(argv, { ...OPTIONS, flush: { type: 'boolean' }, reverify: { type: 'boolean' } });
    if (values.reverify && !values.flush) throw new NviError('NVI_ERR_USAGE', '--reverify goes with --flush');
    const cfg = loadConfig(values.config);
    if (values.flush) {
      for (const [host, r] of await ask(cfg, values.host, 'flush', values.reverify ? { reverify: true } : {})) {
        const { flushed, bindings } = r as { flushed: number; bindings: number };
        process.stdout.write(`${host}: ${flushed} cables flushed${values.reverify ? `, ${bindings} verified bindings forgotten` : ''}\n`);
      }
      return 0;
    }
    const answers = await ask(cfg, values.host, 'cables');
    if (values.json) {
      process.stdout.write(`${JSON.stringify(Object.fromEntries(answers), null, 2)}\n`);
      return 0;
    }
    for (const [host, list] of answers) {
      process.stdout.write(`${host}\n`);
      const rows = (list as CableInfo[]).map((c) => [
        c.direction, `${c.srcVm ?? c.src} -> ${c.dstVm ?? c.dst}`, c.peer, c.epoch === undefined ? '-' : String(c.epoch), c.state, c.rule, c.sa ?? '-', String(c.packets), String(c.bytes), String(c.drops), `${c.ageSeconds}s`,
      ]);
      process.stdout.write(table(['dir', 'pair', 'peer', 'epoch', 'state', 'rule', 'SA', 'packets', 'bytes', 'drops', 'age'], rows));
    }
    return 0;
  },
};

export const stats = {
  async run(argv: string[]): Promise<number> {
    const { values } = parseOptions(argv, OPTIONS);
    const cfg = loadConfig(values.config);
    const answers = await ask(cfg, values.host, 'stats');
    if (values.json) {
      process.stdout.write(`${JSON.stringify(Object.fromEntries(answers), null, 2)}\n`);
      return 0;
    }
    for (const [host, s] of answers) {
      process.stdout.write(`${host}\n`);
      for (const [part, value] of Object.entries(s as Record<string, unknown>)) {
        if (part === 'host') continue;
        if (part === 'egress' || part === 'ingress') process.stdout.write(pipelineText(part, value as PipelineStats));
        else process.stdout.write(`  ${part.padEnd(9)} ${JSON.stringify(value)}\n`);
      }
    }
    return 0;
  },
};

interface PipelineStats {
  readonly [total: string]: number | Record<string, number> | Record<string, Record<string, number | Record<string, number>>>;
  readonly stages: Record<string, Record<string, number | Record<string, number>>>;
}

/** A pipeline's totals on one line, then one line per stage (and port, tx): what it settled, its drops by reason. */
export function pipelineText(name: string, p: PipelineStats): string {
  const totals = ['in', 'reinjected', 'delivered', 'underlay', 'consumed', 'replied', 'held', 'dropped'].map((k) => `${k} ${p[k] as number}`);
  let out = `  ${name.padEnd(9)} ${totals.join('  ')}\n`;
  for (const [stage, row] of Object.entries(p.stages)) {
    const parts = Object.entries(row).filter(([k]) => k !== 'drops').map(([k, n]) => `${k} ${n as number}`);
    const drops = Object.entries((row.drops ?? {}) as Record<string, number>).map(([r, n]) => `${r} ${n}`);
    if (drops.length > 0) parts.push(`dropped: ${drops.join(', ')}`);
    out += `    ${stage.padEnd(15)} ${parts.join(', ')}\n`;
  }
  return out;
}

export function table(head: string[], rows: string[][]): string {
  const w = head.map((h, k) => Math.max(h.length, ...rows.map((r) => r[k].length)));
  const line = (r: string[]): string => `  ${r.map((c, k) => c.padEnd(w[k])).join('  ').trimEnd()}\n`;
  return line(head) + rows.map(line).join('');
}
