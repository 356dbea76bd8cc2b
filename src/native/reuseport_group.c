// See reuseport_group.h.

#define _GNU_SOURCE
#include "reuseport_group.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef SO_ATTACH_REUSEPORT_CBPF
#define SO_ATTACH_REUSEPORT_CBPF 51
#endif

static void close_all(const int *fds, uint32_t n) {
  for (uint32_t k = 0; k < n; k++) close(fds[k]);
}

int nvi_reuseport_group(uint32_t addr, int port, uint32_t count, const struct sock_fprog *prog, nvi_group_socket open_one, void *ctx,
                        int *fds, const char **step) {
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(addr) };
  *step = "socket(AF_INET, SOCK_DGRAM)";
  int probe = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (probe < 0) return errno;
  *step = "bind (the port must be free: no other switch of this host on it)";
  int bound = bind(probe, (struct sockaddr *)&sa, sizeof sa);
  int err = bound < 0 ? errno : 0;
  close(probe);
  if (err != 0) return err;
  uint32_t opened = 0;
  for (; opened < count; opened++) {
    int fd = open_one(addr, port, ctx, step);
    if (fd < 0) {
      err = -fd;
      break;
    }
    fds[opened] = fd;
  }
  if (err == 0) {
    *step = "SO_ATTACH_REUSEPORT_CBPF";
    if (setsockopt(fds[0], SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, prog, sizeof *prog) < 0) err = errno;
  }
  if (err != 0) close_all(fds, opened);
  return err;
}

napi_value nvi_fd_array(napi_env env, const int *fds, uint32_t count) {
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
}
