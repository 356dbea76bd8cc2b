// End to end (issue 4): SAs are replaced under a running TCP transfer without losing a packet.
// A lab of its own (prefix nvi-t-, test/e2e-fixture.ts) whose config sets a low volume limit,
// switch.esp.rekey.packets: 3000, so that a few seconds of iperf3 cross it many times on
// both hosts (data web1 -> web2 on h1, ACKs web2 -> web1 on h2).
//
// What "no packet lost" is measured by: the sender's TCP (iperf3 -J end.sum_sent.retransmits,
// from the kernel's tcpi_total_retrans) retransmitted nothing, the receiver got every byte
// (-n: a fixed byte count), and neither switch dropped anything during the transfer; in
// particular not esp/unknown-spi (a packet on an SA the peer does not know yet or any more),
// sa/exhausted or esp/auth-failed.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { alive, dropDelta, labNamespaces, newLab, switchProcesses, until, type CableInfo, type Lab } from './e2e-fixture.js';

const REKEY_PACKETS = 3000;
const BYTES = 64 << 20; // 64 MB at 100 Mbit/s: about 5 s, some 45k data packets
let lab: Lab;

test.after(async () => {
  if (lab?.running) await lab.down();
});

test(`lab up with switch.esp.rekey.packets: ${REKEY_PACKETS} brings both switches up`, async () => {
  lab = newLab('rekey', { set: { 'switch.esp.rekey.packets': REKEY_PACKETS } });
  assert.is(lab.cfg.switch.esp.rekey.packets, REKEY_PACKETS);
  await lab.up();
  for (const p of lab.switchPids()) assert.ok(alive(p.pid), `switch of ${p.host} runs`);
});

function sa(cables: Record<string, CableInfo[]>, host: string, direction: string, src: string, dst: string): string {
  const c = cables[host].find((x) => x.direction === direction && x.srcVm === src && x.dstVm === dst);
  assert.ok(c?.sa, `${host} has an SA on ${direction} ${src} -> ${dst}`);
  return /^0x[0-9a-f]+/.exec(c!.sa!)![0];
}

test('SAs are replaced several times during a 100 Mbit/s TCP transfer web1 -> web2, and TCP retransmits nothing', async () => {
  const web2 = lab.vm('web2');
  const warm = await lab.inNs(lab.vm('web1').ns, 'ping', ['-6', '-c', '2', '-i', '0.2', web2.id], 10);
  assert.is(warm.code, 0, 'the cable is plugged before the transfer');
  const before = await lab.stats();
  const cablesBefore = await lab.cables();
  const spiBefore = sa(cablesBefore, 'h1', 'egress', 'web1', 'web2');
  const exportedBefore = lab.saExport('h2').length;

  const server = lab.bg(web2.ns, 'iperf3', ['-s', '-1', '-J', '-p', '5201'], 60);
  await until(() => lab.inNs(web2.ns, 'ss', ['-Hltn', 'sport = :5201']), (r) => r.stdout.includes('5201'), 5000, 50);
  const client = await lab.inNs(lab.vm('web1').ns, 'iperf3', ['-6', '-c', web2.id, '-p', '5201', '-n', String(BYTES), '-b', '100M', '-J'], 60);
  const srv = await server.done;
  const after = await lab.stats();
  const cablesAfter = await lab.cables();
  assert.is(client.code, 0, client.stderr || client.stdout.slice(-500));
  const c = JSON.parse(client.stdout) as { end: { sum_sent: { bytes: number; retransmits: number }; sum_received: { bytes: number } } };
  const s = JSON.parse(srv.stdout) as { end: { sum_received: { bytes: number } } };

  const rekeys = { h1: after.h1.cables.rekeys - before.h1.cables.rekeys, h2: after.h2.cables.rekeys - before.h2.cables.rekeys };
  const drops = Object.fromEntries(['h1', 'h2'].flatMap((h) => (['egress', 'ingress'] as const).map((d) => [`${h} ${d}`, dropDelta(before[h][d], after[h][d])])));
  process.stdout.write(`\n  rekey: sent ${c.end.sum_sent.bytes} B, server received ${s.end.sum_received.bytes} B, retransmits ${c.end.sum_sent.retransmits}; ` +
    `rekeys h1 +${rekeys.h1}, h2 +${rekeys.h2}; SA web1->web2 ${spiBefore} -> ${sa(cablesAfter, 'h1', 'egress', 'web1', 'web2')}; drops ${JSON.stringify(drops)}\n`);

  // The switches did rekey: h1 for the data, h2 for the ACKs, and the cable carries a new SPI.
  assert.ok(rekeys.h1 >= 2, `h1 rekeyed ${rekeys.h1} times`);
  assert.ok(rekeys.h2 >= 1, `h2 rekeyed ${rekeys.h2} times`);
  assert.is(after.h1.cables.rekeyFailures - before.h1.cables.rekeyFailures, 0);
  assert.is(after.h2.cables.rekeyFailures - before.h2.cables.rekeyFailures, 0);
  const spiAfter = sa(cablesAfter, 'h1', 'egress', 'web1', 'web2');
  assert.is.not(spiAfter, spiBefore, 'web1 -> web2 runs on a new SA');
  assert.is(sa(cablesAfter, 'h2', 'ingress', 'web1', 'web2'), spiAfter, 'h2 receives on the SA h1 sends on');
  assert.ok(lab.saExport('h2').length - exportedBefore >= rekeys.h1, 'h2 accepted (and exported) an inbound SA for each rekey of h1');

  // Nothing was lost on the way.
  for (const [where, d] of Object.entries(drops)) {
    for (const reason of ['esp/unknown-spi', 'sa/exhausted', 'esp/auth-failed']) assert.is(d[reason] ?? 0, 0, `${where}: ${reason}`);
    assert.equal(d, {}, `${where} dropped nothing during the transfer`);
  }
  assert.is(c.end.sum_sent.bytes, BYTES);
  assert.is(s.end.sum_received.bytes, BYTES, 'the server received every byte');
  assert.is(c.end.sum_sent.retransmits, 0, 'the sender retransmitted nothing');
  assert.equal(lab.complaints('h1').concat(lab.complaints('h2')), [], 'no warning or error in the switch logs');
});

test('lab down leaves no nvi-t- namespace and no switch process of the config', async () => {
  const pids = lab.switchPids();
  const r = await lab.down();
  assert.is(r.code, 0, r.stderr);
  assert.equal(labNamespaces(), []);
  assert.equal(switchProcesses(lab.config), []);
  for (const p of pids) assert.not.ok(alive(p.pid));
});

test.run();
