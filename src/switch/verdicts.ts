// The verdict stream of one switch (`nvi-switch observe`): every cable installed (plugged, or
// unplugged with its reason and rule) and every dropped packet with its reason, stage and
// identity pair, as they happen. Rate-limited at the source: a token bucket decides before an
// event is built, so a flood of drops costs the data path one counter per batch and at most
// `rate` small objects a second; what the bucket refuses is counted (`lost`) and reported to
// the watchers. The last `keep` events stay for `observe` without --follow.

import { formatIpv4, formatIpv6 } from '../base/address.js';
import type { Clock } from '../base/clock.js';
import { dropName, type Drop } from '../base/drops.js';
import { TokenBucket } from '../base/token-bucket.js';
import { Next, type Batch } from '../dataplane/batch.js';
import { CableDirection, type Cable } from '../dataplane/cable.js';
import type { Pipeline } from '../dataplane/pipeline.js';
import { IPV6_OFF_DST, IPV6_OFF_SRC } from '../wire/ipv6.js';

/** A host's verdict stream: events a second at most, and events kept for `observe` without --follow. */
export const VERDICT_LIMITS = { rate: 1000, keep: 512 } as const;

export type VerdictKind = 'dropped' | 'plugged' | 'unplugged';
export const VERDICT_KINDS: readonly VerdictKind[] = ['dropped', 'plugged', 'unplugged'];

export interface Verdict {
  readonly time: string;
  readonly host: string;
  readonly verdict: VerdictKind;
  /** egress (from a local VM) or ingress (from the underlay). */
  readonly direction: 'egress' | 'ingress';
  /** Drop reason, or the reason an unplugged cable refuses its packets; '' when plugged. */
  readonly reason: string;
  /** The stage that dropped the packet, or the rule that decided the cable. */
  readonly stage?: string;
  readonly rule?: string;
  /** The identity pair when known (a packet dropped before its inner header was read has none). */
  readonly src?: string;
  readonly dst?: string;
  readonly srcVm?: string;
  readonly dstVm?: string;
  readonly srcTenant?: string;
  readonly dstTenant?: string;
  /** Upper-layer protocol of a dropped packet (58 ICMPv6, 6 TCP, 17 UDP). */
  readonly proto?: number;
  /** The other host: where an underlay packet came from, or where a cable leads. */
  readonly peer?: string;
}

export interface VerdictFilter {
  readonly vm?: string;
  readonly tenant?: string;
  readonly verdict?: VerdictKind;
  /** A reason, or its family with a trailing slash (`policy/`). */
  readonly reason?: string;
}

/** A filter from a control request, checked; throws naming the field that is wrong. */
export function parseFilter(req: Record<string, unknown>): VerdictFilter {
  const text = (k: string): string | undefined => {
    const v = req[k];
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || v === '') throw new Error(`observe: ${k} must be a non-empty string`);
    return v;
  };
  const verdict = text('verdict');
  if (verdict !== undefined && !VERDICT_KINDS.includes(verdict as VerdictKind)) throw new Error(`observe: verdict is one of ${VERDICT_KINDS.join(', ')}, got "${verdict}"`);
  return { vm: text('vm'), tenant: text('tenant'), verdict: verdict as VerdictKind | undefined, reason: text('reason') };
}

export function matches(v: Verdict, f: VerdictFilter): boolean {
  if (f.verdict !== undefined && v.verdict !== f.verdict) return false;
  if (f.vm !== undefined && v.srcVm !== f.vm && v.dstVm !== f.vm) return false;
  if (f.tenant !== undefined && v.srcTenant !== f.tenant && v.dstTenant !== f.tenant) return false;
  if (f.reason !== undefined && !(f.reason.endsWith('/') ? v.reason.startsWith(f.reason) : v.reason === f.reason)) return false;
  return true;
}

/** Who an identity is: its VM and tenant, when this host knows them. */
export type WhoIs = (identity: string) => { readonly vm: string; readonly tenant: string } | undefined;

interface Watcher {
  readonly filter: VerdictFilter;
  /** Hands an event over; false when the watcher cannot take more now (the event is lost to it). */
  readonly send: (v: Verdict) => boolean;
  lost: number;
}

export class VerdictStream {
  readonly counts = { emitted: 0, lost: 0 };
  private readonly bucket: TokenBucket;
  private readonly recent: Verdict[] = [];
  private readonly watchers = new Set<Watcher>();
  /** Cables installed whose events are not made yet, and when each was installed. */
  private readonly installs: Cable[] = [];
  private readonly installTimes: number[] = [];

  constructor(
    private readonly host: string,
    private readonly clock: Clock,
    private readonly whoIs: WhoIs,
    private readonly opts: { readonly rate: number; readonly keep: number } = VERDICT_LIMITS,
  ) {
    this.bucket = new TokenBucket(opts.rate, opts.rate, clock.now());
  }

  /** Observe these pipelines and this upcall from now on. */
  attach(pipelines: readonly Pipeline[], upcall: { onInstall: ((c: Cable) => void) | null }): void {
    for (const p of pipelines) p.observer = (b, pipe) => this.dropsIn(b, pipe);
    upcall.onInstall = (c) => this.installed(c);
  }

  /** The last events kept, oldest first, that match `f`. */
  last(f: VerdictFilter): Verdict[] {
    return this.recent.filter((v) => matches(v, f));
  }

  /** Follow events matching `f`; returns the way to stop. */
  watch(filter: VerdictFilter, send: (v: Verdict) => boolean): { stop(): void; lost(): number } {
    const w: Watcher = { filter, send, lost: 0 };
    this.watchers.add(w);
    return { stop: () => this.watchers.delete(w), lost: () => w.lost + this.counts.lost };
  }

  private dropsIn(b: Batch, pipe: Pipeline): void {
    const direction = pipe.name === 'ingress' ? 'ingress' : 'egress';
    const rows = pipe.counters.rows;
    for (let i = 0; i < b.count; i++) {
      const next = b.next[i];
      if (next !== Next.Drop && !(next === Next.Reply && b.reason[i] !== 0)) continue;
      if (!this.admit()) continue;
      const ip = b.l3[i];
      const src = ip >= 0 ? formatIpv6(b.data, ip + IPV6_OFF_SRC) : undefined;
      const dst = ip >= 0 ? formatIpv6(b.data, ip + IPV6_OFF_DST) : undefined;
      this.emit({
        time: new Date(this.clock.now()).toISOString(),
        host: this.host,
        verdict: 'dropped',
        direction,
        reason: dropName(b.reason[i] as Drop),
        stage: rows[b.by[i]],
        ...this.pair(src, dst),
        proto: b.l4[i] >= 0 ? b.proto[i] : undefined,
        peer: direction === 'ingress' && b.peer[i] !== 0 ? formatIpv4(b.peer[i]) : undefined,
      });
    }
  }

  /**
   * A cable installed: its event is made once the code that installed it is done, i.e. after
   * the packets that waited for the cable have left (the text and names it carries cost a
   * first packet ~25 µs on a cold switch otherwise). The time is the install's.
   */
  private installed(c: Cable): void {
    if (!this.admit()) return;
    if (this.installs.length === 0) queueMicrotask(() => this.emitInstalls());
    this.installs.push(c);
    this.installTimes.push(this.clock.now());
  }

  private emitInstalls(): void {
    for (let k = 0; k < this.installs.length; k++) {
      const c = this.installs[k]!;
      this.emit({
        time: new Date(this.installTimes[k]!).toISOString(),
        host: this.host,
        verdict: c.plugged ? 'plugged' : 'unplugged',
        direction: c.direction === CableDirection.Ingress ? 'ingress' : 'egress',
        reason: c.plugged ? '' : dropName(c.drop),
        rule: c.rule,
        ...this.pair(c.srcText, c.dstText),
        peer: c.peerHost || undefined,
      });
    }
    this.installs.length = 0;
    this.installTimes.length = 0;
  }

  private pair(src: string | undefined, dst: string | undefined): Partial<Verdict> {
    const s = src === undefined ? undefined : this.whoIs(src);
    const d = dst === undefined ? undefined : this.whoIs(dst);
    return { src, dst, srcVm: s?.vm, dstVm: d?.vm, srcTenant: s?.tenant, dstTenant: d?.tenant };
  }

  private admit(): boolean {
    if (this.bucket.take(this.clock.now())) return true;
    this.counts.lost++;
    return false;
  }

  private emit(v: Verdict): void {
    this.counts.emitted++;
    this.recent.push(v);
    if (this.recent.length > this.opts.keep) this.recent.shift();
    for (const w of this.watchers) if (matches(v, w.filter) && !w.send(v)) w.lost++;
  }
}
