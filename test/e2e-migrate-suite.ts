// End to end (issue 9): VMs that come, go and move while the switches run, in the lab; run
// by e2e-migrate.test.ts with the embedded store and e2e-migrate-etcd.test.ts with etcd.
//   1. lab up
//   2. a new VM (vm create --attach through `lab attach`) gets its RA and reaches a VM on the
//      other host; detached, its cables go on both hosts and packets to it are counted;
//      attached again, at a higher epoch, it is reached both ways
//   3. a VM detached on h1 and attached on h2 (a cold move: its key moved, the config edited)
//      binds above the epoch the store withdrew, so h1, which verified the old binding,
//      reaches it
//   4. web2 migrates h2 -> h1 and back while web1 pings it every 10 ms and sends it 12 MB
//      over one TCP connection: the connection survives, the bytes arrive exactly, the rules
//      of the cables are the same before and after; the blackout is reported
//   5. db1 (the destination of an initiate-only rule) and vault1 (of a data diode) move: the
//      same flows pass and fail as before
//   6. web2's old binding replayed into the store after a move is refused everywhere, and
//      traffic keeps going to the new host
//   7. the destination switch killed half-way through a migration: the VM is reachable at the
//      source
//   8. a live migration the destination cannot take is cancelled: the VM never left
//   9. lab down

import Database from 'better-sqlite3';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { parse, stringify } from 'yaml';
import { setVmHost } from '../src/config/edit.js';
import { labMigrate } from '../src/lab/lab.js';
import { hostKeyPaths } from '../src/trust/pki.js';
import { controlRequest } from '../src/switch/control.js';
import { controlPath } from '../src/switch/paths.js';
import { alive, dropDelta, labNamespaces, newLab, sleep, until, type HostStats, type Lab, type RunResult } from './e2e-fixture.js';

export function migrateSuite(opts: { name: string; etcd?: number }): void {
  const test = suite(opts.name);
  let lab: Lab;
  const id = (vm: string): string => lab.vm(vm).id;

  test.after(async () => {
    if (lab?.running) await lab.down();
  });

  async function ping(from: string, to: string, count = 3, wait = 2): Promise<{ sent: number; received: number }> {
    const r = await lab.inNs(lab.vm(from).ns, 'ping', ['-6', '-c', String(count), '-i', '0.2', '-W', String(wait), id(to)], 30);
    const m = /(\d+) packets transmitted, (\d+) received/.exec(r.stdout);
    assert.ok(m, `ping ${from} -> ${to} printed no summary: ${r.stdout}${r.stderr}`);
    return { sent: Number(m![1]), received: Number(m![2]) };
  }

  const replays = (s: HostStats): number => ((s as unknown as { store: { replaysRefused: number } }).store).replaysRefused;

  /** The store's binding of `vm` as it is now (read behind the switches' back). */
  async function readBinding(vm: string): Promise<Record<string, unknown>> {
    if (opts.etcd) {
      const r = await lab.etcdctl(['get', `/nvi/binding/${id(vm)}`, '--print-value-only']);
      return JSON.parse(r.stdout) as Record<string, unknown>;
    }
    const db = new Database(lab.cfg.store.path);
    const row = db.prepare('SELECT * FROM bindings WHERE identity = ?').get(id(vm)) as Record<string, unknown>;
    db.close();
    return { identity: row.identity, tenant: row.tenant, vm: row.vm, host: row.host, hostAddress: row.host_address, epoch: row.epoch, notBefore: row.not_before, notAfter: row.not_after, certificate: row.certificate, signature: row.signature };
  }

  /** Put an old record back into the store without its compare-and-swap, announced to watchers as a change. */
  async function replayBinding(rec: Record<string, unknown>): Promise<void> {
    if (opts.etcd) {
      const r = await lab.etcdctl(['put', `/nvi/binding/${String(rec.identity)}`, JSON.stringify(rec)]);
      assert.is(r.code, 0, r.stderr);
      return;
    }
    const w = new Database(lab.cfg.store.path);
    w.prepare(`UPDATE bindings SET host = @host, host_address = @hostAddress, epoch = @epoch, not_before = @notBefore, not_after = @notAfter,
      certificate = @certificate, signature = @signature WHERE identity = @identity`).run(rec);
    w.prepare("INSERT INTO changes (kind, key, value) VALUES ('binding', ?, ?)").run(rec.identity, JSON.stringify(rec));
    w.close();
  }

  /** `lab attach|detach VM`, which must succeed; its output. */
  async function labVm(op: 'attach' | 'detach', vm: string): Promise<RunResult> {
    const r = await lab.cli(['lab', op, vm], 60);
    assert.is(r.code, 0, r.stderr + r.stdout);
    return r;
  }

  /** A new VM on h1 in blue's web group (so the web mesh plugs it), the policy applied, attached on the running switch; the attach's output. */
  async function createWebVm(vm: string): Promise<RunResult> {
    const create = await lab.operator(['vm', 'create', vm, '--tenant', 'blue', '--host', 'h1']);
    assert.is(create.code, 0, create.stderr);
    const doc = parse(readFileSync(lab.config, 'utf8')) as { tenants: { blue: { groups: { web: string[] } } } };
    doc.tenants.blue.groups.web.push(vm);
    writeFileSync(lab.config, stringify(doc));
    const apply = await lab.operator(['policy', 'apply']);
    assert.is(apply.code, 0, apply.stderr + apply.stdout);
    lab.reload();
    return labVm('attach', vm);
  }

  async function migrate(vm: string, to: string): Promise<string> {
    const r = await lab.cli(['lab', 'migrate', vm, '--to', to], 60);
    assert.is(r.code, 0, `lab migrate ${vm} --to ${to}: ${r.stderr}${r.stdout}`);
    lab.reload();
    assert.is(lab.vm(vm).host, to, `the config places ${vm} on ${to} now`);
    return r.stdout.trim();
  }

  /** Rules of the cables that carry `vm`'s traffic, on every host, as "src -> dst rule". */
  async function rulesOf(vm: string): Promise<string[]> {
    const cables = await lab.cables();
    return Object.values(cables).flat().filter((c) => c.state.startsWith('plugged') && (c.srcVm === vm || c.dstVm === vm)).map((c) => `${c.srcVm} -> ${c.dstVm} ${c.rule}`).sort();
  }

  test(`lab up (${opts.etcd ? 'store on etcd' : 'embedded store'})`, async () => {
    lab = newLab(opts.name, { etcd: opts.etcd });
    await lab.up();
  });

  test('a VM created and attached on a running switch gets its RA and reaches the other host; detached, its cables go and packets to it are counted', async () => {
    const attach = await createWebVm('web4');
    assert.match(attach.stdout, /vm web4: .* default route via fe80::4e:56ff:fe49:1 \(from RA\)/);
    assert.equal(await ping('web4', 'web2', 3), { sent: 3, received: 3 }, 'web4 (h1) reaches web2 (h2)');
    const before = await lab.cables();
    assert.ok(before.h1.some((c) => c.srcVm === 'web4') && before.h2.some((c) => c.dstVm === 'web4'), 'cables of web4 on both hosts');
    await labVm('detach', 'web4');
    const gone = await until(() => lab.cables(), (c) => !Object.values(c).flat().some((x) => (x.srcVm === 'web4' || x.dstVm === 'web4') && x.state.startsWith('plugged')), 5000);
    assert.not.ok(Object.values(gone).flat().some((x) => (x.srcVm === 'web4' || x.dstVm === 'web4') && x.state.startsWith('plugged')), 'no plugged cable of web4 left');
    const s0 = await lab.stats();
    const p = await ping('web2', 'web4', 2, 1);
    assert.is(p.received, 0);
    const s1 = await lab.stats();
    const d = dropDelta(s0.h2.egress, s1.h2.egress);
    assert.ok((d['resolve/not-found'] ?? 0) + (d['vm/moved'] ?? 0) >= 2, `h2 counted the packets to the detached VM: ${JSON.stringify(d)}`);

    // Attached again: h2 verified web4's binding before, so the new one must come at a higher epoch, though the store forgot the old one.
    const again = await labVm('attach', 'web4');
    const epochs = [attach, again].map((r) => Number(/binding epoch (\d+)/.exec(r.stdout)?.[1]));
    assert.ok(epochs[1] > epochs[0], `attached again at epoch ${epochs[1]}, above ${epochs[0]}`);
    assert.equal(await ping('web4', 'web2', 3), { sent: 3, received: 3 }, 'web4 reaches web2 again');
    assert.equal(await ping('web2', 'web4', 3), { sent: 3, received: 3 }, 'and web2 reaches web4');
    await labVm('detach', 'web4'); // as the tests after this one expect
  });

  test('a VM detached on h1 and attached on h2 (its key moved, the config edited) binds above the epoch the store withdrew: web1, whose host verified the old binding, reaches it', async () => {
    // web5 talks only to web1, on its own host: h2 never sees its binding, so only the store can tell h2 its last epoch.
    const first = await createWebVm('web5');
    assert.equal(await ping('web1', 'web5', 3), { sent: 3, received: 3 }, 'web1 reaches web5 on its own host');
    await labVm('detach', 'web5');

    // A cold move: the VM's key to h2's key directory (a host keeps only its own VMs' keys), the config to h2.
    renameSync(hostKeyPaths(lab.cfg.hosts.get('h1')!.keyDir).vmKey('web5'), hostKeyPaths(lab.cfg.hosts.get('h2')!.keyDir).vmKey('web5'));
    setVmHost(lab.config, 'web5', 'h2');
    lab.reload();
    const moved = await labVm('attach', 'web5');
    const epochs = [first, moved].map((r) => Number(/binding epoch (\d+)/.exec(r.stdout)?.[1]));
    assert.ok(epochs[1] > epochs[0], `attached on h2 at epoch ${epochs[1]}, above the ${epochs[0]} h1 withdrew`);
    const s0 = await lab.stats();
    assert.equal(await ping('web1', 'web5', 3), { sent: 3, received: 3 }, 'web1 (h1) reaches web5 on h2');
    const s1 = await lab.stats();
    assert.is(dropDelta(s0.h1.egress, s1.h1.egress)['verify/old-epoch'] ?? 0, 0, 'h1 refused no binding of web5 as old');
    await labVm('detach', 'web5');
  });

  test('web2 moves h2 -> h1 and back under a 10 ms ping and a 12 MB TCP transfer from web1: one connection, every byte, the same rules', async () => {
    assert.equal(await ping('web1', 'web2', 2), { sent: 2, received: 2 });
    const rulesBefore = await rulesOf('web2');
    const sink = await lab.pyServer('web2', ['tcp-sink', 5200, 60], 70);
    const pinger = lab.bg(lab.vm('web1').ns, 'ping', ['-6', '-i', '0.01', '-W', '1', id('web2')], 60, 'INT');
    const transfer = lab.py('web1', ['tcp-send', id('web2'), 5200, 12 * 1000 * 1000, '--mbps=16', '--timeout=50'], 60);
    await sleep(1500);
    const there = await migrate('web2', 'h1');
    await sleep(2000);
    const back = await migrate('web2', 'h2');
    const sent = await transfer;
    const got = await sink.result();
    await sleep(300);
    const pings = await pinger.stop('SIGINT');
    assert.is(got.bytes, 12 * 1000 * 1000, 'every byte arrived');
    assert.is(got.sha256, sent.sha256, 'intact and in order');
    assert.is(got.peer, id('web1'), 'over the one connection web1 opened (a reset would have ended it)');
    const seqs = [...pings.stdout.matchAll(/icmp_seq=(\d+)/g)].map((m) => Number(m[1]));
    const gaps: number[] = [];
    for (let k = 1; k < seqs.length; k++) if (seqs[k] - seqs[k - 1] > 1) gaps.push(seqs[k] - seqs[k - 1] - 1);
    const m = /(\d+) packets transmitted, (\d+) received/.exec(pings.stdout);
    assert.ok(m);
    process.stdout.write(`\n  migrate: ${there}; ${back}; ping every 10 ms: ${m![0]}, gaps (pings lost in a row) ${JSON.stringify(gaps)}; TCP ${got.bytes} B intact, retransmissions ${sent.retransmissions}\n`);
    assert.ok(Number(m![2]) > Number(m![1]) * 0.8, `most pings came back: ${m![0]}`);
    assert.equal(await rulesOf('web2'), rulesBefore, 'the same rules carry web2 after the moves');
  });

  test('the destinations of an initiate-only rule (db1) and of a diode (vault1) move to h1: the same flows pass and fail as before', async () => {
    const flows = async (): Promise<Record<string, boolean>> => {
      const sink = await lab.pyServer('db1', ['tcp-sink', 5432, 10, '--echo']);
      const opened = await lab.py('web1', ['tcp-send', id('db1'), 5432, 4096, '--echo'], 15);
      await sink.result();
      const refused = await lab.py('db1', ['tcp-connect', id('web1'), 5433, 2]);
      const recv = await lab.pyServer('vault1', ['udp-recv', 5514, 2, 3]);
      await lab.py('sensor1', ['udp-send', id('vault1'), 5514, 3]);
      const diode = await recv.result();
      const back = await lab.pyServer('sensor1', ['udp-recv', 5515, 2]);
      await lab.py('vault1', ['udp-send', id('sensor1'), 5515, 3]);
      const reverse = await back.result();
      return {
        'web1 opens tcp to db1': opened.echoed === 4096,
        'db1 opens tcp to web1': refused.connected === true,
        'sensor1 -> vault1 udp': diode.received === 3,
        'vault1 -> sensor1 udp': reverse.received !== 0,
      };
    };
    const before = await flows();
    assert.equal(before, { 'web1 opens tcp to db1': true, 'db1 opens tcp to web1': false, 'sensor1 -> vault1 udp': true, 'vault1 -> sensor1 udp': false });
    await migrate('db1', 'h1');
    await migrate('vault1', 'h1');
    assert.equal(await flows(), before, 'the same after the moves');
    await migrate('db1', 'h2');
    await migrate('vault1', 'h2');
  });

  test("web2's old binding replayed into the store after a move is refused everywhere, and traffic goes on to the new host", async () => {
    assert.equal(await ping('web1', 'web2', 2), { sent: 2, received: 2 });
    const old = await readBinding('web2');
    await migrate('web2', 'h1');
    assert.equal(await ping('web3', 'web2', 2), { sent: 2, received: 2 }, 'web3 reaches web2 on h1');
    const s0 = await lab.stats();
    await replayBinding(old); // a compromised store puts the old record (h2, the lower epoch) back
    const s1 = await until(() => lab.stats(), (s) => ['h1', 'h2'].every((h) => replays(s[h]) > replays(s0[h])), 5000);
    for (const h of ['h1', 'h2']) assert.ok(replays(s1[h]) > replays(s0[h]), `${h} refused the replayed binding`);
    assert.equal(await ping('web1', 'web2', 3), { sent: 3, received: 3 }, 'web1 still reaches web2 on h1');
    const cables = await lab.cables();
    assert.ok(cables.h1.some((c) => c.srcVm === 'web1' && c.dstVm === 'web2' && c.peer === 'this host'), 'h1 carries web1 -> web2 locally, as web2 is on h1');
    await migrate('web2', 'h2');
  });

  test('the destination switch killed half-way through a migration: the VM stays reachable at the source', async () => {
    // The test before moved web2 back to h2 last: a packet in that move's blackout may be lost.
    await until(() => ping('web1', 'web2', 1, 1), (r) => r.received === 1, 10_000);
    assert.equal(await ping('web1', 'web2', 2), { sent: 2, received: 2 });
    const h1 = lab.switchPids().find((s) => s.host === 'h1')!;
    let error = '';
    try {
      await labMigrate(lab.cfg, 'web2', 'h1', {
        afterOut: async () => {
          process.kill(h1.pid, 'SIGKILL'); // the destination dies after the source let go
          await until(async () => alive(h1.pid), (a) => !a, 5000);
        },
      });
    } catch (e) {
      error = (e as Error).message;
    }
    assert.match(error, /migration of web2 to h1 failed .* web2 is back on h2/, error);
    lab.reload();
    assert.is(lab.vm('web2').host, 'h2', 'the config still places web2 on h2');
    const restart = await lab.cli(['lab', 'restart', 'h1'], 60);
    assert.is(restart.code, 0, restart.stderr + restart.stdout);
    let ok = 0;
    for (let k = 0; k < 10 && ok === 0; k++) ok = (await ping('web1', 'web2', 1, 1)).received;
    assert.is(ok, 1, 'web2 reachable on h2');
    const cables = await lab.cables();
    assert.ok(cables.h1.some((c) => c.dstVm === 'web2' && c.peer === 'h2'), 'h1 reaches web2 at h2');
  });

  test('a live migration the destination cannot take (a lab VM has one interface, held by the source) is cancelled: the VM never left its host', async () => {
    const before = await readBinding('web2');
    const r = await lab.cli(['migrate', 'web2', '--to', 'h1', '--live', '--exec', 'exit 3', '--wait', '5'], 60);
    assert.is.not(r.code, 0, r.stdout);
    assert.match(r.stderr, /migration of web2 to h1 failed \(TAP nvi-web2: TUNSETIFF: Device or resource busy \(EBUSY\)\); web2 stays on h2/, r.stderr);
    lab.reload();
    assert.is(lab.vm('web2').host, 'h2');
    const after = await readBinding('web2');
    assert.equal([after.host, after.epoch], [before.host, before.epoch], 'the binding is the one before');
    assert.equal(await controlRequest(controlPath(lab.cfg, 'h1'), { cmd: 'vm', op: 'state', vm: 'web2' }), { state: 'absent' }, 'no port for web2 left on h1');
    assert.equal(await ping('web1', 'web2', 2), { sent: 2, received: 2 });
  });

  test('lab down leaves nothing', async () => {
    await lab.down();
    assert.equal(labNamespaces(), []);
  });

  test.run();
}
