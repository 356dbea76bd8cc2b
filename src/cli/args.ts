// The subcommands' options: node's parseArgs in strict mode, with positionals allowed.
// What this adapter adds, and all it adds: node's ERR_PARSE_ARGS_* errors become
// NviError('NVI_ERR_USAGE'), which main.ts reports on one line with exit status 2.
// Invariants, all node's strict mode: an unknown option is an error, so a typo never
// silently changes what runs; an option that takes a value and has none (`-c` last, or
// `-c --json`) is an error; `--name=value` and `-c value` both work; after `--` every
// argument is positional.

import { parseArgs, type ParseArgsConfig } from 'node:util';
import { NviError } from '../base/errors.js';

type Options = NonNullable<ParseArgsConfig['options']>;

/** Parse `argv` against `options` (node's shape: `{ config: { type: 'string', short: 'c' } }`). */
export function parseOptions<const O extends Options>(argv: readonly string[], options: O) {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals: true });
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS_')) {
      throw new NviError('NVI_ERR_USAGE', (e as Error).message.replace(/\s*\n\s*/g, ' '));
    }
    throw e;
  }
}

/** Default config file: ./nvi-switch.yaml */
export const DEFAULT_CONFIG = 'nvi-switch.yaml';

/** `-c FILE` / `--config FILE`, which every subcommand takes. */
export const CONFIG_OPTION = { config: { type: 'string', short: 'c', default: DEFAULT_CONFIG } } as const;
