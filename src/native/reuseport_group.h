// A group of UDP sockets on one address and port (SO_REUSEPORT), one per data-path thread,
// with a classic BPF program on the group that picks each datagram's socket: the key
// exchange's group (kx_sockets.c) and ESP in UDP's (udp_esp.c).

#ifndef NVI_REUSEPORT_GROUP_H
#define NVI_REUSEPORT_GROUP_H

#include <linux/filter.h>
#include <node_api.h>
#include <stdint.h>

/** Opens one socket of the group, SO_REUSEPORT set and bound to addr:port; the fd, or -errno with *step named. */
typedef int (*nvi_group_socket)(uint32_t addr, int port, void *ctx, const char **step);

/**
 * Opens `count` sockets with `open_one` into fds[] (in bind order: the program's answer is an
 * index into it) and attaches `prog` to the group. The port must be free first: sockets with
 * SO_REUSEPORT would join another group of this user's on it (a second switch of the host
 * started by mistake), whose datagrams the program would then steer; a plain bind fails there
 * instead. Returns 0, or an errno with *step named; then nothing stays open.
 */
int nvi_reuseport_group(uint32_t addr, int port, uint32_t count, const struct sock_fprog *prog, nvi_group_socket open_one, void *ctx,
                        int *fds, const char **step);

/** The fds as a JS array of numbers; on failure they are closed and NULL is returned. */
napi_value nvi_fd_array(napi_env env, const int *fds, uint32_t count);

#endif
