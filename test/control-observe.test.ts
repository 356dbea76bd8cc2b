// The control socket's streaming request (observe --follow), on a real unix socket with a
// handler of our own: the follower gets the acknowledgement, then each verdict its filter
// takes, then the lost count; a bad filter is refused on the first line; closing the server
// ends the followers' connections (a switch's stop must not wait for them).

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ControlServer, controlRequest, controlStream, type ControlHandler } from '../src/switch/control.js';
import { matches, type Verdict, type VerdictFilter } from '../src/switch/verdicts.js';

const dir = mkdtempSync(join(tmpdir(), 'nvi-control-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

function verdict(n: number, reason: string): Verdict {
  return { time: new Date(n).toISOString(), host: 'h1', verdict: 'dropped', direction: 'egress', reason, stage: 'ip-guard', srcVm: 'web1', dstVm: 'web2' };
}

/** A handler whose verdicts the test pushes by hand. */
function handler(): { sw: ControlHandler; push(v: Verdict): void; lose(n: number): void; watchers(): number } {
  const watchers = new Set<{ f: VerdictFilter; send: (v: Verdict) => boolean }>();
  let lost = 0;
  const sw = {
    stats: () => ({}), cables: () => [], flush: () => ({ flushed: 0, bindings: 0 }),
    explain: () => Promise.reject(new Error('no')), vm: () => Promise.reject(new Error('no')),
    lastVerdicts: (f: VerdictFilter) => [verdict(1, 'spoof/source'), verdict(2, 'policy/cross-tenant')].filter((v) => matches(v, f)),
    watchVerdicts: (f: VerdictFilter, send: (v: Verdict) => boolean) => {
      const w = { f, send };
      watchers.add(w);
      return { stop: () => watchers.delete(w), lost: () => lost };
    },
  } as unknown as ControlHandler;
  return {
    sw,
    push: (v) => {
      for (const w of watchers) if (matches(v, w.f)) w.send(v);
    },
    lose: (n) => (lost += n),
    watchers: () => watchers.size,
  };
}

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  for (const end = Date.now() + ms; !cond(); await new Promise((r) => setTimeout(r, 10))) if (Date.now() > end) throw new Error('timed out');
}

test('observe without follow answers the kept verdicts its filter takes', async () => {
  const h = handler();
  const path = join(dir, 'a.sock');
  const server = await ControlServer.listen(path, h.sw);
  const got = (await controlRequest(path, { cmd: 'observe', reason: 'policy/' })) as Verdict[];
  assert.equal(got.map((v) => v.reason), ['policy/cross-tenant']);
  await server.close();
});

test('a follower gets each verdict its filter takes, then the lost count; closing the server ends its stream', async () => {
  const h = handler();
  const path = join(dir, 'b.sock');
  const server = await ControlServer.listen(path, h.sw);
  const lines: Record<string, unknown>[] = [];
  const stream = controlStream(path, { cmd: 'observe', follow: true, verdict: 'dropped', reason: 'spoof/source' }, (m) => lines.push(m));
  await until(() => h.watchers() === 1);
  h.push(verdict(3, 'spoof/source'));
  h.push(verdict(4, 'policy/cross-tenant'));
  h.push(verdict(5, 'spoof/source'));
  h.lose(7);
  await until(() => lines.some((l) => 'lost' in l), 3000);
  assert.equal(lines[0], { ok: true, result: { following: { verdict: 'dropped', reason: 'spoof/source' } } });
  assert.equal(lines.filter((l) => 'event' in l).map((l) => (l.event as Verdict).time), [new Date(3).toISOString(), new Date(5).toISOString()]);
  assert.equal(lines.find((l) => 'lost' in l), { lost: 7 });
  const closed = server.close();
  const within = (p: Promise<void>, what: string): Promise<void> => Promise.race([p, new Promise<void>((_, rej) => setTimeout(() => rej(new Error(`${what} within 3 s`)), 3000))]);
  await within(stream, 'the server ends the follower\'s connection');
  await within(closed, 'the server closes with a follower connected');
  await until(() => h.watchers() === 0); // the watcher stops with its connection
});

test('a bad filter is refused on the first line, by name', async () => {
  const h = handler();
  const path = join(dir, 'c.sock');
  const server = await ControlServer.listen(path, h.sw);
  try {
    await controlStream(path, { cmd: 'observe', follow: true, verdict: 'droped' }, () => {});
    assert.unreachable('the stream should have been refused');
  } catch (e) {
    assert.match((e as Error).message, /verdict is one of dropped, plugged, unplugged, got "droped"/);
  }
  assert.is(h.watchers(), 0);
  await server.close();
});

test.run();
