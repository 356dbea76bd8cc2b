// ESP in UDP on the underlay (RFC 3948 framing: the ESP packet is the UDP payload), with UDP
// segmentation offload on send and UDP GRO on receive: a run of ESP packets of one size to
// one peer leaves in one datagram of up to 64 segments, which the kernel cuts at the device
// (or hands whole to a veth peer), and the receiver reads a run of one peer as one
// datagram. The stack, the veths and the bridge then work once a run instead of once a packet.
//
// The switch's batch keeps its layout: every underlay packet is an IPv4 packet at its slot.
//   udpEspOpen(addr, port, bufferBytes, netns) -> fd                          throws: config time
//   udpEspGroupOpen(addr, port, bufferBytes, count, netns) -> fds, in worker order   throws: config time
//       For `count` data-path threads (switch.workers): as many sockets on one address and port
//       (SO_REUSEPORT), each configured as udpEspOpen's, and a classic BPF program on the group
//       that gives each datagram to the socket its SPI names (the first word of the payload, mod
//       count; the receiver chose the SPI, so it chose the thread, as on the raw sockets); one
//       too short for an SPI goes to socket 0, whose parse stage counts it. The port must be
//       free, as for the key exchange's group (src/native/kx_sockets.c). The program sees a
//       datagram's first SPI only, so these sockets take no GRO (a NIC's GRO would coalesce
//       datagrams of one peer whatever their SPIs), and a datagram that is sent holds one SPI.
//   udpEspRecv(fd, scratch, state, buf, firstOff, stride, cap, n, lens, addrs, local) -> packets, or -errno
//       Each segment goes to its own slot behind an IPv4 header written here (protocol 50, the
//       sender's address, `local` as destination, the datagram's TOS, DF, TTL 64, checksummed),
//       so the parse stage reads it as it reads a packet of the raw ESP socket. A datagram whose
//       segments do not all fit in the batch keeps the rest in `scratch` (RECV_MSGS regions of
//       64 KB) and `state` for the next call, which hands them out before it reads anything new.
//   udpEspSend(udpFd, rawFd, buf, start, len, peer, idx, n, status, port) -> packets sent
//       Packets idx[0..n) are whole IPv4 packets (the outer header the switch wrote). ESP ones
//       leave by the UDP socket without that header (the kernel writes IPv4 and UDP), the TOS
//       kept; consecutive ones of one SA (SPI) to one peer with one TOS and one length (the
//       last of a run may be shorter) form one datagram with UDP_SEGMENT: a receiver of several
//       threads steers a datagram by its SPI. Others (IPv6-in-IPv4) leave by the raw
//       socket as they are. status as rawSend's: packets refused, last errno, stopped early.
//
// DF is set on every datagram (IP_PMTUDISC_DO): one too large for the route is refused, as on
// the raw socket.

#define _GNU_SOURCE
#include "fd_io.h"
#include "napi_util.h"
#include "wake_times.h"
#include "netns.h"
#include "reuseport_group.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

enum { PROTO_ESP = 50, IPV4_HLEN = 20, MAX_SEGMENTS = 64, MAX_UDP_PAYLOAD = 65507, MAX_GROUP = 64 };
/** Datagrams one receive call reads at most, each into a 64-KB region of the scratch. */
enum { RECV_MSGS = 8, REGION = 65536 };
/** state[]: the datagram being handed out, its offset, the datagrams read; then 4 words a datagram. */
enum { ST_CUR = 0, ST_OFF = 1, ST_COUNT = 2, ST_MSG = 3, ST_LEN = ST_MSG + 4 * RECV_MSGS };
enum { M_LEN = 0, M_SEG = 1, M_FROM = 2, M_TOS = 3 };

static int set_int(int fd, int level, int opt, int v) { return setsockopt(fd, level, opt, &v, sizeof v); }

/**
 * Create, configure and bind one socket (joining the port's group with `reuse`, the kernel's
 * GRO with `gro`); returns the fd or -errno with *step set.
 */
static int open_udp(uint32_t addr, int port, int bytes, int reuse, int gro, const char **step) {
  *step = "socket(AF_INET, SOCK_DGRAM)";
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  *step = "SO_REUSEPORT";
  if (reuse && set_int(fd, SOL_SOCKET, SO_REUSEPORT, 1) < 0) goto fail;
  *step = "UDP_GRO";
  if (gro && set_int(fd, IPPROTO_UDP, UDP_GRO, 1) < 0) goto fail;
  *step = "IP_RECVTOS";
  if (set_int(fd, IPPROTO_IP, IP_RECVTOS, 1) < 0) goto fail;
  *step = "IP_MTU_DISCOVER";
  if (set_int(fd, IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO) < 0) goto fail;
  if (bytes > 0) {
    *step = "SO_RCVBUF";
    if (set_int(fd, SOL_SOCKET, SO_RCVBUFFORCE, bytes) < 0 && set_int(fd, SOL_SOCKET, SO_RCVBUF, bytes) < 0) goto fail;
    *step = "SO_SNDBUF";
    if (set_int(fd, SOL_SOCKET, SO_SNDBUFFORCE, bytes) < 0 && set_int(fd, SOL_SOCKET, SO_SNDBUF, bytes) < 0) goto fail;
  }
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(addr) };
  *step = "bind";  // EADDRINUSE: another process has the port; EADDRNOTAVAIL: not this host's address
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) goto fail;
  return fd;
fail: {
  int e = errno;
  close(fd);
  return -e;
}
}

static napi_value udp_esp_open(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  uint32_t addr;
  int32_t port, bytes;
  char path[256];
  int has_ns;
  if (nvi_args(env, info, 4, argv) || nvi_u32(env, argv[0], "address", &addr) || nvi_i32(env, argv[1], "port", &port) ||
      nvi_i32(env, argv[2], "bufferBytes", &bytes) || nvi_opt_string(env, argv[3], "netns path", path, sizeof path, &has_ns)) {
    return NULL;
  }
  if (port < 1 || port > 65535) {
    nvi_throw_range(env, "UDP port %d is outside 1-65535", port);
    return NULL;
  }
  int saved;
  if (nvi_netns_enter_or_throw(env, has_ns ? path : NULL, &saved)) return NULL;
  const char *step;
  int fd = open_udp(addr, port, bytes, 0, 1, &step);
  nvi_netns_leave(saved);
  if (fd < 0) {
    nvi_throw_errno(env, step, -fd);
    return NULL;
  }
  return nvi_int(env, fd);
}

/** One socket of the group: SO_REUSEPORT, no UDP_GRO (the steering sees one SPI a datagram); ctx: the buffer bytes. */
static int open_group_socket(uint32_t addr, int port, void *ctx, const char **step) {
  return open_udp(addr, port, *(int32_t *)ctx, 1, 0, step);
}

/** The group's program: A = the payload's first word (the SPI) mod count; a load past the end returns 0. */
static int steer_by_spi(uint32_t count, struct sock_filter *prog) {
  int n = 0;
  prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 0);
  prog[n++] = (struct sock_filter)BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, count);
  prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_A, 0);
  return n;
}

static napi_value udp_esp_group_open(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  uint32_t addr, port, count;
  int32_t bytes;
  char path[256];
  int has_ns;
  if (nvi_args(env, info, 5, argv) || nvi_u32(env, argv[0], "address", &addr) || nvi_u32(env, argv[1], "port", &port) ||
      nvi_i32(env, argv[2], "bufferBytes", &bytes) || nvi_u32(env, argv[3], "count", &count) ||
      nvi_opt_string(env, argv[4], "netns path", path, sizeof path, &has_ns)) {
    return NULL;
  }
  if (port == 0 || port > 65535 || count < 2 || count > MAX_GROUP) {
    nvi_throw_range(env, "port %u, count %u: a port 1-65535 and 2-%d sockets", port, count, MAX_GROUP);
    return NULL;
  }
  int saved;
  if (nvi_netns_enter_or_throw(env, has_ns ? path : NULL, &saved)) return NULL;
  const char *step;
  int fds[MAX_GROUP];
  struct sock_filter prog[4];
  struct sock_fprog fprog = { .len = (unsigned short)steer_by_spi(count, prog), .filter = prog };
  int err = nvi_reuseport_group(addr, (int)port, count, &fprog, open_group_socket, &bytes, fds, &step);
  nvi_netns_leave(saved);
  if (err != 0) {
    nvi_throw_errno(env, step, err);
    return NULL;
  }
  return nvi_fd_array(env, fds, count);
}

static uint16_t ipv4_checksum(const uint8_t *h) {
  uint32_t sum = 0;
  for (int k = 0; k < IPV4_HLEN; k += 2) sum += (uint32_t)(h[k] << 8 | h[k + 1]);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)~sum;
}

/** The IPv4 header an ESP packet of `esp_len` bytes from `from` to `to` would have had. */
static void write_ipv4(uint8_t *h, size_t esp_len, uint32_t from, uint32_t to, uint8_t tos) {
  size_t total = IPV4_HLEN + esp_len;
  h[0] = 0x45;
  h[1] = tos;
  h[2] = (uint8_t)(total >> 8);
  h[3] = (uint8_t)total;
  h[4] = h[5] = 0;
  h[6] = 0x40;  // DF
  h[7] = 0;
  h[8] = 64;
  h[9] = PROTO_ESP;
  h[10] = h[11] = 0;
  for (int k = 0; k < 4; k++) {
    h[12 + k] = (uint8_t)(from >> (24 - 8 * k));
    h[16 + k] = (uint8_t)(to >> (24 - 8 * k));
  }
  uint16_t c = ipv4_checksum(h);
  h[10] = (uint8_t)(c >> 8);
  h[11] = (uint8_t)c;
}

/** The batch slots a receive fills, and the datagrams waiting in the scratch. */
typedef struct {
  uint8_t *buf, *scratch;
  int32_t first_off, stride, cap, n, got;
  int32_t *lens, *state;
  uint32_t *addrs, local;
} recv_job;

/** Hand out segments of the datagrams in the scratch until they or the slots run out. */
static void hand_out(recv_job *J) {
  int32_t *st = J->state;
  while (st[ST_CUR] < st[ST_COUNT] && J->got < J->n) {
    int32_t *m = st + ST_MSG + 4 * st[ST_CUR];
    const uint8_t *d = J->scratch + (size_t)st[ST_CUR] * REGION;
    int32_t len = m[M_LEN], seg = m[M_SEG] > 0 ? m[M_SEG] : len;
    do {  // an empty datagram too is handed out (as an empty ESP packet, which the parse stage counts)
      int32_t part = len - st[ST_OFF] < seg ? len - st[ST_OFF] : seg;
      uint8_t *slot = J->buf + J->first_off + (size_t)J->got * J->stride;
      // A segment too long for the slot arrives cut, its IPv4 length whole: the parse stage drops it by name.
      int32_t room = J->cap - IPV4_HLEN, copied = part < room ? part : room;
      write_ipv4(slot, (size_t)part, (uint32_t)m[M_FROM], J->local, (uint8_t)m[M_TOS]);
      memcpy(slot + IPV4_HLEN, d + st[ST_OFF], (size_t)copied);
      J->lens[J->got] = IPV4_HLEN + copied;
      J->addrs[J->got] = (uint32_t)m[M_FROM];
      J->got++;
      st[ST_OFF] += part;
    } while (st[ST_OFF] < len && J->got < J->n);
    if (st[ST_OFF] >= len) {
      st[ST_CUR]++;
      st[ST_OFF] = 0;
    }
  }
  if (st[ST_CUR] >= st[ST_COUNT]) st[ST_CUR] = st[ST_COUNT] = st[ST_OFF] = 0;
}

/** Read up to RECV_MSGS datagrams into the scratch; returns how many, or -errno. */
static int read_datagrams(int fd, recv_job *J) {
  struct mmsghdr msgs[RECV_MSGS];
  struct iovec iov[RECV_MSGS];
  struct sockaddr_in from[RECV_MSGS];
  union {
    char bytes[CMSG_SPACE(sizeof(int)) * 2];
    struct cmsghdr align;
  } control[RECV_MSGS];
  for (int k = 0; k < RECV_MSGS; k++) {
    iov[k] = (struct iovec){ J->scratch + (size_t)k * REGION, REGION };
    memset(&msgs[k], 0, sizeof msgs[k]);
    msgs[k].msg_hdr = (struct msghdr){ .msg_name = &from[k], .msg_namelen = sizeof from[k], .msg_iov = &iov[k], .msg_iovlen = 1,
                                       .msg_control = control[k].bytes, .msg_controllen = sizeof control[k].bytes };
  }
  int r;
  do {
    r = recvmmsg(fd, msgs, RECV_MSGS, MSG_DONTWAIT, NULL);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -errno;
  for (int k = 0; k < r; k++) {
    int32_t *m = J->state + ST_MSG + 4 * k;
    m[M_LEN] = (int32_t)msgs[k].msg_len;
    m[M_SEG] = 0;
    m[M_FROM] = (int32_t)ntohl(from[k].sin_addr.s_addr);
    m[M_TOS] = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[k].msg_hdr); c != NULL; c = CMSG_NXTHDR(&msgs[k].msg_hdr, c)) {
      if (c->cmsg_level == IPPROTO_UDP && c->cmsg_type == UDP_GRO) memcpy(&m[M_SEG], CMSG_DATA(c), sizeof(int));
      if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TOS) m[M_TOS] = *(uint8_t *)CMSG_DATA(c);
    }
  }
  J->state[ST_CUR] = 0;
  J->state[ST_OFF] = 0;
  J->state[ST_COUNT] = r;
  return r;
}

static napi_value udp_esp_recv(napi_env env, napi_callback_info info) {
  nvi_wake_read();
  napi_value argv[11];
  int32_t fd;
  size_t buf_len, scratch_len, state_len, lens_len, addrs_len;
  recv_job J = { 0 };
  if (nvi_args(env, info, 11, argv) || nvi_i32(env, argv[0], "fd", &fd) ||
      nvi_bytes(env, argv[1], "scratch", &J.scratch, &scratch_len) ||
      nvi_i32_array(env, argv[2], "state", &J.state, &state_len) || nvi_bytes(env, argv[3], "buf", &J.buf, &buf_len) ||
      nvi_i32(env, argv[4], "firstOff", &J.first_off) || nvi_i32(env, argv[5], "stride", &J.stride) ||
      nvi_i32(env, argv[6], "cap", &J.cap) || nvi_i32(env, argv[7], "n", &J.n) ||
      nvi_i32_array(env, argv[8], "lens", &J.lens, &lens_len) || nvi_u32_array(env, argv[9], "addrs", &J.addrs, &addrs_len) ||
      nvi_u32(env, argv[10], "local", &J.local) || nvi_check_slots(env, buf_len, J.first_off, J.stride, J.cap, J.n)) {
    return NULL;
  }
  if (J.n > NVI_BATCH_MAX || (size_t)J.n > lens_len || (size_t)J.n > addrs_len || scratch_len < (size_t)RECV_MSGS * REGION ||
      state_len < ST_LEN || J.cap < IPV4_HLEN) {
    nvi_throw_range(env, "udpEspRecv: n %d exceeds the batch (%d) or the arrays, or the scratch (%d bytes), state (%d) or cap are too small",
                    J.n, NVI_BATCH_MAX, RECV_MSGS * REGION, ST_LEN);
    return NULL;
  }
  hand_out(&J);  // what the last call could not fit
  if (J.got < J.n) {
    int r = read_datagrams(fd, &J);
    if (r < 0 && J.got == 0) return nvi_int(env, r);
    if (r > 0) hand_out(&J);
  }
  return nvi_int(env, J.got);
}

static napi_value udp_esp_send(napi_env env, napi_callback_info info) {
  nvi_wake_send();
  napi_value argv[10];
  int32_t udp_fd, raw_fd, n, port;
  uint8_t *buf;
  size_t buf_len, start_len, len_len, peer_len, idx_len, status_len;
  int32_t *start, *len, *idx, *status;
  uint32_t *peer;
  if (nvi_args(env, info, 10, argv) || nvi_i32(env, argv[0], "udpFd", &udp_fd) || nvi_i32(env, argv[1], "rawFd", &raw_fd) ||
      nvi_bytes(env, argv[2], "buf", &buf, &buf_len) || nvi_i32_array(env, argv[3], "start", &start, &start_len) ||
      nvi_i32_array(env, argv[4], "len", &len, &len_len) || nvi_u32_array(env, argv[5], "peer", &peer, &peer_len) ||
      nvi_i32_array(env, argv[6], "idx", &idx, &idx_len) || nvi_i32(env, argv[7], "n", &n) ||
      nvi_i32_array(env, argv[8], "status", &status, &status_len) || nvi_i32(env, argv[9], "port", &port)) {
    return NULL;
  }
  if (n > NVI_BATCH_MAX || status_len < NVI_TX_STATUS_LEN || port < 1 || port > 65535) {
    nvi_throw_range(env, "n %d exceeds the batch (%d), status is too short, or port %d is outside 1-65535", n, NVI_BATCH_MAX, port);
    return NULL;
  }
  size_t arr_len = start_len < len_len ? start_len : len_len;
  if (peer_len < arr_len) arr_len = peer_len;
  if (nvi_check_packets(env, buf_len, start, len, arr_len, idx, idx_len, n)) return NULL;

  // Runs, in the order of idx. An ESP packet's payload is behind its IPv4 header.
  // Run j: packets idx[run_first[j] ..] (run_count[j] of them), one datagram by socket run_fd[j].
  int run_fd[NVI_BATCH_MAX];
  int32_t run_first[NVI_BATCH_MAX], run_count[NVI_BATCH_MAX];
  struct iovec iov[NVI_BATCH_MAX];
  int32_t nruns = 0;
  for (int32_t k = 0; k < n; k++) {
    const uint8_t *p = buf + start[idx[k]];
    int32_t l = len[idx[k]];
    int esp = l >= IPV4_HLEN + 4 && p[0] == 0x45 && p[9] == PROTO_ESP;
    iov[k] = esp ? (struct iovec){ (void *)(p + IPV4_HLEN), (size_t)(l - IPV4_HLEN) } : (struct iovec){ (void *)p, (size_t)l };
    if (nruns > 0 && esp) {
      int32_t r = nruns - 1, first = run_first[r];
      const uint8_t *q = buf + start[idx[first]];
      size_t seg = iov[first].iov_len, last = iov[k - 1].iov_len, total = seg * (size_t)run_count[r] + iov[k].iov_len;
      if (run_fd[r] == udp_fd && peer[idx[first]] == peer[idx[k]] && q[1] == p[1] && memcmp(q + IPV4_HLEN, p + IPV4_HLEN, 4) == 0 &&
          last == seg && iov[k].iov_len <= seg && run_count[r] < MAX_SEGMENTS && total <= MAX_UDP_PAYLOAD) {
        run_count[r]++;
        continue;
      }
    }
    run_fd[nruns] = esp ? udp_fd : raw_fd;
    run_first[nruns] = k;
    run_count[nruns++] = 1;
  }

  struct mmsghdr msgs[NVI_BATCH_MAX];
  struct sockaddr_in to[NVI_BATCH_MAX];
  union {
    char bytes[CMSG_SPACE(sizeof(uint16_t)) + CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } control[NVI_BATCH_MAX];
  for (int32_t j = 0; j < nruns; j++) {
    int32_t first = run_first[j], i = idx[first];
    int udp = run_fd[j] == udp_fd;
    to[j] = (struct sockaddr_in){ .sin_family = AF_INET, .sin_port = udp ? htons((uint16_t)port) : 0, .sin_addr.s_addr = htonl(peer[i]) };
    memset(&msgs[j], 0, sizeof msgs[j]);
    struct msghdr *h = &msgs[j].msg_hdr;
    *h = (struct msghdr){ .msg_name = &to[j], .msg_namelen = sizeof to[j], .msg_iov = &iov[first], .msg_iovlen = (size_t)run_count[j] };
    if (!udp) continue;
    uint8_t tos = buf[start[i] + 1];
    h->msg_control = control[j].bytes;
    h->msg_controllen = sizeof control[j].bytes;
    size_t used = 0;
    struct cmsghdr *c = CMSG_FIRSTHDR(h);
    if (run_count[j] > 1) {
      uint16_t seg = (uint16_t)iov[first].iov_len;
      *c = (struct cmsghdr){ .cmsg_level = IPPROTO_UDP, .cmsg_type = UDP_SEGMENT, .cmsg_len = CMSG_LEN(sizeof seg) };
      memcpy(CMSG_DATA(c), &seg, sizeof seg);
      used += CMSG_SPACE(sizeof seg);
      c = CMSG_NXTHDR(h, c);
    }
    if (tos != 0 && c != NULL) {
      int t = tos;
      *c = (struct cmsghdr){ .cmsg_level = IPPROTO_IP, .cmsg_type = IP_TOS, .cmsg_len = CMSG_LEN(sizeof t) };
      memcpy(CMSG_DATA(c), &t, sizeof t);
      used += CMSG_SPACE(sizeof t);
    }
    h->msg_controllen = used;
    if (used == 0) h->msg_control = NULL;
  }

  // Consecutive runs of one socket go in one sendmmsg; a run refused counts all its packets.
  status[NVI_TX_FAILED] = status[NVI_TX_ERRNO] = status[NVI_TX_STOPPED] = 0;
  int32_t sent = 0;
  for (int32_t j = 0, end; j < nruns && !status[NVI_TX_STOPPED]; j = end) {
    for (end = j + 1; end < nruns && run_fd[end] == run_fd[j];) end++;
    sent += nvi_send_messages(run_fd[j], msgs + j, end - j, run_count + j, status);
  }
  return nvi_int(env, sent);
}

int nvi_init_udp_esp(napi_env env, napi_value exports) {
  return nvi_export(env, exports, "udpEspOpen", udp_esp_open) || nvi_export(env, exports, "udpEspGroupOpen", udp_esp_group_open) ||
         nvi_export(env, exports, "udpEspRecv", udp_esp_recv) ||
         nvi_export(env, exports, "udpEspSend", udp_esp_send);
}
