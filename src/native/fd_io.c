// Bounds checks shared by the batch readers and writers, and the writers' sendmmsg loop (see fd_io.h).

#define _GNU_SOURCE
#include "fd_io.h"

#include <errno.h>
#include <sys/socket.h>

int32_t nvi_send_messages(int fd, struct mmsghdr *msgs, int32_t n, const int32_t *packets, int32_t *status) {
  // sendmmsg stops at the first message that fails and returns how many went before it;
  // the next call then reports that message's errno.
  int32_t k = 0, sent = 0;
  while (k < n) {
    int r = sendmmsg(fd, msgs + k, (unsigned)(n - k), MSG_DONTWAIT);
    if (r > 0) {
      for (int32_t q = k; q < k + r; q++) sent += packets ? packets[q] : 1;
      k += r;
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    status[NVI_TX_ERRNO] = r < 0 ? errno : EIO;
    if (status[NVI_TX_ERRNO] == EAGAIN || status[NVI_TX_ERRNO] == EWOULDBLOCK || status[NVI_TX_ERRNO] == ENOBUFS) {
      status[NVI_TX_STOPPED] = 1;  // the socket buffer is full: the rest of the batch is not attempted
      break;
    }
    status[NVI_TX_FAILED] += packets ? packets[k] : 1;  // refused (EMSGSIZE, ENETUNREACH, EPERM from a firewall, ...)
    k++;
  }
  return sent;
}

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
