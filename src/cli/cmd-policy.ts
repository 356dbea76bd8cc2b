// nvi-switch policy test [-c nvi-switch.yaml] [--json]
//   Compile every tenant's policy from the config and run its tests: one line per case
//   (pass or FAIL, and the rule that decided); exit status 1 if any case fails.

import { loadConfig } from '../config/config.js';
import { NviError } from '../config/errors.js';
import { compilePolicy } from '../policy/compile.js';
import { runPolicyTests } from '../policy/policy-tests.js';
import { DEFAULT_CONFIG, parseArgs } from './args.js';

const USAGE = 'usage: nvi-switch policy test [-c nvi-switch.yaml] [--json]';

export async function run(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== 'test') {
    throw new NviError('NVI_ERR_USAGE', sub === undefined ? USAGE : `unknown policy subcommand ${JSON.stringify(sub)}; ${USAGE}`);
  }
  const args = parseArgs(rest, { values: { config: 'c' }, flags: ['json'] });
  if (args.positional.length > 0) throw new NviError('NVI_ERR_USAGE', `unexpected argument ${JSON.stringify(args.positional[0])}; ${USAGE}`);
  const cfg = loadConfig(args.values.get('config') ?? DEFAULT_CONFIG);
  const tenants = [...cfg.tenants.values()];
  const policy = compilePolicy(tenants, 0);
  // The CLI is the one place that reads the clock: cases without `at` run now.
  const results = runPolicyTests(policy, tenants, Date.now());
  const failed = results.filter((r) => !r.passed).length;
  if (args.flags.has('json')) {
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
  return failed > 0 ? 1 : 0;
}
