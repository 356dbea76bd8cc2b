// The IPv4 underlay: one raw socket per protocol the switch carries (ESP = 50,
// IPv6-in-IPv4 = 41), bound to the host's underlay address.
//
// JS API (see src/native/addon.ts):
//   rawOpen(proto, addr, bufferBytes, netns, shards, shard) -> fd       throws: config time
//   rawRecv(fd, buf, firstOff, stride, cap, n, lens, addrs) -> packets received, or -errno
//   rawSend(fd, buf, start, len, peer, idx, n, status) -> packets sent
//
// IP_HDRINCL: the switch writes the whole outer IPv4 header (addresses, DF, TOS copied from
// the inner packet, its own checksum) from a template made at plug time, so the kernel
// adds nothing and the receive side sees the same layout (a raw IPv4 socket always
// delivers the IP header). With IP_HDRINCL the kernel takes the protocol from the header,
// so one socket can send both protocols. Packets larger than the route MTU are refused
// (EMSGSIZE) rather than fragmented. Addresses cross the API as uint32 in host order.
//
// Shards (shards > 1): the kernel hands every raw socket of a protocol its own copy of each
// packet, so `shards` sockets, each with a classic BPF filter that keeps its share, spread
// the underlay over as many threads with no packet seen twice. ESP is shared out by SPI
// (SPI mod shards == shard: the receiver chose the SPI, so it chose the thread);
// IPv6-in-IPv4 by the last word of the inner destination (the thread that owns the
// destination VM, src/switch/workers/shard.ts). A packet too short to hold those words goes to shard 0, whose
// parse stage counts it, so the filter drops nothing that the switch would count. The filter
// is attached before bind, and what queued before it (copies that the other shards also
// got) is read and discarded.

#define _GNU_SOURCE
#include "fd_io.h"
#include "napi_util.h"
#include "wake_times.h"
#include "netns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <linux/filter.h>
#include <sys/socket.h>
#include <unistd.h>

enum { PROTO_IPV6_IN_IPV4 = 41, PROTO_ESP = 50 };
/** Offsets from the end of the outer IPv4 header: the SPI; the inner IPv6 destination's last word. */
enum { OFF_SPI = 0, OFF_DST_LAST = 36 };

/**
 * The filter of shard `shard` of `shards` for `proto` into prog[] (at most 16 instructions); returns
 * the instruction count. X holds the outer header's length (IHL * 4) while A is computed.
 */
static int steer_program(int proto, uint32_t shards, uint32_t shard, struct sock_filter *prog) {
  const uint32_t all = 0xffffffff, none = 0, short_verdict = shard == 0 ? all : none;
  const uint32_t need = proto == PROTO_ESP ? OFF_SPI + 4 : OFF_DST_LAST + 4;
  int n = 0;
  prog[n++] = (struct sock_filter)BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, 0);  // X = IHL * 4
  prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_LEN, 0);   // A = packet length
  prog[n++] = (struct sock_filter)BPF_STMT(BPF_ALU | BPF_SUB | BPF_K, need);
  // The words fit when length - need >= X. A length below `need` wraps A past 2^31 (packets are
  // under 64 KB), which the first test catches. Both tests jump to the last instruction.
  const uint8_t to_short = 5;  // instructions between the second test and it
  prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x80000000u, to_short + 1, 0);
  prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_X, 0, 0, to_short);
  // A = the SPI, or the inner destination's last word
  prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_IND, proto == PROTO_ESP ? OFF_SPI : OFF_DST_LAST);
  prog[n++] = (struct sock_filter)BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, shards);
  prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, shard, 0, 1);
  prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, all);
  prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, none);
  prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, short_verdict);
  return n;
}

static int set_buffer(int fd, int force_opt, int opt, int bytes) {
  if (bytes <= 0) return 0;
  // The FORCE variants ignore net.core.[rw]mem_max; they need CAP_NET_ADMIN.
  if (setsockopt(fd, SOL_SOCKET, force_opt, &bytes, sizeof bytes) == 0) return 0;
  return setsockopt(fd, SOL_SOCKET, opt, &bytes, sizeof bytes);
}

/** Create, configure and bind the socket; returns the fd or -errno with *step set. */
static int open_raw(int proto, uint32_t addr, int bytes, uint32_t shards, uint32_t shard, const char **step) {
  *step = "socket(AF_INET, SOCK_RAW)";
  int fd = socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, proto);
  if (fd < 0) return -errno;
  if (shards > 1) {
    struct sock_filter prog[16];
    struct sock_fprog fprog = { .len = (unsigned short)steer_program(proto, shards, shard, prog), .filter = prog };
    *step = "SO_ATTACH_FILTER";
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &fprog, sizeof fprog) < 0) goto fail;
  }
  int one = 1;
  *step = "IP_HDRINCL";
  if (setsockopt(fd, IPPROTO_IP, IP_HDRINCL, &one, sizeof one) < 0) goto fail;
  *step = "SO_RCVBUF";
  if (set_buffer(fd, SO_RCVBUFFORCE, SO_RCVBUF, bytes) < 0) goto fail;
  *step = "SO_SNDBUF";
  if (set_buffer(fd, SO_SNDBUFFORCE, SO_SNDBUF, bytes) < 0) goto fail;
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(addr);
  *step = "bind";  // EADDRNOTAVAIL: the address is not on this host (or namespace)
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) goto fail;
  if (shards > 1) {
    uint8_t discard[64];
    while (recv(fd, discard, sizeof discard, MSG_DONTWAIT | MSG_TRUNC) >= 0) {
      // queued before the filter: another shard has its own copy
    }
  }
  return fd;
fail: {
  int e = errno;
  close(fd);
  return -e;
}
}

static napi_value raw_open(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  int32_t proto, bytes;
  uint32_t addr, shards, shard;
  char path[256];
  int has_ns;
  if (nvi_args(env, info, 6, argv) || nvi_i32(env, argv[0], "protocol", &proto) ||
      nvi_u32(env, argv[1], "address", &addr) || nvi_i32(env, argv[2], "bufferBytes", &bytes) ||
      nvi_opt_string(env, argv[3], "netns path", path, sizeof path, &has_ns) ||
      nvi_u32(env, argv[4], "shards", &shards) || nvi_u32(env, argv[5], "shard", &shard)) {
    return NULL;
  }
  if (shards > 1 && (shard >= shards || (proto != PROTO_ESP && proto != PROTO_IPV6_IN_IPV4))) {
    nvi_throw_range(env, "shard %u of %u for protocol %d: the shard must be below the count, and only ESP (50) and IPv6-in-IPv4 (41) are shared out",
                    shard, shards, proto);
    return NULL;
  }
  int saved;
  if (nvi_netns_enter_or_throw(env, has_ns ? path : NULL, &saved)) return NULL;
  const char *step;
  int fd = open_raw(proto, addr, bytes, shards, shard, &step);
  nvi_netns_leave(saved);
  if (fd < 0) {
    nvi_throw_errno(env, step, -fd);
    return NULL;
  }
  return nvi_int(env, fd);
}

static napi_value raw_recv(napi_env env, napi_callback_info info) {
  nvi_wake_read();
  napi_value argv[8];
  int32_t fd, firstOff, stride, cap, n;
  uint8_t *buf;
  size_t buf_len, lens_len, addrs_len;
  int32_t *lens;
  uint32_t *addrs;
  if (nvi_args(env, info, 8, argv) || nvi_i32(env, argv[0], "fd", &fd) ||
      nvi_bytes(env, argv[1], "buf", &buf, &buf_len) || nvi_i32(env, argv[2], "firstOff", &firstOff) ||
      nvi_i32(env, argv[3], "stride", &stride) || nvi_i32(env, argv[4], "cap", &cap) ||
      nvi_i32(env, argv[5], "n", &n) || nvi_i32_array(env, argv[6], "lens", &lens, &lens_len) ||
      nvi_u32_array(env, argv[7], "addrs", &addrs, &addrs_len) ||
      nvi_check_slots(env, buf_len, firstOff, stride, cap, n)) {
    return NULL;
  }
  if (n > NVI_BATCH_MAX || (size_t)n > lens_len || (size_t)n > addrs_len) {
    nvi_throw_range(env, "n %d exceeds the batch (%d) or the output arrays", n, NVI_BATCH_MAX);
    return NULL;
  }
  if (n == 0) return nvi_int(env, 0);
  struct mmsghdr msgs[NVI_BATCH_MAX];
  struct iovec iov[NVI_BATCH_MAX];
  struct sockaddr_in from[NVI_BATCH_MAX];
  for (int32_t k = 0; k < n; k++) {
    iov[k].iov_base = buf + firstOff + (size_t)k * stride;
    iov[k].iov_len = (size_t)cap;
    memset(&msgs[k], 0, sizeof msgs[k]);
    msgs[k].msg_hdr.msg_name = &from[k];
    msgs[k].msg_hdr.msg_namelen = sizeof from[k];
    msgs[k].msg_hdr.msg_iov = &iov[k];
    msgs[k].msg_hdr.msg_iovlen = 1;
  }
  int r;
  do {
    r = recvmmsg(fd, msgs, (unsigned)n, MSG_DONTWAIT, NULL);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return nvi_int(env, (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -errno);
  for (int k = 0; k < r; k++) {
    // A packet longer than cap arrives cut (MSG_TRUNC); its IPv4 total length then exceeds
    // len and the parse stage drops it under a named reason.
    lens[k] = (int32_t)msgs[k].msg_len;
    addrs[k] = ntohl(from[k].sin_addr.s_addr);
  }
  return nvi_int(env, r);
}

static napi_value raw_send(napi_env env, napi_callback_info info) {
  nvi_wake_send();
  napi_value argv[8];
  int32_t fd, n;
  uint8_t *buf;
  size_t buf_len, start_len, len_len, peer_len, idx_len, status_len;
  int32_t *start, *len, *idx, *status;
  uint32_t *peer;
  if (nvi_args(env, info, 8, argv) || nvi_i32(env, argv[0], "fd", &fd) ||
      nvi_bytes(env, argv[1], "buf", &buf, &buf_len) || nvi_i32_array(env, argv[2], "start", &start, &start_len) ||
      nvi_i32_array(env, argv[3], "len", &len, &len_len) || nvi_u32_array(env, argv[4], "peer", &peer, &peer_len) ||
      nvi_i32_array(env, argv[5], "idx", &idx, &idx_len) || nvi_i32(env, argv[6], "n", &n) ||
      nvi_i32_array(env, argv[7], "status", &status, &status_len)) {
    return NULL;
  }
  if (n > NVI_BATCH_MAX || status_len < NVI_TX_STATUS_LEN) {
    nvi_throw_range(env, "n %d exceeds the batch (%d) or status is too short", n, NVI_BATCH_MAX);
    return NULL;
  }
  size_t arr_len = start_len < len_len ? start_len : len_len;
  if (peer_len < arr_len) arr_len = peer_len;
  if (nvi_check_packets(env, buf_len, start, len, arr_len, idx, idx_len, n)) return NULL;

  struct mmsghdr msgs[NVI_BATCH_MAX];
  struct iovec iov[NVI_BATCH_MAX];
  struct sockaddr_in to[NVI_BATCH_MAX];
  for (int32_t k = 0; k < n; k++) {
    int32_t i = idx[k];
    iov[k].iov_base = buf + start[i];
    iov[k].iov_len = (size_t)len[i];
    memset(&to[k], 0, sizeof to[k]);
    to[k].sin_family = AF_INET;
    to[k].sin_addr.s_addr = htonl(peer[i]);
    memset(&msgs[k], 0, sizeof msgs[k]);
    msgs[k].msg_hdr.msg_name = &to[k];
    msgs[k].msg_hdr.msg_namelen = sizeof to[k];
    msgs[k].msg_hdr.msg_iov = &iov[k];
    msgs[k].msg_hdr.msg_iovlen = 1;
  }
  status[NVI_TX_FAILED] = status[NVI_TX_ERRNO] = status[NVI_TX_STOPPED] = 0;
  int32_t sent = nvi_send_messages(fd, msgs, n, NULL, status);
  return nvi_int(env, sent);
}

int nvi_init_raw_socket(napi_env env, napi_value exports) {
  return nvi_export(env, exports, "rawOpen", raw_open) || nvi_export(env, exports, "rawRecv", raw_recv) ||
         nvi_export(env, exports, "rawSend", raw_send);
}
