// A small argument reader for the subcommands: --name value, --flag, positionals.
// Unknown options are errors, so that a typo never silently changes what runs.

import { NviError } from '../base/errors.js';

export interface OptionSpec {
  /** Options that take a value, with an optional one-letter alias: { config: 'c' }. */
  readonly values?: Readonly<Record<string, string | null>>;
  /** Options that are flags. */
  readonly flags?: readonly string[];
}

export interface Parsed {
  readonly values: Map<string, string>;
  readonly flags: Set<string>;
  readonly positional: string[];
}

export function parseArgs(argv: readonly string[], spec: OptionSpec): Parsed {
  const values = new Map<string, string>();
  const flags = new Set<string>();
  const positional: string[] = [];
  const valueNames = spec.values ?? {};
  const alias = new Map<string, string>();
  for (const [long, short] of Object.entries(valueNames)) if (short) alias.set(short, long);
  for (let k = 0; k < argv.length; k++) {
    const a = argv[k];
    if (a === '--') {
      positional.push(...argv.slice(k + 1));
      break;
    }
    if (!a.startsWith('-') || a === '-') {
      positional.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    const rawName = a.startsWith('--') ? a.slice(2, eq > 0 ? eq : undefined) : a.slice(1);
    const name = alias.get(rawName) ?? rawName;
    if (name in valueNames) {
      const v = eq > 0 ? a.slice(eq + 1) : argv[++k];
      if (v === undefined) throw new NviError('NVI_ERR_USAGE', `option --${name} needs a value`);
      values.set(name, v);
    } else if (spec.flags?.includes(name)) {
      flags.add(name);
    } else {
      throw new NviError('NVI_ERR_USAGE', `unknown option ${a}`);
    }
  }
  return { values, flags, positional };
}

/** Default config file: ./nvi-switch.yaml */
export const DEFAULT_CONFIG = 'nvi-switch.yaml';
