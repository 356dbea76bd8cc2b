// Every packet the switch does not deliver ends here, under one named reason. The list is
// declared once so that `stats`, `replay` and the tests print the same names, and so that
// the counters add up: packets in = delivered + consumed + held + sum(drops).
//
// Names read "stage/reason", as in VPP's /err/<node>/<reason>.
//
// Codes are explicit and stable: the key exchange carries a refusal's code on the wire, and
// stats consumers may key on it. Never renumber or reuse a code; a new reason takes the next
// free one (test/drops.test.ts holds the table fixed).

export const enum Drop {
  None = 0,
  // Ethernet, from a VM port.
  EthTruncated = 1,
  EthNotIpv6 = 2,
  EthTooBig = 3,
  EthOffloadMalformed = 4,
  SpoofMac = 5,
  // IPv6 header and extension headers (outer from a VM, inner after decapsulation).
  Ipv6Truncated = 6,
  Ipv6BadVersion = 7,
  Ipv6BadLength = 8,
  Ipv6ExtTruncated = 9,
  Ipv6ExtTooLong = 10,
  Ipv6ExtOrder = 11,
  // Neighbour discovery and multicast: the switch answers, nothing is flooded.
  NdMalformed = 12,
  NdMulticastNotForwarded = 13,
  NdRouterOnly = 14,
  // Anti-spoofing and destination checks.
  SpoofSource = 15,
  DstNotUnicast = 16,
  DstOwnIdentity = 17,
  // Cable cache and upcall.
  UpcallQueueFull = 18,
  UpcallRateLimited = 19,
  ResolveNotFound = 20,
  ResolveStoreError = 21,
  // Certificate and binding verification (SDN Algorithms 1 and 2, step 3).
  VerifyUnknownCa = 22,
  VerifyExpired = 23,
  VerifyNotYetValid = 24,
  VerifySanMismatch = 25,
  VerifyIdentityNotDerived = 26,
  VerifyBadSignature = 27,
  VerifyWrongHostAddress = 28,
  VerifyOldEpoch = 29,
  VerifyHostCertMismatch = 30,
  VerifyMalformed = 31,
  // Policy (SDN Algorithms 1 and 2, steps 4 and 5).
  PolicyDefaultDeny = 32,
  PolicyUnplugRule = 33,
  PolicyCrossTenant = 34,
  PolicyLevel = 35,
  PolicyDiode = 36,
  PolicyTimeWindow = 37,
  PolicyProtoPort = 38,
  PolicyInitiateOnly = 39,
  PolicyFragment = 40,
  PolicyFlowTableFull = 41,
  // Key exchange and SAs.
  SaNegotiationFailed = 42,
  SaExhausted = 43,
  // Encapsulation and MTU.
  MtuTooBig = 44,
  // Underlay IPv4.
  Ipv4Truncated = 45,
  Ipv4BadVersion = 46,
  Ipv4BadHeader = 47,
  Ipv4BadChecksum = 48,
  Ipv4BadLength = 49,
  Ipv4Fragment = 50,
  Ipv4NotForUs = 51,
  Ipv4UnknownProtocol = 52,
  // ESP (RFC 4303).
  EspTruncated = 53,
  EspUnknownSpi = 54,
  EspWrongPeer = 55,
  EspReplay = 56,
  EspLeftOfWindow = 57,
  EspAuthFailed = 58,
  EspBadTrailer = 59,
  EspBadNextHeader = 60,
  // Plain IPv6-in-IPv4 (RFC 4213).
  Ip6in4WrongPeer = 61,
  Ip6in4EncryptionRequired = 62,
  // After decapsulation.
  InnerPairMismatch = 63,
  InnerUnknownDestination = 64,
  // Transmit.
  TxUnderlayError = 65,
  TxPortError = 66,

  // Added after the codes above were fixed: new reasons take the next free code.
  EspSealFailed = 67,
  ResolveStoreUnavailable = 68,
  PortGone = 69,
  VmMoved = 70,
  PortDown = 71,
  DhcpMalformed = 72,
  DhcpServerOnly = 73,
  UpcallPortQuota = 74,
}

/** [name, description] for each reason, indexed by Drop. */
export const DROP_INFO: Readonly<Record<Drop, readonly [string, string]>> = {
  [Drop.None]: ['none', 'not dropped'],
  [Drop.EthTruncated]: ['eth/truncated', 'frame shorter than an Ethernet header'],
  [Drop.EthNotIpv6]: ['eth/not-ipv6', 'EtherType is not IPv6 (ARP, IPv4 and VLAN tags are not switched)'],
  [Drop.EthTooBig]: ['eth/too-big', 'frame larger than the port accepts'],
  [Drop.EthOffloadMalformed]: ['eth/offload-malformed', 'offloaded frame (TSO, partial checksum) whose virtio-net header does not fit its contents'],
  [Drop.SpoofMac]: ['spoof/mac', 'Ethernet source is not the MAC of the VM port'],
  [Drop.Ipv6Truncated]: ['ipv6/truncated', 'shorter than an IPv6 header or than its payload length says'],
  [Drop.Ipv6BadVersion]: ['ipv6/bad-version', 'IP version field is not 6'],
  [Drop.Ipv6BadLength]: ['ipv6/bad-length', 'payload length is zero (jumbogram) or inconsistent'],
  [Drop.Ipv6ExtTruncated]: ['ipv6/ext-truncated', 'an extension header runs past the end of the packet'],
  [Drop.Ipv6ExtTooLong]: ['ipv6/ext-too-long', 'extension-header chain longer than the switch walks'],
  [Drop.Ipv6ExtOrder]: ['ipv6/ext-order', 'hop-by-hop options header not first (RFC 8200 4.1)'],
  [Drop.NdMalformed]: ['nd/malformed', 'neighbour-discovery message that fails RFC 4861 validation'],
  [Drop.NdRouterOnly]: ['nd/router-only', 'router advertisements and redirects come only from the switch'],
  [Drop.NdMulticastNotForwarded]: ['nd/multicast-not-forwarded', 'multicast from a VM: nothing is flooded beyond the host'],
  [Drop.SpoofSource]: ['spoof/source', 'IPv6 source is not the identity of the VM port'],
  [Drop.DstNotUnicast]: ['dst/not-unicast', 'destination is unspecified, loopback, link-local or otherwise not an identity'],
  [Drop.DstOwnIdentity]: ['dst/own-identity', 'destination is the sender itself'],
  [Drop.UpcallQueueFull]: ['upcall/queue-full', 'too many packets already wait for this or all pending lookups'],
  [Drop.UpcallRateLimited]: ['upcall/rate-limited', 'too many misses to resolve right now'],
  [Drop.UpcallPortQuota]: ['upcall/port-quota', "the VM's port sent more new destinations a second than its quota (switch.upcall.portMissesPerSecond)"],
  [Drop.ResolveNotFound]: ['resolve/not-found', 'the mapping store has no binding for the identity'],
  [Drop.ResolveStoreError]: ['resolve/store-error', 'the mapping store answered with something unusable (a record for another identity)'],
  [Drop.VerifyUnknownCa]: ['verify/unknown-ca', 'certificate does not chain to the trust anchor'],
  [Drop.VerifyExpired]: ['verify/expired', 'certificate or binding has expired'],
  [Drop.VerifyNotYetValid]: ['verify/not-yet-valid', 'certificate or binding is not valid yet'],
  [Drop.VerifySanMismatch]: ['verify/san-mismatch', 'certificate subjectAltName is not the identity'],
  [Drop.VerifyIdentityNotDerived]: ['verify/identity-not-derived', 'identity is not derived from the certified key'],
  [Drop.VerifyBadSignature]: ['verify/bad-signature', 'binding signature does not verify with the certified key'],
  [Drop.VerifyWrongHostAddress]: ['verify/wrong-host-address', 'binding is for another host address than the packet came from'],
  [Drop.VerifyOldEpoch]: ['verify/old-epoch', 'binding epoch is older than one already seen (replayed after a migration)'],
  [Drop.VerifyHostCertMismatch]: ['verify/host-cert-mismatch', 'host certificate does not match the binding host'],
  [Drop.VerifyMalformed]: ['verify/malformed', 'binding record or certificate cannot be parsed'],
  [Drop.PolicyDefaultDeny]: ['policy/default-deny', 'no rule plugs this pair'],
  [Drop.PolicyUnplugRule]: ['policy/unplug-rule', 'an unplug rule matches this pair'],
  [Drop.PolicyCrossTenant]: ['policy/cross-tenant', 'the identities belong to different tenants and no rule names both'],
  [Drop.PolicyLevel]: ['policy/level', 'data may not flow from a higher to a lower security level'],
  [Drop.PolicyDiode]: ['policy/diode', 'reverse direction of a data-diode flow'],
  [Drop.PolicyTimeWindow]: ['policy/time-window', 'outside the time window of the rule'],
  [Drop.PolicyProtoPort]: ['policy/proto-port', 'protocol or port not allowed on this cable'],
  [Drop.PolicyInitiateOnly]: ['policy/initiate-only', 'not a reply to a flow the allowed side opened'],
  [Drop.PolicyFragment]: ['policy/fragment', 'fragment on a cable whose policy needs the ports'],
  [Drop.PolicyFlowTableFull]: ['policy/flow-table-full', 'too many open initiate-only flows on this pair'],
  [Drop.SaNegotiationFailed]: ['sa/negotiation-failed', 'the peer host refused or did not answer the key exchange'],
  [Drop.SaExhausted]: ['sa/exhausted', 'sequence-number space of the SA used up; waiting for a new SA'],
  [Drop.MtuTooBig]: ['mtu/too-big', 'packet does not fit the underlay after encapsulation (Packet Too Big sent)'],
  [Drop.Ipv4Truncated]: ['ipv4/truncated', 'shorter than an IPv4 header'],
  [Drop.Ipv4BadVersion]: ['ipv4/bad-version', 'IP version field is not 4'],
  [Drop.Ipv4BadHeader]: ['ipv4/bad-header', 'header length field out of range'],
  [Drop.Ipv4BadChecksum]: ['ipv4/bad-checksum', 'header checksum does not verify'],
  [Drop.Ipv4BadLength]: ['ipv4/bad-length', 'total length larger than the packet or smaller than the header'],
  [Drop.Ipv4Fragment]: ['ipv4/fragment', 'outer fragments are not reassembled by the switch'],
  [Drop.Ipv4NotForUs]: ['ipv4/not-for-us', 'outer destination is not this host'],
  [Drop.Ipv4UnknownProtocol]: ['ipv4/unknown-protocol', 'outer protocol is neither ESP (50) nor IPv6 (41)'],
  [Drop.EspTruncated]: ['esp/truncated', 'shorter than ESP header, IV and ICV'],
  [Drop.EspUnknownSpi]: ['esp/unknown-spi', 'no inbound SA has this SPI'],
  [Drop.EspWrongPeer]: ['esp/wrong-peer', 'outer source is not the peer host of the SA'],
  [Drop.EspReplay]: ['esp/replay', 'sequence number already received (RFC 4303 3.4.3)'],
  [Drop.EspLeftOfWindow]: ['esp/left-of-window', 'sequence number left of the anti-replay window'],
  [Drop.EspAuthFailed]: ['esp/auth-failed', 'integrity check value does not verify'],
  [Drop.EspBadTrailer]: ['esp/bad-trailer', 'padding or pad length invalid after decryption'],
  [Drop.EspBadNextHeader]: ['esp/bad-next-header', 'ESP next header is not IPv6 (41)'],
  [Drop.Ip6in4WrongPeer]: ['ip6in4/wrong-peer', 'outer source is not the host the inner source is bound to'],
  [Drop.Ip6in4EncryptionRequired]: ['ip6in4/encryption-required', 'plain packet on a cable whose policy wants ESP'],
  [Drop.InnerPairMismatch]: ['inner/pair-mismatch', 'inner source or destination is not the pair of the cable (peer speaks for IDs it does not host)'],
  [Drop.InnerUnknownDestination]: ['inner/unknown-destination', 'inner destination is not a VM of this host'],
  [Drop.TxUnderlayError]: ['tx/underlay-error', 'the underlay port refused the packet'],
  [Drop.TxPortError]: ['tx/port-error', 'the VM port refused the frame'],
  [Drop.EspSealFailed]: ['esp/seal-failed', 'the cipher could not encrypt the packet (never sent unencrypted)'],
  [Drop.PortGone]: ['port/gone', 'the VM port the packet came from was detached while the packet waited'],
  [Drop.DhcpMalformed]: ['dhcp/malformed', 'a DHCPv6 message that breaks the format (RFC 8415), or is missing the client or server ID it needs'],
  [Drop.DhcpServerOnly]: ['dhcp/server-only', 'a VM sent a DHCPv6 server or relay message; only the switch serves its VMs'],
  [Drop.PortDown]: ['port/down', 'no VM is behind the port now (its QEMU is not connected to the stream socket)'],
  [Drop.VmMoved]: ['vm/moved', 'the destination VM has left this host (migrated or detached); the sender is told to look it up again'],
  [Drop.ResolveStoreUnavailable]: ['resolve/store-unavailable', 'the mapping store cannot be reached, or the host\'s replica of it is not current (fails closed)'],
};

/**
 * Reasons the miss path decides (resolve, verify, policy, key exchange): an unplugged cable
 * carries one, and every packet that meets the cable is dropped for it.
 */
export const PLUG_REASONS: readonly Drop[] = [
  Drop.UpcallRateLimited, Drop.ResolveNotFound, Drop.ResolveStoreError, Drop.ResolveStoreUnavailable,
  Drop.VerifyUnknownCa, Drop.VerifyExpired, Drop.VerifyNotYetValid, Drop.VerifySanMismatch, Drop.VerifyIdentityNotDerived,
  Drop.VerifyBadSignature, Drop.VerifyWrongHostAddress, Drop.VerifyOldEpoch, Drop.VerifyHostCertMismatch, Drop.VerifyMalformed,
  Drop.PolicyDefaultDeny, Drop.PolicyUnplugRule, Drop.PolicyCrossTenant, Drop.PolicyLevel, Drop.PolicyDiode, Drop.PolicyTimeWindow,
  Drop.PolicyProtoPort, Drop.PolicyInitiateOnly, Drop.PolicyFragment, Drop.PolicyFlowTableFull,
  Drop.SaNegotiationFailed, Drop.VmMoved,
];

/** One more than the highest code: the size of arrays indexed by Drop. */
export const DROP_COUNT = Math.max(...Object.keys(DROP_INFO).map(Number)) + 1;

/** True when `code` (from the wire, say) is a reason this build knows. */
export function isDrop(code: number): code is Drop {
  return Number.isInteger(code) && Object.prototype.hasOwnProperty.call(DROP_INFO, code);
}

export function dropName(d: Drop): string {
  return DROP_INFO[d][0];
}
