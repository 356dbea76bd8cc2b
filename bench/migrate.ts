// Migration benchmark (issue 9): the blackout of a live migration and how fast the other
// host's cable follows, in the lab (prefix nvi-b-), embedded store or etcd.
//
//   npx tsc -p . && node dist/bench/migrate.js [--migrations 20] [--store embedded|etcd]   (root)
//
// web2 moves between h2 and h1, --migrations times, one second apart, while web1 (h1) sends it
// a numbered UDP datagram every millisecond (test/e2e/net.py probe; web2 logs every silence
// longer than 5 ms with its wall-clock time). For each migration:
//   blackout    the longest silence at web2 that overlaps the migration: the last datagram
//               before the move to the first after, at 1 ms resolution
//   switchover  the source letting go (its port gone, the key sealed) to the destination
//               active (the VM's first frame there, its binding published)
//   repoint     the source letting go to h1's cable web1 -> web2 pointing at web2's new host
//               (h1's control socket polled every millisecond)
// Figures: p50 / p99 / max. The lab is removed at the end, also on failure or SIGINT.

import { cpSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, type CloudConfig } from '../src/config/config.js';
import { labMigrate, readState } from '../src/lab/lab.js';
import type { CableInfo } from '../src/switch/cable-info.js';
import { controlRequest } from '../src/switch/control.js';
import { controlPath } from '../src/switch/paths.js';
import { BenchLab, PREFIX } from './lab/bench-lab.js';
import { longestGap, netpy, quantiles, type Gap } from './lab/probe.js';
import { benchOptions, integer, refuse } from './options.js';

const v = benchOptions({ migrations: { type: 'string' }, store: { type: 'string' } });
const MIGRATIONS = integer('migrations', v.migrations ?? '20');
const STORE = v.store ?? 'embedded';
if (STORE !== 'embedded' && STORE !== 'etcd') refuse(`--store: embedded or etcd, got ${STORE}`);
const lab = new BenchLab('migrate');

async function peerOf(c: CloudConfig): Promise<string | undefined> {
  const list = (await controlRequest(controlPath(c, 'h1'), { cmd: 'cables' })) as CableInfo[];
  return list.find((x) => x.direction === 'egress' && x.srcVm === 'web1' && x.dstVm === 'web2' && x.state.startsWith('plugged'))?.peer;
}

try {
  if (process.getuid?.() !== 0) refuse('bench/migrate needs root');
  // The migrations move web2's key between the hosts' directories of the lab's copy of the pki.
  if (STORE === 'etcd') lab.config((doc) => doc.setIn(['store'], doc.createNode({ kind: 'etcd', endpoints: ['http://10.77.0.250:2379'] })));
  const cfg = await lab.up();
  const seconds = MIGRATIONS * 1.6 + 4;
  const log = netpy(`${PREFIX}web2`, ['probe-log', 7000, seconds], lab.children);
  await log.ready;
  const probe = netpy(`${PREFIX}web1`, ['probe', loadConfig(cfg.file).vms.get('web2')!.identityText, 7000, 1, seconds - 1], lab.children);
  await new Promise((r) => setTimeout(r, 1500));
  const windows: { out: number; active: number; repoint: number; to: string }[] = [];
  for (let k = 0; k < MIGRATIONS; k++) {
    const now = loadConfig(cfg.file);
    const to = now.vms.get('web2')!.host === 'h2' ? 'h1' : 'h2';
    const expect = to === 'h1' ? 'this host' : 'h2';
    let out = 0;
    const r = await labMigrate(now, 'web2', to, { afterOut: async () => { out = Date.now(); } });
    const active = out + r.switchoverMs;
    let repoint = 0;
    for (const deadline = Date.now() + 5000; Date.now() < deadline; ) {
      if ((await peerOf(now)) === expect) {
        repoint = Date.now();
        break;
      }
      await new Promise((res) => setTimeout(res, 1));
    }
    windows.push({ out, active, repoint, to });
    await new Promise((res) => setTimeout(res, 1000));
  }
  await probe.done;
  const got = await log.done;
  const gaps = got.gaps as Gap[];
  const blackout = windows.map((w) => longestGap(gaps, w.out, w.repoint));
  const switchover = windows.map((w) => w.active - w.out);
  const repoint = windows.filter((w) => w.repoint > 0).map((w) => w.repoint - w.out);
  windows.forEach((w, k) => process.stdout.write(`  #${k + 1} to ${w.to} at ${new Date(w.out).toISOString()}: blackout ${blackout[k]} ms, switchover ${switchover[k]} ms, repoint ${w.repoint ? w.repoint - w.out : 'not seen'} ms\n`));
  if (blackout.some((b) => b > 1000)) {
    // A slow migration is a bug to chase: keep the switches' logs.
    const keep = mkdtempSync(join(tmpdir(), 'nvi-bench-migrate-logs-'));
    for (const s of readState(cfg)?.switches ?? []) cpSync(s.log, join(keep, `${s.host}.log`));
    process.stdout.write(`  a blackout over 1 s: the switches' logs are kept in ${keep}\n`);
  }
  process.stdout.write(`migration of web2 between h1 and h2, ${MIGRATIONS} times, store ${STORE}, 1 ms UDP probe from web1:\n` +
    `  blackout (silence at web2):             ${quantiles(blackout)}\n` +
    `  switchover (source lets go -> active):  ${quantiles(switchover)}\n` +
    `  repoint (source lets go -> h1's cable at the new host): ${quantiles(repoint)} (${repoint.length}/${MIGRATIONS} seen)\n` +
    `  datagrams received ${got.received}\n`);
} finally {
  await lab.cleanup();
}
