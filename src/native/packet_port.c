// A VM port on an interface someone else feeds: the host side of a TAP that QEMU (or libvirt)
// opened, reached through an AF_PACKET socket bound to it, as Open vSwitch's userspace
// datapath reaches a system port.
//
// JS API (see src/native/addon.ts):
//   packetOpen(ifname, mtu, flags, bufferBytes, netns) -> fd      throws: config time
//
// The fd carries one frame per read()/write(), like a TAP fd, so tapRead/tapWrite (and with
// PACKET_VNET_HDR, tapReadGso/tapWriteGro with the same 10-byte virtio-net header) work on it
// unchanged. The socket sees only frames that arrive on the interface (PACKET_IGNORE_OUTGOING:
// not its own writes), sends straight to the driver (PACKET_QDISC_BYPASS), and is bound with
// protocol 0 first so no frame of another interface is queued before the bind. The host's own
// stack is kept off the interface: IPv6 disabled on it (no address, no neighbour discovery of
// its own) and no ARP answers (arp_ignore 8), written while inside the interface's namespace.

#define _GNU_SOURCE
#include "napi_util.h"
#include "netns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

/** packetOpen flags; the same values are in src/native/addon.ts. */
enum { PACKET_PORT_VNET_HDR = 1 };

/** Bring the interface up and set its MTU (when mtu > 0). */
static int link_up(const char *name, int32_t mtu, const char **step) {
  *step = "socket for interface ioctls";
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -errno;
  struct ifreq q;
  memset(&q, 0, sizeof q);
  memcpy(q.ifr_name, name, strlen(name));
  int rc = 0;
  if (mtu > 0) {
    q.ifr_mtu = mtu;
    *step = "SIOCSIFMTU";
    if (ioctl(s, SIOCSIFMTU, &q) < 0) rc = -errno;
  }
  if (rc == 0) {
    *step = "SIOCGIFFLAGS";
    if (ioctl(s, SIOCGIFFLAGS, &q) < 0) rc = -errno;
  }
  if (rc == 0 && !(q.ifr_flags & IFF_UP)) {
    q.ifr_flags |= IFF_UP;
    *step = "SIOCSIFFLAGS";
    if (ioctl(s, SIOCSIFFLAGS, &q) < 0) rc = -errno;
  }
  close(s);
  return rc;
}

/** Write `value` to /proc/sys/net/<family>/conf/<name>/<key> (of the current namespace). */
static int sysctl_if(const char *family, const char *name, const char *key, const char *value) {
  char path[128];
  snprintf(path, sizeof path, "/proc/sys/net/%s/conf/%s/%s", family, name, key);
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  ssize_t w = write(fd, value, strlen(value));
  int e = errno;
  close(fd);
  return w < 0 ? -e : 0;
}

static int set_buffer(int fd, int force_opt, int opt, int bytes) {
  if (bytes <= 0) return 0;
  if (setsockopt(fd, SOL_SOCKET, force_opt, &bytes, sizeof bytes) == 0) return 0;
  return setsockopt(fd, SOL_SOCKET, opt, &bytes, sizeof bytes);
}

/** Returns the bound socket or -errno with *step naming the call that failed. */
static int open_packet(const char *name, int32_t mtu, int32_t flags, int32_t bytes, const char **step) {
  *step = "if_nametoindex";  // ENODEV: no such interface (yet)
  unsigned ifindex = if_nametoindex(name);
  if (ifindex == 0) return -errno;
  *step = "sysctl ipv6 disable_ipv6";
  int rc = sysctl_if("ipv6", name, "disable_ipv6", "1");
  if (rc < 0) return rc;
  *step = "sysctl ipv4 arp_ignore";
  rc = sysctl_if("ipv4", name, "arp_ignore", "8");
  if (rc < 0) return rc;
  rc = link_up(name, mtu, step);
  if (rc < 0) return rc;
  *step = "socket(AF_PACKET, SOCK_RAW)";
  int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int one = 1;
  *step = "PACKET_IGNORE_OUTGOING";
  if (setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one) < 0) goto fail;
  *step = "PACKET_QDISC_BYPASS";
  if (setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one) < 0) goto fail;
  if (flags & PACKET_PORT_VNET_HDR) {
    *step = "PACKET_VNET_HDR";
    if (setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof one) < 0) goto fail;
  }
  *step = "SO_RCVBUF";
  if (set_buffer(fd, SO_RCVBUFFORCE, SO_RCVBUF, bytes) < 0) goto fail;
  *step = "SO_SNDBUF";
  if (set_buffer(fd, SO_SNDBUFFORCE, SO_SNDBUF, bytes) < 0) goto fail;
  struct sockaddr_ll sll;
  memset(&sll, 0, sizeof sll);
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(ETH_P_ALL);
  sll.sll_ifindex = (int)ifindex;
  *step = "bind";
  if (bind(fd, (struct sockaddr *)&sll, sizeof sll) < 0) goto fail;
  return fd;
fail: {
  int e = errno;
  close(fd);
  return -e;
}
}

static napi_value packet_open(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  char name[IFNAMSIZ], path[256];
  int32_t mtu, flags, bytes;
  int has_ns;
  if (nvi_args(env, info, 5, argv) || nvi_string(env, argv[0], "interface name", name, sizeof name) ||
      nvi_i32(env, argv[1], "mtu", &mtu) || nvi_i32(env, argv[2], "flags", &flags) ||
      nvi_i32(env, argv[3], "bufferBytes", &bytes) || nvi_opt_string(env, argv[4], "netns path", path, sizeof path, &has_ns)) {
    return NULL;
  }
  int saved;
  if (nvi_netns_enter_or_throw(env, has_ns ? path : NULL, &saved)) return NULL;
  const char *step;
  int fd = open_packet(name, mtu, flags, bytes, &step);
  nvi_netns_leave(saved);
  if (fd < 0) {
    nvi_throw_errno(env, step, -fd);
    return NULL;
  }
  return nvi_int(env, fd);
}

int nvi_init_packet_port(napi_env env, napi_value exports) {
  return nvi_export(env, exports, "packetOpen", packet_open);
}
