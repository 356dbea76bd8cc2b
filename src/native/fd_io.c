// Bounds checks shared by the batch readers and writers (see fd_io.h).

#include "fd_io.h"

int nvi_check_slots(napi_env env, size_t len, int32_t firstOff, int32_t stride, int32_t cap, int32_t n) {
  if (n < 0 || cap < 0 || firstOff < 0 || stride < cap) {
    nvi_throw_range(env, "bad slot geometry: first %d stride %d cap %d n %d", firstOff, stride, cap, n);
    return -1;
  }
  if (n == 0) return 0;
  int64_t end = (int64_t)firstOff + (int64_t)(n - 1) * stride + cap;
  if (end > (int64_t)len) {
    nvi_throw_range(env, "%d slots from offset %d run past the arena (%zu bytes)", n, firstOff, len);
    return -1;
  }
  return 0;
}

int nvi_check_packets(napi_env env, size_t buf_len, const int32_t *start, const int32_t *len, size_t arr_len,
                      const int32_t *idx, size_t idx_len, int32_t n) {
  if (n < 0 || (size_t)n > idx_len) {
    nvi_throw_range(env, "count %d outside the index list (%zu)", n, idx_len);
    return -1;
  }
  for (int32_t k = 0; k < n; k++) {
    int32_t i = idx[k];
    if (i < 0 || (size_t)i >= arr_len) {
      nvi_throw_range(env, "packet index %d out of range", i);
      return -1;
    }
    if (start[i] < 0 || len[i] < 0 || (int64_t)start[i] + len[i] > (int64_t)buf_len) {
      nvi_throw_range(env, "packet %d (start %d, length %d) lies outside the arena", i, start[i], len[i]);
      return -1;
    }
  }
  return 0;
}
