// Thin wrappers over iproute2 for the lab: every command is run with execFile (no shell),
// and a failure becomes an NviError that quotes the command and what it printed.

import { execFileSync, spawnSync } from 'node:child_process';
import { NviError } from '../base/errors.js';

export function sh(cmd: string, args: readonly string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new NviError('NVI_ERR_LAB', `${cmd} ${args.join(' ')}: ${(err.stderr ?? err.message).trim()}`);
  }
}

/** Run and report success instead of throwing (for cleanup, where absence is fine). */
export function trySh(cmd: string, args: readonly string[]): boolean {
  return spawnSync(cmd, args, { stdio: 'ignore' }).status === 0;
}

export function ip(...args: string[]): string {
  return sh('ip', args);
}

/** `ip netns exec NS cmd args...` */
export function inNs(ns: string, cmd: string, ...args: string[]): string {
  return sh('ip', ['netns', 'exec', ns, cmd, ...args]);
}

export function listNetns(): string[] {
  return sh('ip', ['netns', 'list']).split('\n').map((l) => l.split(' ')[0]).filter((n) => n.length > 0);
}

export function netnsExists(ns: string): boolean {
  return listNetns().includes(ns);
}

export function deleteNetns(ns: string): boolean {
  return trySh('ip', ['netns', 'delete', ns]);
}

export function requireRoot(what: string): void {
  if (process.getuid && process.getuid() !== 0) {
    throw new NviError('NVI_ERR_LAB', `${what} needs root (network namespaces, TAP devices and raw sockets)`);
  }
}
