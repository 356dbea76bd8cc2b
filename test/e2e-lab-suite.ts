// End to end (issue 4): the lab of nvi-switch.yaml, brought up by `nvi-switch lab up` in
// network namespaces (prefix nvi-t-, see test/e2e-fixture.ts), with real VM kernels talking
// through the switches. Needs root, iproute2, tcpdump, tshark and python3. Run by
// e2e-lab.test.ts with the embedded store (every test) and by e2e-lab-etcd.test.ts with the
// store on etcd on the fabric (the traffic, tenant, diode, initiate-only, explain and
// forged-source tests; the underlay capture and the fuzz flood only run with the first).
//
// The tests run in order and share the lab:
//   1. it comes up; a capture of the underlay (the fabric bridge's port-h1) starts
//   2-9. traffic: one tenant across hosts and on one host (ping6, TCP), status, another tenant,
//      the diode, initiate-only across hosts (allowed and refused) and on one host
//   10. the capture of 2-9 shows only IPv4 ESP, the key exchange and ARP between the hosts, and
//      decrypts (tshark with the SAs the switches exported) to IPv6 between identities of the lab
//   11. explain --live
//   12-13. forged sources, then 100k malformed frames while other VMs keep talking
//   14. lab down leaves no namespace and no switch process
// Every capture runs in immediate mode and is checked to have written all it received; the
// captures that must stay empty also see a control packet that must arrive.
// Rekeying under load is test/e2e-rekey.test.ts (a second lab with a low volume limit).

import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { parse, stringify } from 'yaml';
import { formatIpv6, parseIpv4Address, parseIpv6Address } from '../src/base/address.js';
import { ownerOf } from '../src/switch/workers/shard.js';
import { detachedPath } from '../src/switch/paths.js';
import { BRIDGE_NETFILTER } from '../src/lab/lab.js';
import { tsharkDecryptArgs, type SaKeys } from '../src/esp/wireshark-sa.js';
import { promtool, samples } from './prom-text.js';
import { alive, BIN, dropDelta, fates, labNamespaces, newLab, readCapture, ROUTER_MAC_TEXT, run, sleep, switchProcesses, until, type Capture, type HostStats, type Lab, type RunResult } from './e2e-fixture.js';

const MB = 1 << 20;
const SEED = Number(process.env.NVI_E2E_SEED ?? 4242);
const FUZZ_FRAMES = Number(process.env.NVI_E2E_FUZZ ?? 100_000);

export interface LabSuiteOptions {
  /** Names the lab's temporary directory and the suite. */
  readonly name: string;
  /** The store on etcd with this many members (else the embedded store). */
  readonly etcd?: number;
  /** Also the underlay capture, the stats-by-stage check and the fuzz flood. */
  readonly full: boolean;
  /** switch.workers of both hosts (default 1: one data-path thread). */
  readonly workers?: number;
  /** underlay.espUdpPort: ESP in UDP to this port (default: as IP protocol 50); the underlay is captured to check it. */
  readonly espUdpPort?: number;
}

export function labSuite(opts: LabSuiteOptions): void {
  const test = suite(opts.name);
  let lab: Lab;
  let underlay: Capture | undefined;
  const id = (vm: string): string => lab.vm(vm).id;
  /** h1 pins its data-path threads (hosts.h1.cpus): the last CPU, then CPU 0 for a second worker; h2 does not. */
  const h1Cpus = opts.workers ? [...new Set([availableParallelism() - 1, 0])] : [availableParallelism() - 1];
  /** Captures the ESP of the underlay (tcpdump reads ESP in UDP to port 4500 as ESP too: espSequences reads both). */
  const espFilter = opts.espUdpPort ? `udp port ${opts.espUdpPort}` : 'esp';

  test.after(async () => {
    if (lab?.running) await lab.down();
  });

  test(`lab up brings the nvi-t- copy of nvi-switch.yaml up (${opts.etcd ? `store on ${opts.etcd} etcd member(s) on the fabric` : 'embedded store'}) with both switches running`, async () => {
    const set = {
      ...(opts.workers ? { 'switch.workers': opts.workers } : {}),
      ...(opts.espUdpPort ? { 'underlay.espUdpPort': opts.espUdpPort } : {}),
      'hosts.h1.cpus': h1Cpus,
    };
    lab = newLab(opts.name, { etcd: opts.etcd, set });
    await lab.up();
    const pids = lab.switchPids();
    assert.equal(pids.map((p) => p.host).sort(), ['h1', 'h2']);
    for (const p of pids) assert.ok(alive(p.pid), `switch of ${p.host} (pid ${p.pid}) runs`);
    // The fabric bridge hands nothing to iptables where br_netfilter is loaded (this machine's root namespace says 1).
    const nf = await lab.inNs(lab.fabric, 'cat', [BRIDGE_NETFILTER], 5);
    if (existsSync(BRIDGE_NETFILTER)) assert.is(nf.stdout.trim(), '0', 'bridge-nf-call-iptables in the fabric');
    else assert.ok(nf.code !== 0, 'no br_netfilter: no such setting in the fabric either');
    if (opts.full || opts.espUdpPort) underlay = await lab.capture('underlay', lab.fabric, 'port-h1', '');
  });

  async function ping(from: string, to: string, count = 5): Promise<{ sent: number; received: number }> {
    const r = await lab.inNs(lab.vm(from).ns, 'ping', ['-6', '-c', String(count), '-i', '0.2', '-W', '2', id(to)], 20);
    const m = /(\d+) packets transmitted, (\d+) received/.exec(r.stdout);
    assert.ok(m, `ping ${from} -> ${to} printed no summary: ${r.stdout}${r.stderr}`);
    return { sent: Number(m![1]), received: Number(m![2]) };
  }

  async function tcpTransfer(from: string, to: string, port: number, bytes: number): Promise<void> {
    const sink = await lab.pyServer(to, ['tcp-sink', port, 20]);
    const sent = await lab.py(from, ['tcp-send', id(to), port, bytes], 30);
    const got = await sink.result();
    assert.is(got.bytes, bytes, `${from} -> ${to}: every byte arrived`);
    assert.is(got.sha256, sent.sha256, `${from} -> ${to}: the bytes arrived intact and in order`);
    assert.is(got.peer, id(from), `${from} -> ${to}: the connection came from ${from}'s identity`);
  }

  test('ping6 goes through between VMs of one tenant on different hosts (web1 <-> web2) and on one host (web1 <-> web3)', async () => {
    for (const [a, b] of [['web1', 'web2'], ['web2', 'web1'], ['web1', 'web3'], ['web3', 'web1']]) {
      const r = await ping(a, b);
      assert.equal(r, { sent: 5, received: 5 }, `${a} -> ${b}`);
    }
    // switch.busyPollUs is 0 in the shipped config: the switches sleep between packets.
    const stats = await lab.stats();
    for (const h of ['h1', 'h2']) assert.equal(stats[h].busyPoll, { windowUs: 0, turns: 0 }, `${h} never busy-polled`);
  });

  test('cables --flush --reverify: both switches forget cables and verified bindings, and the next ping verifies web2 from scratch', async () => {
    const checks = (s: Record<string, HostStats>): number => (s.h1.verifier as { signatureChecks: number }).signatureChecks;
    const spares = (s: Record<string, HostStats>): { used: number; bound: number } =>
      ({ used: (s.h1.kx as { sparesUsed: number }).sparesUsed, bound: (s.h2.kx as { sparesBound: number }).sparesBound });
    const statsBefore = await lab.stats();
    const before = checks(statsBefore);
    const r = await lab.cli(['cables', '--flush', '--reverify']);
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stdout, /^h1: \d+ cables flushed, [1-9]\d* verified bindings forgotten$/m);
    assert.equal(await ping('web1', 'web2', 1), { sent: 1, received: 1 });
    const statsAfter = await lab.stats();
    assert.ok(checks(statsAfter) > before, "h1 checked web2's binding signature again");
    const [s0, s1] = [spares(statsBefore), spares(statsAfter)];
    if (opts.workers) assert.is(s1.bound, s0.bound, `h2, of ${opts.workers} data-path threads, keeps no spares for others`);
    else assert.ok(s1.used > s0.used && s1.bound > s0.bound, `the new cable web1 -> web2 left on a spare SA (the flush keeps spares), which h2 bound once it checked the pair: ${JSON.stringify([s0, s1])}`);
    const usage = await lab.cli(['cables', '--reverify']);
    assert.is(usage.code, 2, '--reverify alone is a usage error');
    assert.match(usage.stderr, /--reverify goes with --flush/);
  });

  test('4 MB over TCP arrive complete and intact between web1 and web2 (two hosts) and web1 and web3 (one host), both ways', async () => {
    await tcpTransfer('web1', 'web2', 5001, 4 * MB);
    await tcpTransfer('web2', 'web1', 5002, 4 * MB);
    await tcpTransfer('web1', 'web3', 5003, 4 * MB);
    await tcpTransfer('web3', 'web1', 5004, 4 * MB);
  });

  test('lab status exits 0 and lists both switches running, every VM with its default route from the RA, and the cables', async () => {
    const r = await lab.cli(['lab', 'status']);
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stdout, /^lab up$/m);
    for (const h of ['h1', 'h2']) assert.match(r.stdout, new RegExp(`^\\s+${h}\\s+nvi-t-${h}\\s+${lab.hostAddress(h).replace(/\./g, '\\.')}\\s+\\d+\\s+running$`, 'm'));
    for (const vm of lab.cfg.vms.keys()) {
      assert.match(r.stdout, new RegExp(`^\\s+${vm}\\s+\\w+\\s+h\\d\\s+nvi-t-${vm}\\s+${id(vm)}\\s+up\\s+via switch \\(RA\\)$`, 'm'), `VM ${vm}`);
    }
    assert.match(r.stdout, /^cables on h1$/m);
    assert.match(r.stdout, /^cables on h2$/m);
    assert.match(r.stdout, /egress\s+web1 -> web2\s+h2\s+plugged\s+blue\/web-mesh/);
    assert.match(r.stdout, /ingress\s+web1 -> web2\s+h1\s+plugged\s+blue\/web-mesh/);
  });

  test('a VM of another tenant gets nothing: web1 -> vault1 ping6 and TCP never reach vault1, and h1 counts each packet under policy/cross-tenant', async () => {
    const atVault = await lab.capture('vault1-cross', lab.vm('vault1').ns, lab.vm('vault1').tap, `ip6 src ${id('web1')} or ip6 src ${id('sensor1')}`);
    const fromWeb1 = await lab.capture('web1-cross', lab.vm('web1').ns, lab.vm('web1').tap, `ip6 dst ${id('vault1')}`);
    const before = await lab.stats();
    const p = await ping('web1', 'vault1', 5);
    assert.equal(p, { sent: 5, received: 0 });
    const c = await lab.py('web1', ['tcp-connect', id('vault1'), 5005, 2.5]);
    assert.is(c.connected, false, 'the TCP connection does not open');
    const after = await lab.stats();
    // The capture at vault1 works: what its own tenant sends (the diode's direction) shows up.
    // Three datagrams of 10 bytes. Those the switch releases together (held during the miss)
    // go to vault1's TAP as one UDP super-frame (USO), which the capture shows as one: count bytes.
    assert.is((await lab.py('sensor1', ['udp-send', id('vault1'), 5516, 3])).sent, 3);
    const udpBytes = (lines: string[]): number => lines.filter((x) => x.includes(`${id('sensor1')}.`))
      .reduce((sum, x) => sum + Number(/UDP, length (\d+)/.exec(x)?.[1] ?? 0), 0);
    await atVault.until((l) => udpBytes(l) >= 30);
    const sent = (await readCapture(await fromWeb1.stop())).length;
    const arrived = await readCapture(await atVault.stop());
    assert.is(udpBytes(arrived), 30, `the control datagrams of sensor1 arrived:\n${arrived.join('\n')}`);
    assert.is(arrived.filter((l) => l.includes(id('web1'))).length, 0, `nothing from web1 arrived at vault1:\n${arrived.join('\n')}`);
    assert.ok(sent >= 6, `web1 sent the 5 echo requests and at least one SYN (${sent})`);
    assert.equal(dropDelta(before.h1.egress, after.h1.egress), { 'policy/cross-tenant': sent }, 'h1 dropped each packet web1 sent, as cross-tenant');
    assert.is(after.h2.ingress.in - before.h2.ingress.in, 0, 'nothing reached h2');
  });

  test("h1's Prometheus endpoint (switch.metrics, in its namespace) passes promtool, and its counters are those of stats", async () => {
    const scrape = async (): Promise<string> => {
      const r = await lab.inNs(lab.hostNs('h1'), 'curl', ['-sf', 'http://127.0.0.1:9477/metrics']);
      assert.is(r.code, 0, `curl: ${r.stderr}`);
      return r.stdout;
    };
    const before = await lab.stats();
    const text = await scrape();
    const after = await lab.stats();
    const check = promtool(text);
    assert.is(check.code, 0, check.out);
    const m = samples(text);
    const crossTenant = [...m].filter(([k]) => k.startsWith('nvi_drops_total{pipeline="egress",') && k.endsWith('reason="policy/cross-tenant"}')).reduce((a, [, v]) => a + v, 0);
    assert.ok(crossTenant > 0, 'the cross-tenant drops of the test before are there');
    assert.is(crossTenant, after.h1.egress.drops['policy/cross-tenant'], 'the same count as stats');
    const between = (name: string, lo: number, hi: number): void => {
      const v = m.get(name);
      assert.ok(v !== undefined && v >= lo && v <= hi, `${name} = ${v}, stats said ${lo} before and ${hi} after`);
    };
    between('nvi_packets_in_total{pipeline="egress"}', before.h1.egress.in, after.h1.egress.in);
    between('nvi_packets_total{pipeline="egress",fate="underlay"}', before.h1.egress.underlay, after.h1.egress.underlay);
    between('nvi_packets_total{pipeline="ingress",fate="delivered"}', before.h1.ingress.delivered, after.h1.ingress.delivered);
    assert.ok((m.get('nvi_upcall_duration_seconds_count') ?? 0) > 0, 'upcalls were timed');
    // Each packet the tests sent woke h1 on a port that it then carried: the wake times count them.
    const wakes = m.get('nvi_wake_pipeline_seconds_count') ?? 0;
    assert.ok(wakes > 0 && wakes === m.get('nvi_wake_entry_seconds_count'), `wakes timed: ${wakes}`);
    const pipeline = (m.get('nvi_wake_pipeline_seconds_sum') ?? 0) / wakes;
    assert.ok(pipeline > 0 && pipeline < 0.1, `a wake's pipeline took ${pipeline} s on average`);
    assert.ok((m.get('nvi_port_received_bytes_total{port="nvi-web1",vm="web1"}') ?? 0) > 0, "web1's port counted bytes");
    const missing = await lab.inNs(lab.hostNs('h1'), 'curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', 'http://127.0.0.1:9477/other']);
    assert.is(missing.stdout, '404');
  });

  test('observe --follow shows a cross-tenant ping as dropped, with its reason and pair, as it happens; observe without --follow shows the kept plugs', async () => {
    const follow = lab.bg(lab.hostNs('h1'), process.execPath, [BIN, 'observe', '--host', 'h1', '--verdict', 'dropped', '--vm', 'vault1', '--follow', '--json', '-c', lab.config], 60);
    await follow.waitFor(/h1: following its verdicts/, 10_000);
    assert.equal(await ping('web1', 'vault1', 2), { sent: 2, received: 0 });
    await follow.waitFor(/policy\/cross-tenant[\s\S]*policy\/cross-tenant/, 10_000);
    follow.child.kill('SIGTERM');
    const r = await follow.done;
    const events = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.ok(events.length >= 2, r.stdout);
    for (const e of events) {
      assert.equal([e.host, e.verdict, e.direction, e.reason, e.srcVm, e.dstVm, e.srcTenant, e.dstTenant, e.proto], ['h1', 'dropped', 'egress', 'policy/cross-tenant', 'web1', 'vault1', 'blue', 'green', 58], JSON.stringify(e));
    }
    const kept = await lab.cli(['observe', '--host', 'h1', '--verdict', 'plugged', '--vm', 'web2']);
    assert.is(kept.code, 0, kept.stderr);
    assert.match(kept.stdout, /h1 PLUGGED\s+egress\s+web1 -> web2\s+blue\/web-mesh peer h2/);
    const bad = await lab.cli(['observe', '--verdict', 'droped']);
    assert.is(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, /--verdict: one of dropped, plugged, unplugged, got "droped"/);
  });

  test('top, driven in a terminal (tmux), shows the cable web1 -> web2 with a non-zero rate while a ping runs; t switches to totals, q quits', async () => {
    const tmux = (...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> => run('tmux', ['-L', 'nvi-t-top', ...args], 10);
    const pinger = lab.bg(lab.vm('web1').ns, 'ping', ['-6', '-i', '0.05', '-c', '200', id('web2')], 30);
    try {
      const start = await tmux('new-session', '-d', '-x', '160', '-y', '40', `${process.execPath} ${BIN} top --host h1 -c ${lab.config}`);
      assert.is(start.code, 0, start.stderr);
      const screen = async (): Promise<string> => (await tmux('capture-pane', '-p')).stdout;
      const row = await until(screen, (s) => /web1 -> web2\s+out\s+h2\s+blue\/web-mesh\s+([1-9][\d.]*k?)\s/.test(s), 10_000, 250);
      assert.match(row, /rates, sorted by packets/);
      assert.match(row, /web1 -> web2\s+out\s+h2\s+blue\/web-mesh\s+([1-9][\d.]*k?)\s/, row);
      await tmux('send-keys', 't');
      assert.match(await until(screen, (s) => /totals, sorted by packets/.test(s), 5000, 100), /PACKETS\s+BITS\s+DROPS/);
      await tmux('send-keys', 'q');
      await until(() => tmux('has-session'), (r) => r.code !== 0, 5000, 100);
    } finally {
      await tmux('kill-server');
      pinger.child.kill('SIGINT');
      await pinger.done;
    }
  });

  test('the telemetry diode carries sensor1 -> vault1 UDP and drops vault1 -> sensor1 at h2 under a policy reason', async () => {
    const recv = await lab.pyServer('vault1', ['udp-recv', 5514, 3, 10]);
    const s = await lab.py('sensor1', ['udp-send', id('vault1'), 5514, 10]);
    const r = await recv.result();
    assert.is(s.sent, 10);
    assert.is(r.received, 10, 'every datagram of the sensor reached the vault');
    assert.ok((r.datagrams as { from: string }[]).every((d) => d.from === id('sensor1')));

    const before = await lab.stats();
    const back = await lab.pyServer('sensor1', ['udp-recv', 5515, 2]);
    await lab.py('vault1', ['udp-send', id('sensor1'), 5515, 10]);
    const b = await back.result();
    const after = await lab.stats();
    assert.is(b.received, 0, 'no datagram flowed back to the sensor');
    const d = dropDelta(before.h2.egress, after.h2.egress);
    assert.equal(Object.keys(d).length, 1, `one reason: ${JSON.stringify(d)}`);
    const [reason, n] = Object.entries(d)[0];
    assert.match(reason, /^policy\//);
    assert.is(n, 10, `h2 counted the 10 datagrams under ${reason}`);
    assert.is(after.h1.ingress.in - before.h1.ingress.in, 0, 'nothing reached h1');
  });

  test('initiate-only: web1 opens a TCP connection to db1 (other host) and exchanges data both ways', async () => {
    const sink = await lab.pyServer('db1', ['tcp-sink', 5432, 20, '--echo']);
    const sent = await lab.py('web1', ['tcp-send', id('db1'), 5432, 256 * 1024, '--echo'], 30);
    const got = await sink.result();
    assert.is(got.bytes, 256 * 1024);
    assert.is(sent.echoed, 256 * 1024, 'db1 answered every byte');
    assert.is(sent.echoSha256, sent.sha256);
  });

  /**
   * `client` (the side that may only answer) tries to open a TCP connection to `server`: no SYN
   * reaches the server and the client's host counts each under policy/initiate-only. Then the
   * server opens one to the client, which works, and its answers show in the same capture (so
   * the capture was live).
   */
  async function initiateOnlyRefused(server: string, client: string, port: number): Promise<void> {
    const syns = await lab.capture(`${client}-syn`, lab.vm(client).ns, lab.vm(client).tap, `ip6 dst ${id(server)} and tcp dst port ${port}`);
    const atServer = await lab.capture(`${server}-syn`, lab.vm(server).ns, lab.vm(server).tap, `ip6 src ${id(client)} and tcp`);
    const listener = await lab.pyServer(server, ['tcp-sink', port, 4]);
    const before = await lab.stats();
    const c = await lab.py(client, ['tcp-connect', id(server), port, 2.5]);
    const after = await lab.stats();
    const l = await listener.result();
    const sink = await lab.pyServer(client, ['tcp-sink', port + 100, 10, '--echo']);
    const control = await lab.py(server, ['tcp-send', id(client), port + 100, 4096, '--echo'], 15);
    await sink.result();
    await atServer.until((l) => l.length >= 3, 3000, `tcp src port ${port + 100}`);
    const sent = (await readCapture(await syns.stop())).length;
    const file = await atServer.stop();
    const refused = await readCapture(file, `tcp dst port ${port}`);
    const answers = await readCapture(file, `tcp src port ${port + 100}`);
    assert.is(c.connected, false, `${client} could not open a connection to ${server}`);
    assert.is(l.accepted, false, `${server} accepted nothing`);
    assert.is(refused.length, 0, `no packet of ${client}'s attempt reached ${server}:\n${refused.join('\n')}`);
    assert.is(control.echoed, 4096, `${server} opened a connection to ${client} and got its answers`);
    assert.ok(answers.length >= 3, `the capture at ${server} saw ${client}'s answers (${answers.length})`);
    assert.ok(sent >= 1);
    const h = lab.vm(client).host;
    assert.equal(dropDelta(before[h].egress, after[h].egress), { 'policy/initiate-only': sent }, `${h} dropped each SYN as initiate-only`);
  }

  test('initiate-only: db1 cannot open a TCP connection to web1 (other host); h2 counts each SYN under policy/initiate-only', async () => {
    await initiateOnlyRefused('web1', 'db1', 5433);
  });

  test('initiate-only on one host: web2 opens a TCP connection to db1 and db1 answers (both on h2)', async () => {
    const sink = await lab.pyServer('db1', ['tcp-sink', 5434, 8, '--echo']);
    const before = await lab.stats();
    let sent: Record<string, unknown> | undefined;
    let error = '';
    try {
      sent = await lab.py('web2', ['tcp-send', id('db1'), 5434, 64 * 1024, '--echo'], 15);
    } catch (e) {
      error = (e as Error).message.split('\n').slice(-2).join(' ');
    }
    const after = await lab.stats();
    await sink.result().catch(() => undefined);
    assert.ok(sent, `web2 could not talk to db1 on the same host: ${error}; h2 drops meanwhile ${JSON.stringify(dropDelta(before.h2.egress, after.h2.egress))}`);
    assert.is(sent!.echoed, 64 * 1024);
    await initiateOnlyRefused('web2', 'db1', 5435);
  });

  interface Frame {
    n: number;
    ethSrc: string;
    ethDst: string;
    ethType: string;
    ipSrc: string;
    ipDst: string;
    ipProto: string;
    udpSrc: string;
    udpDst: string;
    arpOp: string;
    arpSpa: string;
    arpTpa: string;
    /** Bytes captured: above the link MTU for a datagram the kernel segments later (GSO). */
    length: number;
  }

  const FIELDS = ['frame.number', 'eth.src', 'eth.dst', 'eth.type', 'ip.src', 'ip.dst', 'ip.proto', 'udp.srcport', 'udp.dstport', 'arp.opcode', 'arp.src.proto_ipv4', 'arp.dst.proto_ipv4', 'frame.len'];

  async function frames(file: string): Promise<Frame[]> {
    const r = await run('tshark', ['-r', file, '-n', '-T', 'fields', '-E', 'occurrence=f', ...FIELDS.flatMap((f) => ['-e', f])], 60);
    assert.is(r.code, 0, r.stderr);
    return r.stdout.split('\n').filter((l) => l.length > 0).map((l) => {
      const [n, ethSrc, ethDst, ethType, ipSrc, ipDst, ipProto, udpSrc, udpDst, arpOp, arpSpa, arpTpa, length] = l.split('\t');
      return { n: Number(n), ethSrc, ethDst, ethType, ipSrc, ipDst, ipProto, udpSrc, udpDst, arpOp, arpSpa, arpTpa, length: Number(length) };
    });
  }

  /** An esp_sa record the switch exported, read back into the keys it was made from. */
  function saFromRecord(line: string): SaKeys {
    const [, from, to, spi, , keySalt] = JSON.parse(`[${line}]`) as string[];
    const bytes = Buffer.from(keySalt.slice(2), 'hex');
    const keyLen = bytes.length - 4;
    return {
      spi: Number(spi), from: parseIpv4Address(from), to: parseIpv4Address(to),
      alg: keyLen === 32 ? 'aes-256-gcm' : 'aes-128-gcm', key: bytes.subarray(0, keyLen), salt: bytes.subarray(keyLen),
    };
  }

  if (opts.full) test('the underlay (port-h1) carried only IPv4 ESP, the key exchange on UDP 7011 and ARP between the two hosts during the traffic above', async () => {
    assert.ok(underlay, 'the capture started with the lab');
    const file = await underlay!.stop();
    const list = await frames(file);
    const hosts = [lab.hostAddress('h1'), lab.hostAddress('h2')];
    const macs = await Promise.all(['h1', 'h2'].map(async (h) => {
      const r = await lab.inNs(lab.hostNs(h), 'cat', ['/sys/class/net/underlay0/address']);
      return r.stdout.trim();
    }));
    const vmMacs = new Set([...lab.cfg.vms.keys()].map((v) => lab.vm(v).mac));
    const bad: string[] = [];
    let esp = 0;
    let kx = 0;
    let arp = 0;
    for (const f of list) {
      const where = `frame ${f.n} ${f.ethSrc} -> ${f.ethDst} type ${f.ethType} ${f.ipSrc || f.arpSpa} -> ${f.ipDst || f.arpTpa} proto ${f.ipProto}`;
      if (vmMacs.has(f.ethSrc) || vmMacs.has(f.ethDst)) bad.push(`${where}: a VM's MAC`);
      if (!macs.includes(f.ethSrc)) bad.push(`${where}: source MAC is not a host's`);
      if (f.ethType === '0x0806') {
        arp++;
        if (!hosts.includes(f.arpSpa) || !hosts.includes(f.arpTpa)) bad.push(`${where}: ARP not between the hosts`);
        if (f.arpOp === '1' ? !(f.ethDst === 'ff:ff:ff:ff:ff:ff' || macs.includes(f.ethDst)) : !macs.includes(f.ethDst)) bad.push(`${where}: ARP to ${f.ethDst}`);
        continue;
      }
      if (!macs.includes(f.ethDst)) bad.push(`${where}: to a broadcast, multicast or unknown MAC`);
      if (f.ethType !== '0x0800') {
        bad.push(`${where}: not IPv4 (${f.ethType === '0x86dd' ? 'IPv6' : f.ethType})`);
        continue;
      }
      if (!hosts.includes(f.ipSrc) || !hosts.includes(f.ipDst) || f.ipSrc === f.ipDst) bad.push(`${where}: not between the two hosts`);
      if (f.ipProto === '50') esp++;
      else if (f.ipProto === '17' && f.udpSrc === '7011' && f.udpDst === '7011') kx++;
      else bad.push(`${where}: neither ESP nor the key exchange (udp ${f.udpSrc} -> ${f.udpDst})`);
    }
    assert.is(bad.length, 0, `${bad.length} of ${list.length} frames out of place:\n${bad.slice(0, 20).join('\n')}`);
    assert.ok(esp > 5000, `the transfers went as ESP (${esp} frames)`);
    assert.ok(kx >= 4, `the cables were keyed on UDP 7011 (${kx} frames)`);

    // Decrypt with the SAs the switches exported: every ESP frame is IPv6 between identities of the lab.
    const records = [...lab.saExport('h1'), ...lab.saExport('h2')];
    const sas = records.map(saFromRecord);
    const args = tsharkDecryptArgs(sas);
    assert.equal(args.filter((a) => a.startsWith('uat:esp_sa:')), records.map((r) => `uat:esp_sa:${r}`), 'the export reads back into the same records');
    const r = await run('tshark', ['-r', file, '-n', ...args, '-Y', 'esp', '-T', 'fields', '-E', 'occurrence=f', '-e', 'frame.number', '-e', 'esp.spi', '-e', 'ipv6.src', '-e', 'ipv6.dst', '-e', 'esp.decrypted_data', '-e', 'esp.contained_data'], 120);
    assert.is(r.code, 0, r.stderr);
    const tenantOf = new Map([...lab.cfg.vms.values()].map((v) => [v.identityText, v.tenant]));
    const nameOf = new Map([...lab.cfg.vms.values()].map((v) => [v.identityText, v.name]));
    const pairs = new Map<string, number>();
    const undecrypted: string[] = [];
    let decrypted = 0;
    let probes = 0;
    for (const line of r.stdout.split('\n').filter((l) => l.length > 0)) {
      const [n, spi, ipSrc, ipDst, decryptedData, contained] = line.split('\t');
      let [src, dst] = [ipSrc, ipDst];
      if (!src && decryptedData?.endsWith('3b') && contained) {
        // A bind-ahead probe (src/switch/bind-probe.ts): a dummy packet (its trailer's next header 59) whose payload is an IPv6 header naming its pair.
        const h = Buffer.from(contained, 'hex');
        if (h.length >= 40) [src, dst] = [formatIpv6(h.subarray(8, 24)), formatIpv6(h.subarray(24, 40))];
        probes++;
      }
      if (!src || !dst) {
        undecrypted.push(`frame ${n} SPI ${spi}`);
        continue;
      }
      decrypted++;
      assert.ok(tenantOf.has(src) && tenantOf.has(dst), `frame ${n}: ${src} -> ${dst} are identities of the lab`);
      assert.is(tenantOf.get(src), tenantOf.get(dst), `frame ${n}: ${nameOf.get(src)} -> ${nameOf.get(dst)} within one tenant`);
      const pair = `${nameOf.get(src)}->${nameOf.get(dst)}`;
      pairs.set(pair, (pairs.get(pair) ?? 0) + 1);
    }
    process.stdout.write(`\n  underlay: ${list.length} frames on port-h1: ${esp} ESP, ${kx} key exchange, ${arp} ARP; ${records.length} SAs exported; decrypted ${decrypted} (${probes} bind-ahead probes): ${JSON.stringify(Object.fromEntries(pairs))}\n`);
    assert.is(undecrypted.length, 0, `ESP frames tshark could not decrypt: ${undecrypted.slice(0, 10).join(', ')}`);
    assert.is(decrypted, esp);
    for (const p of ['web1->web2', 'web2->web1', 'sensor1->vault1', 'web1->db1', 'db1->web1']) assert.ok(pairs.has(p), `${p} is among the decrypted pairs ${JSON.stringify(Object.fromEntries(pairs))}`);
    for (const p of ['vault1->sensor1', 'web1->vault1']) assert.not.ok(pairs.has(p), `${p} never went on the wire`);
  });

  if (opts.espUdpPort) test(`the underlay (port-h1) carried ESP in UDP to port ${opts.espUdpPort} during the traffic above, runs of it as datagrams larger than the link (UDP GSO), and no ESP as IP protocol 50`, async () => {
    assert.ok(underlay, 'the capture started with the lab');
    const list = await frames(await underlay!.stop());
    const port = String(opts.espUdpPort);
    const inUdp = list.filter((f) => f.ipProto === '17' && f.udpDst === port && f.udpSrc === port);
    const asIp = list.filter((f) => f.ipProto === '50');
    const hosts = [lab.hostAddress('h1'), lab.hostAddress('h2')];
    process.stdout.write(`\n  underlay: ${list.length} frames on port-h1, ${inUdp.length} ESP in UDP (${inUdp.filter((f) => f.length > lab.cfg.underlay.mtu).length} larger than the link), ${asIp.length} ESP as protocol 50\n`);
    assert.is(asIp.length, 0, 'no ESP as IP protocol 50');
    const bytes = inUdp.reduce((sum, f) => sum + f.length, 0);
    assert.ok(inUdp.length > 100 && bytes > 1e6, `the transfers went as ESP in UDP (${inUdp.length} frames, ${bytes} B)`);
    assert.ok(inUdp.every((f) => hosts.includes(f.ipSrc) && hosts.includes(f.ipDst) && f.ipSrc !== f.ipDst), 'between the two hosts');
    assert.ok(inUdp.some((f) => f.length > lab.cfg.underlay.mtu), 'runs of packets went as one datagram (GSO)');
  });

  if (opts.workers) test(`${opts.workers} data-path threads per host: every inbound SA's SPI names the worker of its destination VM, two VMs of one host on two workers talk in plain IPv6-in-IPv4 through the host's own address, and every worker carried packets`, async () => {
    const n = opts.workers!;
    const cables = await lab.cables();
    let checked = 0;
    for (const h of ['h1', 'h2']) {
      for (const c of cables[h].filter((x) => x.direction === 'ingress' && x.sa?.includes(' in,'))) {
        const spi = Number(c.sa!.split(' ')[0]);
        assert.is(spi % n, ownerOf(parseIpv6Address(id(c.dstVm!)), n), `${h}: ${c.srcVm} -> ${c.dstVm} on SPI ${c.sa}`);
        checked++;
      }
    }
    assert.ok(checked >= 4, `inbound SAs checked: ${checked}`);
    // web1 and web3 (both on h1) are on different workers: plugged through h1's own address, in plain IPv6-in-IPv4.
    for (const [src, dst] of [['web1', 'web3'], ['web3', 'web1']]) {
      const c = cables.h1.find((x) => x.direction === 'egress' && x.srcVm === src && x.dstVm === dst);
      assert.ok(c && c.state === 'plugged' && c.peer === 'h1' && c.sa === undefined, `${src} -> ${dst}: ${JSON.stringify(c)}`);
    }
    const stats = (await lab.stats()) as unknown as Record<string, { workers: { index: number; egressIn: number; ingressIn: number }[] }>;
    for (const h of ['h1', 'h2']) {
      assert.is(stats[h].workers.length, n, `${h} runs ${n} workers`);
      for (const w of stats[h].workers) assert.ok(w.egressIn > 0 && w.ingressIn > 0, `${h} worker ${w.index} carried packets: ${JSON.stringify(w)}`);
    }
  });

  if (opts.workers) test('web1 and web3, owned by two workers of h1, detached and attached again at the same moment: the host keeps both in its list of detached VMs, then neither, and they talk again', async () => {
    const listed = (): string[] => {
      const path = detachedPath(lab.cfg, 'h1');
      return existsSync(path) ? ((JSON.parse(readFileSync(path, 'utf8')) as string[]).sort()) : [];
    };
    assert.is.not(ownerOf(parseIpv6Address(id('web1')), opts.workers!), ownerOf(parseIpv6Address(id('web3')), opts.workers!), 'two workers');
    const pid = lab.switchPids().find((p) => p.host === 'h1')!.pid;
    const both = async (op: 'detach' | 'attach'): Promise<void> => {
      const r = await Promise.all(['web1', 'web3'].map((vm) => lab.cli(['lab', op, vm], 60)));
      for (const x of r) assert.is(x.code, 0, x.stderr + x.stdout);
    };
    await both('detach');
    assert.equal(listed(), ['web1', 'web3'], 'both detached, neither lost');
    await both('attach');
    assert.equal(listed(), [], 'both attached again');
    assert.is(lab.switchPids().find((p) => p.host === 'h1')!.pid, pid, "h1's switch ran on");
    assert.equal(await ping('web1', 'web3', 3), { sent: 3, received: 3 });
    assert.equal(await ping('web3', 'web2', 3), { sent: 3, received: 3 });
    assert.equal(await ping('web1', 'web2', 3), { sent: 3, received: 3 }, "h2, which verified web1's binding before, takes its new one");
  });

  test("h1's data-path threads run on hosts.h1.cpus, that thread alone each; h2's where the kernel puts them", async () => {
    const allowed = (pid: number, tid = pid): string => /Cpus_allowed_list:\s*(\S+)/.exec(readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'))![1]!;
    const every = allowed(process.pid);
    const h1 = lab.switchPids().find((p) => p.host === 'h1')!.pid;
    const stats = (await lab.stats()) as unknown as Record<string, { cpus?: number[]; workers?: { index: number; cpus: number[] }[] }>;
    if (opts.workers) {
      const want = stats.h1.workers!.map((w) => [h1Cpus[w.index % h1Cpus.length]]);
      assert.equal(stats.h1.workers!.map((w) => w.cpus), want, 'each worker on its CPU');
      const threads = readdirSync(`/proc/${h1}/task`).map(Number).map((tid) => allowed(h1, tid));
      for (const [cpu] of want) assert.ok(threads.includes(String(cpu)), `a thread of h1 pinned to CPU ${cpu}: ${threads.join(' ')}`);
      assert.is(allowed(h1), every, "h1's main thread is not pinned");
    } else {
      assert.equal(stats.h1.cpus, h1Cpus);
      assert.is(allowed(h1), String(h1Cpus[0]), "h1's data-path thread, as the kernel says");
      const threads = readdirSync(`/proc/${h1}/task`).map(Number).filter((tid) => tid !== h1).map((tid) => allowed(h1, tid));
      assert.ok(threads.length > 0 && threads.every((t) => t === every), `h1's other threads keep every CPU: ${threads.join(' ')}`);
    }
    const h2 = lab.switchPids().find((p) => p.host === 'h2')!.pid;
    assert.is(allowed(h2), every, 'h2 names no CPUs');
  });

  test("each switch's packet threads keep SCHED_OTHER; its helper threads (V8's, libuv's) run under SCHED_BATCH", async () => {
    const policy = (pid: number, tid: number): number => Number(readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8').split(') ')[1]!.split(' ')[38]);
    const stats = (await lab.stats()) as unknown as Record<string, { workers?: unknown[] }>;
    for (const { host, pid } of lab.switchPids()) {
      const threads = readdirSync(`/proc/${pid}/task`).map(Number);
      const normal = threads.filter((tid) => policy(pid, tid) === 0);
      const batch = threads.filter((tid) => policy(pid, tid) === 3);
      const packetThreads = 1 + (stats[host]!.workers?.length ?? 0); // the main thread (the miss path), and each data-path worker
      assert.is(normal.length, packetThreads, `${host}: ${normal.length} threads under SCHED_OTHER, ${batch.length} under SCHED_BATCH`);
      assert.ok(normal.includes(pid), `${host}'s main thread keeps SCHED_OTHER`);
      assert.is(normal.length + batch.length, threads.length, `${host}: no thread under another policy`);
      assert.ok(batch.length >= 4, `${host}: V8's platform workers and libuv's pool at least (${batch.length})`);
    }
  });

  test('explain web1 vault1 --live exits non-zero and names policy/cross-tenant', async () => {
    const r = await lab.cli(['explain', 'web1', 'vault1', '--live']);
    assert.is.not(r.code, 0);
    assert.match(r.stdout, /^sender h1:$/m);
    assert.match(r.stdout, /=> UNPLUG: policy\/cross-tenant/);
  });

  test('forged IPv6 sources from web1 (web3, sensor1, link-local, multicast) never reach web2 and h1 counts each under spoof/source', async () => {
    const web1 = lab.vm('web1');
    const atWeb2 = await lab.capture('web2-forged', lab.vm('web2').ns, lab.vm('web2').tap, 'udp dst port 9999');
    const forge = (src: string, n: number): Promise<Record<string, unknown>> =>
      lab.py('web1', ['forge', web1.tap, ROUTER_MAC_TEXT, web1.mac, src, id('web2'), 9999, n]);
    for (const [what, src] of [['web3', id('web3')], ['sensor1 (green)', id('sensor1')], ['link-local', 'fe80::f63b:ba70:5b22:fa85'], ['multicast', 'ff02::1']]) {
      const before = await lab.stats();
      const s = await forge(src, 3);
      assert.is(s.sent, 3);
      const after = await until(() => lab.stats(), (a) => a.h1.egress.dropped - before.h1.egress.dropped >= 3, 3000);
      assert.equal(dropDelta(before.h1.egress, after.h1.egress), { 'spoof/source': 3 }, `source ${what}`);
    }
    // The same frames with web1's own source go through: the capture at web2 would have seen the forged ones.
    const control = await forge(id('web1'), 3);
    assert.is(control.sent, 3);
    await atWeb2.until((l) => l.length >= 3);
    const arrived = await readCapture(await atWeb2.stop());
    assert.is(arrived.length, 3, `only the 3 frames with web1's own source arrived:\n${arrived.join('\n')}`);
    for (const l of arrived) assert.ok(l.includes(`${id('web1')}.`), l);
  });

  if (opts.full) test(`${FUZZ_FRAMES} random malformed frames from web1 are all counted while web3 keeps talking to web2, and the switch lives on`, async () => {
    const web1 = lab.vm('web1');
    const pidsBefore = lab.switchPids();
    // web3 -> web2: the cable is plugged before the flood starts.
    assert.equal(await ping('web3', 'web2', 2), { sent: 2, received: 2 });
    const kernelBefore = await lab.linkStats(web1.ns, web1.tap);
    const before = await lab.stats();
    const pinger = lab.bg(lab.vm('web3').ns, 'ping', ['-6', '-i', '0.02', '-W', '2', id('web2')], 120, 'INT');
    const sink = await lab.pyServer('web2', ['tcp-sink', 5006, 60]);
    const stream = lab.py('web3', ['tcp-send', id('web2'), 5006, 16 * MB], 60);
    await sleep(300);
    const dsts = [id('web2'), id('web3'), id('db1'), id('vault1'), 'fd9a:3c7e:51b2:1::77', 'ff02::1', 'fe80::1', '::1', '::'];
    const fuzz = await lab.py('web1', ['fuzz', web1.tap, ROUTER_MAC_TEXT, web1.mac, web1.id, SEED, FUZZ_FRAMES, ...dsts], 120);
    const sent = await stream;
    const got = await sink.result();
    await sleep(300);
    const pings = await pinger.stop('SIGINT');
    const after = await until(() => lab.stats(), (s) => s.h1.upcall.queued === 0 && s.h1.upcall.inFlight === 0, 5000);
    const kernelAfter = await lab.linkStats(web1.ns, web1.tap);

    // The other pair was served throughout.
    assert.is(got.bytes, 16 * MB, 'the TCP stream web3 -> web2 arrived complete');
    assert.is(got.sha256, sent.sha256);
    const seqs = [...pings.stdout.matchAll(/icmp_seq=(\d+)/g)].map((m) => Number(m[1]));
    const tx = Number(/(\d+) packets transmitted/.exec(pings.stdout)?.[1] ?? 0);
    assert.ok(tx > 20, `web3 pinged web2 all along (${tx} requests)`);
    const missing = Array.from({ length: tx - 1 }, (_, k) => k + 1).filter((s) => !seqs.includes(s));
    assert.equal(missing, [], 'every echo request but possibly the last in flight was answered');

    // The switch is the same process, still answering.
    for (const p of pidsBefore) assert.ok(alive(p.pid), `switch of ${p.host} (pid ${p.pid}) is alive`);
    assert.equal(lab.switchPids(), pidsBefore);
    assert.not.match(lab.logOf('h1'), /switch-stopped|tap-failed|upcall-bug/);

    // Every frame is accounted for.
    const kernelTx = kernelAfter.tx.packets - kernelBefore.tx.packets;
    const kernelDropped = kernelAfter.tx.dropped - kernelBefore.tx.dropped;
    const web1Tap = (s: HostStats): number => s.ports.find((t) => t.name === web1.tap)!.rx;
    const switchRx = web1Tap(after.h1) - web1Tap(before.h1);
    const egressIn = after.h1.egress.in - before.h1.egress.in;
    process.stdout.write(`\n  fuzz: ${fuzz.attempted} frames, python sent ${fuzz.sent} (refused: ${JSON.stringify(fuzz.errors)}) in ${fuzz.seconds} s; ` +
      `web1's TAP: kernel tx ${kernelTx}, tx dropped ${kernelDropped}; switch read ${switchRx} from it, egress in +${egressIn}; ` +
      `drops ${JSON.stringify(dropDelta(before.h1.egress, after.h1.egress))}\n`);
    assert.ok(Number(fuzz.sent) >= FUZZ_FRAMES * 0.99, `the kernel took (nearly) every frame: ${fuzz.sent}`);
    assert.is(switchRx, kernelTx, 'the switch read every frame the kernel put on the TAP');
    assert.ok(egressIn >= kernelTx, `egress in grew by ${egressIn} >= ${kernelTx}`);
    assert.is(kernelTx + kernelDropped >= Number(fuzz.sent), true, 'every frame sent was either read or dropped by the TAP queue');
    for (const h of ['h1', 'h2']) {
      for (const dir of ['egress', 'ingress'] as const) {
        const f = fates(after[h][dir]);
        assert.is(f.lhs, f.rhs, `${h} ${dir}: in + reinjected = delivered + underlay + consumed + replied + held + dropped`);
        assert.is(after[h][dir].held, after[h][dir].reinjected, `${h} ${dir}: nothing is still held`);
      }
    }
  });

  if (opts.full) test('nvi-switch stats prints every pipeline by stage, and the stages\' counts add up to every packet in', async () => {
    const text = await lab.cli(['stats']);
    assert.is(text.code, 0, text.stderr);
    assert.match(text.stdout, /^  egress    in \d+  reinjected \d+  delivered \d+  underlay \d+/m);
    assert.match(text.stdout, /^    frame-parse +dropped: .*eth\/not-ipv6 \d+/m, 'the fuzz frames of web1, counted where they were refused');
    assert.match(text.stdout, /^    ip-guard +dropped: .*spoof\/source \d+/m);
    assert.match(text.stdout, /^    encap +underlay \d+/m);
    assert.match(text.stdout, /^    deliver +delivered \d+/m);
    const stats = await lab.stats();
    for (const h of ['h1', 'h2']) {
      for (const dir of ['egress', 'ingress'] as const) {
        const p = stats[h][dir];
        let settled = 0;
        const drops: Record<string, number> = {};
        for (const row of Object.values(p.stages)) {
          for (const [k, v] of Object.entries(row)) {
            if (k !== 'drops') settled += v as number;
            else for (const [r, n] of Object.entries(v as Record<string, number>)) drops[r] = (drops[r] ?? 0) + n;
          }
        }
        const dropped = Object.values(drops).reduce((a, b) => a + b, 0);
        assert.is(settled + dropped, p.in + p.reinjected, `${h} ${dir}: every packet in was settled by exactly one stage`);
        assert.equal(drops, p.drops, `${h} ${dir}: the stages' drops are the pipeline's drops`);
      }
    }
  });

  /**
   * `nvi-switch restart --host h1` with the config edited by `edit` (restored after) is
   * refused with a message matching `why`, and h1's switch carries on: the same processes,
   * web1 -> web2 answered.
   */
  async function restartRefused(edit: (doc: Record<string, Record<string, unknown>>) => void, why: RegExp): Promise<void> {
    const pids = lab.switchPids();
    const text = readFileSync(lab.config, 'utf8');
    const doc = parse(text) as Record<string, Record<string, unknown>>;
    edit(doc);
    writeFileSync(lab.config, stringify(doc));
    let r: RunResult;
    try {
      r = await lab.cli(['restart', '--host', 'h1'], 60);
    } finally {
      writeFileSync(lab.config, text);
    }
    assert.is.not(r.code, 0);
    assert.match(r.stderr, why);
    assert.equal(lab.switchPids(), pids);
    assert.ok(alive(pids.find((p) => p.host === 'h1')!.pid));
    assert.equal(await ping('web1', 'web2', 2), { sent: 2, received: 2 });
  }

  if (opts.workers) test('nvi-switch restart with switch.workers changed in the config is refused, names why, and the switch carries on', async () => {
    await restartRefused((doc) => (doc.switch.workers = opts.workers! + 1),
      new RegExp(`switch\\.workers is ${opts.workers! + 1} in .*, but the running switch has ${opts.workers} data-path threads: a handover keeps their number`));
    assert.equal(await ping('web3', 'web1', 2), { sent: 2, received: 2 }, 'both workers of h1 read again');
  });

  if (opts.espUdpPort) test('nvi-switch restart with underlay.espUdpPort turned off in the config is refused, names why, and the switch carries on', async () => {
    await restartRefused((doc) => (doc.underlay.espUdpPort = 0),
      /underlay\.espUdpPort is 0 in .*, but the running switch carries ESP in UDP: a handover keeps the underlay's sockets/);
  });

  test('nvi-switch restart of h1, then of h2, under a 10 ms ping and a TCP transfer web1 -> web2: no ping lost, one connection, every byte; the same SAs, their sequence numbers only grow; no VM interface goes down', async () => {
    const esp = await lab.capture('handover-esp', lab.fabric, 'port-h1', espFilter);
    const link = async (vm: string): Promise<string> => {
      const v = lab.vm(vm);
      const r = await run('ip', ['netns', 'exec', v.ns, 'cat', `/sys/class/net/${v.tap}/ifindex`, `/sys/class/net/${v.tap}/carrier_changes`, `/sys/class/net/${v.tap}/operstate`]);
      return r.stdout.trim().split('\n').join(' ');
    };
    const linksBefore = await Promise.all(['web1', 'web2', 'web3', 'db1'].map(link));
    const web1web2 = (c: { sa?: string; srcVm?: string; dstVm?: string; direction: string }): boolean => c.sa !== undefined && c.direction === 'egress' && c.srcVm === 'web1' && c.dstVm === 'web2';
    const sink = await lab.pyServer('web2', ['tcp-sink', 5008, 60]);
    const pinger = lab.bg(lab.vm('web1').ns, 'ping', ['-6', '-n', '-i', '0.01', '-W', '1', id('web2')], 60, 'INT');
    const transfer = lab.py('web1', ['tcp-send', id('web2'), 5008, 10 * 1000 * 1000, '--mbps=16', '--timeout=50'], 60);
    await sleep(1000);
    const saBefore = (await lab.cables()).h1.find(web1web2)?.sa?.split(' ')[0];
    const pids = lab.switchPids();
    const restart = async (host: string): Promise<{ pid: number; pausedMs: number; egressSas: number; inbound: number; refused: string[] }> => {
      const r = await lab.cli(['restart', '--host', host, '--json'], 60);
      assert.is(r.code, 0, r.stderr + r.stdout);
      return JSON.parse(r.stdout) as { pid: number; pausedMs: number; egressSas: number; inbound: number; refused: string[] };
    };
    const h1 = await restart('h1');
    await sleep(1000);
    const h2 = await restart('h2');
    const sent = await transfer;
    const got = await sink.result();
    await sleep(300);
    const pings = await pinger.stop('SIGINT');
    const saAfter = (await lab.cables()).h1.find(web1web2)?.sa?.split(' ')[0];

    assert.is(got.bytes, 10 * 1000 * 1000, 'every byte arrived');
    assert.is(got.sha256, sent.sha256, 'intact and in order');
    assert.is(got.peer, id('web1'), 'over the one connection web1 opened');
    const seqs = [...pings.stdout.matchAll(/icmp_seq=(\d+)/g)].map((m) => Number(m[1]));
    const tx = Number(/(\d+) packets transmitted/.exec(pings.stdout)?.[1] ?? 0);
    const missing = Array.from({ length: tx - 1 }, (_, k) => k + 1).filter((q) => !seqs.includes(q));
    const lines = await readCapture(await esp.stop());
    const { spis, repeats } = espSequences(lines);
    process.stdout.write(`\n  restart: h1 paused ${h1.pausedMs} ms (${h1.egressSas} egress SAs, ${h1.inbound} inbound taken over), h2 paused ${h2.pausedMs} ms; ` +
      `ping every 10 ms: ${tx} sent, lost ${JSON.stringify(missing)}; TCP ${got.bytes} B intact, retransmissions ${sent.retransmissions}; ESP on the underlay: ${spis} SPIs, ${repeats} repeats\n`);
    assert.equal(missing, [], 'every echo request but possibly the last in flight was answered');
    assert.ok(spis >= 2, `ESP seen on the underlay: ${lines.length} lines`);
    assert.is(repeats, 0, 'per SPI, sequence numbers strictly increase across both handovers');
    assert.ok(saBefore !== undefined && saBefore === saAfter, `web1 -> web2 went on on its SA: ${saBefore}, then ${saAfter}`);
    assert.equal(h1.refused, []);
    assert.equal(h2.refused, []);
    assert.equal(await Promise.all(['web1', 'web2', 'web3', 'db1'].map(link)), linksBefore, 'the same TAPs (ifindex), no carrier change, still up');
    const now = lab.switchPids();
    for (const p of pids) {
      // It exits once its copies of the fds are closed and its store is; within 2 s at the latest (cmd-run.ts).
      const gone = await until(async () => !alive(p.pid), (x) => x, 3000, 50);
      assert.ok(gone, `the old switch of ${p.host} (pid ${p.pid}) exited`);
      const n = now.find((x) => x.host === p.host)!;
      assert.ok(n.pid !== p.pid && alive(n.pid), `the lab names ${p.host}'s new switch (pid ${n.pid})`);
    }
    assert.equal([h1.pid, h2.pid], [now.find((x) => x.host === 'h1')!.pid, now.find((x) => x.host === 'h2')!.pid]);
    assert.match(lab.logOf('h1'), /"event":"switch-handed-over"/);
    assert.match(lab.logOf('h1'), /"event":"switch-took-over"/);
    assert.not.match(lab.logOf('h1') + lab.logOf('h2'), /handover-failed|upcall-bug|port-failed/);
  });

  if (!opts.workers) test("after both handovers the new processes hold the spares of the old: a new cable web1 -> web2 (after a flush) leaves on one, which h2's new process binds", async () => {
    const kx = (s: Record<string, HostStats>, h: string): { sparesUsed: number; sparesBound: number; sparesRejected: number; sparesReady: number } =>
      s[h].kx as { sparesUsed: number; sparesBound: number; sparesRejected: number; sparesReady: number };
    const before = await lab.stats();
    assert.ok(kx(before, 'h1').sparesReady > 0, `h1's new process took spares over: ${JSON.stringify(kx(before, 'h1'))}`);
    const r = await lab.cli(['cables', '--flush']);
    assert.is(r.code, 0, r.stderr);
    assert.equal(await ping('web1', 'web2', 1), { sent: 1, received: 1 });
    const after = await lab.stats();
    assert.is(kx(after, 'h1').sparesUsed, kx(before, 'h1').sparesUsed + 1, 'web1 -> web2 on a spare');
    assert.is(kx(after, 'h2').sparesBound, kx(before, 'h2').sparesBound + 1, "bound by h2's new process");
    assert.is(kx(after, 'h1').sparesRejected, kx(before, 'h1').sparesRejected, 'no spare unknown to the peer');
  });

  test('kill -9 of h1 and a new switch: pings from web2 to web1 resume by themselves, with fresh SAs; no ESP sequence number repeats under an SPI', async () => {
    const esp = await lab.capture('kill9-esp', lab.fabric, 'port-h1', espFilter);
    const pinger = lab.bg(lab.vm('web2').ns, 'ping', ['-6', '-n', '-i', '0.01', '-c', '1000', '-W', '1', id('web1')], 60);
    await sleep(1500);
    const old = lab.switchPids().find((s) => s.host === 'h1')!;
    const web2web1 = (c: { sa?: string; srcVm?: string; dstVm?: string }): boolean => c.sa !== undefined && ((c.srcVm === 'web2' && c.dstVm === 'web1') || (c.srcVm === 'web1' && c.dstVm === 'web2'));
    const spisBefore = new Set((await lab.cables()).h2.filter(web2web1).map((c) => c.sa!.split(' ')[0]));
    process.kill(old.pid, 'SIGKILL');
    const killedAt = Date.now();
    await until(async () => alive(old.pid), (a) => !a, 5000);
    const restart = await lab.cli(['lab', 'restart', 'h1'], 60);
    assert.is(restart.code, 0, restart.stderr + restart.stdout);
    const restartedMs = Date.now() - killedAt;
    const r = await pinger.done;
    const seqs = [...r.stdout.matchAll(/icmp_seq=(\d+)/g)].map((m) => Number(m[1]));
    let gap = 0;
    for (let k = 1; k < seqs.length; k++) gap = Math.max(gap, seqs[k] - seqs[k - 1] - 1);
    assert.ok(seqs.length > 0 && seqs[seqs.length - 1] >= 990, `the pings came back before the end: last ${seqs[seqs.length - 1]}`);
    const lines = await readCapture(await esp.stop());
    const { spis, repeats } = espSequences(lines);
    assert.ok(spis >= 2, `ESP seen on the underlay: ${lines.length} lines`);
    assert.is(repeats, 0, 'per SPI, sequence numbers strictly increase');
    const spisAfter = new Set((await lab.cables()).h2.filter((c) => web2web1(c) && c.state.startsWith('plugged')).map((c) => c.sa!.split(' ')[0]));
    assert.is(spisAfter.size, 2, `h2 has an SA each way between web2 and web1: ${[...spisAfter]}`);
    assert.ok([...spisAfter].every((sa) => !spisBefore.has(sa)), `h2 carries web2 <-> web1 on fresh SAs: before ${[...spisBefore]}, after ${[...spisAfter]}`);
    if (opts.workers) {
      // The new h1 told h2 of the SPIs it does not know (NOTIFY): worker 0's socket got them, and it handed them to the others.
      const h2 = (await lab.stats()).h2 as unknown as { notifiesShared: { shared: number }; kx: { notifiesReceived: number; notifiesUnmatched: number } };
      assert.ok(h2.notifiesShared.shared >= opts.workers - 1, `h2's worker 0 handed NOTIFYs on: ${JSON.stringify(h2.notifiesShared)}`);
      const seen = h2.kx.notifiesReceived + h2.kx.notifiesUnmatched; // the worker that sends on the SPI acts, the others find no such SPI
      assert.ok(seen >= opts.workers, `every worker of h2 looked at them: ${JSON.stringify(h2.kx)}`);
    }
    process.stdout.write(`\n  kill -9 of h1: a new switch in ${restartedMs} ms (lab restart); ping every 10 ms from web2 to web1: ${seqs.length}/1000 replies, longest gap ${gap} pings (~${gap * 10} ms)\n`);
  });

  test('lab down leaves no nvi-t- namespace, no TAP and no switch process of the config', async () => {
    const pids = lab.switchPids();
    const r = await lab.down();
    assert.is(r.code, 0, r.stderr);
    assert.equal(labNamespaces(), []);
    assert.equal(switchProcesses(lab.config), []);
    for (const p of pids) assert.not.ok(alive(p.pid), `switch of ${p.host} (pid ${p.pid}) is gone`);
    const links = await run('ip', ['-o', 'link', 'show']);
    for (const vm of lab.cfg.vms.keys()) assert.not.match(links.stdout, new RegExp(`: nvi-t-|: ${lab.vm(vm).tap}[@:]`), 'no lab interface in the root namespace');
  });

  test.run();
}

/** ESP packets of a capture (tcpdump lines): how many SPIs, and how often a sequence number did not exceed the last one of its SPI. */
function espSequences(lines: readonly string[]): { spis: number; repeats: number } {
  const last = new Map<string, number>();
  let repeats = 0;
  for (const l of lines) {
    const m = /ESP\(spi=(0x[0-9a-f]+),seq=(0x[0-9a-f]+)\)/.exec(l);
    if (!m) continue;
    const seq = Number(m[2]);
    if (seq <= (last.get(m[1]) ?? 0)) repeats++;
    last.set(m[1], seq);
  }
  return { spis: last.size, repeats };
}
