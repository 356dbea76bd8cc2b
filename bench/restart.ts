// Restart benchmark (issue 11): what a restart of a switch costs its VMs today, in the lab
// (prefix nvi-b-, embedded store).
//
//   npx tsc -p . && node dist/bench/restart.js [--restarts 20] [--handover | --kill] [--workers N]      (root)
//
// h1's switch is restarted --restarts times, two seconds apart, while web2 (h2) sends web1 (h1)
// a numbered UDP datagram every millisecond (test/e2e/net.py probe; web1 logs every silence
// longer than 5 ms). How:
//   (default)   `lab restart h1`: SIGTERM and a new process (the TAPs go and come back)
//   --kill      SIGKILL first, no clean stop
//   --handover  `nvi-switch restart`: the new process takes the fds and state over
// For each restart:
//   blackout   the longest silence at web1 overlapping the restart: from the last datagram
//              before to the first after, at 1 ms resolution
//   restart    the whole command: old process stopped (or killed) or handed over, the new one
//              answering (cold: the VMs' interfaces configured again)
//   paused     --handover: from the old process's last read to the new one's word that it forwards
// and, over the run, datagrams sent and received. --workers N: both switches with switch.workers N.
// Figures: p50 / p99 / max. The lab is removed at the end, also on failure or SIGINT.

import { labRestartSwitch, labSwitchReplaced, readState } from '../src/lab/lab.js';
import { controlRequest } from '../src/switch/control.js';
import type { HandoverResult } from '../src/switch/handover.js';
import { controlPath } from '../src/switch/paths.js';
import { BenchLab, BINARY, PREFIX } from './lab/bench-lab.js';
import { longestGap, netpy, quantiles, type Gap } from './lab/probe.js';
import { benchOptions, integer, refuse } from './options.js';

const v = benchOptions({ restarts: { type: 'string' }, kill: { type: 'boolean' }, handover: { type: 'boolean' }, workers: { type: 'string' } });
const RESTARTS = integer('restarts', v.restarts ?? '20');
const KILL = v.kill === true;
const HANDOVER = v.handover === true;
if (KILL && HANDOVER) refuse('--kill and --handover: one of them');
const lab = new BenchLab('restart');

try {
  if (process.getuid?.() !== 0) refuse('bench/restart needs root');
  if (v.workers !== undefined) {
    const n = integer('workers', v.workers);
    lab.config((doc) => doc.setIn(['switch', 'workers'], n));
  }
  const c = await lab.up();
  const seconds = RESTARTS * 6 + 5; // a restart and its pause take 4-5 s
  const log = netpy(`${PREFIX}web1`, ['probe-log', 7000, seconds], lab.children);
  await log.ready;
  const probeStart = Date.now();
  const probe = netpy(`${PREFIX}web2`, ['probe', c.vms.get('web1')!.identityText, 7000, 1, seconds - 1], lab.children);
  await new Promise((r) => setTimeout(r, 1500));
  const windows: { from: number; to: number }[] = [];
  const paused: number[] = [];
  for (let k = 0; k < RESTARTS; k++) {
    const from = Date.now();
    if (HANDOVER) {
      const r = (await controlRequest(controlPath(c, 'h1'), { cmd: 'handover' }, 60_000)) as HandoverResult;
      labSwitchReplaced(c, 'h1', r.pid);
      paused.push(r.pausedMs);
      windows.push({ from, to: Date.now() });
      await new Promise((r) => setTimeout(r, 2000));
      continue;
    }
    if (KILL) {
      const old = readState(c)!.switches.find((s) => s.host === 'h1')!;
      process.kill(old.pid, 'SIGKILL');
      for (let t = 0; t < 500; t++) {
        try {
          process.kill(old.pid, 0);
          await new Promise((r) => setTimeout(r, 10));
        } catch {
          break;
        }
      }
    }
    await labRestartSwitch(c, 'h1', BINARY, () => {});
    windows.push({ from, to: Date.now() });
    await new Promise((r) => setTimeout(r, 2000));
  }
  const sent = await probe.done;
  const got = await log.done;
  const gaps = got.gaps as Gap[];
  const blackout = windows.map((w) => longestGap(gaps, w.from, w.to + 1500));
  const restart = windows.map((w) => w.to - w.from);
  windows.forEach((w, k) => process.stdout.write(`  #${k + 1} at ${new Date(w.from).toISOString()}: restart ${restart[k]} ms, blackout ${blackout[k]} ms\n`));
  const how = HANDOVER ? 'nvi-switch restart (handover)' : KILL ? 'kill -9 and a new switch' : 'lab restart (SIGTERM and a new switch)';
  process.stdout.write(`${how} on h1 (switch.workers ${c.switch.workers}), ${RESTARTS} times, 1 ms UDP probe web2 -> web1:\n` +
    `  blackout (silence at web1):  ${quantiles(blackout)}\n` +
    `  restart command: ${quantiles(restart)}\n` +
    (HANDOVER ? `  paused (old stops reading -> new forwards): ${quantiles(paused)}\n` : '') +
    `  datagrams sent ${sent.sent}, received ${got.received}, lost ${Number(sent.sent) - Number(got.received)}${lostWhere(got.missing as number[], got.duplicates as number, probeStart, windows)}\n`);
} finally {
  await lab.cleanup();
}

/**
 * Which datagrams went missing (their numbers, below the highest received), each with when it
 * was sent (about probeStart + its number, in ms) and the restart it fell in, if any.
 */
function lostWhere(missing: readonly number[], duplicates: number, probeStart: number, windows: readonly { from: number; to: number }[]): string {
  if (missing.length === 0 && duplicates === 0) return '';
  const at = missing.map((k) => {
    const t = probeStart + k;
    const r = windows.findIndex((w) => t >= w.from - 50 && t <= w.to + 50);
    if (r >= 0) return `#${k} (in restart #${r + 1})`;
    const before = windows.filter((w) => w.to < t).length;
    return `#${k} (${before === 0 ? 'before the first restart' : `${t - windows[before - 1].to} ms after restart #${before}`})`;
  });
  return `; missing ${at.join(', ') || 'none'}${duplicates > 0 ? `; ${duplicates} came twice` : ''}`;
}
