// A tenant's policy as the console reads and changes it: the published document in the
// mapping store is the truth. A draft (the tenant's groups, rules and tests) is checked by
// compiling the whole cloud's policy with it in place of the tenant's current part and running
// every tenant's tests, so a change can never break another tenant's tests unseen. Publishing
// signs the document with the CA key as `policy apply` does, as the next revision, and only
// when the revision the tenant edited is still the current one.

import type { KeyObject } from 'node:crypto';
import { ConfigError, NviError } from '../base/errors.js';
import { Trace, type TraceStep } from '../base/trace.js';
import { compilePolicy } from '../policy/compile.js';
import { policyDocument, readPolicyDocument } from '../policy/document.js';
import type { PolicyTenantInput } from '../policy/model.js';
import { runPolicyTests, type PolicyTestResult } from '../policy/policy-tests.js';
import { signPolicy } from '../policy/signed-policy.js';
import type { MappingStore } from '../store/store.js';

/** The part of the policy a tenant writes: groups, rules, tests, and its VMs' security levels (absent: unchanged; null: none). */
export interface TenantPolicy {
  readonly groups: unknown;
  readonly rules: unknown;
  readonly tests: unknown;
  readonly levels?: Readonly<Record<string, number | null>>;
}

/** A field the draft got wrong: its path as the CLI names it (tenants.blue.rules[2].ports[0]) and the message. */
export interface FieldError {
  readonly path: string;
  readonly message: string;
}

export interface CheckResult {
  readonly errors: FieldError[];
  /** The tenant's own test results (empty when the draft does not compile). */
  readonly results: PolicyTestResult[];
  /** Other tenants' tests the draft would break. */
  readonly othersFailing: number;
  readonly passed: boolean;
}

export interface WhatIf {
  readonly src: string;
  readonly dst: string;
  readonly got: 'plug' | 'unplug';
  readonly rule: string;
  readonly reason: string;
  readonly steps: TraceStep[];
}

export class TenantPolicies {
  constructor(private readonly store: MappingStore, private readonly caKey: KeyObject) {}

  /** The published policy: its revision and tenants. */
  async published(): Promise<{ revision: number; tenants: PolicyTenantInput[] }> {
    const rec = await this.store.policy();
    if (!rec) throw new NviError('NVI_ERR_POLICY', 'the mapping store holds no policy yet: publish one with nvi-switch policy apply');
    return { revision: rec.revision, tenants: readPolicyDocument(rec.document) };
  }

  /** Tenant `name` as published. */
  async tenant(name: string): Promise<{ revision: number; tenant: PolicyTenantInput }> {
    const { revision, tenants } = await this.published();
    const tenant = tenants.find((t) => t.name === name);
    if (!tenant) throw new NviError('NVI_ERR_NOT_FOUND', `no tenant ${name} in the published policy`);
    return { revision, tenant };
  }

  /** The draft checked against the published policy of every other tenant. */
  async check(name: string, draft: TenantPolicy, now = Date.now()): Promise<CheckResult> {
    const { tenants } = await this.published();
    return checkDraft(tenants, name, draft, now);
  }

  /** The decision for src -> dst (VM names of the tenant) under the draft, step by step. */
  async whatIf(name: string, draft: TenantPolicy, src: string, dst: string, packet: { proto?: string; port?: number }, now = Date.now()): Promise<WhatIf> {
    const { tenants } = await this.published();
    const next = withDraft(tenants, name, draft);
    const me = next.find((t) => t.name === name)!;
    const a = me.vms.find((v) => v.name === src);
    const b = me.vms.find((v) => v.name === dst);
    if (!a || !b) throw new NviError('NVI_ERR_NOT_FOUND', `${!a ? src : dst} is not a VM of tenant ${name}`);
    const policy = compilePolicy(next, 0);
    const trace = new Trace();
    policy.decide(a.identityText, b.identityText, now, trace);
    const probe = { ...me, policy: { ...me.policy, tests: [{ src, dst, ...packet, expect: 'plug' }] } };
    const [r] = runPolicyTests(policy, [probe], now);
    return { src, dst, got: r.got, rule: r.rule, reason: r.reason, steps: trace.steps };
  }

  /**
   * Publish the draft as the next revision, signed by the CA, if `baseRevision` is still the
   * published one and every test passes. Returns the new revision, or why not.
   */
  async publish(name: string, draft: TenantPolicy, baseRevision: number, now = Date.now()): Promise<{ revision: number; unchanged: boolean } | { check: CheckResult } | { conflict: number }> {
    const { revision, tenants } = await this.published();
    if (revision !== baseRevision) return { conflict: revision };
    const check = checkDraft(tenants, name, draft, now);
    if (!check.passed) return { check };
    const document = policyDocument(withDraft(tenants, name, draft));
    if (document === policyDocument(tenants)) return { revision, unchanged: true };
    const next = revision + 1;
    await this.store.publishPolicy(signPolicy(next, document, this.caKey));
    return { revision: next, unchanged: false };
  }
}

/** The tenants with `name`'s groups, rules and tests replaced by the draft's. */
function withDraft(tenants: readonly PolicyTenantInput[], name: string, draft: TenantPolicy): PolicyTenantInput[] {
  const me = tenants.find((t) => t.name === name);
  if (!me) throw new NviError('NVI_ERR_NOT_FOUND', `no tenant ${name} in the published policy`);
  const levels = draft.levels ?? {};
  for (const [vm, level] of Object.entries(levels)) {
    const path = `${me.path}.vms.${vm}.level`;
    if (!me.vms.some((v) => v.name === vm)) throw new ConfigError(path, `${vm} is not a VM of tenant ${name}`);
    if (level !== null && !(Number.isInteger(level) && level >= 0 && level <= 1000)) throw new ConfigError(path, `expected an integer in 0..1000, got ${JSON.stringify(level)}`);
  }
  const vms = me.vms.map((v) => (v.name in levels ? { ...v, level: levels[v.name] ?? undefined } : v));
  return tenants.map((t) => (t.name === name ? { ...t, vms, policy: { groups: draft.groups, rules: draft.rules, tests: draft.tests } } : t));
}

function checkDraft(tenants: readonly PolicyTenantInput[], name: string, draft: TenantPolicy, now: number): CheckResult {
  try {
    const next = withDraft(tenants, name, draft);
    const policy = compilePolicy(next, 0);
    const all = runPolicyTests(policy, next, now);
    const results = all.filter((r) => r.tenant === name);
    const othersFailing = all.filter((r) => r.tenant !== name && !r.passed).length;
    return { errors: [], results, othersFailing, passed: othersFailing === 0 && results.every((r) => r.passed) };
  } catch (e) {
    if (e instanceof ConfigError) return { errors: [{ path: e.path, message: e.message }], results: [], othersFailing: 0, passed: false };
    throw e;
  }
}
