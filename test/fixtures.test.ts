// fixtures/pcap: every file opens, is listed in the manifest with counts that add up, reads
// in tshark frame for frame, and holds what its generator says. tshark is required: the
// test fails (it does not skip) when it is missing.

import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parse as parseYaml } from 'yaml';
import { espMaxPayload } from '../src/wire/esp.js';
import { DROP_INFO } from '../src/base/drops.js';
import { LINKTYPE_ETHERNET, PcapReader, readPcap } from '../src/io/pcap.js';
import { buildCases } from '../fixtures/make/bad-frames.js';
import { addVerdict, Classifier, emptyCounts, innerMtu, totalOf, type Counts } from '../fixtures/make/classify.js';
import { loadLab, PCAP_DIR } from '../fixtures/make/frames.js';
import { CAPTURES } from '../fixtures/make/manifest.js';

interface Entry {
  file: string;
  port: string;
  about: string;
  frames: number;
  expect: Counts;
}

const lab = loadLab();
const pcaps = readdirSync(PCAP_DIR).filter((f) => f.endsWith('.pcap')).sort();
const manifest = parseYaml(readFileSync(resolve(PCAP_DIR, 'manifest.yaml'), 'utf8')) as { fixtures: Entry[] };
const entries = manifest.fixtures;
const byFile = new Map(entries.map((e) => [e.file, e]));
const frameCount = (file: string): number => readPcap(resolve(PCAP_DIR, file)).records.length;

test('there are fixtures: the kernel captures and the hand-made cases', () => {
  for (const c of CAPTURES) assert.ok(pcaps.includes(c.file), `${c.file} missing: run fixtures/make/capture.sh as root`);
  for (const c of buildCases(lab)) assert.ok(pcaps.includes(c.file), `${c.file} missing: run node dist/fixtures/make/bad-frames.js`);
});

test('every pcap opens with PcapReader, link type Ethernet, at least one frame', () => {
  for (const f of pcaps) {
    const r = new PcapReader(resolve(PCAP_DIR, f));
    try {
      assert.is(r.linkType, LINKTYPE_ETHERNET, `${f}: link type`);
      let n = 0;
      for (const rec of r.records()) {
        n++;
        assert.ok(rec.data.length === rec.originalLength, `${f} frame ${n}: cut at the snap length`);
      }
      assert.ok(n > 0, `${f}: no frames`);
    } finally {
      r.close();
    }
  }
});

test('the manifest lists every pcap once, and every file it lists exists', () => {
  assert.is(byFile.size, entries.length, 'a file is listed twice');
  for (const f of pcaps) assert.ok(byFile.has(f), `${f} is not in manifest.yaml`);
  for (const e of entries) assert.ok(existsSync(resolve(PCAP_DIR, e.file)), `manifest lists ${e.file}, which does not exist`);
});

test('each entry names a VM port, says what it is, and its counts add up to the frames in the file', () => {
  const reasons = new Set(Object.values(DROP_INFO).map(([name]) => name));
  for (const e of entries) {
    assert.ok(lab.vms.has(e.port), `${e.file}: port ${e.port} is not a VM of nvi-switch.yaml`);
    assert.type(e.about, 'string', `${e.file}: about`);
    assert.ok(e.about.length > 0, `${e.file}: about is empty`);
    for (const [name, n] of Object.entries(e.expect.drops)) {
      assert.ok(reasons.has(name) && name !== 'none', `${e.file}: ${name} is not a drop reason of src/base/drops.ts`);
      assert.ok(Number.isInteger(n) && n > 0, `${e.file}: ${name}: ${n}`);
    }
    const n = frameCount(e.file);
    assert.is(e.frames, n, `${e.file}: frames`);
    assert.is(totalOf(e.expect), n, `${e.file}: delivered + consumed + drops`);
  }
});

test('the split captures add up to the whole session', () => {
  const parts = CAPTURES.filter((c) => c.file !== 'session-web1.pcap').map((c) => frameCount(c.file));
  assert.is(parts.reduce((a, b) => a + b, 0), frameCount('session-web1.pcap'));
});

test('the hand-made files hold exactly what bad-frames.ts builds (regenerate when it changes)', () => {
  for (const c of buildCases(lab)) {
    const recs = readPcap(resolve(PCAP_DIR, c.file)).records;
    assert.is(recs.length, c.frames.length, `${c.file}: frames`);
    recs.forEach((r, k) => assert.ok(r.data.equals(c.frames[k]), `${c.file} frame ${k + 1} differs`));
    assert.equal(byFile.get(c.file)?.expect, c.expect, `${c.file}: manifest expectation`);
  }
});

test('the reference classifier agrees with every expectation in the manifest', () => {
  for (const e of entries) {
    const classifier = new Classifier(lab, lab.vm(e.port));
    const got = emptyCounts();
    const why: string[] = [];
    readPcap(resolve(PCAP_DIR, e.file)).records.forEach((r, k) => {
      const v = classifier.classify(r.data);
      addVerdict(got, v);
      why.push(`  ${k + 1}: ${v.reason ?? v.outcome}: ${v.why}`);
    });
    assert.equal(got, e.expect, `${e.file}:\n${why.join('\n')}`);
  }
});

test('the largest packet that fits the underlay is 1446 bytes, as src/wire/esp.ts computes it', () => {
  assert.is(innerMtu(1500), 1446);
  assert.is(innerMtu(lab.cfg.underlay.mtu), espMaxPayload(lab.cfg.underlay.mtu - 20));
});

// ---- tshark ------------------------------------------------------------------------------

interface TsharkResult {
  frames: number;
  /** Frame numbers with a checksum tshark finds bad (ICMPv6, UDP, TCP). */
  badChecksums: number[];
}

function tshark(file: string): Promise<TsharkResult> {
  const args = [
    '-r', file, '-o', 'tcp.check_checksum:TRUE', '-o', 'udp.check_checksum:TRUE',
    '-T', 'fields', '-E', 'separator=/t',
    '-e', 'frame.number', '-e', 'icmpv6.checksum.status', '-e', 'udp.checksum.status', '-e', 'tcp.checksum.status',
  ];
  return new Promise((ok, fail) => {
    execFile('tshark', args, { maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err && (err as NodeJS.ErrnoException).code === 'ENOENT') {
        fail(new Error('tshark is not installed; the fixtures test needs it: apt-get install tshark'));
        return;
      }
      if (err) {
        fail(new Error(`tshark -r ${file} failed: ${stderr.trim() || err.message}`));
        return;
      }
      const lines = stdout.split('\n').filter((l) => l !== '');
      const badChecksums: number[] = [];
      for (const l of lines) {
        const [num, ...status] = l.split('\t');
        // Wireshark checksum status: 0 bad, 1 good, 2 unverified, 3 not present.
        if (status.some((s) => s.split(',').includes('0'))) badChecksums.push(Number(num));
      }
      ok({ frames: lines.length, badChecksums });
    });
  });
}

async function tsharkAll(files: readonly string[]): Promise<Map<string, TsharkResult>> {
  const out = new Map<string, TsharkResult>();
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < files.length) {
      const f = files[next++];
      out.set(f, await tshark(resolve(PCAP_DIR, f)));
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  return out;
}

test('tshark reads every file frame for frame; checksums are right except where a case is about one', async () => {
  const results = await tsharkAll(pcaps);
  const badOnPurpose = new Map([['bad-nd-ns-checksum.pcap', [1]]]);
  for (const f of pcaps) {
    const r = results.get(f)!;
    assert.is(r.frames, frameCount(f), `${f}: tshark frame count`);
    assert.equal(r.badChecksums, badOnPurpose.get(f) ?? [], `${f}: frames with a bad checksum`);
  }
});

test.run();
