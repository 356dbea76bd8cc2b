// A QEMU Machine Protocol client for one command: connect to the monitor's unix socket, the
// capabilities handshake, the command, its answer (JSON lines; events in between are skipped).

import { connect, type Socket } from 'node:net';
import { NviError } from '../base/errors.js';

/** Run `execute` on the QMP socket at `path`; its `return`, or an error naming QEMU's. */
export async function qmpCommand(path: string, execute: string, args?: Record<string, unknown>, ms = 10_000): Promise<unknown> {
  const s = await new Promise<Socket>((res, rej) => {
    const c = connect(path, () => res(c));
    c.once('error', (e) => rej(new NviError('NVI_ERR_QMP', `QMP ${path}: ${e.message}`)));
  });
  try {
    const answers: Record<string, unknown>[] = [];
    let buf = '';
    let wake: (() => void) | undefined;
    s.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        const msg = line ? (JSON.parse(line) as Record<string, unknown>) : undefined;
        if (msg && ('return' in msg || 'error' in msg || 'QMP' in msg)) answers.push(msg);
      }
      wake?.();
    });
    s.on('close', () => wake?.());
    const end = Date.now() + ms;
    const next = async (): Promise<Record<string, unknown>> => {
      for (;;) {
        const a = answers.shift();
        if (a) return a;
        if (s.destroyed) throw new NviError('NVI_ERR_QMP', `QMP ${path}: QEMU closed the monitor during ${execute}`);
        const left = end - Date.now();
        if (left <= 0) throw new NviError('NVI_ERR_QMP', `QMP ${path}: ${execute} got no answer within ${ms} ms`);
        await new Promise<void>((r) => {
          const t = setTimeout(r, left);
          wake = () => {
            clearTimeout(t);
            r();
          };
        });
      }
    };
    await next(); // the greeting
    s.write(`${JSON.stringify({ execute: 'qmp_capabilities' })}\n`);
    await next();
    s.write(`${JSON.stringify(args ? { execute, arguments: args } : { execute })}\n`);
    const r = await next();
    if ('error' in r) throw new NviError('NVI_ERR_QMP', `QMP ${execute}: ${(r.error as { desc?: string }).desc ?? JSON.stringify(r.error)}`);
    return r.return;
  } finally {
    s.destroy();
  }
}

/** Migrate the VM of the QMP socket at `path` to `uri` and wait until QEMU reports it completed. */
export async function qmpMigrate(path: string, uri: string, ms = 120_000): Promise<{ downtimeMs?: number; totalMs?: number }> {
  await qmpCommand(path, 'migrate', { uri });
  const end = Date.now() + ms;
  for (;;) {
    const q = (await qmpCommand(path, 'query-migrate')) as { status?: string; downtime?: number; 'total-time'?: number; 'error-desc'?: string };
    if (q.status === 'completed') return { downtimeMs: q.downtime, totalMs: q['total-time'] };
    if (q.status === 'failed' || q.status === 'cancelled') throw new NviError('NVI_ERR_QMP', `QEMU migration to ${uri} ${q.status}${q['error-desc'] ? `: ${q['error-desc']}` : ''}`);
    if (Date.now() > end) throw new NviError('NVI_ERR_QMP', `QEMU migration to ${uri} not completed within ${ms} ms (status ${q.status})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
