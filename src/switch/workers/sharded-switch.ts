// A host's switch on several data-path threads (`switch.workers: N`). Each worker thread
// (worker-thread.ts) runs the VMs it owns end to end: their TAPs, its shard of the underlay,
// its own key-exchange socket, their cables, SAs and misses (shard.ts says who owns what).
// This, the main thread, opens the host's key-exchange sockets, one per worker, in one
// group whose kernel program gives each message to its worker (src/native/kx_sockets.c,
// kx-route.ts); it keeps what is one per host: the control socket, whose commands it shares
// out and whose answers it joins, and the metrics endpoint; and it hands a NOTIFY that
// worker 0 got to the others.
//
//   main thread: control socket, /metrics; NOTIFY from worker 0 -> every other worker
//        |
//        v
//   worker k (k < N): VMs whose identity's last word mod N = k; raw sockets that take ESP
//   with SPI mod N = k and IPv6-in-IPv4 to those VMs; UDP :keyExchangePort socket k, which
//   gets the INITs to its VMs and the ANSWERs to its requests; cables, SAs, upcalls,
//   verifier, replica

import { Worker } from 'node:worker_threads';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { NviError } from '../../base/errors.js';
import type { Logger } from '../../base/log.js';
import { formatIpv4, parseIpv6Address } from '../../base/address.js';
import { loadNative } from '../../native/addon.js';
import { UNDERLAY_BUFFER_BYTES } from '../../io/raw-underlay.js';
import type { CloudConfig } from '../../config/config.js';
import type { CableInfo } from '../cable-info.js';
import { ControlServer, type ControlHandler, type ExplainRequest, type VmRequest } from '../control.js';
import { EpochFile } from '../epoch-file.js';
import type { HandoverState, Restored } from '../handover-state.js';
import { handoverRefusal, Successor, sumRestored, type HandoverResult, type Predecessor, type ThreadHandover } from '../handover.js';
import type { Explanation } from '../explain.js';
import { checkHostKeys } from '../host-keys.js';
import { MetricsServer } from '../metrics-server.js';
import { SwitchMetrics, type StatsView } from '../metrics.js';
import { rememberDetached } from '../detached-list.js';
import { epochPath } from '../paths.js';
import type { Verdict, VerdictFilter } from '../verdicts.js';
import { mergeStats } from './merge-stats.js';
import type { FromWorker, ToWorker, WorkerMethod, WorkerStart } from './messages.js';
import { ownerOf } from './shard.js';

export interface ShardedOptions {
  readonly log: Logger;
  readonly control: string;
  readonly cipher?: string;
  readonly vmNetnsPrefix?: string;
  readonly exportSa?: string;
  /** How long a worker may take to start (ms). */
  readonly startMs?: number;
  /** This process takes over from a running switch of as many threads (`nvi-switch restart`, handover.ts). */
  readonly takeover?: Predecessor;
}

/** A step of a takeover that a worker reports: its message, or the worker's failure first. */
class Step<T> {
  resolve: (v: T) => void = () => {};
  reject: (e: Error) => void = () => {};
  readonly done = new Promise<T>((resolve, reject) => {
    this.resolve = resolve;
    this.reject = reject;
  });

  constructor() {
    this.done.catch(() => {}); // a switch that takes nothing over never waits on it
  }
}

/** A worker thread and the calls it has not answered yet. */
interface Thread {
  readonly worker: Worker;
  readonly index: number;
  readonly calls: Map<number, { resolve(v: unknown): void; reject(e: Error): void }>;
  running: boolean;
  /** A takeover: the worker adopted its handed fds; then, it took its state over. */
  readonly adopted: Step<void>;
  readonly tookOver: Step<Restored>;
}

export class ShardedSwitch implements ControlHandler {
  /** NOTIFYs worker 0 got and handed to the others, and those a worker was not running for. */
  readonly notifies = { shared: 0, lost: 0 };
  private readonly threads: Thread[] = [];
  private readonly watchers = new Map<number, { send(v: Verdict): boolean; lost: number[] }>();
  private nextId = 1;
  private control: ControlServer | undefined;
  private metrics: MetricsServer | undefined;
  private closed = false;
  private handingOver = false;
  private finish: (code: number) => void = () => {};
  /** Settles with 1 when a worker thread ended by itself (the host's switch then stops). */
  readonly finished = new Promise<number>((resolve) => {
    this.finish = resolve;
  });

  private constructor(readonly config: CloudConfig, readonly name: string, private readonly opts: ShardedOptions) {}

  static async start(config: CloudConfig, name: string, opts: ShardedOptions): Promise<ShardedSwitch> {
    checkHostKeys(config, name);
    const s = new ShardedSwitch(config, name, opts);
    try {
      await s.open();
    } catch (e) {
      opts.takeover?.failed((e as Error).message);
      await s.stop();
      throw e;
    }
    return s;
  }

  private async open(): Promise<void> {
    const { config: cfg, name, opts } = this;
    const count = cfg.switch.workers;
    const takeover = opts.takeover;
    new EpochFile(epochPath(cfg, name)).load(); // compacted once, before the workers read and append to it
    const address = cfg.hosts.get(name)!.address;
    const kxFds = takeover ? undefined : kxSockets(address, cfg.underlay.keyExchangePort, count);
    const espUdpFds = takeover || cfg.underlay.espUdpPort === 0 ? undefined : espUdpSockets(address, cfg.underlay.espUdpPort, count);
    const started = [];
    for (let index = 0; index < count; index++) {
      const data: WorkerStart = {
        configFile: cfg.file, host: name, shard: { count, index }, cipher: opts.cipher, vmNetnsPrefix: opts.vmNetnsPrefix, exportSa: opts.exportSa,
        kxFd: kxFds?.[index], espUdpFd: espUdpFds?.[index], takeover: takeover?.manifest.threads[index],
      };
      const worker = new Worker(new URL('./worker-thread.js', import.meta.url), { workerData: data });
      const t: Thread = { worker, index, calls: new Map(), running: false, adopted: new Step(), tookOver: new Step() };
      this.threads.push(t);
      started.push(this.started(t));
    }
    const restored = takeover && (await this.takeOver(takeover));
    const failed = (await Promise.all(started)).find((e) => e !== undefined);
    if (failed) throw failed;
    mkdirSync(dirname(opts.control), { recursive: true });
    this.control = await ControlServer.listen(opts.control, this);
    const at = cfg.switch.metrics;
    if (at) {
      const view = async (): Promise<StatsView> => (await this.stats()) as unknown as StatsView;
      this.metrics = await MetricsServer.open(new SwitchMetrics(view, await view()), at, opts.log);
    }
    if (takeover && restored) {
      takeover.forwarding(restored);
      opts.log.info('switch-workers-took-over', { host: name, workers: count, egress: restored.egress, egressSas: restored.egressSas, inbound: restored.inbound, refused: restored.refused.length, control: opts.control });
    } else opts.log.info('switch-workers-started', { host: name, workers: count, control: opts.control });
  }

  /**
   * The new process's half of a handover: each worker adopts the fds thread k of the old switch
   * handed over and verifies its peers; then the old switch stops and sends the state, one per
   * thread; each worker takes its own over and reads from then on.
   */
  private async takeOver(from: Predecessor): Promise<Restored> {
    await Promise.all(this.threads.map((t) => t.adopted.done));
    const states = await from.ready();
    this.threads.forEach((t, k) => this.post(t, { kind: 'takeover-state', state: states[k] }));
    return sumRestored(await Promise.all(this.threads.map((t) => t.tookOver.done)));
  }

  /** Resolves when worker `t` is ready (undefined) or failed (its error); then follows what it says. */
  private started(t: Thread): Promise<NviError | undefined> {
    return new Promise((resolve) => {
      const ms = this.opts.startMs ?? 60_000;
      const timer = setTimeout(() => fail(new NviError('NVI_ERR_WORKER', `worker ${t.index} of host ${this.name} did not start within ${ms} ms`)), ms);
      const fail = (e: NviError): void => {
        clearTimeout(timer);
        t.adopted.reject(e);
        t.tookOver.reject(e);
        resolve(e);
      };
      t.worker.on('message', (m: FromWorker) => {
        if (m.kind === 'ready') {
          clearTimeout(timer);
          t.running = true;
          resolve(undefined);
        } else if (m.kind === 'failed') fail(new NviError(m.code ?? 'NVI_ERR_WORKER', `worker ${t.index}: ${m.error}`));
        else this.heard(t, m);
      });
      t.worker.on('error', (e) => {
        this.opts.log.error('worker-failed', { host: this.name, worker: t.index, error: e.message });
        fail(new NviError('NVI_ERR_WORKER', `worker ${t.index}: ${e.message}`));
      });
      t.worker.on('exit', (code) => {
        const was = t.running;
        t.running = false;
        fail(new NviError('NVI_ERR_WORKER', `worker ${t.index} exited (${code})`)); // settles nothing that already settled
        for (const c of t.calls.values()) c.reject(new NviError('NVI_ERR_WORKER', `worker ${t.index} exited`));
        t.calls.clear();
        if (!this.closed && was) {
          this.opts.log.error('worker-exited', { host: this.name, worker: t.index, code });
          void this.stop().finally(() => this.finish(1)); // its VMs would be cut off: the switch stops, to be restarted whole
        }
      });
    });
  }

  private heard(t: Thread, m: FromWorker): void {
    switch (m.kind) {
      case 'notify':
        for (const other of this.threads) {
          if (other === t) continue;
          if (!other.running) {
            this.notifies.lost++;
            continue;
          }
          this.notifies.shared++;
          this.post(other, m);
        }
        return;
      case 'reply': {
        const c = t.calls.get(m.id);
        t.calls.delete(m.id);
        if (m.error === undefined) c?.resolve(m.result);
        else c?.reject(new NviError('NVI_ERR_CONTROL', m.error));
        return;
      }
      case 'takeover-ready':
        t.adopted.resolve();
        return;
      case 'took-over':
        t.tookOver.resolve(m.restored);
        return;
      case 'remember': // before the worker's reply to the attach or detach: in the list when the operator hears back
        rememberDetached(this.config, this.name, m.vm, m.detached);
        return;
      case 'verdict': {
        const w = this.watchers.get(m.id);
        if (!w) return;
        w.lost[t.index] = m.lost;
        if (!w.send(m.verdict as Verdict)) w.lost[t.index]++;
      }
    }
  }

  private post(t: Thread, m: ToWorker): void {
    t.worker.postMessage(m);
  }

  private call(t: Thread, method: WorkerMethod, arg?: unknown): Promise<unknown> {
    if (!t.running) return Promise.reject(new NviError('NVI_ERR_WORKER', `worker ${t.index} is not running`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      t.calls.set(id, { resolve, reject });
      this.post(t, { kind: 'call', id, method, arg });
    });
  }

  private callAll(method: WorkerMethod, arg?: unknown): Promise<unknown[]> {
    return Promise.all(this.threads.map((t) => this.call(t, method, arg)));
  }

  /** The worker that owns the VM with identity text `id` (worker 0, which refuses it as one thread would, when it is no identity). */
  private ownerOfText(id: string): Thread {
    try {
      return this.threads[ownerOf(parseIpv6Address(id), this.threads.length)];
    } catch {
      return this.threads[0];
    }
  }

  async stats(): Promise<Record<string, unknown>> {
    const all = await this.callAll('stats');
    const merged = mergeStats(all) as Record<string, unknown>;
    const pipes = all as { egress: { in: number }; ingress: { in: number }; cpus: number[] }[];
    return {
      ...merged,
      memory: { ...(merged.memory as object), rss: process.memoryUsage().rss }, // heaps add up; the resident set is the process's
      cpus: undefined, // a worker's: in `workers`
      workers: pipes.map((s, index) => ({ index, egressIn: s.egress.in, ingressIn: s.ingress.in, cpus: s.cpus })),
      notifiesShared: { ...this.notifies },
    };
  }

  async cables(): Promise<CableInfo[]> {
    return (await this.callAll('cables')).flat() as CableInfo[];
  }

  async flush(opts: { reverify?: boolean } = {}): Promise<{ flushed: number; bindings: number }> {
    const all = (await this.callAll('flush', opts)) as { flushed: number; bindings: number }[];
    return { flushed: sum(all.map((r) => r.flushed)), bindings: sum(all.map((r) => r.bindings)) };
  }

  explain(req: ExplainRequest): Promise<Explanation> {
    const local = req.side === 'receiver' ? req.dst : req.src;
    return this.call(this.ownerOfText(local), 'explain', req) as Promise<Explanation>;
  }

  vm(req: VmRequest): Promise<unknown> {
    const vm = this.config.vms.get(req.vm);
    return this.call(vm ? this.threads[ownerOf(vm.identity, this.threads.length)] : this.threads[0], 'vm', req);
  }

  async lastVerdicts(f: VerdictFilter): Promise<Verdict[]> {
    const all = (await this.callAll('lastVerdicts', f)).flat() as Verdict[];
    return all.sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : 0));
  }

  watchVerdicts(f: VerdictFilter, send: (v: Verdict) => boolean): { stop(): void; lost(): number } {
    const id = this.nextId++;
    const w = { send, lost: this.threads.map(() => 0) };
    this.watchers.set(id, w);
    for (const t of this.threads) this.post(t, { kind: 'watch', id, filter: f });
    return {
      stop: () => {
        this.watchers.delete(id);
        for (const t of this.threads) if (t.running) this.post(t, { kind: 'unwatch', id });
      },
      lost: () => sum(w.lost),
    };
  }

  /**
   * The old process's half of a handover (`nvi-switch restart`), as LiveSwitch.handover does it
   * for one thread: each worker says what it hands over, the successor starts with all of it;
   * once it is ready every worker stops reading, drains and saves its state, and the successor
   * takes the states over, thread by thread. Then this process exits, removing nothing.
   */
  async handover(): Promise<HandoverResult> {
    if (this.handingOver) throw new NviError('NVI_ERR_HANDOVER', 'a handover is already under way');
    const refusal = handoverRefusal(process.env);
    if (refusal) throw new NviError('NVI_ERR_HANDOVER', refusal);
    this.handingOver = true;
    const planned: Thread[] = [];
    let next: Successor;
    try {
      const threads: ThreadHandover[] = [];
      for (const t of this.threads) {
        threads.push((await this.call(t, 'handoverPlan')) as ThreadHandover);
        planned.push(t);
      }
      next = await Successor.start({ threads });
    } catch (e) {
      await Promise.all(planned.map((t) => this.call(t, 'handoverAbandoned').catch(() => {})));
      this.handingOver = false;
      throw e;
    }
    return next.complete(async () => {
      const saved = (await this.callAll('pauseAndSave')) as { state: HandoverState; drained: boolean }[];
      this.control?.stopListening();
      await this.metrics?.close();
      this.metrics = undefined;
      return { states: saved.map((s) => s.state), logged: { workers: this.threads.length, drained: saved.every((s) => s.drained) } };
    }, {
      host: this.name,
      log: this.opts.log,
      done: () => void this.closeHandedOver(),
      failed: () => void this.stop().finally(() => this.finish(1)),
    });
  }

  /** After a handover: every worker closes its copies of the fds, removing nothing; then this process ends. */
  private async closeHandedOver(): Promise<void> {
    this.closed = true;
    this.control?.dropConnections();
    await Promise.all(this.threads.map((t) => this.stopThread(t, true)));
    this.opts.log.info('switch-stopped', { host: this.name, workers: this.threads.length, handedOver: true });
    this.finish(0);
  }

  /** Stop every worker (each removes its TAPs and closes its sockets), and the sockets of this thread. */
  async stop(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.control?.close();
    await this.metrics?.close();
    await Promise.all(this.threads.map((t) => this.stopThread(t)));
    this.opts.log.info('switch-stopped', { host: this.name, workers: this.threads.length });
  }

  private stopThread(t: Thread, handedOver = false): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => void t.worker.terminate().then(() => resolve()), 10_000);
      t.worker.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
      t.worker.on('message', (m: FromWorker) => {
        if (m.kind === 'stopped') void t.worker.terminate();
      });
      this.post(t, { kind: 'stop', handedOver });
    });
  }
}

/** The host's key-exchange sockets, one per worker, in one steered group; a failure says which address and why. */
function kxSockets(address: number, port: number, count: number): number[] {
  try {
    return loadNative().kxSocketsOpen(address, port, count);
  } catch (e) {
    throw new NviError('NVI_ERR_UNDERLAY', `cannot bind the key exchange to ${formatIpv4(address)}:${port}: ${(e as Error).message}`);
  }
}

function espUdpSockets(address: number, port: number, count: number): number[] {
  try {
    return loadNative().udpEspGroupOpen(address, port, UNDERLAY_BUFFER_BYTES, count, null);
  } catch (e) {
    throw new NviError('NVI_ERR_UNDERLAY', `cannot bind ESP in UDP to ${formatIpv4(address)}:${port}: ${(e as Error).message}`);
  }
}

function sum(xs: readonly number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}

