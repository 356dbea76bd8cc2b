// Receive offload toward a guest's TAP: runs of consecutive TCP segments of one flow are
// written as one super-frame with a GSO virtio-net header (partial checksum), everything
// else alone and marked DATA_VALID. The same rules as src/dataplane/gro.ts (the tested
// TypeScript reference); test/gro.test.ts holds the two to identical bytes.
//
// JS API (see src/native/addon.ts):
//   groCoalesce(buf, start, len, idx, n, out, outLens, counts) -> frames written to out,
//     each [virtio-net header][frame], their lengths in outLens, merged counts in counts.

#include "gro.h"

#include "fd_io.h"
#include "napi_util.h"

#include <string.h>

enum { ETH_HLEN = 14, IPV6_HLEN = 40, TCP = ETH_HLEN + IPV6_HLEN, MAX_SUPER = 65535 + IPV6_HLEN };
enum { FIN = 0x01, PSH = 0x08, CWR = 0x80, END_FLAGS = 0x01 | 0x02 | 0x04 | 0x08 | 0x20 };
enum { VNET_F_NEEDS_CSUM = 1, VNET_F_DATA_VALID = 2, VNET_GSO_TCPV6 = 4 };

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

int32_t nvi_gro_run(const uint8_t *buf, const int32_t *start, const int32_t *len, const int32_t *idx, int32_t k, int32_t n) {
  const uint8_t *a = buf + start[idx[k]];
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
  uint64_t sum = plen + 6;
  for (size_t p = ETH_HLEN + 8; p < ETH_HLEN + 40; p += 2) sum += (uint32_t)((out[p] << 8) | out[p + 1]);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  out[TCP + 16] = (uint8_t)(sum >> 8);
  out[TCP + 17] = (uint8_t)sum;
  size_t mss = a_len - hdr;
  vnet[0] = VNET_F_NEEDS_CSUM;
  vnet[1] = VNET_GSO_TCPV6;
  vnet[2] = (uint8_t)hdr;
  vnet[3] = (uint8_t)(hdr >> 8);
  vnet[4] = (uint8_t)mss;
  vnet[5] = (uint8_t)(mss >> 8);
  vnet[6] = TCP;
  vnet[7] = 0;
  vnet[8] = 16;
  vnet[9] = 0;
  return at;
}

static napi_value gro_coalesce(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  uint8_t *buf, *out;
  size_t buf_len, start_len, len_len, idx_len, out_len, lens_len, counts_len;
  int32_t *start, *len, *idx, *out_lens, *counts, n;
  if (nvi_args(env, info, 8, argv) || nvi_bytes(env, argv[0], "buf", &buf, &buf_len) ||
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
    int32_t end = nvi_gro_run(buf, start, len, idx, k, n);
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
