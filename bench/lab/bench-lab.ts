// The lab a bench runs in: a temporary directory with a copy of nvi-switch.yaml (prefix
// nvi-b-, the store inside the directory, pki.dir a copy of lab/pki that migrations and
// `vm create` may write to), and its removal at the end, on failure or on SIGINT/SIGTERM:
// the bench's child processes by PID, `lab down`, the directory.

import type { ChildProcess } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseDocument, type Document } from 'yaml';
import { loadConfig, type CloudConfig } from '../../src/config/config.js';
import { labDown, labUp } from '../../src/lab/lab.js';

export const PREFIX = 'nvi-b-';
export const REPO = fileURLToPath(new URL('../../../', import.meta.url));
export const BINARY = join(REPO, 'bin', 'nvi-switch.js');

export class BenchLab {
  readonly dir: string;
  readonly file: string;
  /** Processes the bench started: killed at the end. */
  readonly children: ChildProcess[] = [];
  private cfg: CloudConfig | undefined;
  private readonly before: (() => Promise<void>)[] = [];

  constructor(name: string) {
    this.dir = mkdtempSync(join(tmpdir(), `nvi-bench-${name}-`));
    this.file = join(this.dir, 'nvi-switch.yaml');
    cpSync(join(REPO, 'lab', 'pki'), join(this.dir, 'pki'), { recursive: true });
    for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => void this.cleanup().then(() => process.exit(130)));
  }

  /** Write the config (the shipped one, made the bench's, then `edit`) and load it. */
  config(edit: (doc: Document) => void = () => {}): CloudConfig {
    const doc = parseDocument(readFileSync(join(REPO, 'nvi-switch.yaml'), 'utf8'));
    doc.setIn(['pki', 'dir'], join(this.dir, 'pki'));
    doc.setIn(['lab', 'prefix'], PREFIX);
    doc.setIn(['store'], doc.createNode({ kind: 'embedded', path: join(this.dir, 'lab.db') }));
    edit(doc);
    writeFileSync(this.file, doc.toString());
    this.cfg = loadConfig(this.file);
    return this.cfg;
  }

  /** Build the lab; `nodeArgs` go to the switches' node (e.g. --cpu-prof). */
  async up(nodeArgs: readonly string[] = []): Promise<CloudConfig> {
    const c = this.cfg ?? this.config();
    await labUp(c, BINARY, () => {}, { nodeArgs });
    return c;
  }

  /** Take the lab down (a bench that builds it again, with another config). */
  async down(): Promise<void> {
    if (this.cfg) await labDown(this.cfg, () => {});
  }

  /** Run `f` at the end, before the lab goes (stop guests, say). */
  atEnd(f: () => Promise<void>): void {
    this.before.push(f);
  }

  async cleanup(): Promise<void> {
    for (const f of this.before.splice(0)) await f().catch(() => {});
    for (const c of this.children) c.kill('SIGKILL');
    if (this.cfg) await labDown(this.cfg, () => {});
    rmSync(this.dir, { recursive: true, force: true });
  }
}
