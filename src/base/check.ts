// Small readers for plain data parsed from YAML: each takes the value and its YAML path
// and either returns the typed value or throws a ConfigError naming the path.

import { ConfigError } from './errors.js';

export type Obj = Record<string, unknown>;

export function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function obj(v: unknown, path: string): Obj {
  if (!isObj(v)) throw new ConfigError(path, `expected a mapping, got ${describe(v)}`);
  return v;
}

export function list(v: unknown, path: string): unknown[] {
  if (!Array.isArray(v)) throw new ConfigError(path, `expected a list, got ${describe(v)}`);
  return v;
}

export function str(v: unknown, path: string): string {
  if (typeof v !== 'string' || v === '') throw new ConfigError(path, `expected a non-empty string, got ${describe(v)}`);
  return v;
}

export function num(v: unknown, path: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new ConfigError(path, `expected a number, got ${describe(v)}`);
  if (v < min || v > max) throw new ConfigError(path, `must be between ${min} and ${max}, got ${v}`);
  return v;
}

export function int(v: unknown, path: string, min: number, max: number): number {
  const n = num(v, path, min, max);
  if (!Number.isInteger(n)) throw new ConfigError(path, `expected an integer, got ${n}`);
  return n;
}

export function bool(v: unknown, path: string): boolean {
  if (typeof v !== 'boolean') throw new ConfigError(path, `expected true or false, got ${describe(v)}`);
  return v;
}

export function oneOf<T extends string>(v: unknown, path: string, choices: readonly T[]): T {
  if (typeof v !== 'string' || !(choices as readonly string[]).includes(v)) {
    throw new ConfigError(path, `expected one of ${choices.join(', ')}, got ${describe(v)}`);
  }
  return v as T;
}

/** Value of `key` in `o`, or `fallback` when absent. */
export function opt<T>(o: Obj, key: string, fallback: T, read: (v: unknown, path: string) => T, path: string): T {
  return o[key] === undefined ? fallback : read(o[key], `${path}.${key}`);
}

/** Throw for keys of `o` that are not in `known` (catches typos in config). */
export function onlyKeys(o: Obj, known: readonly string[], path: string): void {
  for (const k of Object.keys(o)) {
    if (!known.includes(k)) throw new ConfigError(`${path}.${k}`, `unknown key (expected one of ${known.join(', ')})`);
  }
}

/** Wrap a parser that throws plain errors (address, MAC parsers) so the error names the path. */
export function at<T>(path: string, parse: () => T): T {
  try {
    return parse();
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    throw new ConfigError(path, (e as Error).message);
  }
}

function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(v)}`;
}
