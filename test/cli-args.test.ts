// The subcommands' option adapter (src/cli/args.ts): node's strict parseArgs, its errors
// as NVI_ERR_USAGE. One test per rule the CLI relies on.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { CONFIG_OPTION, DEFAULT_CONFIG, parseOptions } from '../src/cli/args.js';
import { main } from '../src/cli/main.js';
import { NviError } from '../src/base/errors.js';

const OPTIONS = { ...CONFIG_OPTION, host: { type: 'string' }, json: { type: 'boolean' } } as const;

function usageError(argv: string[]): NviError {
  try {
    parseOptions(argv, OPTIONS);
  } catch (e) {
    assert.instance(e, NviError);
    assert.is((e as NviError).code, 'NVI_ERR_USAGE');
    return e as NviError;
  }
  assert.unreachable(`${argv.join(' ')} was accepted`);
  throw new Error('unreachable');
}

test('an unknown long option is refused with NVI_ERR_USAGE and named', () => {
  assert.match(usageError(['--confg', 'x.yaml']).message, /'--confg'/);
});

test('an unknown short option is refused with NVI_ERR_USAGE and named', () => {
  assert.match(usageError(['-x']).message, /'-x'/);
});

test('an option that takes a value is refused when it is the last argument', () => {
  assert.match(usageError(['web1', '-c']).message, /--config <value>' argument missing/);
  assert.match(usageError(['--host']).message, /--host <value>' argument missing/);
});

test('an option that takes a value does not swallow the next option as its value', () => {
  assert.match(usageError(['-c', '--json']).message, /ambiguous/);
});

test('a flag given a value is refused', () => {
  assert.match(usageError(['--json=yes']).message, /'--json' does not take an argument/);
});

test('a usage error is one line, so the CLI prints it with its code on that line', () => {
  assert.not.match(usageError(['--config', '--json']).message, /\n/);
});

test('-c FILE, --config FILE and --config=FILE all set the config', () => {
  assert.is(parseOptions(['-c', 'a.yaml'], OPTIONS).values.config, 'a.yaml');
  assert.is(parseOptions(['--config', 'b.yaml'], OPTIONS).values.config, 'b.yaml');
  assert.is(parseOptions(['--config=c.yaml'], OPTIONS).values.config, 'c.yaml');
});

test('--name=value keeps everything after the first = as the value', () => {
  assert.is(parseOptions(['--host=a=b'], OPTIONS).values.host, 'a=b');
});

test('the config is ./nvi-switch.yaml when no -c is given', () => {
  assert.is(parseOptions([], OPTIONS).values.config, DEFAULT_CONFIG);
  assert.is(DEFAULT_CONFIG, 'nvi-switch.yaml');
});

test('a string option not given is undefined, so a command can tell it was left out', () => {
  assert.is(parseOptions([], OPTIONS).values.host, undefined);
});

test('a flag is true when given and undefined when not', () => {
  assert.is(parseOptions(['--json'], OPTIONS).values.json, true);
  assert.is(parseOptions([], OPTIONS).values.json, undefined);
});

test('positionals keep their order around options', () => {
  const { values, positionals } = parseOptions(['web1', '--json', 'db1', '-c', 'x.yaml', 'tcp', '5432'], OPTIONS);
  assert.equal(positionals, ['web1', 'db1', 'tcp', '5432']);
  assert.is(values.config, 'x.yaml');
  assert.is(values.json, true);
});

test('after -- every argument is a positional, even one that looks like an option', () => {
  const { values, positionals } = parseOptions(['a', '--', '--json', '-c', 'x.yaml'], OPTIONS);
  assert.equal(positionals, ['a', '--json', '-c', 'x.yaml']);
  assert.is(values.json, undefined);
  assert.is(values.config, DEFAULT_CONFIG);
});

test('a broken option table is a programming error, not a usage error', () => {
  const broken = { port: { type: 'number' } } as unknown as typeof OPTIONS;
  try {
    parseOptions([], broken);
  } catch (e) {
    assert.not.instance(e, NviError);
    return;
  }
  assert.unreachable('a table with type "number" was accepted');
});

test('the CLI reports a mistyped option on stderr with exit status 2', async () => {
  const write = process.stderr.write;
  let err = '';
  process.stderr.write = ((s: string) => {
    err += s;
    return true;
  }) as typeof process.stderr.write;
  let code: number;
  try {
    code = await main(['policy', 'test', '--jsno']);
  } finally {
    process.stderr.write = write;
  }
  assert.is(code, 2);
  assert.match(err, /^nvi-switch policy: Unknown option '--jsno'.* \[NVI_ERR_USAGE\]\n$/);
});

test.run();
