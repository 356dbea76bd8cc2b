// nvi-switch policy test [-c nvi-switch.yaml] [--json]
//   Compile every tenant's policy from the config and run its tests: one line per case
//   (pass or FAIL, and the rule that decided); exit status 1 if any case fails.
// nvi-switch policy apply [-c nvi-switch.yaml]
//   The same tests first; only when all pass is the policy published to the mapping store,
//   as a new revision signed with the cloud CA's key (switches take no other), with the
//   certificates of the enrolled hosts. Running switches see it, recompile, and re-evaluate exactly the
//   cables it may change.

import { loadConfig } from '../config/config.js';
import { NviError } from '../base/errors.js';
import { compilePolicy } from '../policy/compile.js';
import { openStore } from '../store/open-store.js';
import { runPolicyTests } from '../policy/policy-tests.js';
import { prepareStore } from '../switch/cloud.js';
import { CONFIG_OPTION, parseOptions } from './args.js';

const USAGE = 'usage: nvi-switch policy test|apply [-c nvi-switch.yaml] [--json]';

export async function run(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== 'test' && sub !== 'apply') {
    throw new NviError('NVI_ERR_USAGE', sub === undefined ? USAGE : `unknown policy subcommand ${JSON.stringify(sub)}; ${USAGE}`);
  }
  const { values, positionals } = parseOptions(rest, { ...CONFIG_OPTION, json: { type: 'boolean' } });
  if (positionals.length > 0) throw new NviError('NVI_ERR_USAGE', `unexpected argument ${JSON.stringify(positionals[0])}; ${USAGE}`);
  const cfg = loadConfig(values.config);
  const tenants = [...cfg.tenants.values()];
  const policy = compilePolicy(tenants, 0);
  // The CLI is the one place that reads the clock: cases without `at` run now.
  const results = runPolicyTests(policy, tenants, Date.now());
  const failed = results.filter((r) => !r.passed).length;
  if (values.json) {
    process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
  } else {
    const w = Math.max(0, ...results.map((r) => `${r.tenant}[${r.index}]`.length));
    for (const r of results) {
      const verdict = r.passed ? `${r.got}` : `expected ${r.expect}, got ${r.got}`;
      const why = r.got === 'unplug' ? `${r.rule}, ${r.reason}` : r.rule;
      process.stdout.write(`${r.passed ? 'pass' : 'FAIL'}  ${`${r.tenant}[${r.index}]`.padEnd(w)}  ${r.case}: ${verdict} (${why})\n`);
    }
    process.stdout.write(`${results.length - failed} passed, ${failed} failed\n`);
  }
  if (failed > 0) {
    if (sub === 'apply') process.stderr.write('policy not applied: its tests fail\n');
    return 1;
  }
  if (sub === 'apply') {
    const store = await openStore(cfg);
    try {
      const before = (await store.policy())?.revision;
      const revision = await prepareStore(cfg, store, Date.now());
      process.stdout.write(revision === before ? `policy unchanged (revision ${revision})\n` : `policy applied as revision ${revision}, signed by the cloud CA\n`);
    } finally {
      await store.close();
    }
  }
  return 0;
}
