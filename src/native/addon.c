// nvi_native: the switch's native I/O and crypto layer, loaded by src/native/addon.ts.
//
//   poll.c        readiness of an fd through the event loop (uv_poll), no thread pool
//   busy_poll.c   the event loop kept turning for a while after a packet, instead of sleeping
//   tap.c         TAP ports: open, batch read, batch write
//   raw_socket.c  the IPv4 underlay: raw sockets for ESP (50) and IPv6-in-IPv4 (41)
//   udp_esp.c     ESP in UDP on the underlay, a run of packets to one peer a datagram (GSO/GRO)
//   kx_sockets.c  the key exchange's UDP sockets of a host of several data-path threads, one each
//   packet_port.c a VM port on a TAP a hypervisor opened: an AF_PACKET socket on its host side
//   netns.c       open a device or socket inside another network namespace
//   affinity.c    the CPUs a data-path thread runs on
//   thread_policy.c the process's helper threads yield to its packet threads (SCHED_BATCH)
//   esp_gcm.c     AES-GCM for ESP (RFC 4106), one call per batch, in place
//   gso.c         TSO frames and partial checksums from an offloading TAP made into wire frames
//   gro.c         runs of TCP segments to an offloading TAP written as one super-frame
//
// Every per-batch call reports packet-level failures as counts and negative errno values;
// only broken invariants (bad arguments, offsets outside the arena) throw.

#include "napi_util.h"

static napi_value init(napi_env env, napi_value exports) {
  napi_value max;
  napi_create_int32(env, NVI_BATCH_MAX, &max);
  napi_set_named_property(env, exports, "batchMax", max);
  if (nvi_init_poll(env, exports) || nvi_init_busy_poll(env, exports) || nvi_init_wake_times(env, exports) || nvi_init_tap(env, exports) ||
      nvi_init_raw_socket(env, exports) || nvi_init_udp_esp(env, exports) || nvi_init_esp_gcm(env, exports) || nvi_init_gso(env, exports) || nvi_init_gro(env, exports) ||
      nvi_init_packet_port(env, exports) || nvi_init_affinity(env, exports) || nvi_init_thread_policy(env, exports) ||
      nvi_init_kx_sockets(env, exports)) {
    return NULL;
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
