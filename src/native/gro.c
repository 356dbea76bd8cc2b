// Receive offload toward a guest's TAP: runs of consecutive TCP segments of one flow, and
// (with `udp`, on kernels that take UDP segmentation offload) runs of UDP datagrams of one
// flow, are written as one super-frame with a GSO virtio-net header (partial checksum),
// everything else alone and marked DATA_VALID. The same rules as src/io/gro.ts (the tested
// TypeScript reference); test/gro.test.ts holds the two to identical bytes.
//
// JS API (see src/native/addon.ts):
//   groCoalesce(buf, start, len, idx, n, out, outLens, counts, udp) -> frames written to out,
//     each [virtio-net header][frame], their lengths in outLens, merged counts in counts.

#include "gro.h"

#include "fd_io.h"
#include "napi_util.h"

#include <string.h>

enum { ETH_HLEN = 14, IPV6_HLEN = 40, TCP = ETH_HLEN + IPV6_HLEN, UDP = TCP, UDP_HLEN = 8, MAX_SUPER = 65535 + IPV6_HLEN };
/** Datagrams in one UDP super-frame at most (the kernel's UDP_MAX_SEGMENTS is 64 on older kernels, 128 since). */
enum { MAX_UDP_SEGS = 64 };
enum { FIN = 0x01, PSH = 0x08, CWR = 0x80, END_FLAGS = 0x01 | 0x02 | 0x04 | 0x08 | 0x20 };
enum { VNET_F_NEEDS_CSUM = 1, VNET_F_DATA_VALID = 2, VNET_GSO_TCPV6 = 4, VNET_GSO_UDP_L4 = 5 };

static uint32_t be32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/** TCP header length of a frame that may start or join a super-frame, else 0. */
static size_t tcp_header(const uint8_t *f, size_t len) {
  if (len < TCP + 20 || f[12] != 0x86 || f[13] != 0xdd || f[ETH_HLEN + 6] != 6) return 0;
  size_t plen = ((size_t)f[ETH_HLEN + 4] << 8) | f[ETH_HLEN + 5];
  size_t th = (size_t)(f[TCP + 12] >> 4) * 4;
  if (th < 20 || ETH_HLEN + IPV6_HLEN + plen != len || TCP + th > len) return 0;
  return th;
}

static int joins(const uint8_t *a, size_t th, const uint8_t *b, size_t b_len, uint32_t next_seq) {
  if (tcp_header(b, b_len) != th || b_len - TCP - th == 0) return 0;
  uint8_t bf = b[TCP + 13];
  if ((bf & CWR) || (uint8_t)(bf & ~(FIN | PSH)) != a[TCP + 13]) return 0;
  if (memcmp(a, b, ETH_HLEN + 4) || memcmp(a + ETH_HLEN + 6, b + ETH_HLEN + 6, IPV6_HLEN - 6)) return 0;
  if (memcmp(a + TCP, b + TCP, 4) || be32(b + TCP + 4) != next_seq) return 0;
  for (size_t k = 8; k < th; k++) {
    if (k == 13 || k == 16 || k == 17) continue;
    if (a[TCP + k] != b[TCP + k]) return 0;
  }
  return 1;
}

/** `sum` plus the ones'-complement sum of n bytes as big-endian 16-bit words (an odd last byte padded with zero). */
static uint64_t sum16(const uint8_t *p, size_t n, uint64_t sum) {
  for (; n > 1; p += 2, n -= 2) sum += (uint32_t)((p[0] << 8) | p[1]);
  if (n) sum += (uint32_t)(p[0] << 8);
  return sum;
}

static uint16_t fold(uint64_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)sum;
}

/**
 * Payload length of a UDP datagram that may start or join a super-frame, else 0: IPv6 with
 * no extension header, UDP length equal to the IPv6 payload length, a payload, and a
 * checksum that verifies (a merged datagram's own checksum is not written, so it is checked
 * here, as the kernel's GRO does).
 */
static size_t udp_payload(const uint8_t *f, size_t len) {
  if (len <= UDP + UDP_HLEN || f[12] != 0x86 || f[13] != 0xdd || f[ETH_HLEN + 6] != 17) return 0;
  size_t plen = ((size_t)f[ETH_HLEN + 4] << 8) | f[ETH_HLEN + 5];
  size_t ulen = ((size_t)f[UDP + 4] << 8) | f[UDP + 5];
  if (ETH_HLEN + IPV6_HLEN + plen != len || ulen != plen) return 0;
  if (f[UDP + 6] == 0 && f[UDP + 7] == 0) return 0;  // no checksum: not valid over IPv6
  if (fold(sum16(f + UDP, ulen, sum16(f + ETH_HLEN + 8, 32, ulen + 17))) != 0xffff) return 0;
  return ulen - UDP_HLEN;
}

/** Same Ethernet header, IPv6 header but the payload length, and UDP ports. */
static int same_udp_flow(const uint8_t *a, const uint8_t *b) {
  return memcmp(a, b, ETH_HLEN + 4) == 0 && memcmp(a + ETH_HLEN + 6, b + ETH_HLEN + 6, IPV6_HLEN - 6) == 0 && memcmp(a + UDP, b + UDP, 4) == 0;
}

static int32_t udp_run(const uint8_t *buf, const int32_t *start, const int32_t *len, const int32_t *idx, int32_t k, int32_t n) {
  const uint8_t *a = buf + start[idx[k]];
  size_t seg = udp_payload(a, (size_t)len[idx[k]]);
  if (seg == 0) return k + 1;
  size_t total = (size_t)len[idx[k]] - ETH_HLEN;
  int32_t end = k + 1;
  while (end < n && end - k < MAX_UDP_SEGS) {
    const uint8_t *b = buf + start[idx[end]];
    size_t b_seg = udp_payload(b, (size_t)len[idx[end]]);
    if (b_seg == 0 || b_seg > seg || total + b_seg > MAX_SUPER || !same_udp_flow(a, b)) break;
    total += b_seg;
    end++;
    if (b_seg < seg) break;  // a shorter datagram ends the run
  }
  return end;
}

int32_t nvi_gro_run(const uint8_t *buf, const int32_t *start, const int32_t *len, const int32_t *idx, int32_t k, int32_t n, int udp) {
  const uint8_t *a = buf + start[idx[k]];
  if (udp && (size_t)len[idx[k]] > UDP && a[ETH_HLEN + 6] == 17) return udp_run(buf, start, len, idx, k, n);
  size_t a_len = (size_t)len[idx[k]];
  size_t th = tcp_header(a, a_len);
  if (th == 0 || a_len == TCP + th || (a[TCP + 13] & END_FLAGS)) return k + 1;
  size_t mss = a_len - TCP - th;
  uint32_t next = be32(a + TCP + 4) + (uint32_t)mss;
  size_t total = a_len - ETH_HLEN;
  int32_t end = k + 1;
  while (end < n) {
    const uint8_t *b = buf + start[idx[end]];
    size_t b_len = (size_t)len[idx[end]];
    size_t seg = b_len > TCP + th ? b_len - TCP - th : 0;
    if (total + seg > MAX_SUPER || seg > mss || !joins(a, th, b, b_len, next)) break;
    total += seg;
    next += (uint32_t)seg;
    end++;
    if (seg < mss || (b[TCP + 13] & END_FLAGS)) break;
  }
  return end;
}

/** The virtio-net header of a super-frame: partial checksum at csum_start + csum_offset, segments of `size` after `hdr` bytes of headers. */
static void gso_header(uint8_t *vnet, uint8_t type, size_t hdr, size_t size, size_t csum_start, size_t csum_offset) {
  vnet[0] = VNET_F_NEEDS_CSUM;
  vnet[1] = type;
  vnet[2] = (uint8_t)hdr;
  vnet[3] = (uint8_t)(hdr >> 8);
  vnet[4] = (uint8_t)size;
  vnet[5] = (uint8_t)(size >> 8);
  vnet[6] = (uint8_t)csum_start;
  vnet[7] = (uint8_t)(csum_start >> 8);
  vnet[8] = (uint8_t)csum_offset;
  vnet[9] = (uint8_t)(csum_offset >> 8);
}

/** The UDP super-frame of datagrams idx[k..end): the first's headers, every payload, one partial checksum. */
static size_t udp_build(const uint8_t *buf, const int32_t *start, const int32_t *len, const int32_t *idx, int32_t k, int32_t end,
                        uint8_t *vnet, uint8_t *out) {
  const uint8_t *a = buf + start[idx[k]];
  size_t hdr = UDP + UDP_HLEN;
  memcpy(out, a, hdr);
  size_t at = hdr;
  for (int32_t m = k; m < end; m++) {
    size_t seg = (size_t)len[idx[m]] - hdr;
    memcpy(out + at, buf + start[idx[m]] + hdr, seg);
    at += seg;
  }
  size_t plen = at - ETH_HLEN - IPV6_HLEN;
  out[ETH_HLEN + 4] = out[UDP + 4] = (uint8_t)(plen >> 8);
  out[ETH_HLEN + 5] = out[UDP + 5] = (uint8_t)plen;
  // Partial checksum over the super-frame's length: the kernel adjusts it for each datagram it cuts.
  uint16_t sum = fold(sum16(out + ETH_HLEN + 8, 32, plen + 17));
  out[UDP + 6] = (uint8_t)(sum >> 8);
  out[UDP + 7] = (uint8_t)sum;
  gso_header(vnet, VNET_GSO_UDP_L4, hdr, (size_t)len[idx[k]] - hdr, UDP, 6);
  return at;
}

size_t nvi_gro_build(const uint8_t *buf, const int32_t *start, const int32_t *len, const int32_t *idx, int32_t k, int32_t end,
                     uint8_t *vnet, uint8_t *out) {
  const uint8_t *a = buf + start[idx[k]];
  size_t a_len = (size_t)len[idx[k]];
  memset(vnet, 0, GRO_VNET_HDR_LEN);
  if (end == k + 1) {
    vnet[0] = VNET_F_DATA_VALID;
    memcpy(out, a, a_len);
    return a_len;
  }
  if (a[ETH_HLEN + 6] == 17) return udp_build(buf, start, len, idx, k, end, vnet, out);
  size_t th = tcp_header(a, a_len);
  size_t hdr = TCP + th;
  memcpy(out, a, hdr);
  size_t at = hdr;
  for (int32_t m = k; m < end; m++) {
    const uint8_t *f = buf + start[idx[m]];
    size_t seg = (size_t)len[idx[m]] - hdr;
    memcpy(out + at, f + hdr, seg);
    at += seg;
  }
  size_t plen = at - ETH_HLEN - IPV6_HLEN;
  out[ETH_HLEN + 4] = (uint8_t)(plen >> 8);
  out[ETH_HLEN + 5] = (uint8_t)plen;
  out[TCP + 13] = (uint8_t)(a[TCP + 13] | (buf[start[idx[end - 1]] + TCP + 13] & (FIN | PSH)));
  // Partial checksum: the pseudo-header sum, folded, not complemented (virtio NEEDS_CSUM).
  uint16_t sum = fold(sum16(out + ETH_HLEN + 8, 32, plen + 6));
  out[TCP + 16] = (uint8_t)(sum >> 8);
  out[TCP + 17] = (uint8_t)sum;
  gso_header(vnet, VNET_GSO_TCPV6, hdr, a_len - hdr, TCP, 16);
  return at;
}

static napi_value gro_coalesce(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  uint8_t *buf, *out;
  size_t buf_len, start_len, len_len, idx_len, out_len, lens_len, counts_len;
  int32_t *start, *len, *idx, *out_lens, *counts, n;
  int udp;
  if (nvi_args(env, info, 9, argv) || nvi_bool(env, argv[8], "udp", &udp) || nvi_bytes(env, argv[0], "buf", &buf, &buf_len) ||
      nvi_i32_array(env, argv[1], "start", &start, &start_len) || nvi_i32_array(env, argv[2], "len", &len, &len_len) ||
      nvi_i32_array(env, argv[3], "idx", &idx, &idx_len) || nvi_i32(env, argv[4], "n", &n) || nvi_bytes(env, argv[5], "out", &out, &out_len) ||
      nvi_i32_array(env, argv[6], "outLens", &out_lens, &lens_len) || nvi_i32_array(env, argv[7], "counts", &counts, &counts_len)) {
    return NULL;
  }
  size_t arr_len = start_len < len_len ? start_len : len_len;
  if (nvi_check_packets(env, buf_len, start, len, arr_len, idx, idx_len, n)) return NULL;
  if ((size_t)n > lens_len || (size_t)n > counts_len) {
    nvi_throw_range(env, "groCoalesce: %d frames for %zu lengths", n, lens_len);
    return NULL;
  }
  size_t at = 0;
  int32_t m = 0;
  for (int32_t k = 0; k < n;) {
    int32_t end = nvi_gro_run(buf, start, len, idx, k, n, udp);
    size_t need = 0;
    for (int32_t j = k; j < end; j++) need += (size_t)len[idx[j]];
    if (at + GRO_VNET_HDR_LEN + need > out_len) {
      nvi_throw_range(env, "groCoalesce: out has %zu bytes, needs more", out_len);
      return NULL;
    }
    size_t f = nvi_gro_build(buf, start, len, idx, k, end, out + at, out + at + GRO_VNET_HDR_LEN);
    out_lens[m] = (int32_t)(GRO_VNET_HDR_LEN + f);
    counts[m] = end - k;
    at += GRO_VNET_HDR_LEN + f;
    m++;
    k = end;
  }
  return nvi_int(env, m);
}

int nvi_init_gro(napi_env env, napi_value exports) {
  return nvi_export(env, exports, "groCoalesce", gro_coalesce);
}
