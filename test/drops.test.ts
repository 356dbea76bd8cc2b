// Drop codes are part of the switch's interface: the key exchange sends a refusal's code to
// the peer host, and operators' tools key on codes and names. This table fixes them; a new
// reason is appended here with the next free code, an existing row never changes.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DROP_COUNT, DROP_INFO, dropName, isDrop, type Drop } from '../src/base/drops.js';

const FIXED: readonly (readonly [number, string])[] = [
  [0, 'none'],
  [1, 'eth/truncated'],
  [2, 'eth/not-ipv6'],
  [3, 'eth/too-big'],
  [4, 'eth/offload-malformed'],
  [5, 'spoof/mac'],
  [6, 'ipv6/truncated'],
  [7, 'ipv6/bad-version'],
  [8, 'ipv6/bad-length'],
  [9, 'ipv6/ext-truncated'],
  [10, 'ipv6/ext-too-long'],
  [11, 'ipv6/ext-order'],
  [12, 'nd/malformed'],
  [13, 'nd/multicast-not-forwarded'],
  [14, 'nd/router-only'],
  [15, 'spoof/source'],
  [16, 'dst/not-unicast'],
  [17, 'dst/own-identity'],
  [18, 'upcall/queue-full'],
  [19, 'upcall/rate-limited'],
  [20, 'resolve/not-found'],
  [21, 'resolve/store-error'],
  [22, 'verify/unknown-ca'],
  [23, 'verify/expired'],
  [24, 'verify/not-yet-valid'],
  [25, 'verify/san-mismatch'],
  [26, 'verify/identity-not-derived'],
  [27, 'verify/bad-signature'],
  [28, 'verify/wrong-host-address'],
  [29, 'verify/old-epoch'],
  [30, 'verify/host-cert-mismatch'],
  [31, 'verify/malformed'],
  [32, 'policy/default-deny'],
  [33, 'policy/unplug-rule'],
  [34, 'policy/cross-tenant'],
  [35, 'policy/level'],
  [36, 'policy/diode'],
  [37, 'policy/time-window'],
  [38, 'policy/proto-port'],
  [39, 'policy/initiate-only'],
  [40, 'policy/fragment'],
  [41, 'policy/flow-table-full'],
  [42, 'sa/negotiation-failed'],
  [43, 'sa/exhausted'],
  [44, 'mtu/too-big'],
  [45, 'ipv4/truncated'],
  [46, 'ipv4/bad-version'],
  [47, 'ipv4/bad-header'],
  [48, 'ipv4/bad-checksum'],
  [49, 'ipv4/bad-length'],
  [50, 'ipv4/fragment'],
  [51, 'ipv4/not-for-us'],
  [52, 'ipv4/unknown-protocol'],
  [53, 'esp/truncated'],
  [54, 'esp/unknown-spi'],
  [55, 'esp/wrong-peer'],
  [56, 'esp/replay'],
  [57, 'esp/left-of-window'],
  [58, 'esp/auth-failed'],
  [59, 'esp/bad-trailer'],
  [60, 'esp/bad-next-header'],
  [61, 'ip6in4/wrong-peer'],
  [62, 'ip6in4/encryption-required'],
  [63, 'inner/pair-mismatch'],
  [64, 'inner/unknown-destination'],
  [65, 'tx/underlay-error'],
  [66, 'tx/port-error'],
  [67, 'esp/seal-failed'],
  [68, 'resolve/store-unavailable'],
  [69, 'port/gone'],
  [70, 'vm/moved'],
  [71, 'port/down'],
  [72, 'dhcp/malformed'],
  [73, 'dhcp/server-only'],
  [74, 'upcall/port-quota'],
];

test('every code keeps its name', () => {
  for (const [code, name] of FIXED) assert.is(dropName(code as Drop), name, `code ${code}`);
});

test('every reason is in the fixed table, so a new one cannot slip in without a code of its own', () => {
  const known = Object.keys(DROP_INFO).map(Number).sort((a, b) => a - b);
  assert.equal(known, FIXED.map(([code]) => code));
  assert.is(DROP_COUNT, Math.max(...known) + 1);
});

test('names are unique, read stage/reason, and each has a description', () => {
  const names = Object.values(DROP_INFO).map(([name]) => name);
  assert.is(new Set(names).size, names.length);
  for (const [name, description] of Object.values(DROP_INFO)) {
    if (name !== 'none') assert.match(name, /^[a-z0-9]+\/[a-z0-9-]+$/);
    assert.ok(description.length > 10, `${name} has no description`);
  }
});

test('isDrop accepts exactly the known codes (codes from the wire are checked with it)', () => {
  assert.ok(isDrop(0) && isDrop(FIXED[FIXED.length - 1][0]));
  for (const bad of [-1, DROP_COUNT, 1.5, 65535, NaN]) assert.not.ok(isDrop(bad), String(bad));
});

test.run();
