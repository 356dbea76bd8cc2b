// The IPv4 underlay: one raw socket per protocol the switch carries (ESP = 50,
// IPv6-in-IPv4 = 41), bound to the host's underlay address.
//
// JS API (see src/native/addon.ts):
//   rawOpen(proto, addr, bufferBytes, netns) -> fd       throws: config time
//   rawRecv(fd, buf, firstOff, stride, cap, n, lens, addrs) -> packets received, or -errno
//   rawSend(fd, buf, start, len, peer, idx, n, status) -> packets sent
//
// IP_HDRINCL: the switch writes the whole outer IPv4 header (addresses, DF, TOS copied from
// the inner packet, its own checksum) from a template made at plug time, so the kernel
// adds nothing and the receive side sees the same layout (a raw IPv4 socket always
// delivers the IP header). With IP_HDRINCL the kernel takes the protocol from the header,
// so one socket can send both protocols. Packets larger than the route MTU are refused
// (EMSGSIZE) rather than fragmented. Addresses cross the API as uint32 in host order.

#define _GNU_SOURCE
#include "fd_io.h"
#include "napi_util.h"
#include "netns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int set_buffer(int fd, int force_opt, int opt, int bytes) {
  if (bytes <= 0) return 0;
  // The FORCE variants ignore net.core.[rw]mem_max; they need CAP_NET_ADMIN.
  if (setsockopt(fd, SOL_SOCKET, force_opt, &bytes, sizeof bytes) == 0) return 0;
  return setsockopt(fd, SOL_SOCKET, opt, &bytes, sizeof bytes);
}

/** Create, configure and bind the socket; returns the fd or -errno with *step set. */
static int open_raw(int proto, uint32_t addr, int bytes, const char **step) {
  *step = "socket(AF_INET, SOCK_RAW)";
  int fd = socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, proto);
  if (fd < 0) return -errno;
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
  return fd;
fail: {
  int e = errno;
  close(fd);
  return -e;
}
}

static napi_value raw_open(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int32_t proto, bytes;
  uint32_t addr;
  char path[256];
  int has_ns;
  if (nvi_args(env, info, 4, argv) || nvi_i32(env, argv[0], "protocol", &proto) ||
      nvi_u32(env, argv[1], "address", &addr) || nvi_i32(env, argv[2], "bufferBytes", &bytes) ||
      nvi_opt_string(env, argv[3], "netns path", path, sizeof path, &has_ns)) {
    return NULL;
  }
  int saved;
  if (nvi_netns_enter_or_throw(env, has_ns ? path : NULL, &saved)) return NULL;
  const char *step;
  int fd = open_raw(proto, addr, bytes, &step);
  nvi_netns_leave(saved);
  if (fd < 0) {
    nvi_throw_errno(env, step, -fd);
    return NULL;
  }
  return nvi_int(env, fd);
}

static napi_value raw_recv(napi_env env, napi_callback_info info) {
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
  // sendmmsg stops at the first packet that fails and returns how many went before it;
  // the next call then reports that packet's errno.
  int32_t k = 0, sent = 0, failed = 0, last_errno = 0, stopped = 0;
  while (k < n) {
    int r = sendmmsg(fd, msgs + k, (unsigned)(n - k), MSG_DONTWAIT);
    if (r > 0) {
      k += r;
      sent += r;
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    last_errno = r < 0 ? errno : EIO;
    if (last_errno == EAGAIN || last_errno == EWOULDBLOCK || last_errno == ENOBUFS) {
      stopped = 1;  // the socket buffer is full: the rest of the batch is not attempted
      break;
    }
    failed++;  // this packet is refused (EMSGSIZE, ENETUNREACH, EPERM from a firewall, ...)
    k++;
  }
  status[NVI_TX_FAILED] = failed;
  status[NVI_TX_ERRNO] = last_errno;
  status[NVI_TX_STOPPED] = stopped;
  return nvi_int(env, sent);
}

int nvi_init_raw_socket(napi_env env, napi_value exports) {
  return nvi_export(env, exports, "rawOpen", raw_open) || nvi_export(env, exports, "rawRecv", raw_recv) ||
         nvi_export(env, exports, "rawSend", raw_send);
}
