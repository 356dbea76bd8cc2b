// A policy change on running hosts re-evaluates exactly the cables it may affect, and the
// new decision takes effect on the next packet (issue 3).

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { TenantConfig } from '../src/config/config.js';
import { CableDirection } from '../src/dataplane/cable.js';
import { Drop } from '../src/base/drops.js';
import { compilePolicy } from '../src/policy/compile.js';
import { echoFrame, frames, openOffline, type Offline } from './offline-fixture.js';

async function ping(o: Offline, from: string, to: string): Promise<void> {
  await o.off.sendFrames(from, frames([echoFrame(o.config, from, to, 1)]));
}

/** The config's tenants with green's rules replaced. */
function withGreenRules(o: Offline, rules: unknown[]): TenantConfig[] {
  return [...o.config.tenants.values()].map((t) => (t.name === 'green' ? { ...t, policy: { ...t.policy, rules, tests: [] } } : t));
}

test('changing one tenant rule re-evaluates only the cables of its identities, and the change takes effect', async () => {
  const o = await openOffline({ prefetchReplies: false, spares: 0 }); // the cables of the requests only, counted: each plugged at both ends by its INIT (a spare's peer plugs at the first packet, which the diode drops here)
  for (const [a, b] of [['web1', 'web2'], ['web1', 'web3'], ['web1', 'db1'], ['sensor1', 'vault1']]) await ping(o, a, b);
  const h1 = o.off.hosts.get('h1')!;
  const h2 = o.off.hosts.get('h2')!;
  const cablesOf = (vms: string[]): number => {
    const ids = new Set(vms.map((v) => o.config.vms.get(v)!.identityText));
    let n = 0;
    for (const h of [h1, h2]) for (const cache of [h.egressCables, h.ingressCables]) for (const c of cache.all()) if (ids.has(c.srcText) || ids.has(c.dstText)) n++;
    return n;
  };
  const total = [h1, h2].reduce((n, h) => n + h.egressCables.size + h.ingressCables.size, 0);
  assert.is(cablesOf(['sensor1', 'vault1']), 2, 'h1 egress and h2 ingress sensor1 -> vault1');
  assert.ok(total > 2);
  assert.is(h2.ingress.counters.delivered, 2, 'web2 and db1 (web3 is on h1; the diode carries only UDP)');
  assert.is(h1.egress.counters.delivered, 1, 'web3, on the same host');
  assert.is(h1.egress.counters.drops[Drop.PolicyProtoPort], 1, 'the echo request on the UDP diode');

  const next = compilePolicy(withGreenRules(o, [{ name: 'quiet', from: 'sensor1', to: 'vault1', action: 'unplug' }]), 2);
  const n1 = h1.applyPolicy(next);
  const n2 = h2.applyPolicy(next);
  assert.is(n1 + n2, 2, 'exactly the two cables of the changed tenant were re-evaluated');
  assert.is(n1, 1);
  assert.is(n2, 1);
  const egress = [...h1.egressCables.all()].find((c) => c.direction === CableDirection.Egress && c.srcText === o.config.vms.get('sensor1')!.identityText)!;
  assert.is(egress.drop, Drop.PolicyUnplugRule);
  assert.is(egress.decision!.revision, 2);
  await ping(o, 'sensor1', 'vault1');
  assert.is(h1.egress.counters.drops[Drop.PolicyUnplugRule], 1, 'the next packet is refused under the new rule');
  await ping(o, 'web1', 'web2');
  assert.is(h2.ingress.counters.delivered, 3, 'blue is untouched');
  o.off.close();
});

test('a policy that plugs a pair it refused before lets the next packet plug it from scratch', async () => {
  const o = await openOffline();
  const h1 = o.off.hosts.get('h1')!;
  const h2 = o.off.hosts.get('h2')!;
  await ping(o, 'sensor1', 'vault1');
  const rules = [{ name: 'telemetry', from: 'sensor1', to: 'vault1', action: 'diode', proto: 'udp' }];
  // Before: the diode only carries UDP, an echo request is refused at the sender.
  assert.is(h1.egress.counters.drops[Drop.PolicyProtoPort], 1);
  const next = compilePolicy(withGreenRules(o, [{ ...rules[0], proto: 'any' }]), 2);
  h1.applyPolicy(next);
  h2.applyPolicy(next);
  await ping(o, 'sensor1', 'vault1');
  assert.is(h2.ingress.counters.delivered, 1);
  o.off.close();
});

test.run();
