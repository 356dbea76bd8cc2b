// Real etcd members for the tests (Debian's etcd-server, started by src/lab/etcd.ts), inside a
// network namespace of the test's own: nvi-te-<pid>, joined to this process's namespace by a
// veth pair, the members listening on its side (10.254.N.2, .3, .4), so the store client in
// the test process reaches them as a switch reaches a remote store. Members can be stopped,
// killed and started again; everything is removed on destroy() and, synchronously, at exit.

import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { etcdMembers, startEtcdMember, type EtcdMember } from '../src/lab/etcd.js';
import { EtcdClient } from '../src/store/etcd-client.js';
import { atExit } from './at-exit.js';

const live = new Set<EtcdCluster>();
let hooked = false;

function ipCmd(...args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr.trim()}`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export class EtcdCluster {
  readonly endpoints: string[];
  private readonly pids: (number | undefined)[];
  private destroyed = false;

  private constructor(
    readonly ns: string,
    private readonly dir: string,
    private readonly members: EtcdMember[],
  ) {
    this.endpoints = members.map((m) => m.client);
    this.pids = members.map(() => undefined);
  }

  /** `n` members (1 or 3), healthy. */
  static async start(n: number): Promise<EtcdCluster> {
    const tag = `${process.pid % 10_000}${live.size}`;
    const net = 10 + ((process.pid * 7 + live.size * 31) % 240);
    const ns = `nvi-te-${tag}`;
    const dir = mkdtempSync(join(tmpdir(), 'nvi-etcd-'));
    spawnSync('ip', ['netns', 'delete', ns], { stdio: 'ignore' });
    ipCmd('netns', 'add', ns);
    const a = `nvte${tag}a`.slice(0, 15);
    const b = `nvte${tag}b`.slice(0, 15);
    const members = etcdMembers(Array.from({ length: n }, (_, k) => `http://10.254.${net}.${k + 2}:2379`), dir);
    const c = new EtcdCluster(ns, dir, members);
    live.add(c);
    if (!hooked) {
      hooked = true;
      atExit(() => {
        for (const x of live) x.destroySync();
      });
    }
    ipCmd('link', 'add', a, 'type', 'veth', 'peer', 'name', b, 'netns', ns);
    ipCmd('addr', 'add', `10.254.${net}.1/24`, 'dev', a);
    ipCmd('link', 'set', a, 'up');
    ipCmd('netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up');
    for (let k = 0; k < n; k++) ipCmd('netns', 'exec', ns, 'ip', 'addr', 'add', `10.254.${net}.${k + 2}/24`, 'dev', b);
    ipCmd('netns', 'exec', ns, 'ip', 'link', 'set', b, 'up');
    for (let k = 0; k < n; k++) c.startMember(k);
    await c.healthy();
    return c;
  }

  startMember(k: number): void {
    this.pids[k] = startEtcdMember(this.ns, this.members[k], this.members, join(this.dir, `${this.members[k].name}.log`));
  }

  /** Stop member k (SIGTERM, or SIGKILL when `hard`), and wait until it is gone. */
  async stopMember(k: number, hard = false): Promise<void> {
    const pid = this.pids[k];
    if (pid === undefined) return;
    process.kill(pid, hard ? 'SIGKILL' : 'SIGTERM');
    for (let t = 0; t < 100 && alive(pid); t++) await new Promise((r) => setTimeout(r, 50));
    if (alive(pid)) process.kill(pid, 'SIGKILL');
    this.pids[k] = undefined;
  }

  async stopAll(): Promise<void> {
    for (let k = 0; k < this.members.length; k++) await this.stopMember(k);
  }

  async startAll(): Promise<void> {
    for (let k = 0; k < this.members.length; k++) if (this.pids[k] === undefined) this.startMember(k);
    await this.healthy();
  }

  /** Every running member answers, and the cluster takes a write. */
  async healthy(timeoutMs = 20_000): Promise<void> {
    const client = new EtcdClient(this.endpoints.filter((_, k) => this.pids[k] !== undefined), { timeoutMs: 1000 });
    const end = Date.now() + timeoutMs;
    try {
      for (;;) {
        try {
          await client.put('/health', String(Date.now()));
          return;
        } catch (e) {
          if (Date.now() > end) throw new Error(`etcd ${this.endpoints.join(', ')} not healthy after ${timeoutMs} ms: ${(e as Error).message}`);
          await new Promise((r) => setTimeout(r, 200));
        }
      }
    } finally {
      client.close();
    }
  }

  async destroy(): Promise<void> {
    await this.stopAll();
    this.destroySync();
  }

  private destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const pid of this.pids) if (pid !== undefined && alive(pid)) process.kill(pid, 'SIGKILL');
    spawnSync('ip', ['netns', 'delete', this.ns], { stdio: 'ignore' });
    rmSync(this.dir, { recursive: true, force: true });
    live.delete(this);
  }
}
