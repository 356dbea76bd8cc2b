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
// the order of bind(); the kernel keeps it as long as no socket of the group closes (they are
// handed over together, and closed together).
//
// JS API (see src/native/addon.ts):
//   kxSocketsOpen(address, port, count) -> fds, in worker order       throws: config time

#define _GNU_SOURCE
#include "napi_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef SO_ATTACH_REUSEPORT_CBPF
#define SO_ATTACH_REUSEPORT_CBPF 51
#endif

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

static void close_all(const int *fds, uint32_t n) {
  for (uint32_t k = 0; k < n; k++) close(fds[k]);
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
  uint32_t opened = 0;
  const char *step = "socket(AF_INET, SOCK_DGRAM)";
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(addr);
  sa.sin_port = htons((uint16_t)port);
  int one = 1;
  // The port must be free. Sockets with SO_REUSEPORT would join another group of this user's
  // on it (a second switch of the host started by mistake), and the program attached below
  // would then steer that group's messages. A plain bind fails there instead: EADDRINUSE.
  int probe = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (probe < 0) goto fail;
  step = "bind (the port must be free: no other switch of this host on it)";
  if (bind(probe, (struct sockaddr *)&sa, sizeof sa) < 0) {
    int e = errno;
    close(probe);
    nvi_throw_errno(env, step, e);
    return NULL;
  }
  close(probe);
  for (; opened < count; opened++) {
    step = "socket(AF_INET, SOCK_DGRAM)";
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) goto fail;
    fds[opened] = fd;
    step = "SO_REUSEPORT";
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) goto fail_open;
    step = "bind";  // EADDRINUSE: another process has the port; EADDRNOTAVAIL: not this host's address
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) goto fail_open;
  }
  struct sock_filter prog[16];
  struct sock_fprog fprog = { .len = (unsigned short)steer_program(count, prog), .filter = prog };
  step = "SO_ATTACH_REUSEPORT_CBPF";
  if (setsockopt(fds[0], SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &fprog, sizeof fprog) < 0) goto fail;
  napi_value out;
  if (napi_create_array_with_length(env, count, &out) != napi_ok) {
    close_all(fds, count);
    return NULL;
  }
  for (uint32_t k = 0; k < count; k++) {
    napi_value v;
    napi_create_int32(env, fds[k], &v);
    napi_set_element(env, out, k, v);
  }
  return out;
fail_open:
  opened++;  // fds[opened] is open too
fail: {
  int e = errno;
  close_all(fds, opened);
  nvi_throw_errno(env, step, e);
  return NULL;
}
}

int nvi_init_kx_sockets(napi_env env, napi_value exports) {
  return nvi_export(env, exports, "kxSocketsOpen", kx_sockets_open);
}
