// TAP ports (Linux tun driver, Documentation/networking/tuntap.rst).
//
// JS API (see src/native/addon.ts):
//   tapOpen(name, mtu, flags, netns, mac) -> { fd, name }    throws: config time
//   tapRead(fd, buf, firstOff, stride, cap, n, lens, hdrLen) -> frames read, or -errno
//   tapWrite(fd, buf, start, len, idx, n, hdrLen, status) -> frames written
//   tapReadGso(fd, scratch, state, buf, firstOff, stride, cap, n, lens, counts) -> slots filled, or -errno
//   tapWriteGro(fd, buf, start, len, idx, n, status, scratch, udp) -> frames written (runs of one flow as one write)
//   tapUso(fd) -> UDP segmentation offload turned on for this offloading TAP; false where the kernel has none (before 6.2)
//
// One read()/write() per frame: the tun fd carries exactly one frame per system call.
// With IFF_VNET_HDR each frame is preceded by a virtio-net header of hdrLen bytes.
// Without TAP_OFFLOAD no offload is enabled with TUNSETOFFLOAD, so the kernel sends no GSO or
// partial-checksum frames: tapRead discards the header and tapWrite sends a zero one, which is
// exact. With TAP_OFFLOAD (TUN_F_CSUM | TUN_F_TSO6) the guest may send TSO super-frames and
// partial checksums: tapReadGso reads the header, segments and completes checksums (gso.c);
// tapWriteGro writes runs of one TCP flow, and with `udp` runs of one UDP flow, as one
// super-frame (gro.c); a frame alone goes with DATA_VALID. tapUso adds UDP segmentation
// offload both ways (VIRTIO_NET_HDR_GSO_UDP_L4: the guest may hand over UDP super-frames,
// which tapReadGso cuts into datagrams): TUNSETOFFLOAD with TUN_F_USO4 | TUN_F_USO6, which
// fails with EINVAL before Linux 6.2 (wireguard-go probes it the same way).

#define _GNU_SOURCE
#include "fd_io.h"
#include "gro.h"
#include "gso.h"
#include "napi_util.h"
#include "wake_times.h"
#include "netns.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if_arp.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/** tapOpen flags; the same values are in src/native/addon.ts. TAP_OFFLOAD accepts TSO and partial
 * checksums from the guest (TUNSETOFFLOAD); TAP_NAPI lets the kernel run GRO on what we write;
 * TAP_PERSIST keeps the device after its fd closes (one a hypervisor opens by name later);
 * TAP_MULTI_QUEUE (IFF_MULTI_QUEUE) makes each open of the same name one more queue of the
 * device, with its own fd: the kernel puts each flow's frames on one queue (by its hash, or
 * the queue where the switch last wrote that flow's frames), so each thread reads its own. */
enum { TAP_VNET_HDR = 1, TAP_BLOCKING = 2, TAP_OFFLOAD = 4, TAP_NAPI = 8, TAP_PERSIST = 16, TAP_MULTI_QUEUE = 32 };
/** counts[] of tapReadGso. */
enum { RX_FRAMES = 0, RX_MALFORMED = 1, RX_TOO_BIG = 2, RX_COUNTS = 3 };
/** Size of struct virtio_net_hdr, the default TUNSETVNETHDRSZ. */
enum { VNET_HDR_LEN = 10 };
static const uint8_t zero_hdr[16];
#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20  // linux/if_tun.h of 6.2; the build machine's headers may be older
#define TUN_F_USO6 0x40
#endif
/** The offloads the switch always takes from a guest (tapReadGso segments them); tapUso adds UDP segmentation. */
static const unsigned long TAP_OFFLOADS = TUN_F_CSUM | TUN_F_TSO6;

/** Steps 2-4 of tapOpen; returns 0 or -errno with *step naming the call that failed. */
static int open_tap(const char *name, int32_t mtu, int32_t flags, const uint8_t *mac, char *actual, const char **step) {
  *step = "open /dev/net/tun";
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | ((flags & TAP_BLOCKING) ? 0 : O_NONBLOCK));
  if (fd < 0) return -errno;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | ((flags & (TAP_VNET_HDR | TAP_OFFLOAD)) ? IFF_VNET_HDR : 0) | ((flags & TAP_NAPI) ? IFF_NAPI : 0) |
                  ((flags & TAP_MULTI_QUEUE) ? IFF_MULTI_QUEUE : 0);
  memcpy(ifr.ifr_name, name, strlen(name));  // strlen < IFNAMSIZ, checked by tap_open
  *step = "TUNSETIFF";
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) goto fail;
  memcpy(actual, ifr.ifr_name, IFNAMSIZ);
  actual[IFNAMSIZ - 1] = 0;
  if (flags & TAP_PERSIST) {
    *step = "TUNSETPERSIST";
    if (ioctl(fd, TUNSETPERSIST, 1L) < 0) goto fail;
  }
  if (flags & TAP_OFFLOAD) {
    *step = "TUNSETOFFLOAD";
    if (ioctl(fd, TUNSETOFFLOAD, TAP_OFFLOADS) < 0) goto fail;
  }

  *step = "socket for interface ioctls";
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) goto fail;
  struct ifreq q;
  memset(&q, 0, sizeof q);
  memcpy(q.ifr_name, actual, IFNAMSIZ);
  if (mtu > 0) {
    q.ifr_mtu = mtu;
    *step = "SIOCSIFMTU";
    if (ioctl(s, SIOCSIFMTU, &q) < 0) goto fail_s;
  }
  if (mac != NULL) {
    // The guest side's MAC, set before the link comes up so its first frames carry it.
    q.ifr_hwaddr.sa_family = ARPHRD_ETHER;
    memcpy(q.ifr_hwaddr.sa_data, mac, 6);
    *step = "SIOCSIFHWADDR";
    if (ioctl(s, SIOCSIFHWADDR, &q) < 0) goto fail_s;
  }
  *step = "SIOCGIFFLAGS";
  if (ioctl(s, SIOCGIFFLAGS, &q) < 0) goto fail_s;
  q.ifr_flags |= IFF_UP;
  *step = "SIOCSIFFLAGS";
  if (ioctl(s, SIOCSIFFLAGS, &q) < 0) goto fail_s;
  close(s);
  return fd;

fail_s: {
  int e = errno;
  close(s);
  errno = e;
}
fail: {
  int e = errno;
  close(fd);
  return -e;
}
}

static napi_value tap_open(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  char name[IFNAMSIZ], path[256], actual[IFNAMSIZ];
  int32_t mtu, flags;
  int has_ns;
  if (nvi_args(env, info, 5, argv) || nvi_string(env, argv[0], "TAP name", name, sizeof name) ||
      nvi_i32(env, argv[1], "mtu", &mtu) || nvi_i32(env, argv[2], "flags", &flags) ||
      nvi_opt_string(env, argv[3], "netns path", path, sizeof path, &has_ns)) {
    return NULL;
  }
  uint8_t *macp = NULL;  // points into the JS buffer, used only during this call
  napi_valuetype mt;
  napi_typeof(env, argv[4], &mt);
  if (mt != napi_null && mt != napi_undefined) {
    size_t maclen = 0;
    if (nvi_bytes(env, argv[4], "mac", &macp, &maclen)) return NULL;
    if (maclen != 6) {
      napi_throw_range_error(env, NULL, "mac must be 6 bytes");
      return NULL;
    }
  }
  // 1. Step into the namespace: the device is created where /dev/net/tun is opened.
  int saved;
  if (nvi_netns_enter_or_throw(env, has_ns ? path : NULL, &saved)) return NULL;
  // 2. Create or attach the device; 3. set the MTU and MAC; 4. bring the link up.
  const char *step;
  int fd = open_tap(name, mtu, flags, macp, actual, &step);
  nvi_netns_leave(saved);
  if (fd < 0) {
    nvi_throw_errno(env, step, -fd);
    return NULL;
  }
  napi_value out, v;
  napi_create_object(env, &out);
  napi_create_int32(env, fd, &v);
  napi_set_named_property(env, out, "fd", v);
  napi_create_string_utf8(env, actual, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, out, "name", v);
  return out;
}

static napi_value tap_read(napi_env env, napi_callback_info info) {
  nvi_wake_read();
  napi_value argv[8];
  int32_t fd, firstOff, stride, cap, n, hdr;
  uint8_t *buf;
  size_t buf_len, lens_len;
  int32_t *lens;
  if (nvi_args(env, info, 8, argv) || nvi_i32(env, argv[0], "fd", &fd) ||
      nvi_bytes(env, argv[1], "buf", &buf, &buf_len) || nvi_i32(env, argv[2], "firstOff", &firstOff) ||
      nvi_i32(env, argv[3], "stride", &stride) || nvi_i32(env, argv[4], "cap", &cap) ||
      nvi_i32(env, argv[5], "n", &n) || nvi_i32_array(env, argv[6], "lens", &lens, &lens_len) ||
      nvi_i32(env, argv[7], "hdrLen", &hdr) || nvi_check_slots(env, buf_len, firstOff, stride, cap, n)) {
    return NULL;
  }
  if ((size_t)n > lens_len || hdr < 0 || hdr > (int32_t)sizeof zero_hdr) {
    nvi_throw_range(env, "n %d exceeds lens (%zu) or bad header length %d", n, lens_len, hdr);
    return NULL;
  }
  uint8_t vnet[sizeof zero_hdr];
  int32_t k = 0;
  while (k < n) {
    uint8_t *dst = buf + firstOff + (size_t)k * stride;
    ssize_t r;
    if (hdr > 0) {
      struct iovec iov[2] = {{vnet, (size_t)hdr}, {dst, (size_t)cap}};
      r = readv(fd, iov, 2);
      if (r >= 0) r = r > hdr ? r - hdr : 0;
    } else {
      r = read(fd, dst, (size_t)cap);
    }
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      // A hard error: report it now if nothing was read, else on the next call.
      if (k == 0) return nvi_int(env, -errno);
      break;
    }
    // A frame longer than the slot is cut to cap bytes; its IPv6 length no longer matches
    // and the parse stage drops it under a named reason.
    lens[k] = r > cap ? cap : (int32_t)r;
    k++;
  }
  return nvi_int(env, k);
}

static napi_value tap_write(napi_env env, napi_callback_info info) {
  nvi_wake_send();
  napi_value argv[8];
  int32_t fd, n, hdr;
  uint8_t *buf;
  size_t buf_len, start_len, len_len, idx_len, status_len;
  int32_t *start, *len, *idx, *status;
  if (nvi_args(env, info, 8, argv) || nvi_i32(env, argv[0], "fd", &fd) ||
      nvi_bytes(env, argv[1], "buf", &buf, &buf_len) || nvi_i32_array(env, argv[2], "start", &start, &start_len) ||
      nvi_i32_array(env, argv[3], "len", &len, &len_len) || nvi_i32_array(env, argv[4], "idx", &idx, &idx_len) ||
      nvi_i32(env, argv[5], "n", &n) || nvi_i32(env, argv[6], "hdrLen", &hdr) ||
      nvi_i32_array(env, argv[7], "status", &status, &status_len)) {
    return NULL;
  }
  if (status_len < NVI_TX_STATUS_LEN || hdr < 0 || hdr > (int32_t)sizeof zero_hdr) {
    nvi_throw_range(env, "status needs %d entries; header length %d", NVI_TX_STATUS_LEN, hdr);
    return NULL;
  }
  size_t arr_len = start_len < len_len ? start_len : len_len;
  if (nvi_check_packets(env, buf_len, start, len, arr_len, idx, idx_len, n)) return NULL;


  int32_t written = 0, failed = 0, last_errno = 0, stopped = 0;
  for (int32_t k = 0; k < n; k++) {
    int32_t i = idx[k];
    ssize_t r;
    do {
      if (hdr > 0) {
        struct iovec iov[2] = {{(void *)zero_hdr, (size_t)hdr}, {buf + start[i], (size_t)len[i]}};
        r = writev(fd, iov, 2);
      } else {
        r = write(fd, buf + start[i], (size_t)len[i]);
      }
    } while (r < 0 && errno == EINTR);
    if (r >= 0) {
      written++;
      continue;
    }
    last_errno = errno;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
      stopped = 1;  // the device queue is full: the rest of the batch is not attempted
      break;
    }
    failed++;  // this frame is refused (e.g. EINVAL, EIO); go on with the next
  }
  status[NVI_TX_FAILED] = failed;
  status[NVI_TX_ERRNO] = last_errno;
  status[NVI_TX_STOPPED] = stopped;
  return nvi_int(env, written);
}

/**
 * Read from an offloading TAP (TAP_OFFLOAD): each read() brings one frame of up to 64 KB
 * with its virtio-net header into `scratch`; gso.c makes it into wire frames in the slots.
 * A frame whose segments do not fit the slots left stays in scratch (state[0] = its length)
 * and is taken first by the next call. Frames refused are counted in counts[].
 *
 * Invariants: a record reaches nvi_gso_segment only when it holds the whole virtio-net header
 * (r >= GSO_VNET_HDR_LEN), so r - GSO_VNET_HDR_LEN never wraps; a shorter record (1 to 9
 * bytes) is refused and counted RX_MALFORMED. state[0] is 0 or such a whole record's length.
 * read() returning 0 is the end of the stream (a pipe or socket whose writer is gone; a tun
 * fd has no end and never returns 0): the call stops there rather than read again forever.
 */
static napi_value tap_read_gso(napi_env env, napi_callback_info info) {
  nvi_wake_read();
  napi_value argv[10];
  int32_t fd, first_off, stride, cap, n, *state, *lens, *counts;
  uint8_t *scratch, *buf;
  size_t scratch_len, buf_len, state_len, lens_len, counts_len;
  if (nvi_args(env, info, 10, argv) || nvi_i32(env, argv[0], "fd", &fd) || nvi_bytes(env, argv[1], "scratch", &scratch, &scratch_len) ||
      nvi_i32_array(env, argv[2], "state", &state, &state_len) || nvi_bytes(env, argv[3], "buf", &buf, &buf_len) ||
      nvi_i32(env, argv[4], "firstOff", &first_off) || nvi_i32(env, argv[5], "stride", &stride) || nvi_i32(env, argv[6], "cap", &cap) ||
      nvi_i32(env, argv[7], "n", &n) || nvi_i32_array(env, argv[8], "lens", &lens, &lens_len) ||
      nvi_i32_array(env, argv[9], "counts", &counts, &counts_len) || nvi_check_slots(env, buf_len, first_off, stride, cap, n)) {
    return NULL;
  }
  if (state_len < 1 || counts_len < RX_COUNTS || (size_t)n > lens_len || scratch_len < GSO_VNET_HDR_LEN + 65536 ||
      state[0] < 0 || (state[0] > 0 && state[0] < GSO_VNET_HDR_LEN) || (size_t)state[0] > scratch_len) {
    nvi_throw_range(env, "tapReadGso: bad state, counts, lens or scratch (%zu bytes)", scratch_len);
    return NULL;
  }
  int32_t k = 0;
  while (k < n) {
    ssize_t r = state[0];
    if (r == 0) {
      r = read(fd, scratch, scratch_len);
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        if (k == 0) return nvi_int(env, -errno);
        break;
      }
      if (r == 0) break;  // end of the stream: nothing more to read, now or later
      if (r < GSO_VNET_HDR_LEN) {
        counts[RX_MALFORMED]++;  // not even a whole virtio-net header
        continue;
      }
    }
    int32_t got = nvi_gso_segment(scratch, scratch + GSO_VNET_HDR_LEN, (size_t)r - GSO_VNET_HDR_LEN, buf, first_off + k * stride,
                                  stride, cap, n - k, lens + k);
    if (got == GSO_NO_ROOM && k > 0) {
      state[0] = (int32_t)r;  // for the next batch
      return nvi_int(env, k);
    }
    state[0] = 0;
    if (got > 0) {
      counts[RX_FRAMES]++;
      k += got;
    } else if (got == GSO_MALFORMED) {
      counts[RX_MALFORMED]++;
    } else {
      counts[RX_TOO_BIG]++;  // GSO_TOO_BIG, or more segments than a whole batch holds
    }
  }
  return nvi_int(env, k);
}

/**
 * Write to an offloading TAP: runs of one TCP flow as one super-frame (gro.c, built in
 * `scratch`), other frames alone with DATA_VALID. Counts every delivered frame of a run as
 * written when the run's write succeeds; failures as tapWrite.
 */
static napi_value tap_write_gro(napi_env env, napi_callback_info info) {
  nvi_wake_send();
  napi_value argv[9];
  int32_t fd, n;
  uint8_t *buf, *scratch;
  size_t buf_len, start_len, len_len, idx_len, status_len, scratch_len;
  int32_t *start, *len, *idx, *status;
  int udp;
  if (nvi_args(env, info, 9, argv) || nvi_bool(env, argv[8], "udp", &udp) || nvi_i32(env, argv[0], "fd", &fd) || nvi_bytes(env, argv[1], "buf", &buf, &buf_len) ||
      nvi_i32_array(env, argv[2], "start", &start, &start_len) || nvi_i32_array(env, argv[3], "len", &len, &len_len) ||
      nvi_i32_array(env, argv[4], "idx", &idx, &idx_len) || nvi_i32(env, argv[5], "n", &n) ||
      nvi_i32_array(env, argv[6], "status", &status, &status_len) || nvi_bytes(env, argv[7], "scratch", &scratch, &scratch_len)) {
    return NULL;
  }
  if (status_len < NVI_TX_STATUS_LEN || scratch_len < GRO_MAX_FRAME) {
    nvi_throw_range(env, "tapWriteGro: status needs %d entries, scratch %d bytes", NVI_TX_STATUS_LEN, GRO_MAX_FRAME);
    return NULL;
  }
  size_t arr_len = start_len < len_len ? start_len : len_len;
  if (nvi_check_packets(env, buf_len, start, len, arr_len, idx, idx_len, n)) return NULL;
  int32_t written = 0, failed = 0, last_errno = 0, stopped = 0;
  uint8_t vnet[GRO_VNET_HDR_LEN];
  for (int32_t k = 0; k < n;) {
    int32_t end = nvi_gro_run(buf, start, len, idx, k, n, udp);
    struct iovec iov[2];
    iov[0].iov_base = vnet;
    iov[0].iov_len = GRO_VNET_HDR_LEN;
    if (end == k + 1) {
      memset(vnet, 0, sizeof vnet);
      vnet[0] = 2;  // DATA_VALID: the checksum was checked (or made) before
      iov[1].iov_base = buf + start[idx[k]];
      iov[1].iov_len = (size_t)len[idx[k]];
    } else {
      iov[1].iov_base = scratch;
      iov[1].iov_len = nvi_gro_build(buf, start, len, idx, k, end, vnet, scratch);
    }
    ssize_t r;
    do {
      r = writev(fd, iov, 2);
    } while (r < 0 && errno == EINTR);
    if (r >= 0) {
      written += end - k;
      k = end;
      continue;
    }
    last_errno = errno;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
      stopped = 1;
      break;
    }
    failed += end - k;
    k = end;
  }
  status[NVI_TX_FAILED] = failed;
  status[NVI_TX_ERRNO] = last_errno;
  status[NVI_TX_STOPPED] = stopped;
  return nvi_int(env, written);
}

static napi_value tap_uso(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (nvi_args(env, info, 1, argv) || nvi_i32(env, argv[0], "fd", &fd)) return NULL;
  int ok = ioctl(fd, TUNSETOFFLOAD, TAP_OFFLOADS | TUN_F_USO4 | TUN_F_USO6) == 0;
  if (!ok && errno != EINVAL) {
    nvi_throw_errno(env, "TUNSETOFFLOAD", errno);
    return NULL;
  }
  napi_value v;
  napi_get_boolean(env, ok, &v);
  return v;
}

int nvi_init_tap(napi_env env, napi_value exports) {
  return nvi_export(env, exports, "tapOpen", tap_open) || nvi_export(env, exports, "tapRead", tap_read) ||
         nvi_export(env, exports, "tapWrite", tap_write) || nvi_export(env, exports, "tapReadGso", tap_read_gso) ||
         nvi_export(env, exports, "tapWriteGro", tap_write_gro) || nvi_export(env, exports, "tapUso", tap_uso);
}
