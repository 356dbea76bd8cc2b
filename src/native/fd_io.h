// Shared by tap.c and raw_socket.c: validate the slots of a batch before any I/O, so that
// a bad offset is a thrown RangeError (a broken invariant) and never a partial batch.

#ifndef NVI_FD_IO_H
#define NVI_FD_IO_H

#include "napi_util.h"

/** Slots firstOff + k*stride, k < n, each with cap bytes, must lie inside a buffer of len bytes. */
int nvi_check_slots(napi_env env, size_t len, int32_t firstOff, int32_t stride, int32_t cap, int32_t n);

/** Packets idx[k] (k < n): idx in range of the start/len arrays, start..start+len inside the buffer. */
int nvi_check_packets(napi_env env, size_t buf_len, const int32_t *start, const int32_t *len, size_t arr_len,
                      const int32_t *idx, size_t idx_len, int32_t n);

/** Status written by the batch writers: [0] packets refused, [1] last errno, [2] stopped early. */
enum { NVI_TX_FAILED = 0, NVI_TX_ERRNO = 1, NVI_TX_STOPPED = 2, NVI_TX_STATUS_LEN = 3 };

struct mmsghdr;

/**
 * Send msgs[0..n) on `fd` with sendmmsg, past the messages the kernel refuses one by one;
 * message k carries packets[k] packets (1 each when packets is NULL). Adds the refused ones
 * to status[NVI_TX_FAILED], sets status[NVI_TX_ERRNO] to the last errno, and stops (status
 * [NVI_TX_STOPPED] = 1) when the socket buffer is full. Returns the packets sent.
 */
int32_t nvi_send_messages(int fd, struct mmsghdr *msgs, int32_t n, const int32_t *packets, int32_t *status);

#endif
