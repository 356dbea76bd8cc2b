// The highest binding epoch seen per identity, kept on the host's disk (an append-only file
// of "identity epoch" lines, compacted when it is loaded), so that after a restart an old
// binding that is still within its validity and still correctly signed, replayed by a
// compromised store, is refused as it was before the restart (verify/old-epoch).

import { appendFileSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { EpochMemory } from '../trust/verifier.js';

export class EpochFile implements EpochMemory {
  /** Lines that could not be appended (disk full, no permission); each also lost its protection across a restart. */
  writeErrors = 0;
  lastError = '';

  /** compact: rewrite the file when it is loaded (false in a worker thread: the main thread did, and its siblings append to it). */
  constructor(readonly path: string, private readonly compact = true) {}

  load(): Map<string, number> {
    const out = new Map<string, number>();
    if (!existsSync(this.path)) return out;
    for (const line of readFileSync(this.path, 'utf8').split('\n')) {
      const [identity, text] = line.split(' ');
      const epoch = Number(text);
      if (!identity || !Number.isSafeInteger(epoch) || epoch < 1) continue; // a torn last line
      if (epoch > (out.get(identity) ?? 0)) out.set(identity, epoch);
    }
    if (!this.compact) return out;
    const tmp = `${this.path}.tmp`;
    writeFileSync(tmp, [...out].map(([id, e]) => `${id} ${e}\n`).join(''), { mode: 0o600 });
    renameSync(tmp, this.path);
    return out;
  }

  save(identity: string, epoch: number): void {
    try {
      mkdirSync(dirname(this.path), { recursive: true });
      appendFileSync(this.path, `${identity} ${epoch}\n`, { mode: 0o600 });
    } catch (e) {
      this.writeErrors++;
      this.lastError = (e as Error).message;
    }
  }
}
