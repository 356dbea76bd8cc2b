// The VMs an operator detached from a host (`vm detach`): they stay detached across restarts
// of its switch until attached again. A JSON list in the host's state directory.

import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { CloudConfig } from '../config/config.js';
import { detachedPath } from './paths.js';

/** The VMs detached from `host` (none when the list is missing or unreadable). */
export function detachedVms(cfg: CloudConfig, host: string): Set<string> {
  try {
    return new Set(JSON.parse(readFileSync(detachedPath(cfg, host), 'utf8')) as string[]);
  } catch {
    return new Set();
  }
}

/**
 * Keep `vm` detached from `host` (or attached again): a read-modify-write of the list, made
 * whole by a rename, so a switch that starts never reads half of it. One thread of a process
 * writes it: with several workers, the main thread (workers/sharded-switch.ts).
 */
export function rememberDetached(cfg: CloudConfig, host: string, vm: string, detached: boolean): void {
  const set = detachedVms(cfg, host);
  if (detached) set.add(vm);
  else set.delete(vm);
  const path = detachedPath(cfg, host);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(`${path}.new`, JSON.stringify([...set]));
  renameSync(`${path}.new`, path);
}
