// Tenant policy tests, in the manner of Tailscale ACL tests: each tenant states what must
// plug and what must not, and `nvi-switch policy test` runs them against the compiled
// policy with the real decide() and packet filter.
//
// A case plugs when decide(src, dst) plugs the direction, it is not replies-only (a new
// connection from src would be refused), and, when the case has a protocol, the direction's
// filter passes a first packet of it: tcp/udp to `port` (from source port 0, which no rule
// can name), ICMPv6 echo request, or any other protocol number.

import { Drop, dropName } from '../base/drops.js';
import { FlowMode } from '../dataplane/decision.js';
import type { CompiledPolicy } from './compile.js';
import { CompiledFilter } from './filter.js';
import { parseTests, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, type PolicyTenantInput } from './model.js';

const ICMP6_ECHO_REQUEST = 128;

export interface PolicyTestResult {
  readonly tenant: string;
  readonly index: number;
  /** "web1 -> db1 tcp/5432". */
  readonly case: string;
  readonly expect: 'plug' | 'unplug';
  readonly passed: boolean;
  readonly got: 'plug' | 'unplug';
  /** The rule that decided ("blue/no-telnet", "default-deny", ...). */
  readonly rule: string;
  /** Drop reason name when unplugged ("policy/unplug-rule"), "none" when plugged. */
  readonly reason: string;
}

/** Run the tests of `tenants` against `policy`; a case without `at` runs at `now` (ms since the epoch). */
export function runPolicyTests(policy: CompiledPolicy, tenants: Iterable<PolicyTenantInput>, now: number): PolicyTestResult[] {
  const { model } = policy;
  const results: PolicyTestResult[] = [];
  for (const input of tenants) {
    for (const t of parseTests(model, input)) {
      const src = model.vms[t.src].identity;
      const dst = model.vms[t.dst].identity;
      const d = policy.decide(src, dst, t.at ?? now);
      let drop = d.drop;
      let rule = d.rule;
      if (drop === Drop.None && d.flow === FlowMode.RepliesOnly) drop = Drop.PolicyInitiateOnly;
      if (drop === Drop.None && t.proto !== undefined && d.filter !== null) {
        const ported = t.proto === PROTO_TCP || t.proto === PROTO_UDP;
        const sport = ported ? 0 : -1;
        const dport = ported ? t.port! : t.proto === PROTO_ICMPV6 ? ICMP6_ECHO_REQUEST : -1;
        drop = d.filter.check(t.proto, sport, dport);
        if (d.filter instanceof CompiledFilter) rule = d.filter.decidingRule(t.proto, sport, dport) || rule;
      }
      const got = drop === Drop.None ? 'plug' : 'unplug';
      results.push({
        tenant: input.name,
        index: t.index,
        case: t.text,
        expect: t.expect,
        passed: got === t.expect,
        got,
        rule,
        reason: dropName(drop),
      });
    }
  }
  return results;
}
