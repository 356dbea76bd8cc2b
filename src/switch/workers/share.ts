// A worker's share of the host's bounds, when a host runs `switch.workers: N`.
//
// Each worker keeps its own cable cache and its own queues of held packets, so bounds the
// operator sets for the host (`switch.cables.max`, `switch.upcall.queueTotal`) are split
// among the workers: N workers together hold no more than one would. So is the verdict
// stream (`observe`): what the operator follows is the workers' streams joined. Rates that
// guard a thread's CPU stay per worker (`verifyPerSecond`, INITs per peer): each worker has
// its own. Per-port bounds stay as they are: a port belongs to one worker.

import type { CloudConfig } from '../../config/config.js';
import { VERDICT_LIMITS } from '../verdicts.js';

/** Worker's part of a host-wide bound: the bound over `count` workers, rounded up, at least 1. */
export function shareOf(total: number, count: number): number {
  return Math.max(1, Math.ceil(total / count));
}

/** A worker's verdict stream: its share of the host's events a second and events kept. */
export function verdictLimits(count: number): { rate: number; keep: number } {
  return { rate: shareOf(VERDICT_LIMITS.rate, count), keep: shareOf(VERDICT_LIMITS.keep, count) };
}

/** The config one of `count` workers runs with: the host's memory bounds split among them. */
export function workerConfig(cfg: CloudConfig, count: number): CloudConfig {
  if (count === 1) return cfg;
  const sw = cfg.switch;
  const max = shareOf(sw.cables.max, count);
  return {
    ...cfg,
    switch: {
      ...sw,
      cables: { ...sw.cables, max, perPort: Math.min(sw.cables.perPort, max) },
      upcall: { ...sw.upcall, queueTotal: shareOf(sw.upcall.queueTotal, count) },
    },
  };
}
