// etcd members for the lab and the tests: Debian's etcd-server, one process per member,
// started inside a network namespace (the lab's fabric, so the switches reach the store over
// the underlay as remote hosts would), each on the address and port of one endpoint of the
// config's store.endpoints. A member's peer port is its client port + 10000.

import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { NviError } from '../base/errors.js';
import { sh } from './netns.js';

export const ETCD_BINARY = '/usr/bin/etcd';

export interface EtcdMember {
  readonly name: string;
  /** http://IP:PORT, as in store.endpoints. */
  readonly client: string;
  readonly peer: string;
  readonly dataDir: string;
}

/** One member per endpoint, data under `dataRoot`. */
export function etcdMembers(endpoints: readonly string[], dataRoot: string): EtcdMember[] {
  return endpoints.map((client, k) => {
    const u = new URL(client);
    if (u.protocol !== 'http:') throw new NviError('NVI_ERR_LAB', `the lab runs etcd over plain http; ${client} is not`);
    const peer = `http://${u.hostname}:${Number(u.port || 2379) + 10_000}`;
    return { name: `m${k}`, client, peer, dataDir: join(dataRoot, `etcd-m${k}`) };
  });
}

/** Start `m` of `cluster` in network namespace `ns` (detached, output to `logFile`); returns its PID. */
export function startEtcdMember(ns: string, m: EtcdMember, cluster: readonly EtcdMember[], logFile: string): number {
  if (!existsSync(ETCD_BINARY)) throw new NviError('NVI_ERR_LAB', `${ETCD_BINARY} is missing: install Debian's etcd-server (scripts/setup.sh does)`);
  mkdirSync(m.dataDir, { recursive: true, mode: 0o700 });
  const fresh = !existsSync(join(m.dataDir, 'member'));
  const args = [
    '--name', m.name, '--data-dir', m.dataDir,
    '--listen-client-urls', m.client, '--advertise-client-urls', m.client,
    '--listen-peer-urls', m.peer, '--initial-advertise-peer-urls', m.peer,
    '--initial-cluster', cluster.map((x) => `${x.name}=${x.peer}`).join(','),
    '--initial-cluster-state', fresh ? 'new' : 'existing',
    '--initial-cluster-token', 'nvi-lab',
    // A lab on one machine: fast elections, small snapshots.
    '--heartbeat-interval', '50', '--election-timeout', '500', '--snapshot-count', '10000',
    '--logger', 'zap', '--log-level', 'warn',
  ];
  const out = openSync(logFile, 'a');
  const child = spawn('ip', ['netns', 'exec', ns, ETCD_BINARY, ...args], { detached: true, stdio: ['ignore', out, out] });
  child.unref();
  if (!child.pid) throw new NviError('NVI_ERR_LAB', `could not start etcd member ${m.name}`);
  return child.pid;
}

/** Wait until every endpoint answers etcd's health check from inside `ns`. */
export async function waitEtcdHealthy(ns: string, endpoints: readonly string[], timeoutMs: number, logFile: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    try {
      sh('ip', ['netns', 'exec', ns, 'etcdctl', '--dial-timeout=1s', '--command-timeout=2s', `--endpoints=${endpoints.join(',')}`, 'endpoint', 'health']);
      return;
    } catch (e) {
      last = (e as Error).message;
    }
    if (Date.now() > end) {
      const tail = existsSync(logFile) ? readFileSync(logFile, 'utf8').split('\n').slice(-15).join('\n') : '';
      throw new NviError('NVI_ERR_LAB', `etcd at ${endpoints.join(', ')} not healthy after ${timeoutMs} ms: ${last}\n${tail}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** True when `pid` is an etcd process with data under `dataRoot` (not a reused PID of something else). */
export function isLabEtcd(pid: number, dataRoot: string): boolean {
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return cmdline[0] === ETCD_BINARY && cmdline.some((a) => a.startsWith(dataRoot));
  } catch {
    return false;
  }
}
