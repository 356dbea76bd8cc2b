import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { checksum } from '../src/wire/checksum.js';
import { Drop } from '../src/base/drops.js';
import { IPV4_HLEN, Ipv4Parse, makeOuterTemplate, parseIpv4, writeOuter } from '../src/wire/ipv4.js';
import { formatIpv4, parseIpv4Address } from '../src/base/address.js';
import { Ipv6Parse, parseIpv6, PROTO_TCP, PROTO_UDP } from '../src/wire/ipv6.js';
import { formatIpv6, parseIpv6Address } from '../src/base/address.js';
import { ESP_DUMMY, ESP_NEXT_HEADER_DUMMY, espLength, espMaxPayload, espPadLength, readEspTrailer, writeEspTrailer } from '../src/wire/esp.js';
import { PcapReader, PcapWriter, LINKTYPE_RAW } from '../src/io/pcap.js';

test('IPv6 text parses and formats canonically (RFC 5952)', () => {
  const cases: [string, string][] = [
    ['fd9a:3c7e:51b2:1:f63b:ba70:5b22:fa85', 'fd9a:3c7e:51b2:1:f63b:ba70:5b22:fa85'],
    ['FE80::4E:56FF:FE49:1', 'fe80::4e:56ff:fe49:1'],
    ['::', '::'],
    ['::1', '::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['2001:0db8::0001', '2001:db8::1'],
    ['::ffff:10.0.0.1', '::ffff:a00:1'],
    ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
  ];
  for (const [input, want] of cases) assert.is(formatIpv6(parseIpv6Address(input)), want, input);
});

test('malformed IPv6 text is refused', () => {
  for (const bad of ['', '1::2::3', '1:2:3:4:5:6:7:8:9', 'fd00::g', '12345::', '1:2:3:4:5:6:7', '::1.2.3.256']) {
    assert.throws(() => parseIpv6Address(bad), /not an IPv6 address/, bad);
  }
});

test('IPv4 text round trips and malformed text is refused', () => {
  assert.is(formatIpv4(parseIpv4Address('10.77.0.2')), '10.77.0.2');
  assert.is(parseIpv4Address('255.255.255.255'), 0xffffffff);
  for (const bad of ['10.0.0', '10.0.0.256', 'a.b.c.d', '1.2.3.4.5']) assert.throws(() => parseIpv4Address(bad));
});

function ipv6(payload: Buffer, next: number, plen = payload.length): Buffer {
  const h = Buffer.alloc(40);
  h[0] = 0x60;
  h.writeUInt16BE(plen, 4);
  h[6] = next;
  h[7] = 64;
  parseIpv6Address('fd00::1').copy(h, 8);
  parseIpv6Address('fd00::2').copy(h, 24);
  return Buffer.concat([h, payload]);
}

/** An extension header of `len8` 8-byte units carrying next header `next`. */
function ext(next: number, len8 = 1): Buffer {
  const b = Buffer.alloc(len8 * 8);
  b[0] = next;
  b[1] = len8 - 1;
  return b;
}

function frag(next: number, offset: number, more: boolean): Buffer {
  const b = Buffer.alloc(8);
  b[0] = next;
  b.writeUInt16BE((offset << 3) | (more ? 1 : 0), 2);
  return b;
}

test('the extension-header chain: each case parses to its upper layer or its drop reason', () => {
  const udp = Buffer.alloc(8);
  const tcp = Buffer.alloc(20);
  const cases: [string, Buffer, Drop, number?, number?][] = [
    ['plain UDP', ipv6(udp, PROTO_UDP), Drop.None, PROTO_UDP, 40],
    ['hop-by-hop then destination options then TCP', ipv6(Buffer.concat([ext(60), ext(PROTO_TCP, 2), tcp]), 0), Drop.None, PROTO_TCP, 64],
    ['first fragment carries the UDP header', ipv6(Buffer.concat([frag(PROTO_UDP, 0, true), udp]), 44), Drop.None, PROTO_UDP, 48],
    ['later fragment has no upper-layer header', ipv6(Buffer.concat([frag(PROTO_UDP, 100, false), Buffer.alloc(16)]), 44), Drop.None, PROTO_UDP, -1],
    ['hop-by-hop not first', ipv6(Buffer.concat([ext(0), ext(PROTO_UDP), udp]), 60), Drop.Ipv6ExtOrder],
    ['nine destination-options headers', ipv6(Buffer.concat([...Array.from({ length: 9 }, () => ext(60)), udp]), 60), Drop.Ipv6ExtTooLong],
    ['header length past the end', ipv6(ext(PROTO_UDP, 4).subarray(0, 8), 60), Drop.Ipv6ExtTruncated],
    ['TCP header cut short', ipv6(Buffer.alloc(10), PROTO_TCP), Drop.Ipv6Truncated],
    ['payload length beyond the data', ipv6(udp, PROTO_UDP, 100), Drop.Ipv6Truncated],
    ['payload length zero', ipv6(udp, PROTO_UDP, 0), Drop.Ipv6BadLength],
    ['shorter than a header', Buffer.alloc(39, 0x60), Drop.Ipv6Truncated],
  ];
  const out = new Ipv6Parse();
  for (const [name, pkt, want, proto, l4] of cases) {
    assert.is(parseIpv6(pkt, 0, pkt.length, out), want, name);
    if (want === Drop.None) {
      assert.is(out.proto, proto, `${name}: protocol`);
      assert.is(out.l4, l4, `${name}: upper-layer offset`);
    }
  }
  const v4 = ipv6(udp, PROTO_UDP);
  v4[0] = 0x45;
  assert.is(parseIpv6(v4, 0, v4.length, out), Drop.Ipv6BadVersion);
});

test('an outer IPv4 header from its template verifies and parses back', () => {
  const buf = Buffer.alloc(100);
  writeOuter(buf, 10, makeOuterTemplate(parseIpv4Address('10.77.0.1'), parseIpv4Address('10.77.0.2'), 50), 80, 0xb8);
  assert.is(checksum(buf, 10, IPV4_HLEN), 0);
  const p = new Ipv4Parse();
  assert.is(parseIpv4(buf, 10, 80, p), Drop.None);
  assert.is(p.proto, 50);
  assert.is(formatIpv4(p.src), '10.77.0.1');
  assert.is(p.totalLength, 80);
  buf[10 + 8] ^= 1; // TTL changed, checksum not
  assert.is(parseIpv4(buf, 10, 80, p), Drop.Ipv4BadChecksum);
});

test('ESP padding makes payload + 2 a multiple of 4 and the trailer reads back', () => {
  for (let len = 0; len < 40; len++) {
    assert.is((len + espPadLength(len) + 2) % 4, 0, `len ${len}`);
    const buf = Buffer.alloc(64, 0xee);
    const end = writeEspTrailer(buf, len, len);
    assert.is(readEspTrailer(buf, 0, end), len);
  }
  const buf = Buffer.alloc(16);
  const end = writeEspTrailer(buf, 5, 5);
  buf[5] = 9; // padding must read 1, 2, 3...
  assert.is(readEspTrailer(buf, 0, end), -1);
  buf[5] = 1;
  buf[end - 1] = 4;
  assert.is(readEspTrailer(buf, 0, end), -2);
  assert.is(readEspTrailer(buf, 0, writeEspTrailer(buf, 5, 5, ESP_NEXT_HEADER_DUMMY)), ESP_DUMMY); // a dummy packet (RFC 4303 2.6)
});

test('the guest MTU on a 1500-byte underlay is 1446: the largest that fits ESP + IPv4', () => {
  const mtu = espMaxPayload(1500 - 20);
  assert.is(mtu, 1446);
  assert.ok(20 + espLength(mtu) <= 1500);
  assert.ok(20 + espLength(mtu + 1) > 1500);
});

test('pcap files round trip, and a pcapng file is refused with a hint', () => {
  const dir = mkdtempSync(join(tmpdir(), 'nvi-test-'));
  const file = join(dir, 'x.pcap');
  const w = new PcapWriter(file, LINKTYPE_RAW);
  const packets = [Buffer.from('hello'), Buffer.alloc(3000, 7), Buffer.alloc(0)];
  packets.forEach((p, k) => w.write(p, 0, p.length, 1_700_000_000_000_000 + k * 1500));
  w.close();
  const r = new PcapReader(file);
  assert.is(r.linkType, LINKTYPE_RAW);
  const got = [...r.records()].map((rec) => ({ data: Buffer.from(rec.data), t: rec.timeUs }));
  r.close();
  assert.is(got.length, 3);
  got.forEach((g, k) => {
    assert.ok(g.data.equals(packets[k]), `record ${k}`);
    assert.is(g.t, 1_700_000_000_000_000 + k * 1500);
  });
  const ng = join(dir, 'x.pcapng');
  writeFileSync(ng, Buffer.concat([Buffer.from('0a0d0d0a1c0000004d3c2b1a01000000', 'hex'), Buffer.alloc(12, 0xff)]));
  assert.throws(() => new PcapReader(ng), /pcapng; convert it with: editcap -F pcap/);
});

test.run();
