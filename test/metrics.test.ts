// The Prometheus exposition of a switch's counters (src/switch/metrics.ts): Prometheus' own
// checker accepts it (promtool, installed by scripts/setup.sh), every sample parses, and the
// values are the snapshot's: drops by stage and reason, packets by fate, ports, the upcall
// histogram (cumulative), the key exchange's refusals by reason.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Histogram } from '../src/base/histogram.js';
import { SwitchMetrics, type StatsView } from '../src/switch/metrics.js';
import { promtool, samples } from './prom-text.js';

function view(): StatsView {
  const latency = new Histogram();
  for (const s of [0.0004, 0.003, 0.003, 0.2]) latency.observe(s);
  const pipe = (n: number) => ({
    in: 100 * n, reinjected: n, delivered: 40 * n, underlay: 50 * n, consumed: 3, replied: 2, held: 1, dropped: 4 * n, errorsSent: 0,
    drops: { 'spoof/source': 3 * n, 'policy/cross-tenant': n },
    stages: { 'source-check': { drops: { 'spoof/source': 3 * n } }, 'cable-lookup': { held: 1, drops: { 'policy/cross-tenant': n } }, encap: { underlay: 50 * n } },
  });
  return {
    policyRevision: 7,
    egress: pipe(1),
    ingress: pipe(2),
    upcall: { misses: 9, refreshes: 1, restarted: 2, released: 12, queued: 0, decisions: { plugged: 6, unplugged: { 'policy/cross-tenant': 3 } }, latency: latency.snapshot() },
    lookups: { lookups: 9, latest: 0, storeErrors: 1 },
    verifier: { verified: 8, refused: 1, rateLimited: 0 },
    kx: { initsSent: 5, accepted: 4, refusals: { 'verify/bad-signature': 2 } },
    store: { lists: 1, changes: 5, revision: 42, fresh: true, policyRefusals: { unsigned: 1, 'bad-signature': 0, 'older-revision': 0 }, epochWriteErrors: 0 },
    cables: { reevaluated: 0, rekeys: 3, egress: 4, ingress: 2, inboundSas: 3, cipherKeys: 6, cipherContexts: 4, windowsWithBlocks: 2 },
    ports: [
      { vm: 'web1', name: 'nvi-web1', up: true, rx: 10, tx: 11, rxBytes: 1000, txBytes: 1100, txRefused: 0, txBusy: 0 },
      { vm: 'web"3', name: 'nvi-web3', up: false, rx: 1, tx: 0, rxBytes: 64, txBytes: 0, txRefused: 2, txBusy: 1 },
    ],
    vms: { attached: 1, detached: 0 },
    underlay: { rx: 70, rxBytes: 7000, rxErrors: 0, tx: 60, txBytes: 6000, txRefused: 0, txBusy: 0 },
  };
}

test('promtool accepts the exposition; no lint complaint', async () => {
  const text = await new SwitchMetrics(view).text();
  const r = promtool(text);
  assert.is(r.code, 0, r.out);
  assert.is(r.out.trim(), '', r.out);
});

test('promtool is a real check: it refuses a counter without _total and a duplicate sample', () => {
  const bad = '# HELP nvi_x Something.\n# TYPE nvi_x counter\nnvi_x 1\nnvi_x 2\n';
  assert.is.not(promtool(bad).code, 0);
});

test('the samples are the snapshot: packets by fate, drops by stage and reason, ports, underlay, store, kx refusals', async () => {
  const m = samples(await new SwitchMetrics(view).text());
  assert.is(m.get('nvi_packets_total{pipeline="egress",fate="underlay"}'), 50);
  assert.is(m.get('nvi_packets_total{pipeline="ingress",fate="dropped"}'), 8);
  assert.is(m.get('nvi_packets_in_total{pipeline="ingress"}'), 200);
  assert.is(m.get('nvi_drops_total{pipeline="egress",stage="source-check",reason="spoof/source"}'), 3);
  assert.is(m.get('nvi_drops_total{pipeline="ingress",stage="cable-lookup",reason="policy/cross-tenant"}'), 2);
  assert.is(m.get('nvi_port_received_bytes_total{port="nvi-web1",vm="web1"}'), 1000);
  assert.is(m.get('nvi_port_up{port="nvi-web3",vm="web\\"3"}'), 0, 'a quote in a label is escaped');
  assert.is(m.get('nvi_port_tx_refused_total{port="nvi-web3",vm="web\\"3"}'), 2);
  assert.is(m.get('nvi_underlay_sent_bytes_total'), 6000);
  assert.is(m.get('nvi_store_revision'), 42);
  assert.is(m.get('nvi_store_fresh'), 1);
  assert.is(m.get('nvi_store_changes_total'), 5);
  assert.is(m.get('nvi_store_policy_refusals_total{reason="unsigned"}'), 1);
  assert.is(m.get('nvi_kx_inits_sent_total'), 5);
  assert.is(m.get('nvi_kx_refusals_total{reason="verify/bad-signature"}'), 2);
  assert.is(m.get('nvi_cables_installed_total{decision="unplugged",reason="policy/cross-tenant"}'), 3);
  assert.is(m.get('nvi_cables{direction="egress"}'), 4);
  assert.is(m.get('nvi_cables_rekeys_total'), 3);
  assert.is(m.get('nvi_replay_windows_with_blocks'), 2);
  assert.is(m.get('nvi_cipher_contexts'), 4);
  assert.is(m.get('nvi_lookups_store_errors_total'), 1);
  assert.is(m.get('nvi_policy_revision'), 7);
  assert.ok(![...m.keys()].some((k) => /[0-9a-f]{1,4}:[0-9a-f]{1,4}:/.test(k)), 'no address in any label');
});

test('the upcall histogram is cumulative, ends at +Inf = count, and its sum is the observations', async () => {
  const m = samples(await new SwitchMetrics(view).text());
  const b = (le: string): number | undefined => m.get(`nvi_upcall_duration_seconds_bucket{le="${le}"}`);
  assert.is(b('0.00025'), 0);
  assert.is(b('0.0005'), 1);
  assert.is(b('0.0025'), 1);
  assert.is(b('0.005'), 3);
  assert.is(b('0.25'), 4);
  assert.is(b('+Inf'), 4);
  assert.is(m.get('nvi_upcall_duration_seconds_count'), 4);
  assert.ok(Math.abs(m.get('nvi_upcall_duration_seconds_sum')! - 0.2064) < 1e-9);
});

test('each scrape reads a new snapshot', async () => {
  let v = view();
  const metrics = new SwitchMetrics(() => v);
  assert.is(samples(await metrics.text()).get('nvi_upcalls_total'), 9);
  v = { ...v, upcall: { ...v.upcall, misses: 10 } };
  assert.is(samples(await metrics.text()).get('nvi_upcalls_total'), 10);
});

test.run();
