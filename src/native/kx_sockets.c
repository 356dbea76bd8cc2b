// The key exchange's UDP sockets of a host that runs several data-path threads
// (switch.workers: N): N sockets bound to the same address and port (SO_REUSEPORT), one per
// worker, so that each worker sends and receives its own key-exchange messages with no other
// thread on the way. A classic BPF program on the group (SO_ATTACH_REUSEPORT_CBPF) picks the
// socket for each datagram from its first bytes, as src/switch/workers/kx-route.ts does:
//   INIT    the worker of its destination VM: the identity's last word (big-endian) mod N
//   ANSWER  the worker its request id names (the id's first byte, below N)
//   else    worker 0 (a NOTIFY, which names no VM, and what is too short or of no known type:
//           worker 0's key exchange counts it, and hands a NOTIFY to the others)
// The program sees the UDP payload. Its answer is an index into the group, whose order is
// the order of bind() (reuseport_group.c); the kernel keeps it as long as no socket of the
// group closes (they are handed over together, and closed together).
//
// JS API (see src/native/addon.ts):
//   kxSocketsOpen(address, port, count) -> fds, in worker order       throws: config time

#define _GNU_SOURCE
#include "napi_util.h"
#include "reuseport_group.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/** Message types and offsets (src/esp/handshake.ts, src/switch/workers/kx-route.ts). */
enum { KX_INIT = 1, KX_ANSWER = 2, INIT_DST_LAST = 36 + 12, ANSWER_ID = 4, MAX_KX_SOCKETS = 256 };

/** The steering program for `count` sockets into prog[] (at most 16 instructions); returns its length. */
static int steer_program(uint32_t count, struct sock_filter *prog) {
  int n = 0;
  prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 0);                    // 0: A = type
  prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, KX_INIT, 0, 5);       // 1: INIT? else 7
  prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_LEN, 0);                    // 2: INIT: A = length
  prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, INIT_DST_LAST + 4, 0, 9);  // 3: short: 13
  prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, INIT_DST_LAST);        // 4: A = dst's last word
  prog[n++] = (struct sock_filter)BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, count);               // 5: mod count
  prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_A, 0);                             // 6
  prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, KX_ANSWER, 0, 5);     // 7: ANSWER? else 13
  prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_LEN, 0);                    // 8: A = length
  prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGT | BPF_K, ANSWER_ID, 0, 3);      // 9: short: 13
  prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_B | BPF_ABS, ANSWER_ID);            // 10: A = the id's first byte
  prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, count, 1, 0);          // 11: no worker: 13
  prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_A, 0);                             // 12
  prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, 0);                             // 13: worker 0
  return n;
}

/** One socket of the group: SO_REUSEPORT, bound to addr:port. */
static int open_kx_socket(uint32_t addr, int port, void *ctx, const char **step) {
  *step = "socket(AF_INET, SOCK_DGRAM)";
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int one = 1;
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(addr) };
  *step = "SO_REUSEPORT";
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) == 0) {
    *step = "bind";  // EADDRINUSE: another process has the port; EADDRNOTAVAIL: not this host's address
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0) return fd;
  }
  int e = errno;
  close(fd);
  return -e;
}

static napi_value kx_sockets_open(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  uint32_t addr, port, count;
  if (nvi_args(env, info, 3, argv) || nvi_u32(env, argv[0], "address", &addr) || nvi_u32(env, argv[1], "port", &port) ||
      nvi_u32(env, argv[2], "count", &count)) {
    return NULL;
  }
  if (port == 0 || port > 65535 || count < 2 || count > MAX_KX_SOCKETS) {
    nvi_throw_range(env, "port %u, count %u: a port 1-65535 and 2-%d sockets", port, count, MAX_KX_SOCKETS);
    return NULL;
  }
  int fds[MAX_KX_SOCKETS];
  const char *step;
  struct sock_filter prog[16];
  struct sock_fprog fprog = { .len = (unsigned short)steer_program(count, prog), .filter = prog };
  int err = nvi_reuseport_group(addr, (int)port, count, &fprog, open_kx_socket, NULL, fds, &step);
  if (err != 0) {
    nvi_throw_errno(env, step, err);
    return NULL;
  }
  return nvi_fd_array(env, fds, count);
}

int nvi_init_kx_sockets(napi_env env, napi_value exports) {
  return nvi_export(env, exports, "kxSocketsOpen", kx_sockets_open);
}
