// A data-path thread on the CPUs its host gives it (`hosts.<name>.cpus`): data-path thread
// `index` of the host (worker `index`, or the one thread) runs on cpus[index mod length].
// Production vswitches pin their data path the same way: a thread that stays on its CPU
// keeps its caches, and is woken where it last ran.

import { ConfigError } from '../base/errors.js';
import type { HostConfig } from '../config/config.js';
import { loadNative } from '../native/addon.js';

/** Pin the calling thread, data-path thread `index` of `host`. Returns its CPU, or undefined when the host names none. */
export function pinDataPath(host: HostConfig, index = 0): number | undefined {
  if (!host.cpus) return undefined;
  const cpu = host.cpus[index % host.cpus.length];
  const native = loadNative();
  try {
    native.setThreadCpus(Int32Array.of(cpu));
  } catch (e) {
    throw new ConfigError(`hosts.${host.name}.cpus`, `CPU ${cpu} cannot run this switch (it may run on ${native.threadCpus().join(', ')}): ${(e as Error).message}`);
  }
  return cpu;
}

/** The CPUs the calling thread may run on. */
export function threadCpus(): number[] {
  return loadNative().threadCpus();
}
