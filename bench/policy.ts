// Policy compiler and decide() at scale: 10k and 100k rules over many tenants with groups,
// nested groups, ports, windows, diodes, initiates and cross-tenant pairs.
//   npx tsc -p . && node dist/bench/policy.js
// Prints compile time, decide() time (ns per decision, median of 5 runs), filter check
// time (cold: a different cable's filter each packet), affected() for a one-rule change
// (first call, which builds both policies' signatures, and again),
// and for contrast the naive evaluator that scans every rule.

import { performance } from 'node:perf_hooks';
import { compilePolicy, type PolicyTenantInput } from '../src/policy/compile.js';
import { naiveDirection } from '../src/policy/naive.js';
import { rng } from '../test/rng.js';

const RULES_PER_TENANT = 100;
const VMS_PER_TENANT = 60;
const GROUPS_PER_TENANT = 12;
const QUERIES = 20_000;
const RUNS = 5;
const NOW = Date.UTC(2024, 0, 1, 10);


function generate(rules: number, seed: number): PolicyTenantInput[] {
  const random = rng(seed);
  const int = (n: number): number => Math.floor(random() * n);
  const tenants = Math.ceil(rules / RULES_PER_TENANT);
  const tname = (t: number): string => `t${t}`;
  const out: PolicyTenantInput[] = [];
  for (let t = 0; t < tenants; t++) {
    const vms = Array.from({ length: VMS_PER_TENANT }, (_, i) => `vm${i}`);
    const groups: Record<string, string[]> = {};
    // Nine tiers of 4-12 VMs each, then three groups of tiers (nested).
    for (let g = 0; g < GROUPS_PER_TENANT - 3; g++) groups[`tier${g}`] = Array.from({ length: 4 + int(9) }, () => vms[int(vms.length)]);
    for (let g = 0; g < 3; g++) groups[`zone${g}`] = [`tier${3 * g}`, `tier${3 * g + 1}`, `tier${3 * g + 2}`];
    const groupNames = Object.keys(groups);
    const any = (): string => (random() < 0.7 ? groupNames[int(groupNames.length)] : vms[int(vms.length)]);
    const partner = tname((t + 1) % tenants);
    const previous = tname((t + tenants - 1) % tenants);
    const list: Record<string, unknown>[] = [];
    for (let i = 0; i < RULES_PER_TENANT; i++) {
      const r = random();
      if (r < 0.45) list.push({ from: any(), to: any(), action: 'plug', proto: 'tcp', ports: [[80, 443, 5432, 22][int(4)], '8000-8099'] });
      else if (r < 0.6) list.push({ from: any(), to: any(), action: 'plug' });
      else if (r < 0.7) list.push({ from: any(), to: any(), action: 'unplug', proto: 'tcp', ports: [23] });
      else if (r < 0.75) list.push({ from: vms[int(vms.length)], to: any(), action: 'diode', proto: 'udp' });
      else if (r < 0.85) list.push({ from: vms[int(vms.length)], to: any(), action: 'initiate', proto: 'tcp', ports: [443] });
      else if (r < 0.9) list.push({ from: any(), to: any(), action: 'plug', when: { days: ['mon', 'tue', 'wed', 'thu', 'fri'], from: '08:00', to: '18:00' } });
      // Mutual consent: this tenant's vm(i) with the partner's, and the other half for the previous tenant.
      else if (r < 0.95) list.push({ from: `vm${i % VMS_PER_TENANT}`, to: `${partner}:vm${i % VMS_PER_TENANT}`, action: 'plug', proto: 'tcp', ports: [443] });
      else list.push({ from: `${previous}:vm${i % VMS_PER_TENANT}`, to: `vm${i % VMS_PER_TENANT}`, action: 'plug', proto: 'tcp', ports: [443] });
    }
    out.push({
      name: tname(t),
      prefix: { text: `fd00:${(t + 1).toString(16)}::/64` },
      vms: vms.map((name, i) => ({ name, identityText: `fd00:${(t + 1).toString(16)}::${(i + 1).toString(16)}`, level: undefined })),
      policy: { groups, rules: list, tests: undefined },
      path: `tenants.${tname(t)}`,
    });
  }
  return out;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

interface Row {
  rules: number;
  tenants: number;
  vms: number;
  compileMs: number;
  decideNs: number;
  plugged: number;
  checkNs: number;
  affectedFirstMs: number;
  affectedMs: number;
  affected: number;
  naiveUs: number;
}

function bench(rules: number): Row {
  const tenants = generate(rules, rules);
  const compileTimes: number[] = [];
  let policy = compilePolicy(tenants, 1);
  for (let k = 0; k < RUNS; k++) {
    const t0 = performance.now();
    policy = compilePolicy(tenants, 1);
    compileTimes.push(performance.now() - t0);
  }
  const random = rng(42);
  const ids = policy.model.vms.map((v) => v.identity);
  const srcs: string[] = [];
  const dsts: string[] = [];
  for (let q = 0; q < QUERIES; q++) {
    // Mostly pairs inside a tenant; one in ten with the next tenant (cross-tenant rules).
    const t = Math.floor(random() * tenants.length);
    const u = random() < 0.9 ? t : (t + 1) % tenants.length;
    srcs.push(ids[t * VMS_PER_TENANT + Math.floor(random() * VMS_PER_TENANT)]);
    dsts.push(ids[u * VMS_PER_TENANT + Math.floor(random() * VMS_PER_TENANT)]);
  }
  const decideTimes: number[] = [];
  let plugged = 0;
  for (let k = 0; k < RUNS; k++) {
    plugged = 0;
    const t0 = performance.now();
    for (let q = 0; q < QUERIES; q++) if (policy.decide(srcs[q], dsts[q], NOW).drop === 0) plugged++;
    decideTimes.push(((performance.now() - t0) * 1e6) / QUERIES);
  }
  // The per-packet filter of the plugged directions that have one.
  const filters = srcs.map((s, q) => policy.decide(s, dsts[q], NOW).filter).filter((f) => f !== null);
  const checkTimes: number[] = [];
  const PACKETS = 2_000_000;
  let sink = 0;
  for (let k = 0; k < RUNS; k++) {
    const t0 = performance.now();
    for (let i = 0; i < PACKETS; i++) sink += filters[i % filters.length]!.check(6, 40000 + (i & 1023), (i & 1) === 0 ? 443 : 8050);
    checkTimes.push(((performance.now() - t0) * 1e6) / PACKETS);
  }
  if (sink < 0) console.log(sink);
  // A policy change: one rule of one tenant gets another port.
  const changed = tenants.map((t, k) =>
    k !== 0 ? t : { ...t, policy: { ...t.policy, rules: (t.policy.rules as Record<string, unknown>[]).map((r, i) => (i === 0 ? { ...r, proto: 'tcp', ports: [9999] } : r)) } },
  );
  const next = compilePolicy(changed, 2);
  // The first call builds each policy's signatures (once per policy); later calls reuse them.
  let t1 = performance.now();
  const affected = policy.affected(next).identities.size;
  const affectedFirstMs = performance.now() - t1;
  const affectedTimes: number[] = [];
  for (let k = 0; k < RUNS; k++) {
    t1 = performance.now();
    policy.affected(next);
    affectedTimes.push(performance.now() - t1);
  }
  const NAIVE = 20;
  const t0 = performance.now();
  for (let q = 0; q < NAIVE; q++) naiveDirection(policy.model, srcs[q], dsts[q], NOW);
  const naiveUs = ((performance.now() - t0) * 1e3) / NAIVE;
  return {
    rules: policy.model.rules.length,
    tenants: tenants.length,
    vms: ids.length,
    compileMs: median(compileTimes),
    decideNs: median(decideTimes),
    plugged: plugged / QUERIES,
    checkNs: median(checkTimes),
    affectedFirstMs,
    affectedMs: median(affectedTimes),
    affected,
    naiveUs,
  };
}

const rows = [10_000, 100_000].map(bench);
const header = ['rules', 'tenants', 'VMs', 'compile ms', 'decide ns', 'plugged', 'filter check ns', 'affected ms first/again (VMs)', 'naive scan us'];
const cells = rows.map((r) => [
  String(r.rules),
  String(r.tenants),
  String(r.vms),
  r.compileMs.toFixed(0),
  r.decideNs.toFixed(0),
  `${(r.plugged * 100).toFixed(0)}%`,
  r.checkNs.toFixed(1),
  `${r.affectedFirstMs.toFixed(0)}/${r.affectedMs.toFixed(1)} (${r.affected})`,
  r.naiveUs.toFixed(0),
]);
const widths = header.map((h, k) => Math.max(h.length, ...cells.map((c) => c[k].length)));
const line = (c: string[]): string => c.map((x, k) => x.padStart(widths[k])).join('  ');
console.log(`policy: ${QUERIES} decisions per run, median of ${RUNS} runs (compile: median of ${RUNS})`);
console.log(line(header));
for (const c of cells) console.log(line(c));
