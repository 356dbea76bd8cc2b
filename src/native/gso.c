// Offloaded frames from a TAP (IFF_VNET_HDR with TSO and checksum offload) made into wire
// frames: a TCP/IPv6 TSO frame is cut at gso_size with complete checksums, so is a UDP/IPv6
// super-frame (UDP segmentation offload, GSO_UDP_L4: one datagram per gso_size bytes), and a
// frame with a partial checksum gets it completed. The same rules as src/dataplane/gso.ts (the tested
// TypeScript reference); test/gso.test.ts holds the two to identical bytes.
//
// JS API (see src/native/addon.ts):
//   gsoSegment(src, off, len, dst, firstOff, stride, cap, maxSlots, lens) -> segments, or
//     GSO_NO_ROOM / GSO_MALFORMED / GSO_TOO_BIG; the virtio-net header is at src[off], the
//     frame after it (len bytes in all, header included).

#include "gso.h"

#include "fd_io.h"
#include "napi_util.h"

#include <string.h>

enum { VNET_F_NEEDS_CSUM = 1, VNET_GSO_NONE = 0, VNET_GSO_TCPV6 = 4, VNET_GSO_UDP_L4 = 5, VNET_GSO_ECN = 0x80 };
enum { ETH_HLEN = 14, IPV6_HLEN = 40, MAX_EXT = 8 };
enum { P_HOPOPTS = 0, P_TCP = 6, P_UDP = 17, P_ROUTING = 43, P_FRAGMENT = 44, P_AH = 51, P_DSTOPTS = 60 };

static uint16_t le16(const uint8_t *p) {
  return (uint16_t)(p[0] | (p[1] << 8));
}

/** One's-complement sum of p[0, n) added to sum (not folded). */
static uint64_t sum16(const uint8_t *p, size_t n, uint64_t sum) {
  size_t k = 0;
  for (; k + 1 < n; k += 2) sum += (uint32_t)((p[k] << 8) | p[k + 1]);
  if (n & 1) sum += (uint32_t)(p[n - 1] << 8);
  return sum;
}

static uint16_t fold(uint64_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)~sum;
}

/** Offset of the `proto` header after the IPv6 extension headers, or -1 (the rules of parseIpv6). */
static int32_t l4_offset(const uint8_t *f, size_t len, uint8_t proto) {
  size_t p = ETH_HLEN + IPV6_HLEN;
  uint8_t next = f[ETH_HLEN + 6];
  for (int n = 0;; n++) {
    if (next == proto) return (int32_t)p;
    if (next != P_HOPOPTS && next != P_ROUTING && next != P_DSTOPTS && next != P_AH) return -1;  // fragments too
    if (n == MAX_EXT || (next == P_HOPOPTS && n != 0) || p + 8 > len) return -1;
    size_t h = next == P_AH ? ((size_t)f[p + 1] + 2) * 4 : ((size_t)f[p + 1] + 1) * 8;
    if (p + h > len) return -1;
    next = f[p];
    p += h;
  }
}

/** How many segments of `size` payload bytes the frame makes after its headers (up to hdr_end), or GSO_NO_ROOM / GSO_TOO_BIG. */
static int32_t segment_count(size_t len, size_t hdr_end, uint16_t size, int32_t cap, int32_t max_slots) {
  size_t payload = len - hdr_end;
  int32_t n = payload == 0 ? 1 : (int32_t)((payload + size - 1) / size);
  if (n > max_slots) return GSO_NO_ROOM;
  size_t first = payload < size ? payload : size;
  if (hdr_end + first > (size_t)cap) return GSO_TOO_BIG;
  return n;
}

/**
 * Segment k into out: the headers (up to hdr_end, the L4 header at l4) and its share of the
 * payload, with its IPv6 payload length; the caller fixes the L4 header. Returns the
 * segment's L4 length (header and payload).
 */
static size_t cut(const uint8_t *f, size_t len, size_t l4, size_t hdr_end, uint16_t size, int32_t k, uint8_t *out) {
  size_t payload = len - hdr_end, at = (size_t)k * size;
  size_t seg = payload - at < size ? payload - at : size;
  memcpy(out, f, hdr_end);
  memcpy(out + hdr_end, f + hdr_end + at, seg);
  size_t ip_payload = hdr_end - ETH_HLEN - IPV6_HLEN + seg;
  out[ETH_HLEN + 4] = (uint8_t)(ip_payload >> 8);
  out[ETH_HLEN + 5] = (uint8_t)ip_payload;
  return hdr_end - l4 + seg;
}

/** A UDP/IPv6 super-frame cut into datagrams of gso_size payload bytes (the last may be shorter), each with its own lengths and checksum. */
static int32_t udp_segment(const uint8_t *f, size_t len, uint16_t gso_size, uint8_t *dst, int32_t first_off, int32_t stride, int32_t cap,
                           int32_t max_slots, int32_t *lens) {
  int32_t l4 = l4_offset(f, len, P_UDP);
  if (l4 < 0 || (size_t)l4 + 8 > len || gso_size == 0) return GSO_MALFORMED;
  int32_t n = segment_count(len, (size_t)l4 + 8, gso_size, cap, max_slots);
  if (n < 0) return n;
  uint64_t addr_sum = sum16(f + ETH_HLEN + 8, 32, 0);
  for (int32_t k = 0; k < n; k++) {
    uint8_t *out = dst + first_off + (size_t)k * stride;
    size_t l4_len = cut(f, len, (size_t)l4, (size_t)l4 + 8, gso_size, k, out);
    uint8_t *u = out + l4;
    u[4] = (uint8_t)(l4_len >> 8);
    u[5] = (uint8_t)l4_len;
    u[6] = 0;
    u[7] = 0;
    uint16_t c = fold(sum16(u, l4_len, addr_sum + l4_len + P_UDP));
    if (c == 0) c = 0xffff;  // zero means "no checksum", which IPv6 forbids (RFC 8200 8.1)
    u[6] = (uint8_t)(c >> 8);
    u[7] = (uint8_t)c;
    lens[k] = (int32_t)((size_t)l4 + l4_len);
  }
  return n;
}

/** A TCP/IPv6 TSO frame cut into MSS-sized segments: sequence numbers, flags and checksum of each as on a wire. */
static int32_t tcp_segment(const uint8_t *f, size_t len, uint16_t gso_size, uint8_t *dst, int32_t first_off, int32_t stride, int32_t cap,
                           int32_t max_slots, int32_t *lens) {
  int32_t l4 = l4_offset(f, len, P_TCP);
  if (l4 < 0 || (size_t)l4 + 20 > len) return GSO_MALFORMED;
  size_t tcp_len = (size_t)(f[l4 + 12] >> 4) * 4;
  size_t hdr_end = (size_t)l4 + tcp_len;
  if (tcp_len < 20 || hdr_end > len || gso_size == 0) return GSO_MALFORMED;
  int32_t n = segment_count(len, hdr_end, gso_size, cap, max_slots);
  if (n < 0) return n;
  uint32_t seq0 = ((uint32_t)f[l4 + 4] << 24) | ((uint32_t)f[l4 + 5] << 16) | ((uint32_t)f[l4 + 6] << 8) | f[l4 + 7];
  uint8_t tcp_flags = f[l4 + 13];
  // The pseudo-header addresses are the same for every segment.
  uint64_t addr_sum = sum16(f + ETH_HLEN + 8, 32, 0);
  for (int32_t k = 0; k < n; k++) {
    uint8_t *out = dst + first_off + (size_t)k * stride;
    size_t l4_len = cut(f, len, (size_t)l4, hdr_end, gso_size, k, out);
    uint32_t seq = seq0 + (uint32_t)k * gso_size;
    uint8_t *t = out + l4;
    t[4] = (uint8_t)(seq >> 24);
    t[5] = (uint8_t)(seq >> 16);
    t[6] = (uint8_t)(seq >> 8);
    t[7] = (uint8_t)seq;
    uint8_t fl = tcp_flags;
    if (k < n - 1) fl &= (uint8_t)~(0x01 | 0x08);  // FIN and PSH only on the last
    if (k > 0) fl &= (uint8_t)~0x80;               // CWR only on the first
    t[13] = fl;
    t[16] = 0;
    t[17] = 0;
    uint16_t c = fold(sum16(t, l4_len, addr_sum + l4_len + P_TCP));
    t[16] = (uint8_t)(c >> 8);
    t[17] = (uint8_t)c;
    lens[k] = (int32_t)((size_t)l4 + l4_len);
  }
  return n;
}

int32_t nvi_gso_segment(const uint8_t *vnet, const uint8_t *f, size_t len, uint8_t *dst, int32_t first_off, int32_t stride,
                        int32_t cap, int32_t max_slots, int32_t *lens) {
  uint8_t flags = vnet[0];
  uint8_t gso = vnet[1] & (uint8_t)~VNET_GSO_ECN;
  uint16_t gso_size = le16(vnet + 4), csum_start = le16(vnet + 6), csum_offset = le16(vnet + 8);

  if (gso == VNET_GSO_NONE) {
    if (max_slots < 1) return GSO_NO_ROOM;
    int partial = (flags & VNET_F_NEEDS_CSUM) != 0;
    if (len > (size_t)cap) return GSO_TOO_BIG;
    if (partial && (csum_start >= len || (size_t)csum_start + csum_offset + 2 > len)) return GSO_MALFORMED;
    uint8_t *out = dst + first_off;
    memcpy(out, f, len);
    if (partial) {
      uint16_t c = fold(sum16(out + csum_start, len - csum_start, 0));
      if (c == 0) c = 0xffff;  // the same in one's complement; to UDP over IPv6, 0 would mean no checksum (RFC 8200 8.1)
      out[csum_start + csum_offset] = (uint8_t)(c >> 8);
      out[csum_start + csum_offset + 1] = (uint8_t)c;
    }
    lens[0] = (int32_t)len;
    return 1;
  }
  if (gso != VNET_GSO_TCPV6 && gso != VNET_GSO_UDP_L4) return GSO_MALFORMED;  // only IPv6 TCP and UDP segmentation are enabled

  if (len <= ETH_HLEN + IPV6_HLEN || len - ETH_HLEN - IPV6_HLEN > 0xffff || f[12] != 0x86 || f[13] != 0xdd ||
      (f[ETH_HLEN] >> 4) != 6) {
    return GSO_MALFORMED;
  }
  return gso == VNET_GSO_UDP_L4 ? udp_segment(f, len, gso_size, dst, first_off, stride, cap, max_slots, lens)
                                : tcp_segment(f, len, gso_size, dst, first_off, stride, cap, max_slots, lens);
}

static napi_value gso_segment(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  uint8_t *src, *dst;
  size_t src_len, dst_len, lens_len;
  int32_t off, len, first_off, stride, cap, max_slots, *lens;
  if (nvi_args(env, info, 9, argv) || nvi_bytes(env, argv[0], "src", &src, &src_len) || nvi_i32(env, argv[1], "off", &off) ||
      nvi_i32(env, argv[2], "len", &len) || nvi_bytes(env, argv[3], "dst", &dst, &dst_len) ||
      nvi_i32(env, argv[4], "firstOff", &first_off) || nvi_i32(env, argv[5], "stride", &stride) || nvi_i32(env, argv[6], "cap", &cap) ||
      nvi_i32(env, argv[7], "maxSlots", &max_slots) || nvi_i32_array(env, argv[8], "lens", &lens, &lens_len) ||
      nvi_check_slots(env, dst_len, first_off, stride, cap, max_slots)) {
    return NULL;
  }
  if (off < 0 || len < GSO_VNET_HDR_LEN || (size_t)off + (size_t)len > src_len || (size_t)max_slots > lens_len) {
    nvi_throw_range(env, "source %d+%d outside %zu bytes, or %d slots for %zu lengths", off, len, src_len, max_slots, lens_len);
    return NULL;
  }
  return nvi_int(env, nvi_gso_segment(src + off, src + off + GSO_VNET_HDR_LEN, (size_t)len - GSO_VNET_HDR_LEN, dst, first_off, stride,
                                      cap, max_slots, lens));
}

int nvi_init_gso(napi_env env, napi_value exports) {
  return nvi_export(env, exports, "gsoSegment", gso_segment);
}
