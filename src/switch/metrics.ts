// The switch's counters as Prometheus metrics, read at scrape time: the data path keeps its
// own counters (typed arrays, plain fields) and never touches this module; a scrape takes one
// `stats` snapshot and prom-client writes the exposition (names, HELP/TYPE, escaping).
// Labels are bounded: pipeline, stage, fate, drop reason, decision, port. Never an address.
//
// Conventions (as the Prometheus docs, Cilium and the WireGuard exporters use them): counters
// end in _total, durations are seconds, sizes bytes; gauges carry no suffix.

import { Registry, type Metric } from 'prom-client';
import type { HistogramSnapshot } from '../base/histogram.js';
import type { PipeSnapshot } from '../dataplane/counters.js';

/** What a scrape reads of `stats` (LiveSwitch.stats()). */
export interface StatsView {
  readonly policyRevision: number;
  readonly egress: PipeSnapshot;
  readonly ingress: PipeSnapshot;
  readonly upcall: {
    readonly misses: number;
    readonly refreshes: number;
    readonly restarted: number;
    readonly released: number;
    readonly queued: number;
    readonly decisions: { readonly plugged: number; readonly unplugged: Readonly<Record<string, number>> };
    readonly latency: HistogramSnapshot;
  };
  readonly lookups: Readonly<Record<string, unknown>>;
  readonly verifier: Readonly<Record<string, unknown>>;
  readonly kx: Readonly<Record<string, unknown>>;
  readonly store: Readonly<Record<string, unknown>> & { readonly revision: number; readonly fresh: boolean; readonly policyRefusals: Readonly<Record<string, number>> };
  readonly cables: Readonly<Record<string, unknown>> & { readonly egress: number; readonly ingress: number; readonly inboundSas: number; readonly cipherKeys: number; readonly cipherContexts?: number; readonly windowsWithBlocks?: number };
  readonly ports: readonly {
    readonly vm?: string; readonly name: string; readonly up: boolean;
    readonly rx: number; readonly tx: number; readonly rxBytes: number; readonly txBytes: number; readonly txRefused: number; readonly txBusy: number;
  }[];
  readonly vms?: Readonly<Record<string, unknown>>;
  readonly verdicts?: Readonly<Record<string, unknown>>;
  /** Wake times (wake-times.ts): a port's callback to its read, that read to the first send. */
  readonly wake?: { readonly entry: HistogramSnapshot; readonly pipeline: HistogramSnapshot };
  readonly underlay?: { readonly rx: number; readonly rxBytes: number; readonly rxErrors: number; readonly tx: number; readonly txBytes: number; readonly txRefused: number; readonly txBusy: number };
}

type Labels = Record<string, string | number>;
interface Sample { readonly labels?: Labels; readonly value: number; readonly metricName?: string }
type Kind = 'counter' | 'gauge' | 'histogram';

const PIPES = ['egress', 'ingress'] as const;
const FATES = ['delivered', 'underlay', 'consumed', 'replied', 'held', 'dropped'] as const;
/** Gauges among the `cables` and `store` fields; the rest of those groups are counters. */
const KX_GAUGES = new Set(['sparesReady', 'sparesKept']);
const CABLE_GAUGES = new Set(['egress', 'ingress', 'inboundSas', 'inboundPairs', 'cipherKeys', 'cipherContexts', 'windowsWithBlocks']);
const STORE_GAUGES = new Set(['revision', 'fresh', 'policyRefusals']);

/** `initsSent` -> `inits_sent`. */
function snake(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/** One metric family, computed from the scrape's snapshot. */
class ScrapedMetric {
  readonly aggregator = 'sum';
  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: Kind,
    private readonly read: (s: StatsView) => Sample[],
    private readonly snapshot: () => StatsView,
  ) {}

  get(): { name: string; help: string; type: Kind; aggregator: string; values: Sample[] } {
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.read(this.snapshot()) };
  }
}

export class SwitchMetrics {
  private readonly registry = new Registry();
  private current: StatsView | undefined;

  /** `shape`: a snapshot to learn the counters' names from, where `stats` answers later (a host of several workers). */
  constructor(private readonly stats: () => StatsView | Promise<StatsView>, shape?: StatsView) {
    const first = shape ?? (stats() as StatsView);
    const def = (name: string, type: Kind, help: string, read: (s: StatsView) => Sample[]): void => {
      // prom-client takes any object that answers get() like its own metric classes.
      this.registry.registerMetric(new ScrapedMetric(name, help, type, read, () => this.current!) as unknown as Metric);
    };
    const groupCounters = (prefix: string, group: (s: StatsView) => Readonly<Record<string, unknown>>, skip: ReadonlySet<string>, what: string): void => {
      for (const key of Object.keys(group(first))) {
        if (skip.has(key) || typeof group(first)[key] !== 'number') continue;
        def(`${prefix}_${snake(key)}_total`, 'counter', `${what}: ${key}.`, (s) => [{ value: Number(group(s)[key] ?? 0) }]);
      }
    };

    def('nvi_packets_in_total', 'counter', 'Packets that entered a pipeline (egress: from VM ports; ingress: from the underlay).',
      (s) => PIPES.map((p) => ({ labels: { pipeline: p }, value: s[p].in })));
    def('nvi_packets_reinjected_total', 'counter', 'Held packets released into a pipeline again once their cable was plugged.',
      (s) => PIPES.map((p) => ({ labels: { pipeline: p }, value: s[p].reinjected })));
    def('nvi_packets_total', 'counter', 'Packets by pipeline and fate: delivered to a local VM, sent on the underlay, consumed or answered by the switch, held for an upcall, dropped.',
      (s) => PIPES.flatMap((p) => FATES.map((f) => ({ labels: { pipeline: p, fate: f }, value: s[p][f] }))));
    def('nvi_icmp_errors_sent_total', 'counter', 'ICMPv6 errors (Packet Too Big) the switch sent back to a VM.',
      (s) => PIPES.map((p) => ({ labels: { pipeline: p }, value: s[p].errorsSent })));
    def('nvi_drops_total', 'counter', 'Dropped packets by pipeline, the stage that dropped them (port, a pipeline stage, tx) and reason.',
      (s) => PIPES.flatMap((p) => Object.entries(s[p].stages).flatMap(([stage, row]) =>
        Object.entries(typeof row.drops === 'object' ? row.drops : {}).map(([reason, n]) => ({ labels: { pipeline: p, stage, reason }, value: n })))));

    def('nvi_port_up', 'gauge', 'A VM port is up (1) or down (0).', (s) => s.ports.map((p) => ({ labels: portLabels(p), value: p.up ? 1 : 0 })));
    def('nvi_port_received_packets_total', 'counter', 'Frames read from a VM port.', (s) => s.ports.map((p) => ({ labels: portLabels(p), value: p.rx })));
    def('nvi_port_received_bytes_total', 'counter', 'Bytes of the frames read from a VM port.', (s) => s.ports.map((p) => ({ labels: portLabels(p), value: p.rxBytes })));
    def('nvi_port_sent_packets_total', 'counter', 'Frames written to a VM port.', (s) => s.ports.map((p) => ({ labels: portLabels(p), value: p.tx })));
    def('nvi_port_sent_bytes_total', 'counter', 'Bytes of the frames written to a VM port.', (s) => s.ports.map((p) => ({ labels: portLabels(p), value: p.txBytes })));
    def('nvi_port_tx_refused_total', 'counter', 'Frames a VM port refused (counted as drops too).', (s) => s.ports.map((p) => ({ labels: portLabels(p), value: p.txRefused })));
    def('nvi_port_tx_busy_total', 'counter', 'Writes a VM port could not take because its queue was full.', (s) => s.ports.map((p) => ({ labels: portLabels(p), value: p.txBusy })));

    const under = (f: (u: NonNullable<StatsView['underlay']>) => number) => (s: StatsView): Sample[] => (s.underlay ? [{ value: f(s.underlay) }] : []);
    def('nvi_underlay_received_packets_total', 'counter', 'IPv4 packets read from the underlay (ESP and 6in4).', under((u) => u.rx));
    def('nvi_underlay_received_bytes_total', 'counter', 'Bytes of the IPv4 packets read from the underlay.', under((u) => u.rxBytes));
    def('nvi_underlay_receive_errors_total', 'counter', 'Failed reads on the underlay sockets.', under((u) => u.rxErrors));
    def('nvi_underlay_sent_packets_total', 'counter', 'IPv4 packets sent on the underlay.', under((u) => u.tx));
    def('nvi_underlay_sent_bytes_total', 'counter', 'Bytes of the IPv4 packets sent on the underlay.', under((u) => u.txBytes));
    def('nvi_underlay_tx_refused_total', 'counter', 'Packets the underlay socket refused (counted as drops too).', under((u) => u.txRefused));
    def('nvi_underlay_tx_busy_total', 'counter', 'Sends the underlay socket could not take because its buffer was full.', under((u) => u.txBusy));

    def('nvi_upcalls_total', 'counter', 'Misses sent to the slow path (lookup, verification, policy, key exchange).', (s) => [{ value: s.upcall.misses }]);
    def('nvi_upcall_refreshes_total', 'counter', 'Plugged cables verified again when their refresh time passed.', (s) => [{ value: s.upcall.refreshes }]);
    def('nvi_upcall_restarts_total', 'counter', 'Misses and refreshes asked again because their far end\'s binding changed while they were resolved.', (s) => [{ value: s.upcall.restarted }]);
    def('nvi_upcall_released_packets_total', 'counter', 'Held packets released when their cable was installed.', (s) => [{ value: s.upcall.released }]);
    def('nvi_upcall_queued_packets', 'gauge', 'Packets held now, waiting for their cable.', (s) => [{ value: s.upcall.queued }]);
    def('nvi_upcall_duration_seconds', 'histogram', 'Time from a miss to its cable installed.', (s) => histogram('nvi_upcall_duration_seconds', s.upcall.latency));
    const wake = (name: string, part: 'entry' | 'pipeline') => (s: StatsView): Sample[] => (s.wake ? histogram(name, s.wake[part]) : []);
    def('nvi_wake_entry_seconds', 'histogram', 'From a port waking the data path to its read: the event loop and the JS before it; grows when packets come alone.',
      wake('nvi_wake_entry_seconds', 'entry'));
    def('nvi_wake_pipeline_seconds', 'histogram', 'From that read to the first packet it sent: the read, the pipeline and the encryption.', wake('nvi_wake_pipeline_seconds', 'pipeline'));
    def('nvi_cables_installed_total', 'counter', 'Cables installed by a miss, by decision (plugged, unplugged) and the reason of an unplugged one.',
      (s) => [{ labels: { decision: 'plugged', reason: '' }, value: s.upcall.decisions.plugged },
        ...Object.entries(s.upcall.decisions.unplugged).map(([reason, n]) => ({ labels: { decision: 'unplugged', reason }, value: n }))]);
    def('nvi_cables', 'gauge', 'Cables in the cache now, by direction.', (s) => [{ labels: { direction: 'egress' }, value: s.cables.egress }, { labels: { direction: 'ingress' }, value: s.cables.ingress }]);
    def('nvi_inbound_sas', 'gauge', 'Inbound ESP SAs installed now.', (s) => [{ value: s.cables.inboundSas }]);
    def('nvi_cipher_keys', 'gauge', 'AES-GCM keys held now (inbound and outbound).', (s) => [{ value: s.cables.cipherKeys }]);
    def('nvi_cipher_contexts', 'gauge', 'AES-GCM key schedules kept between packets (about 1 KB each): keys used in the last minute or so.',
      (s) => (s.cables.cipherContexts === undefined ? [] : [{ value: s.cables.cipherContexts }]));
    def('nvi_replay_windows_with_blocks', 'gauge', 'Inbound SAs whose anti-replay window holds its 256 bytes of blocks (more than 6 holes at once); the others keep their top and holes alone.',
      (s) => (s.cables.windowsWithBlocks === undefined ? [] : [{ value: s.cables.windowsWithBlocks }]));
    groupCounters('nvi_cables', (s) => s.cables, CABLE_GAUGES, 'Cable and SA events');
    groupCounters('nvi_kx', (s) => s.kx, KX_GAUGES, 'Key exchange');
    def('nvi_kx_spares', 'gauge', 'Spare SAs (keyed ahead of any pair): ready to send on with peer hosts, and kept from peer hosts for their first packet.',
      (s) => [{ labels: { role: 'ready' }, value: Number(s.kx.sparesReady ?? 0) }, { labels: { role: 'kept' }, value: Number(s.kx.sparesKept ?? 0) }]);
    def('nvi_kx_refusals_total', 'counter', 'Key-exchange messages refused, by reason.',
      (s) => Object.entries((s.kx.refusals ?? {}) as Record<string, number>).map(([reason, n]) => ({ labels: { reason }, value: n })));
    groupCounters('nvi_verifier', (s) => s.verifier, new Set(), 'Binding verification');
    groupCounters('nvi_lookups', (s) => s.lookups, new Set(), 'Store lookups on a miss');
    groupCounters('nvi_store', (s) => s.store, STORE_GAUGES, 'Mapping store replica');
    groupCounters('nvi_vm_ports', (s) => s.vms ?? {}, new Set(), 'VM port events');
    groupCounters('nvi_verdicts', (s) => s.verdicts ?? {}, new Set(), 'Verdict stream (observe): events made, and events the rate limit left out');
    def('nvi_store_policy_refusals_total', 'counter', 'Policy documents from the store refused, by reason.',
      (s) => Object.entries(s.store.policyRefusals).map(([reason, n]) => ({ labels: { reason }, value: n })));
    def('nvi_store_revision', 'gauge', "The store revision the host's replica has applied.", (s) => [{ value: s.store.revision }]);
    def('nvi_store_fresh', 'gauge', "The host's replica is current with the store (1) or behind/unreachable (0).", (s) => [{ value: s.store.fresh ? 1 : 0 }]);
    def('nvi_policy_revision', 'gauge', 'The policy revision the switch runs.', (s) => [{ value: s.policyRevision }]);
  }

  /** The exposition (Prometheus text format 0.0.4) of one snapshot. */
  async text(): Promise<string> {
    this.current = await this.stats();
    try {
      return await this.registry.metrics();
    } finally {
      this.current = undefined;
    }
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

function portLabels(p: StatsView['ports'][number]): Labels {
  return { port: p.name, vm: p.vm ?? '' };
}

function histogram(name: string, h: HistogramSnapshot): Sample[] {
  return [
    ...h.buckets.map((b) => ({ metricName: `${name}_bucket`, labels: { le: b.le }, value: b.count })),
    { metricName: `${name}_bucket`, labels: { le: '+Inf' }, value: h.count },
    { metricName: `${name}_sum`, value: h.sum },
    { metricName: `${name}_count`, value: h.count },
  ];
}
