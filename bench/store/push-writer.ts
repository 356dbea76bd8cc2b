// Helper of bench/store.ts, run inside a host's namespace (where the lab's etcd is reached):
// publishes VM's binding with the next epoch, `count` times, `interval` ms apart, as its host
// would after a migration or a renewal, and prints one JSON line per write:
//   {"epoch": E, "writtenAt": ms}     (Date.now() right after the store accepted it)
//
//   node dist/bench/store/push-writer.js CONFIG VM COUNT INTERVAL_MS

import { loadConfig } from '../../src/config/config.js';
import { openStore } from '../../src/store/open-store.js';
import { vmCredentials } from '../../src/switch/host-keys.js';
import { BINDING_VALIDITY_SECONDS } from '../../src/switch/cloud.js';
import { makeBinding } from '../../src/trust/binding.js';

const [file, vmName, countText, intervalText] = process.argv.slice(2);
const cfg = loadConfig(file);
const vm = cfg.vms.get(vmName);
if (!vm) throw new Error(`no VM ${vmName}`);
const host = cfg.hosts.get(vm.host)!;
const creds = vmCredentials(cfg, vmName);
const store = await openStore(cfg);
try {
  for (let k = 0; k < Number(countText); k++) {
    const cur = await store.lookup(vm.identityText);
    const epoch = (cur?.epoch ?? 0) + 1;
    await store.publish(makeBinding(creds, vm, host, epoch, Date.now(), BINDING_VALIDITY_SECONDS));
    process.stdout.write(`${JSON.stringify({ epoch, writtenAt: Date.now() })}\n`);
    await new Promise((r) => setTimeout(r, Number(intervalText)));
  }
} finally {
  await store.close();
}
