// The sending host's side of ESP when the cipher fails: a packet whose seal failed is
// dropped under esp/seal-failed and never reaches the underlay (it would carry an ESP header
// over plaintext), the other packets of the same batch go out sealed, and neither the SA
// nor the cable counts the failed packet as sent.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BATCH_MAX } from '../src/dataplane/batch.js';
import type { Cable } from '../src/dataplane/cable.js';
import { EspJobs, NodeEspCipher, type EspAlgorithm, type EspCipher, type KeyMaterial } from '../src/esp/esp-cipher.js';
import { ESP_OFF_SEQ } from '../src/wire/esp.js';
import { IPV4_HLEN } from '../src/wire/ipv4.js';
import type { Host } from '../src/switch/host.js';
import { echoFrame, frames, openOffline } from './offline-fixture.js';

const ESP = 50;

/**
 * The real cipher, except that the jobs whose ESP sequence number is in `failSeq` fail the
 * way a cipher reports a failure: ok[j] = 0 and the packet left as it was (plaintext).
 */
class FailingSeal implements EspCipher {
  readonly name = 'failing-seal';
  readonly failSeq = new Set<number>();
  private readonly inner = new NodeEspCipher();
  private readonly sub = new EspJobs(BATCH_MAX);

  addKey(alg: EspAlgorithm, key: Uint8Array, salt: Uint8Array): number {
    return this.inner.addKey(alg, key, salt);
  }

  removeKey(handle: number): void {
    this.inner.removeKey(handle);
  }

  exportKey(handle: number): KeyMaterial | undefined {
    return this.inner.exportKey(handle);
  }

  get keyCount(): number {
    return this.inner.keyCount;
  }

  readonly contexts = 0;

  trim(): number {
    return 0;
  }

  seal(buf: Buffer, jobs: EspJobs): void {
    const sub = this.sub;
    sub.count = 0;
    const from: number[] = [];
    for (let j = 0; j < jobs.count; j++) {
      jobs.ok[j] = 0;
      if (this.failSeq.has(buf.readUInt32BE(jobs.espOff[j] + ESP_OFF_SEQ))) continue;
      sub.add(jobs.key[j], jobs.espOff[j], jobs.ptLen[j], jobs.seqHi[j], jobs.packet[j]);
      from.push(j);
    }
    this.inner.seal(buf, sub);
    from.forEach((j, s) => (jobs.ok[j] = sub.ok[s]));
  }

  open(buf: Buffer, jobs: EspJobs): void {
    this.inner.open(buf, jobs);
  }
}

function egressCable(h: Host): Cable {
  const cables = [...h.egressCables.all()].filter((c) => c.sa !== null);
  assert.is(cables.length, 1, 'one ESP cable web1 -> web2');
  return cables[0];
}

test('a packet whose seal failed is dropped as esp/seal-failed and never handed to the underlay', async () => {
  const cipher = new FailingSeal();
  const o = await openOffline({ carry: false, cipher });
  const web1 = o.config.vms.get('web1')!.identity;
  const list = Array.from({ length: 6 }, (_, k) => echoFrame(o.config, 'web1', 'web2', k + 1));
  // One packet plugs the cable and gets sequence number 1; the other five go out as one batch.
  await o.off.sendFrames('web1', frames(list.slice(0, 1)));
  cipher.failSeq.add(3);
  await o.off.sendFrames('web1', frames(list.slice(1), 1_700_000_000_000_100));
  const h1 = o.off.hosts.get('h1')!;

  assert.is(h1.egress.counters.dropsByName()['esp/seal-failed'], 1, 'the failed packet is counted under its reason');
  const esp = o.off.underlay.filter((p) => p.data[9] === ESP).map((p) => p.data);
  assert.equal(esp.map((p) => p.readUInt32BE(IPV4_HLEN + ESP_OFF_SEQ)), [1, 2, 4, 5, 6], 'sequence number 3 never left');
  for (const p of esp) assert.is(p.indexOf(web1), -1, 'no packet on the underlay shows an inner address in the clear');
  const c = h1.egress.counters;
  assert.is(c.underlay, 5);
  assert.is(c.in, c.underlay + c.dropped() + c.held - c.reinjected, 'every packet counted once');
  const cable = egressCable(h1);
  assert.is(cable.sa!.packets, 6, 'the SA counts the sequence numbers it took: the one whose seal failed too (its IV was used)');
  assert.is(cable.packets, 5, 'the cable counts the packets it sent');
  assert.is(cable.drops, 1, 'the cable counts the dropped one');
  o.off.close();
});

test('every packet of a batch whose seals all failed is dropped, and the next batch goes out', async () => {
  const cipher = new FailingSeal();
  const o = await openOffline({ carry: false, cipher });
  const list = Array.from({ length: 4 }, (_, k) => echoFrame(o.config, 'web1', 'web2', k + 1));
  await o.off.sendFrames('web1', frames(list.slice(0, 1)));
  for (const seq of [2, 3]) cipher.failSeq.add(seq);
  await o.off.sendFrames('web1', frames(list.slice(1, 3), 1_700_000_000_000_100));
  await o.off.sendFrames('web1', frames(list.slice(3), 1_700_000_000_000_200));
  const h1 = o.off.hosts.get('h1')!;
  assert.is(h1.egress.counters.dropsByName()['esp/seal-failed'], 2);
  const esp = o.off.underlay.filter((p) => p.data[9] === ESP).map((p) => p.data);
  assert.equal(esp.map((p) => p.readUInt32BE(IPV4_HLEN + ESP_OFF_SEQ)), [1, 4], 'a failed number is skipped, never reused');
  assert.is(egressCable(h1).sa!.packets, 4, 'the SA counts its 4 sequence numbers taken, 2 of them failed');
  o.off.close();
});

test.run();
