// Command-line options of the benches: node's parseArgs in strict mode (an unknown option,
// or one that needs a value and has none, is refused), no positionals. A bench is a script:
// a bad option or number ends it with one line on stderr and exit status 2, and every bench
// reads its options before it sets anything up, so nothing is left behind.

import { basename } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';

type Options = NonNullable<ParseArgsConfig['options']>;

/** The values of `options` in this process's arguments. */
export function benchOptions<const O extends Options>(options: O) {
  try {
    return parseArgs({ options, strict: true }).values;
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS_')) refuse((e as Error).message.replace(/\s*\n\s*/g, ' '));
    throw e;
  }
}

/** `text`, the value of --`name`, as an integer of at least `min`. */
export function integer(name: string, text: string, min = 1): number {
  const n = Number(text);
  if (text.trim() === '' || !Number.isSafeInteger(n) || n < min) {
    refuse(`--${name}: expected ${min === 1 ? 'a positive integer' : `an integer of at least ${min}`}, got ${JSON.stringify(text)}`);
  }
  return n;
}

export function refuse(message: string): never {
  process.stderr.write(`bench/${basename(process.argv[1] ?? 'bench', '.js')}: ${message}\n`);
  process.exit(2);
}
