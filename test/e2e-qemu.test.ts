// End to end (issue 10): real QEMU guests on the switches, started with the arguments
// `nvi-switch vm qemu-args` prints. The guest is the small image of scripts/guest-image.sh
// (Debian's kernel, busybox, dhcpcd): nothing configures it from outside.
//   1. three new VMs: vm1 (blue, h1, a TAP QEMU opens), vm2 (blue, h2, a stream socket),
//      vmx (green, h1, a stream socket); lab up; the three guests boot
//   2. each gets its identity by DHCPv6 and its default route by RA
//   3. vm1 and vm2 ping each other across the hosts and move a file over TCP byte for byte;
//      vm2 pings the namespace VM web1
//   4. vmx (another tenant) gets nothing through; vm1 forging its source is counted as spoofed
//   5. each guest's QEMU stops and starts again: its switch takes the port back, no restart
//   6. QEMU live migration of vm1 from h1 to h2 while vm2 pings it every 10 ms and vm1
//      downloads from vm2 over one TCP connection: the download completes, the blackout is shown
//   7. lab down (the guests stopped first)
// KVM where a KVM guest boots on this machine, TCG otherwise (src/lab/qemu-guest.ts).

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { accelerator, guestImage, QemuGuest, type GuestImage } from '../src/lab/qemu-guest.js';
import { qmpMigrate } from '../src/io/qmp.js';
import { controlRequest } from '../src/switch/control.js';
import { migrate } from '../src/switch/migrate.js';
import { controlPath } from '../src/switch/paths.js';
import { qemuPort } from '../src/switch/qemu-args.js';
import { dropDelta, newLab, REPO, sleep, type Lab } from './e2e-fixture.js';
import { atExit } from './at-exit.js';

const lab: Lab = newLab('qemu');
let image: GuestImage;
let accel: 'kvm' | 'tcg';
const guests = new Map<string, QemuGuest>();
const id = (vm: string): string => lab.vm(vm).id;

atExit(() => {
  for (const g of guests.values()) g.proc.kill('SIGKILL');
});

test.after(async () => {
  for (const g of guests.values()) await g.stop();
  if (lab.running) await lab.down();
});

/** Start `vm`'s guest on `host` (default: where the config has it) with the arguments `vm qemu-args` prints. */
async function startGuest(vm: string, opts: { host?: string; incoming?: string; name?: string } = {}): Promise<QemuGuest> {
  const host = opts.host ?? lab.cfg.vms.get(vm)!.host;
  const printed = await lab.cli(['vm', 'qemu-args', vm, '--host', host, '--json']);
  assert.is(printed.code, 0, printed.stderr);
  const port = JSON.parse(printed.stdout) as { args: string[] };
  assert.equal(port.args, qemuPort(lab.cfg, lab.cfg.vms.get(vm)!, host).args);
  const g = QemuGuest.start({
    name: opts.name ?? vm, image, accel, net: port.args, dir: join(lab.dir, 'qemu'), netns: lab.hostNs(host), incoming: opts.incoming,
  });
  guests.set(opts.name ?? vm, g);
  return g;
}

async function pingFrom(g: QemuGuest, to: string, count = 3): Promise<{ sent: number; received: number }> {
  const out = (await g.run(`ping -6 -c ${count} -i 0.2 -W 2 ${to}`, 60_000)).out;
  const m = /(\d+) packets transmitted, (\d+) packets received/.exec(out);
  assert.ok(m, `ping printed no summary: ${out}`);
  return { sent: Number(m![1]), received: Number(m![2]) };
}

/** The guest's address once DHCPv6 gave it, and its default route. */
async function configured(g: QemuGuest, vm: string): Promise<string> {
  const addr = await g.address(90_000);
  assert.is(addr, id(vm), `${vm} got its identity from DHCPv6`);
  const route = await g.sh('ip -6 route show default');
  assert.match(route, /default via fe80::4e:56ff:fe49:1 dev eth0/, `${vm}'s route from the RA: ${route}`);
  return addr;
}

test('three guests are created, the lab comes up, and they boot', async () => {
  image = guestImage(REPO);
  accel = await accelerator(image, join(REPO, 'build', 'guest'));
  for (const [vm, tenant, host, port] of [['vm1', 'blue', 'h1', 'qemu-tap'], ['vm2', 'blue', 'h2', 'stream'], ['vmx', 'green', 'h1', 'stream']]) {
    const r = await lab.cli(['vm', 'create', vm, '--tenant', tenant, '--host', host, '--port', port]);
    assert.is(r.code, 0, r.stderr);
  }
  const doc = parse(readFileSync(lab.config, 'utf8')) as { tenants: { blue: { groups: { web: string[] } } } };
  doc.tenants.blue.groups.web.push('vm1', 'vm2');
  writeFileSync(lab.config, stringify(doc));
  lab.reload();
  await lab.up();
  const starts = ['vm1', 'vm2', 'vmx'].map((vm) => startGuest(vm));
  const booted = await Promise.all((await Promise.all(starts)).map((g) => g.booted(180_000)));
  process.stdout.write(`\n  qemu (${accel}): booted to a shell in ${booted.join(' / ')} ms (guest kernel ${[...guests.values()].map((g) => g.bootSeconds).join(' / ')} s)\n`);
});

test('each guest gets its identity by DHCPv6 and its route by RA', async () => {
  for (const vm of ['vm1', 'vm2', 'vmx']) await configured(guests.get(vm)!, vm);
  const s = await lab.stats();
  const dhcp = (h: string): Record<string, number> => (s[h] as unknown as { dhcp: Record<string, number> }).dhcp;
  assert.ok(dhcp('h1').request + dhcp('h1').solicit >= 2, `h1 answered DHCPv6: ${JSON.stringify(dhcp('h1'))}`);
});

test('vm1 (a TAP QEMU opened) and vm2 (a stream socket) ping each other across the hosts and move a file byte for byte; vm2 reaches web1', async () => {
  const g1 = guests.get('vm1')!;
  const g2 = guests.get('vm2')!;
  assert.equal(await pingFrom(g1, id('vm2')), { sent: 3, received: 3 });
  assert.equal(await pingFrom(g2, id('vm1')), { sent: 3, received: 3 });
  await g2.sh('mkdir -p /srv && dd if=/dev/urandom of=/srv/blob bs=1k count=2048 2>/dev/null && httpd -p [::]:8080 -h /srv');
  const want = (await g2.sh('sha256sum /srv/blob')).split(' ')[0];
  await g1.sh(`wget -q -O /tmp/blob http://[${id('vm2')}]:8080/blob`, 120_000);
  assert.is((await g1.sh('sha256sum /tmp/blob')).split(' ')[0], want, 'the file arrived byte for byte');
  assert.equal(await pingFrom(g2, id('web1')), { sent: 3, received: 3 }, 'a guest reaches a namespace VM');
});

test('a guest of another tenant gets nothing through; a guest that forges its source is counted as spoofed', async () => {
  const s0 = await lab.stats();
  assert.equal(await pingFrom(guests.get('vmx')!, id('vm1'), 2), { sent: 2, received: 0 });
  const g1 = guests.get('vm1')!;
  const forged = id('vm2');
  await g1.sh(`echo 0 > /proc/sys/net/ipv6/conf/eth0/accept_dad && ip -6 addr add ${forged}/128 dev eth0`);
  await g1.run(`ping -6 -c 2 -W 1 -I ${forged} ${id('web1')}`, 30_000);
  await g1.sh(`ip -6 addr del ${forged}/128 dev eth0`);
  const s1 = await lab.stats();
  const d = dropDelta(s0.h1.egress, s1.h1.egress);
  assert.ok((d['policy/cross-tenant'] ?? 0) >= 2, `cross-tenant counted: ${JSON.stringify(d)}`);
  assert.ok((d['spoof/source'] ?? 0) >= 2, `spoofed source counted: ${JSON.stringify(d)}`);
});

test('a guest whose QEMU stops and starts again gets its port back, the switch never restarts', async () => {
  const pids = lab.switchPids();
  for (const vm of ['vm1', 'vm2']) {
    await guests.get(vm)!.stop();
    const g = await startGuest(vm);
    await g.booted(180_000);
    await configured(g, vm);
  }
  assert.equal(await pingFrom(guests.get('vm1')!, id('vm2')), { sent: 3, received: 3 });
  assert.equal(lab.switchPids(), pids, 'the same switch processes');
});

test('a live migration whose hypervisor step fails (migrate --live --exec) is cancelled: vm1 never left h1', async () => {
  const r = await lab.cli(['migrate', 'vm1', '--to', 'h2', '--live', '--exec', 'exit 3', '--wait', '5'], 60);
  assert.is.not(r.code, 0, r.stdout);
  assert.match(r.stderr, /migration of vm1 to h2 failed \(--exec `exit 3` exited 3\); vm1 stays on h1/, r.stderr);
  lab.reload();
  assert.is(lab.cfg.vms.get('vm1')!.host, 'h1');
  assert.equal(await controlRequest(controlPath(lab.cfg, 'h2'), { cmd: 'vm', op: 'state', vm: 'vm1' }), { state: 'absent' }, 'no port for vm1 left on h2');
  assert.equal(await pingFrom(guests.get('vm2')!, id('vm1')), { sent: 3, received: 3 });
});

test('QEMU live migration of vm1 from h1 to h2 under a 10 ms ping and a download: one connection, every byte, the blackout shown', async () => {
  const g2 = guests.get('vm2')!;
  const src = guests.get('vm1')!;
  // A paced download: the CGI sends `seq 1 200000` in 100 pieces, 40 ms apart (~5 s). vm2
  // booted again in the test before: its web server starts anew.
  await g2.sh(`mkdir -p /srv/cgi-bin && printf '#!/bin/sh\\necho "Content-Type: text/plain"\\necho\\ni=0\\nwhile [ $i -lt 100 ]; do seq $((i*2000+1)) $((i*2000+2000)); usleep 40000; i=$((i+1)); done\\n' > /srv/cgi-bin/paced && chmod +x /srv/cgi-bin/paced && httpd -p [::]:8080 -h /srv`);
  const want = (await g2.sh('seq 1 200000 | sha256sum')).split(' ')[0];
  await src.sh(`( (wget -q -O /tmp/paced http://[${id('vm2')}]:8080/cgi-bin/paced 2>/tmp/wget.err; echo "wget $?" > /tmp/wget.done) >/dev/null 2>&1 & )`);
  await g2.sh(`(ping -6 -i 0.01 -W 1 ${id('vm1')} > /tmp/ping.out 2>&1 &)`);
  await sleep(1000);
  const incoming = join(lab.dir, 'qemu', 'vm1.migrate');
  let dst: QemuGuest | undefined;
  const r = await migrate(lab.cfg, 'vm1', 'h2', {
    live: true,
    afterIn: async () => {
      dst = await startGuest('vm1', { host: 'h2', incoming, name: 'vm1-dst' });
      await dst.waitFor(/./, 100).catch(() => {}); // QEMU is up when its QMP socket answers
      for (let k = 0; k < 100; k++) {
        try {
          await dst.qmp('query-status');
          break;
        } catch {
          await sleep(100);
        }
      }
      await src.qmp('migrate-set-parameters', { 'max-bandwidth': 1 << 30 });
      await qmpMigrate(src.qmpPath, `unix:${incoming}`, 60_000);
    },
  }, 30_000);
  const info = (await src.qmp('query-migrate')) as { downtime?: number; 'total-time'?: number };
  await src.stop();
  guests.delete('vm1');
  guests.set('vm1', dst!);
  lab.reload();
  assert.is(lab.cfg.vms.get('vm1')!.host, 'h2');
  await dst!.waitFor(/./, 1).catch(() => {});
  // The download finishes on the destination, on the connection it had.
  for (let k = 0; k < 60 && (await dst!.run('cat /tmp/wget.done 2>/dev/null')).out === ''; k++) await sleep(1000);
  const why = `wget: ${await dst!.sh('cat /tmp/wget.err; ls -l /tmp/paced')}; QEMU downtime ${info.downtime} ms, total ${info['total-time']} ms`;
  assert.is((await dst!.sh('cat /tmp/wget.done')).trim(), 'wget 0', why);
  assert.is((await dst!.sh('sha256sum /tmp/paced')).split(' ')[0], want, 'every byte, in order');
  await g2.sh('kill $(pidof ping) 2>/dev/null; sleep 1');
  const pings = await g2.sh('cat /tmp/ping.out');
  const seqs = [...pings.matchAll(/seq=(\d+)/g)].map((m) => Number(m[1]));
  const gaps: number[] = [];
  for (let k = 1; k < seqs.length; k++) if (seqs[k] - seqs[k - 1] > 1) gaps.push(seqs[k] - seqs[k - 1] - 1);
  const cables = await lab.cables();
  assert.ok(cables.h2.some((c) => c.srcVm === 'vm2' && c.dstVm === 'vm1' && c.peer === 'this host' && c.state.startsWith('plugged')), 'vm2 -> vm1 is a local cable on h2 now');
  assert.ok(seqs.length > 100, `pings came back: ${seqs.length}`);
  process.stdout.write(`\n  qemu migration: ${r.vm} ${r.from} -> ${r.to}, active at the destination ${r.switchoverMs} ms after the hand-over; QEMU downtime ${info.downtime} ms, total ${info['total-time']} ms; ping every 10 ms: ${seqs.length} replies, gaps ${JSON.stringify(gaps)}\n`);
});

test.run();
