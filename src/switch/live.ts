// One host's switch running for real: a TAP per VM, raw IPv4 sockets on the underlay,
// UDP for the key exchange, a replica of the mapping store (kept current by its watch; misses
// are answered from it, and binding and policy changes are pushed from it), a control
// socket for the operator commands. Everything is driven by readiness events: a readable TAP or
// socket is drained a batch at a time and the batch runs through the pipeline before
// the event loop turns again.

import { appendFileSync, mkdirSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { dirname } from 'node:path';
import { vmsOnHost, type CloudConfig } from '../config/config.js';
import { Batch } from '../dataplane/batch.js';
import { Drop, dropName } from '../base/drops.js';
import { NviError } from '../base/errors.js';
import type { DhcpServer } from '../dataplane/egress/dhcp-server.js';
import type { NdResponder } from '../dataplane/egress/nd-responder.js';
import { formatIpv4 } from '../base/address.js';
import type { EspCipher } from '../esp/esp-cipher.js';
import type { SaLimits } from '../esp/sa.js';
import { wiresharkSaRecord } from '../esp/wireshark-sa.js';
import { ReplayWindow } from '../esp/replay-window.js';
import { pinDataPath, threadCpus } from './cpu-pin.js';
import { markPacketThread } from './thread-policy.js';
import { RawUnderlay } from '../io/raw-underlay.js';
import { loadNative } from '../native/addon.js';
import type { VmLink } from '../io/vm-link.js';
import type { Logger } from '../base/log.js';
import { compilePolicyDocument } from '../policy/document.js';
import { policyRefusal, type PolicyRefusal } from '../policy/signed-policy.js';
import { StoreReplica } from '../store/replica.js';
import type { PolicyRecord, StoreChange } from '../store/store.js';
import type { BindingVerifier } from '../trust/verifier.js';
import { VerifyAhead } from './verify-ahead.js';
import type { BindingRecord } from '../trust/records.js';
import { hostPrivateKey, newVerifier, openCloud, publishBinding, type Cloud } from './cloud.js';
import { EpochFile } from './epoch-file.js';
import { checkHostKeys } from './host-keys.js';
import { epochPath } from './paths.js';
import { owns, type Shard } from './workers/shard.js';
import type { WorkerKx } from './workers/worker-kx.js';
import { verdictLimits } from './workers/share.js';
import { cableInfo, type CableInfo } from './cable-info.js';
import { ControlServer, type ControlHandler, type ExplainRequest, type VmRequest } from './control.js';
import { explainReceiver, explainSender, type Explanation } from './explain.js';
import { Host, SWEEP_INTERVAL_MS } from './host.js';
import { UdpTransport } from './transports.js';
import { MetricsServer } from './metrics-server.js';
import { SwitchMetrics } from './metrics.js';
import { VerdictStream, type Verdict, type VerdictFilter } from './verdicts.js';
import { VmPorts } from './vm-ports.js';
import { detachedVms } from './detached-list.js';
import { wakeTimes } from './wake-times.js';
import { restoreHandover, saveHandover, type HandoverState } from './handover-state.js';
import { handoverRefusal, Successor, type HandoverResult, type ThreadHandover, type ThreadTakeover } from './handover.js';

export interface LiveOptions {
  readonly cipher: EspCipher;
  readonly log: Logger;
  /** Path of the control socket (unused in a worker thread). */
  readonly control: string;
  /** Create each VM's TAP inside network namespace `${prefix}${vm}` (the lab); else in ours. */
  readonly vmNetnsPrefix?: string;
  readonly saLimits?: Partial<SaLimits>;
  /** Debug only: append the keys of every SA this host accepts to this file, in Wireshark's esp_sa format. */
  readonly exportSa?: string;
  /** This process takes over from a running switch (`nvi-switch restart`, handover.ts). */
  readonly takeover?: ThreadTakeover;
  /**
   * This switch is one data-path thread of its host (workers/): it runs the VMs it owns, reads
   * its shard of the underlay, and exchanges keys on its own socket (`kx`). The control socket
   * and the metrics are the main thread's.
   */
  readonly worker?: {
    readonly shard: Shard;
    /** Its key exchange: its own socket of the host's group (src/native/kx_sockets.c). */
    readonly kx: WorkerKx;
    /** That socket, for a switch that starts (a takeover adopts the one handed over). */
    readonly kxFd?: number;
    /** Its socket of the host's ESP-in-UDP group, for a switch that starts (underlay.espUdpPort set). */
    readonly espUdpFd?: number;
    readonly remember: (vm: string, detached: boolean) => void;
  };
}

export class LiveSwitch implements ControlHandler {
  private readonly egressBatch = new Batch();
  private readonly ingressBatch = new Batch();
  private ports: VmPorts | undefined;
  private underlay: RawUnderlay | undefined;
  private transport: UdpTransport | undefined;
  private control: ControlServer | undefined;
  private metrics: MetricsServer | undefined;
  private verdicts: VerdictStream | undefined;
  private replica: StoreReplica | undefined;
  private epochs: EpochFile | undefined;
  private verifier!: BindingVerifier;
  /** Published bindings of this thread's tenants, verified one at a time ahead of their first packet. */
  private readonly ahead = new VerifyAhead((r) => this.verifier.verifyPublished(r), (e) => this.opts.log.error('verify-ahead-bug', { error: String(e) }));
  private readonly policyRefusals: Record<PolicyRefusal, number> = { unsigned: 0, 'bad-signature': 0, 'older-revision': 0 };
  private sweeper: NodeJS.Timeout | undefined;
  private closed = false;
  private handingOver = false;
  private finish: (code: number) => void = () => {};
  /** Settles with the exit code when the switch ended by itself: handed over (0), or a handover failed half-way (1). */
  readonly finished = new Promise<number>((resolve) => {
    this.finish = resolve;
  });
  host!: Host;

  private constructor(readonly cloud: Cloud, readonly name: string, private readonly opts: LiveOptions) {}

  /** Start the switch of host `name`. Anything that fails on the way is undone before the error surfaces. */
  static async start(config: CloudConfig, name: string, opts: LiveOptions): Promise<LiveSwitch> {
    checkHostKeys(config, name);
    pinDataPath(config.hosts.get(name)!, opts.worker?.shard.index);
    markPacketThread();
    const cloud = await openCloud(config);
    const s = new LiveSwitch(cloud, name, opts);
    try {
      await s.open();
    } catch (e) {
      await s.stop();
      throw e;
    }
    return s;
  }

  private async open(): Promise<void> {
    const { cloud, name, opts } = this;
    const cfg = cloud.config;
    const address = cfg.hosts.get(name)!.address;
    // The store, as this host sees it: a replica, current before anything is plugged.
    const replica = new StoreReplica(cloud.store, cloud.clock, {
      change: (c, previous) => this.storeChanged(c, previous),
      state: (up, why) => (up ? opts.log.info('store-up', { why }) : opts.log.warn('store-down', { why })),
      replay: (refused, kept) => opts.log.warn('binding-replay-refused', { vm: refused.vm, identity: refused.identity, epoch: refused.epoch, host: refused.host, keeping: kept.epoch, keepingHost: kept.host }),
    }, { host: name });
    this.replica = replica;
    await replica.start();
    const worker = opts.worker;
    this.epochs = new EpochFile(epochPath(cfg, name), !worker);
    this.verifier = newVerifier(cloud, { lookupHost: async (h) => replica.lookupHost(h) }, this.epochs);
    const takeover = opts.takeover;
    if (!worker) this.transport = takeover ? UdpTransport.pending(cfg.underlay.keyExchangePort) : await UdpTransport.open(address, cfg.underlay.keyExchangePort);
    else if (!takeover) await worker.kx.adopt(worker.kxFd!);
    const detached = detachedVms(cfg, name);
    this.host = new Host({
      config: cfg,
      host: name,
      vms: takeover ? takeover.handed.ports.map((p) => vmOf(cfg, p.vm)) : vmsOnHost(cfg, name).filter((vm) => !detached.has(vm.name) && owns(worker?.shard, vm.identity)),
      bindings: { lookup: async (id) => replica.lookup(id), lookupNow: (id) => replica.lookup(id), latest: (id) => replica.latest(id) },
      verifier: this.verifier,
      authority: this.verifier,
      policy: cloud.policy,
      hostKey: hostPrivateKey(cfg, name),
      transport: worker?.kx ?? this.transport!,
      shard: worker?.shard,
      cipher: opts.cipher,
      clock: cloud.clock,
      log: opts.log,
      saLimits: opts.saLimits,
      exportKeys: opts.exportSa === undefined ? undefined : (k) => appendFileSync(opts.exportSa!, `${wiresharkSaRecord(k)}\n`, { mode: 0o600 }),
    });
    const host = this.host;
    this.verdicts = new VerdictStream(name, cloud.clock, (id) => {
      const b = replica.bindings.get(id);
      return b && { vm: b.vm, tenant: b.tenant };
    }, worker ? verdictLimits(worker.shard.count) : undefined); // a worker's share: the operator follows them all joined
    this.verdicts.attach([host.egress, host.ingress], host.upcall);
    this.underlay = takeover ? RawUnderlay.adopt(formatIpv4(address), takeover.handed.underlay, cfg.underlay.espUdpPort)
      : RawUnderlay.open(formatIpv4(address), { shard: worker?.shard, espUdpPort: cfg.underlay.espUdpPort, espUdpFd: worker?.espUdpFd });
    const underlay = this.underlay;
    host.attach({ send: (b, idx, n) => underlay.send(b, idx, n) }, []);
    this.ports = new VmPorts({
      config: cfg, hostName: name, host, hostKey: hostPrivateKey(cfg, name), authority: this.verifier, log: opts.log,
      vmNetnsPrefix: opts.vmNetnsPrefix,
      publish: (vm) => publishBinding(cloud, name, vm, Math.max(this.replica?.bindings.get(vm.identityText)?.epoch ?? 0, this.verifier.highestEpoch(vm.identityText) ?? 0)),
      withdraw: async (vm) => {
        const rec = await cloud.store.lookup(vm.identityText);
        if (rec === undefined || rec.host !== name) return false;
        this.verifier.rememberEpoch(vm.identityText, rec.epoch); // the VM's next binding goes above it, even with the store's record gone
        return cloud.store.withdraw(vm.identityText, rec.epoch);
      },
      readLink: (link, index) => this.readLink(link, index),
      remember: worker?.remember,
    });

    if (takeover) {
      await this.takeOver(takeover);
      return;
    }
    underlay.onReadable(() => this.readUnderlay());
    this.ports.openInitial();
    let published = 0;
    for (const port of host.ports.all()) {
      await publishBinding(cloud, name, cfg.vms.get(port.name)!);
      published++;
    }
    await this.serve();
    opts.log.info('switch-started', {
      host: name, address: formatIpv4(address), vms: host.ports.all().map((p) => `${p.name}=${p.identityText}`), bindings: published,
      cipher: opts.cipher.name, policyRevision: cloud.policy.revision, control: opts.control, busyPollUs: cfg.switch.busyPollUs,
    });
  }

  /** The sweeper, the control socket and the metrics endpoint. */
  private async serve(): Promise<void> {
    const { opts } = this;
    this.sweeper = setInterval(() => this.host.sweep(), SWEEP_INTERVAL_MS);
    this.sweeper.unref();
    const native = loadNative();
    native.busyPoll(this.cloud.config.switch.busyPollUs); // this thread's loop (a worker's own)
    // The key exchange's messages are packets too: the loop stays awake for the answer to an
    // INIT, and for the first packets of an SA just answered.
    if (this.cloud.config.switch.busyPollUs > 0) (opts.worker?.kx ?? this.transport!).onActivity = () => native.busyPollTouch();
    if (opts.worker) return; // the main thread serves the host's control socket and metrics
    mkdirSync(dirname(opts.control), { recursive: true });
    this.control = await ControlServer.listen(opts.control, this);
    const at = this.cloud.config.switch.metrics;
    if (at) this.metrics = await MetricsServer.open(new SwitchMetrics(() => this.stats()), at, opts.log);
  }

  /**
   * The new process's half of a handover: the ports are adopted, nothing is read yet. Ready;
   * the old process stops and sends its state; take it over, then read and serve.
   */
  private async takeOver(from: ThreadTakeover): Promise<void> {
    const { opts, host } = this;
    try {
      this.ports!.adoptInitial(from.handed.ports);
      await this.verifyAhead(from.handed.peers ?? []); // absent when the old process is of a version before it
      const state = await from.ready();
      const t0 = performance.now();
      const restored = await restoreHandover(host, opts.cipher, state, opts.log);
      const t1 = performance.now();
      await (opts.worker?.kx ?? this.transport!).adopt(from.handed.kx);
      this.underlay!.onReadable(() => this.readUnderlay());
      this.ports!.resume();
      const t2 = performance.now();
      await this.serve();
      from.forwarding(restored);
      opts.log.info('switch-took-over', {
        host: this.name, vms: host.ports.all().map((p) => p.name), egress: restored.egress, egressSas: restored.egressSas, inbound: restored.inbound,
        refused: restored.refused, cipher: opts.cipher.name, policyRevision: host.policy.revision, control: opts.control,
        restoreMs: round1(t1 - t0), readingAfterMs: round1(t2 - t0),
      });
    } catch (e) {
      from.failed((e as Error).message);
      throw e;
    }
  }

  /** Verify the bindings of `identities` now, so that the cables plugged again find them verified. */
  private async verifyAhead(identities: readonly string[]): Promise<void> {
    await Promise.all(identities.map(async (id) => {
      const found = await this.host.lookup.find(id);
      if ('record' in found && found.record) await this.verifier.verify(found.record);
    }));
  }

  /**
   * The old process's half of a handover (`nvi-switch restart`): start the successor with the
   * fds, and when it is ready stop reading, let what is in flight finish, hand it the state.
   * Resolves when it forwards; this process then exits, removing nothing. If the successor
   * never gets ready, this switch carries on; if it fails after the state went over, this one
   * stops (as after a crash, the next start makes fresh SAs).
   */
  async handover(): Promise<HandoverResult> {
    if (this.opts.worker) throw new NviError('NVI_ERR_HANDOVER', 'a worker thread is not handed over on its own');
    const refusal = handoverRefusal(process.env);
    if (refusal) throw new NviError('NVI_ERR_HANDOVER', refusal);
    const handed = this.handoverPlan();
    let next: Successor;
    try {
      next = await Successor.start({ threads: [handed] });
    } catch (e) {
      this.handoverAbandoned();
      throw e;
    }
    return next.complete(async () => {
      const saved = await this.pauseAndSave();
      return { states: [saved.state], logged: { drainMs: saved.drainMs, closeAndSaveMs: saved.closeAndSaveMs, drained: saved.drained } };
    }, {
      host: this.name,
      log: this.opts.log,
      done: () => void this.closeHandedOver().then(() => this.finish(0)),
      failed: () => void this.stop().finally(() => this.finish(1)),
    });
  }

  /**
   * What a process taking this thread over needs: its ports' fds, its underlay sockets, the
   * identities at the far ends of its cables. From here on, VMs are neither attached nor
   * detached here (handoverAbandoned() undoes that).
   */
  handoverPlan(): ThreadHandover {
    if (this.handingOver) throw new NviError('NVI_ERR_HANDOVER', 'a handover is already under way');
    const kx = (this.opts.worker?.kx ?? this.transport!).fd;
    if (kx === undefined) throw new NviError('NVI_ERR_HANDOVER', 'the key-exchange socket has no fd to hand over');
    const ports = this.ports!.handoverLinks();
    const peers = new Set([...this.host.egressCables.all()].filter((c) => c.plugged && c.localPort < 0).map((c) => c.dstText));
    for (const c of this.host.ingressCables.all()) if (c.plugged) peers.add(c.srcText);
    this.handingOver = true;
    return { ports, underlay: this.underlay!.fds, kx, peers: [...peers] };
  }

  /** The successor never got ready: this switch carries on as before. */
  handoverAbandoned(): void {
    this.handingOver = false;
  }

  /**
   * Stop reading, let misses and key exchanges in flight finish (1 s at most), close what the
   * new process takes over from here (the key exchange, the control and metrics sockets), and
   * save the state.
   */
  async pauseAndSave(): Promise<{ state: HandoverState; drained: boolean; drainMs: number; closeAndSaveMs: number }> {
    const t0 = performance.now();
    this.ports!.pauseAll();
    this.underlay!.pause();
    const drained = await this.drain(1000);
    const t1 = performance.now();
    if (this.sweeper) clearInterval(this.sweeper);
    this.replica?.stop();
    this.host.close(); // the key exchange, and this process's copy of its socket
    this.control?.stopListening();
    await this.metrics?.close();
    this.metrics = undefined;
    const state = saveHandover(this.host, this.opts.cipher);
    return { state, drained, drainMs: round1(t1 - t0), closeAndSaveMs: round1(performance.now() - t1) };
  }

  /** Wait (at most `ms`) until no miss and no key exchange is in flight; true if none is. */
  private async drain(ms: number): Promise<boolean> {
    const until = performance.now() + ms;
    while (this.host.upcall.inFlight > 0 || this.host.kx.busy || this.host.spareBinder.inFlight > 0) {
      if (performance.now() > until) return false;
      await new Promise((r) => setTimeout(r, 1));
    }
    return true;
  }

  /** After a handover: close this process's copies of the fds; the TAPs, sockets and the control socket's path stay with the new process. */
  async closeHandedOver(): Promise<void> {
    this.closed = true;
    this.control?.dropConnections();
    this.ports?.closeAll();
    this.underlay?.close();
    await this.cloud.store.close().catch(() => {});
    this.opts.log.info('switch-stopped', { host: this.name, handedOver: true });
  }

  private readLink(link: VmLink, index: number): void {
    if (this.ports!.isWaiting(index)) this.ports!.activate(index); // a migrated VM's first frame: it runs here now
    const b = this.egressBatch;
    b.reset();
    const malformed = link.rxMalformed;
    const tooBig = link.rxTooBig;
    if (link.read(b, index, Date.now() * 1000) > 0) this.host.runEgress(b);
    if (link.rxMalformed !== malformed) this.host.egress.counters.refusedAtPort(Drop.EthOffloadMalformed, link.rxMalformed - malformed);
    if (link.rxTooBig !== tooBig) this.host.egress.counters.refusedAtPort(Drop.EthTooBig, link.rxTooBig - tooBig);
    if (link.failure) this.opts.log.error('port-failed', { port: link.name, failure: link.failure });
  }

  private readUnderlay(): void {
    const b = this.ingressBatch;
    b.reset();
    if (this.underlay!.read(b, Date.now() * 1000) > 0) this.host.runIngress(b);
  }

  /** A change the store's watch brought: bindings are pushed to the cables they concern; a policy is taken if the CA signed it. */
  private storeChanged(c: StoreChange, previous?: BindingRecord): void {
    if (!this.host) return; // the first sync, before the host exists: nothing is plugged yet
    if (c.kind === 'binding') {
      const n = this.host.bindingChanged(c.identity);
      if (c.record && this.hasTenant(c.record.tenant)) this.ahead.add(c.record);
      if (previous && c.record && previous.host !== c.record.host) {
        this.opts.log.info('vm-moved', { vm: c.record.vm, identity: c.identity, from: previous.host, fromAddress: previous.hostAddress, to: c.record.host, toAddress: c.record.hostAddress, epoch: c.record.epoch, cables: n });
      } else if (previous && !c.record) {
        this.opts.log.info('vm-gone', { vm: previous.vm, identity: c.identity, from: previous.host, cables: n });
      }
    } else if (c.kind === 'policy') this.policyChanged(c.record);
  }

  /** A VM of `tenant` runs on this thread: its bindings are the ones a first packet here may need. */
  private hasTenant(tenant: string): boolean {
    for (const p of this.host.ports.all()) if (p.tenant === tenant) return true;
    return false;
  }

  /** A new policy in the store: refused (and counted) unless signed by the CA and newer than ours. */
  private policyChanged(rec: PolicyRecord): void {
    const refusal = policyRefusal(rec, this.cloud.anchorKey, this.host.policy.revision);
    if (refusal) {
      this.policyRefusals[refusal]++;
      this.opts.log.warn('policy-refused', { revision: rec.revision, reason: refusal, keeping: this.host.policy.revision });
      return;
    }
    try {
      const next = compilePolicyDocument(rec.document, rec.revision);
      const n = this.host.applyPolicy(next);
      this.opts.log.info('policy-applied', { revision: next.revision, reevaluated: n });
    } catch (e) {
      this.opts.log.error('policy-refused', { revision: rec.revision, reason: 'does-not-compile', error: (e as Error).message });
    }
  }

  /** Counters of everything, for `stats`. */
  stats() {
    const h = this.host;
    return {
      host: this.name,
      policyRevision: h.policy.revision,
      egress: h.egress.counters.snapshot(),
      ingress: h.ingress.counters.snapshot(),
      nd: h.egress.stage<NdResponder>('nd-responder').counts,
      dhcp: h.egress.stage<DhcpServer>('dhcp-server').counts,
      upcall: {
        ...h.upcall.counts, queued: h.upcall.queued, inFlight: h.upcall.inFlight,
        decisions: { plugged: h.upcall.decisions.plugged, unplugged: Object.fromEntries([...h.upcall.decisions.unplugged].map(([d, n]) => [dropName(d), n])) },
        latency: h.upcall.latency.snapshot(),
      },
      lookups: h.lookup.counts,
      verifier: { ...this.verifier.counters },
      store: { ...this.replica!.counts, revision: this.replica!.revision, fresh: this.replica!.fresh, policyRefusals: { ...this.policyRefusals }, epochWriteErrors: this.epochs!.writeErrors },
      kx: kxSnapshot(h),
      cables: { ...h.counts, egress: h.egressCables.size, ingress: h.ingressCables.size, inboundSas: h.sas.spis.size, inboundPairs: h.sas.currentPairs, cipherKeys: h.sas.cipherKeys, cipherContexts: h.sas.cipherContexts, windowsWithBlocks: ReplayWindow.stored.windows },
      ports: [...(this.ports?.all ?? [])].map(([index, t]) => ({ vm: h.ports.at(index)?.name, name: t.name, up: t.up, rx: t.rxFrames, tx: t.txFrames, rxBytes: t.rxBytes, txBytes: t.txBytes, txRefused: t.txRefused, txBusy: t.txBusy, failure: t.failure })),
      vms: this.ports?.counts,
      verdicts: this.verdicts?.counts,
      memory: process.memoryUsage(),
      cpus: threadCpus(), // the data-path thread's (hosts.<name>.cpus pins it)
      busyPoll: { windowUs: this.cloud.config.switch.busyPollUs, turns: loadNative().busyPollTurns() },
      wake: wakeTimes(loadNative()),
      underlay: this.underlay && { rx: this.underlay.rxPackets, rxBytes: this.underlay.rxBytes, rxErrors: this.underlay.rxErrors, tx: this.underlay.txPackets, txBytes: this.underlay.txBytes, txRefused: this.underlay.txRefused, txBusy: this.underlay.txBusy },
    };
  }

  cables(): CableInfo[] {
    const vmOf = new Map([...this.replica!.bindings.values()].map((b) => [b.identity, b.vm]));
    for (const p of this.host.ports.all()) vmOf.set(p.identityText, p.name);
    return cableInfo(this.host, vmOf, Date.now());
  }

  /** A VM's port: attach, detach, and both ends of a migration (vm-ports.ts). */
  async vm(req: VmRequest): Promise<unknown> {
    const p = this.ports!;
    if (this.handingOver && req.op !== 'state') throw new NviError('NVI_ERR_HANDOVER', `vm ${req.op} ${req.vm}: this switch is handing over to a new process; ask that one`);
    switch (req.op) {
      case 'attach':
        return p.attach(req.vm);
      case 'detach':
        return p.detach(req.vm);
      case 'prepare':
        return p.prepare(req.vm);
      case 'out':
        return p.out(req.vm, req.offer!);
      case 'seal':
        return p.seal(req.vm, req.offer!);
      case 'release':
        p.release(req.vm);
        return {};
      case 'in':
        p.in(req.vm, req.sealed!);
        return { state: p.state(req.vm) };
      case 'cancel':
        p.cancel(req.vm);
        return {};
      case 'done':
        p.done(req.vm);
        return {};
      case 'abort':
        return p.abort(req.vm);
      case 'state':
        return { state: p.state(req.vm) };
    }
  }

  lastVerdicts(f: VerdictFilter): Verdict[] {
    return this.verdicts?.last(f) ?? [];
  }

  watchVerdicts(f: VerdictFilter, send: (v: Verdict) => boolean): { stop(): void; lost(): number } {
    if (!this.verdicts) throw new NviError('NVI_ERR_CONTROL', 'the switch is not running yet');
    return this.verdicts.watch(f, send);
  }

  flush(opts: { reverify?: boolean } = {}): { flushed: number; bindings: number } {
    const n = this.host.flushCables();
    const bindings = opts.reverify ? this.verifier.forgetVerified() : 0;
    this.opts.log.info('cables-flushed', { cables: n, ...(opts.reverify ? { bindingsForgotten: bindings } : {}) });
    return { flushed: n, bindings };
  }

  explain(req: ExplainRequest): Promise<Explanation> {
    return req.side === 'receiver'
      ? explainReceiver(this.host, req.src, req.dst, req.fromHost ?? '', req.fromAddress ?? 0, req.packet)
      : explainSender(this.host, req.src, req.dst, req.packet);
  }

  /** Stop: close the ports (the TAPs the switch created disappear), the sockets, the store. */
  async stop(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.replica?.stop();
    if (this.sweeper) clearInterval(this.sweeper);
    await this.control?.close(); // removes the socket's path: only one this process bound
    await this.metrics?.close();
    this.ports?.closeAll();
    this.underlay?.close();
    if (this.host) this.host.close();
    else this.transport?.close();
    await this.cloud.store.close();
    this.opts.log.info('switch-stopped', { host: this.name });
  }
}

function round1(ms: number): number {
  return Math.round(ms * 10) / 10;
}

/** VM `name` of the config, which a handed-over port must name. */
function vmOf(cfg: CloudConfig, name: string) {
  const vm = cfg.vms.get(name);
  if (!vm) throw new NviError('NVI_ERR_HANDOVER', `handed port of VM ${name}, which ${cfg.file} does not name`);
  return vm;
}

function kxSnapshot(h: Host): Record<string, unknown> {
  const c = h.kx.counters;
  const refusals: Record<string, number> = {};
  c.refusals.forEach((n, k) => {
    if (n > 0) refusals[dropName(k as Drop)] = n;
  });
  const { refusals: _r, ...rest } = c;
  const bound = h.spareBinder.counts;
  return {
    ...rest, refusals,
    sparesReady: h.kx.spares.ready, sparesKept: h.spares.size,
    sparesBound: bound.bound, sparesRefusedPairs: bound.refused, sparePacketsHeld: bound.held,
    probesSent: h.probes.sent, probesFailed: h.probes.failed, probesReceived: bound.probes,
  };
}
