// Who may use the console: bearer tokens, one per tenant or for the operator, issued by
// `nvi-switch tenant token T` (or `--operator`). A token is shown once; the console keeps
// only its SHA-256 (<stateDir>/console/tokens.json, mode 0600), so the file does not let
// anyone in. Checking a token compares digests in constant time.

import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { CloudConfig } from '../config/config.js';
import { NviError } from '../base/errors.js';
import { stateDir } from '../switch/paths.js';

/** Whom a token speaks for: one tenant, or the operator (every tenant, the hosts). */
export type Principal = { readonly kind: 'tenant'; readonly tenant: string } | { readonly kind: 'operator' };

interface Entry {
  readonly principal: Principal;
  /** hex SHA-256 of the token */
  readonly sha256: string;
  readonly issued: string;
}

export function tokensPath(cfg: CloudConfig): string {
  return join(stateDir(cfg), 'console', 'tokens.json');
}

function digest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

function read(path: string): Entry[] {
  if (!existsSync(path)) return [];
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Entry[];
  } catch (e) {
    throw new NviError('NVI_ERR_CONSOLE', `console tokens ${path}: ${(e as Error).message}`);
  }
}

/** Issue a token for `principal` and remember its digest; returns the token (shown once). */
export function issueToken(cfg: CloudConfig, principal: Principal): string {
  if (principal.kind === 'tenant' && !cfg.tenants.has(principal.tenant)) {
    throw new NviError('NVI_ERR_USAGE', `no tenant ${principal.tenant} in ${cfg.file} (tenants: ${[...cfg.tenants.keys()].join(', ')})`);
  }
  const token = `nvi_${randomBytes(24).toString('base64url')}`;
  const path = tokensPath(cfg);
  const entries = read(path);
  entries.push({ principal, sha256: digest(token).toString('hex'), issued: new Date().toISOString() });
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileSync(path, `${JSON.stringify(entries, null, 2)}\n`, { mode: 0o600 });
  return token;
}

/** The tokens the console accepts: the file, read again when it changes (a token issued while the console runs works at once). */
export class TokenBook {
  private entries: readonly { principal: Principal; sha256: Buffer }[] = [];
  private version = '';

  private constructor(private readonly path: string) {}

  static load(cfg: CloudConfig): TokenBook {
    const book = new TokenBook(tokensPath(cfg));
    book.refresh();
    return book;
  }

  private refresh(): void {
    const st = statSync(this.path, { throwIfNoEntry: false });
    const version = st ? `${st.mtimeMs} ${st.size} ${st.ino}` : '';
    if (version === this.version) return;
    this.entries = read(this.path).map((e) => ({ principal: e.principal, sha256: Buffer.from(e.sha256, 'hex') }));
    this.version = version;
  }

  /** Who `token` speaks for, or undefined. */
  who(token: string): Principal | undefined {
    this.refresh();
    const d = digest(token);
    let found: Principal | undefined;
    for (const e of this.entries) if (e.sha256.length === d.length && timingSafeEqual(e.sha256, d)) found = e.principal;
    return found;
  }

  get size(): number {
    this.refresh();
    return this.entries.length;
  }
}
