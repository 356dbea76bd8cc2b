// End to end (issue 4): SAs are replaced under a running TCP transfer without losing a packet.
// A lab of its own (prefix nvi-t-, test/e2e-fixture.ts) whose config sets a low volume limit,
// switch.esp.rekey.packets: 3000, so that a few seconds of TCP at 100 Mbit/s cross it many
// times on the sending host (the receiving host's ACK cable rekeys less often, or not at all:
// see the ACK counts the tests print). The lab also turns busy polling on
// (switch.busyPollUs: 2000), so the transfers are checked with the switches polling between
// packets instead of sleeping; the last test shows that they did.
//
// What "no packet lost" means here, for data in each direction (test/e2e/net.py, paced by the
// sender's kernel): every byte arrived intact and in order (count and SHA-256); the receiving
// kernel never queued a segment out of order; every retransmission of the sender was a
// duplicate the receiver already had (D-SACK); each host's underlay received, delivered and
// wrote to the TAP exactly what the other sent; and neither switch dropped anything, in
// particular not esp/unknown-spi (a packet on an SA the peer does not know yet or any more),
// sa/exhausted or esp/auth-failed. (A raw "0 retransmissions" is not asserted: see transfer().)

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { alive, dropDelta, labNamespaces, newLab, sleep, switchProcesses, type CableInfo, type HostStats, type Lab } from './e2e-fixture.js';

const REKEY_PACKETS = 3000;
const BUSY_POLL_US = 2000;
const BYTES = 64 << 20; // 64 MB at 100 Mbit/s: about 5.5 s, some 47k data packets
let lab: Lab;

test.after(async () => {
  if (lab?.running) await lab.down();
});

test(`lab up with switch.esp.rekey.packets: ${REKEY_PACKETS} brings both switches up`, async () => {
  lab = newLab('rekey', { set: { 'switch.esp.rekey.packets': REKEY_PACKETS, 'switch.busyPollUs': BUSY_POLL_US } });
  assert.is(lab.cfg.switch.esp.rekey.packets, REKEY_PACKETS);
  await lab.up();
  for (const p of lab.switchPids()) assert.ok(alive(p.pid), `switch of ${p.host} runs`);
});

function sa(cables: Record<string, CableInfo[]>, host: string, direction: string, src: string, dst: string): string {
  const c = cables[host].find((x) => x.direction === direction && x.srcVm === src && x.dstVm === dst);
  assert.ok(c?.sa, `${host} has an SA on ${direction} ${src} -> ${dst}`);
  return /^0x[0-9a-f]+/.exec(c!.sa!)![0];
}

interface Snapshot {
  stats: Awaited<ReturnType<Lab['stats']>>;
  cables: Record<string, CableInfo[]>;
}

async function snapshot(): Promise<Snapshot> {
  return { stats: await lab.stats(), cables: await lab.cables() };
}

/**
 * What a transfer src -> dst did to the SAs of its hosts: the sender's host (data) and the
 * receiver's host (ACKs) rekeyed at least `minRekeys` / once, the data cable runs on a new SPI
 * that the receiving host knows, nothing was dropped anywhere, nothing complained in the logs.
 */
function assertRekeyedWithoutLoss(a: Snapshot, b: Snapshot, src: string, dst: string, minRekeys: number): string {
  const hs = lab.vm(src).host;
  const hd = lab.vm(dst).host;
  const rekeys = (h: string): number => b.stats[h].cables.rekeys - a.stats[h].cables.rekeys;
  const drops = Object.fromEntries(['h1', 'h2'].flatMap((h) => (['egress', 'ingress'] as const).map((d) => [`${h} ${d}`, dropDelta(a.stats[h][d], b.stats[h][d])])));
  const spiBefore = sa(a.cables, hs, 'egress', src, dst);
  const spiAfter = sa(b.cables, hs, 'egress', src, dst);
  const acks = (c: Snapshot): number => c.cables[hd].find((x) => x.direction === 'egress' && x.srcVm === dst && x.dstVm === src)?.packets ?? 0;
  const report = `rekeys ${hs} +${rekeys(hs)}, ${hd} +${rekeys(hd)} (${acks(b) - acks(a)} ACK packets ${dst} -> ${src}); SA ${src}->${dst} ${spiBefore} -> ${spiAfter}; drops ${JSON.stringify(drops)}`;

  assert.ok(rekeys(hs) >= minRekeys, `${hs} rekeyed ${src} -> ${dst}: ${report}`);
  for (const h of ['h1', 'h2']) assert.is(b.stats[h].cables.rekeyFailures - a.stats[h].cables.rekeyFailures, 0, `${h}: no rekey failed`);
  assert.is.not(spiAfter, spiBefore, `${src} -> ${dst} runs on a new SA`);
  assert.is(sa(b.cables, hd, 'ingress', src, dst), spiAfter, `${hd} receives on the SA ${hs} sends on`);
  for (const [where, d] of Object.entries(drops)) {
    for (const reason of ['esp/unknown-spi', 'sa/exhausted', 'esp/auth-failed']) assert.is(d[reason] ?? 0, 0, `${where}: ${reason}`);
    assert.equal(d, {}, `${where} dropped nothing during the transfer`);
  }
  // Packet conservation along the path, in both directions: what one host's underlay sent,
  // the other's received and its ingress delivered, and the TAP took it all.
  const delta = (f: (s: HostStats) => number, h: string): number => f(b.stats[h]) - f(a.stats[h]);
  for (const [from, to] of [[hs, hd], [hd, hs]]) {
    const sentOut = delta((s) => s.underlay.tx, from);
    assert.is(delta((s) => s.underlay.rx, to), sentOut, `${to}'s underlay received all ${sentOut} packets ${from} sent`);
    assert.is(delta((s) => s.ingress.delivered, to), sentOut, `${to} delivered all of them`);
    // The TAPs also take what the host's own egress sends them meanwhile (ND answers to the guests' NUD probes).
    const local = delta((s) => s.egress.delivered + s.egress.replied + s.egress.errorsSent, to);
    assert.is(delta((s) => s.ports.reduce((n, t) => n + t.tx, 0), to), sentOut + local, `${to}'s TAPs took all of them (and ${local} local frames)`);
    assert.is(delta((s) => s.ports.reduce((n, t) => n + t.txBusy + t.txRefused, 0), to), 0, `${to}'s TAPs refused nothing`);
    assert.is(delta((s) => s.underlay.rxErrors + s.underlay.txRefused + s.underlay.txBusy, from), 0, `${from}'s underlay had no error`);
  }
  assert.equal(lab.complaints('h1').concat(lab.complaints('h2')), [], 'no warning or error in the switch logs');
  // Nothing lost or reordered: every SA's replay window is still its top and holes alone (src/esp/replay-window.ts).
  for (const h of ['h1', 'h2']) assert.is(b.stats[h].cables.windowsWithBlocks, 0, `${h}: no replay window needed blocks`);
  return report;
}

/**
 * BYTES from `src` to `dst`, paced by the sender's kernel at 100 Mbit/s, with the TCP counters
 * of both VMs' kernels around it. "No segment lost" is measured as: the receiver's kernel queued
 * nothing out of order (a lost segment leaves a hole that the next ones fall behind:
 * TCPOFOQueue, and tcpi_rcv_ooopack of the socket), and every segment the sender's kernel
 * retransmitted (RetransSegs) reached the receiver twice, i.e. the receiver answered it with a
 * D-SACK (TCPDSACKOldSent + TCPDSACKOfoSent): a retransmission caused by a late ACK, not by a
 * loss. Tail loss probes of the last segment do that when an ACK takes longer than about
 * 2 RTT + 2 ms, which a busy 2-CPU machine sometimes makes it; the raw count is printed.
 */
async function transfer(src: string, dst: string, port: number): Promise<void> {
  const warm = await lab.inNs(lab.vm(src).ns, 'ping', ['-6', '-c', '2', '-i', '0.2', lab.vm(dst).id], 10);
  assert.is(warm.code, 0, 'the cable is plugged before the transfer');
  const a = await snapshot();
  const tcpA = { src: await lab.tcpCounters(lab.vm(src).ns), dst: await lab.tcpCounters(lab.vm(dst).ns) };
  const sink = await lab.pyServer(dst, ['tcp-sink', port, 30]);
  const sent = await lab.py(src, ['tcp-send', lab.vm(dst).id, port, BYTES, '--mbps=100'], 60);
  const got = await sink.result();
  await sleep(300); // a D-SACK for a last, spurious retransmission arrives after the FIN
  const b = await snapshot();
  const tcpB = { src: await lab.tcpCounters(lab.vm(src).ns), dst: await lab.tcpCounters(lab.vm(dst).ns) };
  const d = (side: 'src' | 'dst', k: string): number => (tcpB[side][k] ?? 0) - (tcpA[side][k] ?? 0);
  const retrans = d('src', 'RetransSegs');
  const dupsSeen = d('dst', 'TCPDSACKOldSent') + d('dst', 'TCPDSACKOfoSent');
  const outOfOrder = d('dst', 'TCPOFOQueue');

  const report = assertRekeyedWithoutLoss(a, b, src, dst, 2);
  process.stdout.write(`\n  ${src} -> ${dst}: ${sent.sent} B in ${sent.seconds} s, received ${got.bytes} B; sender retransmitted ${retrans} ` +
    `(tail loss probes ${d('src', 'TCPLossProbes')}), receiver saw ${dupsSeen} duplicates and ${outOfOrder} out of order (socket: ${got.outOfOrderIn}); ${report}\n`);
  assert.is(got.bytes, BYTES, 'every byte arrived');
  assert.is(got.sha256, sent.sha256, 'intact and in order');
  assert.is(outOfOrder, 0, 'no segment arrived out of order (no hole: nothing lost in the stream)');
  assert.is(got.outOfOrderIn, 0);
  assert.is(retrans - dupsSeen, 0, 'every retransmission was a duplicate the receiver already had (nothing lost at the tail)');
}

test('SAs are replaced many times during a 100 Mbit/s TCP transfer web1 -> web2 (data rekeys on h1) and no segment is lost', async () => {
  await transfer('web1', 'web2', 5201);
});

test('SAs are replaced many times during a 100 Mbit/s TCP transfer web2 -> web1 (data rekeys on h2) and no segment is lost', async () => {
  await transfer('web2', 'web1', 5202);
});

test(`both switches busy-polled during the transfers (switch.busyPollUs: ${BUSY_POLL_US})`, async () => {
  const stats = await lab.stats();
  for (const h of ['h1', 'h2']) {
    assert.is(stats[h].busyPoll.windowUs, BUSY_POLL_US, h);
    assert.ok(stats[h].busyPoll.turns > 1000, `${h}: ${stats[h].busyPoll.turns} loop turns spent polling`);
  }
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
