// The policy document: what `policy apply` publishes to the mapping store and what every
// switch compiles when the store's policy revision changes. JSON text:
//   {"version": 1, "tenants": [{"name", "prefix", "vms": [{"name", "identity", "level"?}],
//     "groups"?, "rules"?, "tests"?}]}
// groups, rules and tests are the tenant's YAML sections as they are. A document is
// validated as strictly as nvi-switch.yaml, and its errors name the same paths
// (tenants.blue.rules[2].ports[0]).

import { parseTenantPrefix } from '../trust/identity.js';
import { formatIpv6, parseIpv6Address } from '../base/address.js';
import { at, int, list, obj, onlyKeys, str } from '../base/check.js';
import { ConfigError } from '../base/errors.js';
import { compilePolicy, type CompiledPolicy } from './compile.js';
import type { PolicyTenantInput } from './model.js';

export const POLICY_DOCUMENT_VERSION = 1;

const NAME = /^[a-z][a-z0-9-]{0,14}$/;

/** The document for `tenants` (TenantConfig from src/config, or PolicyTenantInput). */
export function policyDocument(tenants: Iterable<PolicyTenantInput>): string {
  const out = [...tenants].map((t) => ({
    name: t.name,
    prefix: t.prefix.text,
    vms: t.vms.map((v) => ({ name: v.name, identity: v.identityText, ...(v.level === undefined ? {} : { level: v.level }) })),
    ...(t.policy.groups == null ? {} : { groups: t.policy.groups }),
    ...(t.policy.rules == null ? {} : { rules: t.policy.rules }),
    ...(t.policy.tests == null ? {} : { tests: t.policy.tests }),
  }));
  return JSON.stringify({ version: POLICY_DOCUMENT_VERSION, tenants: out });
}

/** The tenants of a policy document, validated. */
export function readPolicyDocument(json: string): PolicyTenantInput[] {
  let doc: unknown;
  try {
    doc = JSON.parse(json);
  } catch (e) {
    throw new ConfigError('(policy document)', `not valid JSON: ${(e as Error).message}`);
  }
  const root = obj(doc, '(policy document)');
  onlyKeys(root, ['version', 'tenants'], '(policy document)');
  int(root.version, 'version', POLICY_DOCUMENT_VERSION, POLICY_DOCUMENT_VERSION);
  return list(root.tenants, 'tenants').map((traw, k) => {
    const t = obj(traw, `tenants[${k}]`);
    const tname = str(t.name, `tenants[${k}].name`);
    if (!NAME.test(tname)) throw new ConfigError(`tenants[${k}].name`, `names are 1-15 of a-z, 0-9, '-', starting with a letter; got ${JSON.stringify(tname)}`);
    const path = `tenants.${tname}`;
    onlyKeys(t, ['name', 'prefix', 'vms', 'groups', 'rules', 'tests'], path);
    const prefix = at(`${path}.prefix`, () => parseTenantPrefix(str(t.prefix, `${path}.prefix`)));
    const vms = list(t.vms ?? [], `${path}.vms`).map((vraw, i) => {
      const v = obj(vraw, `${path}.vms[${i}]`);
      const vname = str(v.name, `${path}.vms[${i}].name`);
      const vpath = `${path}.vms.${vname}`;
      if (!NAME.test(vname)) throw new ConfigError(vpath, `names are 1-15 of a-z, 0-9, '-', starting with a letter; got ${JSON.stringify(vname)}`);
      onlyKeys(v, ['name', 'identity', 'level'], vpath);
      const text = str(v.identity, `${vpath}.identity`);
      const identity = at(`${vpath}.identity`, () => parseIpv6Address(text));
      if (formatIpv6(identity) !== text) throw new ConfigError(`${vpath}.identity`, `not in canonical form (RFC 5952): ${formatIpv6(identity)}`);
      if (!identity.subarray(0, 8).equals(prefix.bytes)) throw new ConfigError(`${vpath}.identity`, `${text} is not inside the tenant prefix ${prefix.text}`);
      const level = v.level === undefined ? undefined : int(v.level, `${vpath}.level`, 0, 1000);
      return { name: vname, identityText: text, level };
    });
    return { name: tname, prefix, vms, policy: { groups: t.groups, rules: t.rules, tests: t.tests }, path };
  });
}

/** Compile a policy document (from the mapping store) at `revision`. */
export function compilePolicyDocument(json: string, revision: number): CompiledPolicy {
  return compilePolicy(readPolicyDocument(json), revision);
}
