// Restart without dropping VM traffic (`nvi-switch restart`). The running switch starts its
// successor (the same command line, with the code on disk now: an upgrade is a restart after
// the install) and passes it the fds of its VM ports, its underlay sockets and its
// key-exchange socket, and a pipe for the rest:
//
//   new -> old  ready       store current, host built, fds adopted; nothing read yet
//   old         stops reading ports and underlay, lets misses and key exchanges in flight
//               finish, closes its control and metrics sockets and its copy of the UDP one
//   old -> new  state       SAs, cables, flows (handover-state.ts)
//   new         takes the state over, reads from now on, binds control and metrics
//   new -> old  forwarding  what it took over; the old process exits, removing nothing
//
// A switch of N data-path threads (switch.workers) hands over thread by thread: the fds and
// the state come as one list per thread, and thread k of the new process takes over what
// thread k of the old one had (its VMs, its shard of the underlay, its key-exchange socket,
// its SAs). So the new process must run as many threads.
//
// A TAP never closes: both processes hold its fd until the old one exits. Packets that arrive
// while neither reads wait in the kernel's queues (the TAP's, the sockets').

import { spawn, type ChildProcess } from 'node:child_process';
import { NviError } from '../base/errors.js';
import type { Logger } from '../base/log.js';
import type { HandoverState, Restored } from './handover-state.js';
import type { PortHandover } from './vm-ports.js';

/** The environment variable that tells a switch it takes over, and which fd is which. */
export const TAKEOVER_ENV = 'NVI_TAKEOVER';
/** The flag the successor is started with (its command line shows it took over). */
export const TAKEOVER_FLAG = '--takeover';

/** What one data-path thread hands over. */
export interface ThreadHandover {
  readonly ports: readonly PortHandover[];
  /** Its underlay sockets (RawUnderlay.fds: 2, or 3 with ESP in UDP). */
  readonly underlay: readonly number[];
  /** The key-exchange socket it reads (the host's one, or this worker's of the group). */
  readonly kx: number;
  /** Identities at the far ends of its cables now: the new process verifies them before it is ready, not while traffic waits. */
  readonly peers: readonly string[];
}

export interface TakeoverManifest {
  /** One per data-path thread, in the order of their shards. */
  readonly threads: readonly ThreadHandover[];
}

/** The manifest of a switch of the version before threads: one thread's fields at the top. */
type SingleManifest = ThreadHandover;

type Message =
  | { readonly type: 'ready' }
  /** `state`: from a switch of the version before threads (one thread). */
  | { readonly type: 'state'; readonly states?: readonly HandoverState[]; readonly state?: HandoverState }
  | { readonly type: 'forwarding'; readonly restored: Restored }
  | { readonly type: 'failed'; readonly error: string };

/**
 * A data-path thread's side of a takeover: what the old switch handed it, and its steps. A
 * switch of one thread talks to the old process itself (Predecessor.single); a worker thread
 * through its main thread (workers/).
 */
export interface ThreadTakeover {
  readonly handed: ThreadHandover;
  /** Ready: resolves with this thread's state once the old switch stopped reading. */
  ready(): Promise<HandoverState>;
  forwarding(restored: Restored): void;
  failed(error: string): void;
}

/** What `nvi-switch restart` reports. */
export interface HandoverResult extends Restored {
  /** The new process. */
  readonly pid: number;
  /** From the moment this process stopped reading to the new one's word that it forwards. */
  readonly pausedMs: number;
}

/** What several threads took over, as one. */
export function sumRestored(all: readonly Restored[]): Restored {
  return {
    egress: all.reduce((n, r) => n + r.egress, 0),
    egressSas: all.reduce((n, r) => n + r.egressSas, 0),
    inbound: all.reduce((n, r) => n + r.inbound, 0),
    refused: all.flatMap((r) => r.refused),
  };
}

/**
 * Why a handover cannot run in this environment, or undefined. Under systemd (a unit's
 * processes have INVOCATION_ID) the new process would be stopped with the old one's unit as
 * soon as the old one exits: there `systemctl restart` (a cold restart) is the way, until the
 * switch speaks the service manager's protocol (MAINPID / the fd store).
 */
export function handoverRefusal(env: NodeJS.ProcessEnv): string | undefined {
  if (env.INVOCATION_ID) return 'this switch runs as a systemd service, which would stop the new process with the old one: use systemctl restart (a cold restart)';
  return undefined;
}

/** The first fd number the successor gets the handed fds at (0-2: stdio, 3: the pipe). */
const FIRST_FD = 4;

/** The next message of `type` from `from`, or an error when it fails, goes away or takes longer than `ms`. */
function expect<T extends Message['type']>(from: NodeJS.EventEmitter, type: T, ms: number, what: string): Promise<Extract<Message, { type: T }>> {
  return new Promise((resolve, reject) => {
    const done = (): void => {
      clearTimeout(timer);
      from.off('message', onMessage);
      from.off('disconnect', onGone);
      from.off('exit', onGone);
    };
    const onMessage = (m: Message): void => {
      if (m.type === 'failed') {
        done();
        reject(new NviError('NVI_ERR_HANDOVER', `${what}: ${m.error}`));
      } else if (m.type === type) {
        done();
        resolve(m as Extract<Message, { type: T }>);
      }
    };
    const onGone = (): void => {
      done();
      reject(new NviError('NVI_ERR_HANDOVER', `${what}: the other process went away`));
    };
    const timer = setTimeout(() => {
      done();
      reject(new NviError('NVI_ERR_HANDOVER', `${what}: no answer within ${ms} ms`));
    }, ms);
    from.on('message', onMessage);
    from.once('disconnect', onGone);
    from.once('exit', onGone);
  });
}

/** The old process's side: the successor it started. */
export class Successor {
  private constructor(private readonly child: ChildProcess) {}

  /** Start the successor with the fds of `handed` (as numbered in this process) and wait until it is ready to take over. */
  static async start(handed: TakeoverManifest, readyWithinMs = 30_000): Promise<Successor> {
    const passed: number[] = [];
    const renumber = (fd: number): number => FIRST_FD + passed.push(fd) - 1;
    const manifest: TakeoverManifest = {
      threads: handed.threads.map((t) => ({
        ports: t.ports.map((p) => ({ ...p, fd: renumber(p.fd) })),
        underlay: t.underlay.map(renumber),
        kx: renumber(t.kx),
        peers: t.peers,
      })),
    };
    const args = [...process.execArgv, process.argv[1], ...process.argv.slice(2).filter((a) => a !== TAKEOVER_FLAG), TAKEOVER_FLAG];
    const child = spawn(process.execPath, args, {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc', ...passed],
      env: { ...process.env, [TAKEOVER_ENV]: JSON.stringify(manifest) },
      detached: true, // its own session: it outlives this process
    });
    const s = new Successor(child);
    try {
      await expect(child, 'ready', readyWithinMs, 'the new process did not get ready');
    } catch (e) {
      s.kill();
      throw e;
    }
    return s;
  }

  get pid(): number {
    return this.child.pid ?? 0;
  }

  /** Send the state, one per thread; resolves with what the successor took over once it forwards. */
  async handOver(states: readonly HandoverState[], withinMs = 10_000): Promise<Restored> {
    const answer = expect(this.child, 'forwarding', withinMs, 'the new process did not take over');
    this.child.send({ type: 'state', states } satisfies Message);
    const m = await answer;
    this.child.disconnect();
    this.child.unref();
    return m.restored;
  }

  /**
   * The old process's last steps, for one thread or N: `save` stops this switch reading and
   * gives its state, one per thread; the successor takes it over. Once it forwards, `done` runs
   * after the answer to `restart` is written (this process closes its copies of the fds and
   * ends). If anything fails, the successor is killed and `failed` runs (this switch stops: its
   * state went over, or part of it).
   */
  async complete(
    save: () => Promise<{ states: readonly HandoverState[]; logged: Record<string, unknown> }>,
    sw: { readonly host: string; readonly log: Logger; done(): void; failed(): void },
  ): Promise<HandoverResult> {
    const t0 = performance.now();
    try {
      const { states, logged } = await save();
      const restored = await this.handOver(states);
      const pausedMs = Math.round((performance.now() - t0) * 10) / 10;
      sw.log.info('switch-handed-over', {
        host: sw.host, to: this.pid, pausedMs, ...logged,
        egress: restored.egress, egressSas: restored.egressSas, inbound: restored.inbound, refused: restored.refused.length,
      });
      setTimeout(() => sw.done(), 50);
      return { pid: this.pid, pausedMs, ...restored };
    } catch (e) {
      this.kill();
      sw.log.error('handover-failed', { host: sw.host, error: (e as Error).message });
      setTimeout(() => sw.failed(), 50);
      throw e;
    }
  }

  kill(): void {
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
  }
}

/** The new process's side: the switch it takes over from. */
export class Predecessor {
  private constructor(readonly manifest: TakeoverManifest) {}

  /** The predecessor this process was started by, if it was started to take over (TAKEOVER_ENV and the pipe). */
  static fromEnv(): Predecessor | undefined {
    const text = process.env[TAKEOVER_ENV];
    if (text === undefined) return undefined;
    delete process.env[TAKEOVER_ENV];
    if (!process.send) throw new NviError('NVI_ERR_HANDOVER', `${TAKEOVER_FLAG}: this process has no pipe to the switch it takes over from (it is started by \`nvi-switch restart\`, not by hand)`);
    const m = JSON.parse(text) as TakeoverManifest | SingleManifest;
    return new Predecessor('threads' in m ? m : { threads: [{ ports: m.ports, underlay: m.underlay, kx: m.kx, peers: m.peers ?? [] }] });
  }

  /** Ready: the old switch stops reading and sends its state, one per thread. */
  async ready(withinMs = 10_000): Promise<readonly HandoverState[]> {
    const m = expect(process, 'state', withinMs, 'the old process sent no state');
    process.send!({ type: 'ready' } satisfies Message);
    const { states, state } = await m;
    const all = states ?? (state ? [state] : []);
    if (all.length !== this.manifest.threads.length) throw new NviError('NVI_ERR_HANDOVER', `the old process sent the state of ${all.length} threads for ${this.manifest.threads.length}`);
    return all;
  }

  /** This process as the one thread that takes over (a switch of one data-path thread). */
  single(): ThreadTakeover {
    if (this.manifest.threads.length !== 1) throw new NviError('NVI_ERR_HANDOVER', `the old switch has ${this.manifest.threads.length} data-path threads, this one 1`);
    return {
      handed: this.manifest.threads[0],
      ready: async () => (await this.ready())[0],
      forwarding: (r) => this.forwarding(r),
      failed: (e) => this.failed(e),
    };
  }

  forwarding(restored: Restored): void {
    process.send!({ type: 'forwarding', restored } satisfies Message);
    process.disconnect();
  }

  failed(error: string): void {
    if (process.connected) process.send!({ type: 'failed', error } satisfies Message);
  }
}
