// A data-path thread of a host that runs `switch.workers: N` (sharded-switch.ts starts it):
// a LiveSwitch over the VMs this worker owns (shard.ts), its shard of the underlay, and its own
// key-exchange socket (worker-kx.ts). It answers the main thread's share of each operator
// command.

import { parentPort, workerData } from 'node:worker_threads';
import { JsonLogger } from '../../base/log.js';
import { loadConfig } from '../../config/config.js';
import { chooseCipher } from '../../esp/choose-cipher.js';
import { LiveSwitch } from '../live.js';
import type { ExplainRequest, VmRequest } from '../control.js';
import type { VerdictFilter } from '../verdicts.js';
import type { HandoverState, Restored } from '../handover-state.js';
import type { ThreadTakeover } from '../handover.js';
import type { FromWorker, ToWorker, WorkerMethod, WorkerStart } from './messages.js';
import { UdpTransport } from '../transports.js';
import { WorkerKx } from './worker-kx.js';
import { workerConfig } from './share.js';

const port = parentPort!;
const start = workerData as WorkerStart;
const post = (m: FromWorker): void => port.postMessage(m);
const watches = new Map<number, { stop(): void; lost(): number }>();
let sw: LiveSwitch | undefined;
/** Its key exchange, on its own socket (made in main(), with the config's port). */
let kx: WorkerKx;

/** A takeover goes through the main thread: it talks to the old process for every worker. */
let stateArrived: (state: HandoverState) => void = () => {};
const takeover: ThreadTakeover = {
  handed: start.takeover!,
  ready: () => new Promise((resolve) => {
    stateArrived = resolve;
    post({ kind: 'takeover-ready' });
  }),
  forwarding: (restored: Restored): void => post({ kind: 'took-over', restored }),
  failed: (): void => {}, // the worker's start fails with the error, which reaches the main thread as 'failed'
};

port.on('message', (m: ToWorker) => {
  switch (m.kind) {
    case 'notify':
      kx.shared(m.msg, m.from);
      return;
    case 'call':
      void call(m.method, m.arg).then(
        (result) => post({ kind: 'reply', id: m.id, result }),
        (e: Error) => post({ kind: 'reply', id: m.id, error: e.message }),
      );
      return;
    case 'watch':
      watch(m.id, m.filter as VerdictFilter);
      return;
    case 'unwatch':
      watches.get(m.id)?.stop();
      watches.delete(m.id);
      return;
    case 'takeover-state':
      stateArrived(m.state);
      return;
    case 'stop':
      void ((m.handedOver ? sw?.closeHandedOver() : sw?.stop()) ?? Promise.resolve()).finally(() => {
        post({ kind: 'stopped' });
        port.close();
      });
  }
});

async function call(method: WorkerMethod, arg: unknown): Promise<unknown> {
  if (!sw) throw new Error(`worker ${start.shard.index} is not running`);
  switch (method) {
    case 'stats':
      return sw.stats();
    case 'cables':
      return sw.cables();
    case 'flush':
      return sw.flush(arg as { reverify?: boolean });
    case 'explain':
      return sw.explain(arg as ExplainRequest);
    case 'vm':
      return sw.vm(arg as VmRequest);
    case 'lastVerdicts':
      return sw.lastVerdicts(arg as VerdictFilter);
    case 'handoverPlan':
      return sw.handoverPlan();
    case 'handoverAbandoned':
      return sw.handoverAbandoned();
    case 'pauseAndSave':
      return sw.pauseAndSave();
  }
}

function watch(id: number, filter: VerdictFilter): void {
  if (!sw) return;
  const w = sw.watchVerdicts(filter, (verdict) => {
    post({ kind: 'verdict', id, verdict, lost: w.lost() });
    return true;
  });
  watches.set(id, w);
}

async function main(): Promise<void> {
  const config = workerConfig(loadConfig(start.configFile), start.shard.count);
  kx = new WorkerKx(UdpTransport.pending(config.underlay.keyExchangePort), (msg, from) => post({ kind: 'notify', msg: new Uint8Array(msg), from }));
  const log = new JsonLogger(undefined, undefined, undefined, { host: start.host, worker: start.shard.index });
  try {
    sw = await LiveSwitch.start(config, start.host, {
      cipher: chooseCipher(start.cipher),
      log,
      control: '',
      vmNetnsPrefix: start.vmNetnsPrefix,
      exportSa: start.exportSa,
      takeover: start.takeover && takeover,
      worker: { shard: start.shard, kx, kxFd: start.kxFd, espUdpFd: start.espUdpFd, remember: (vm, detached) => post({ kind: 'remember', vm, detached }) },
    });
  } catch (e) {
    post({ kind: 'failed', error: (e as Error).message, code: (e as { code?: string }).code });
    port.close();
    return;
  }
  post({ kind: 'ready' });
}

void main();
