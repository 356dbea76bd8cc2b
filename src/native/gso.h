// Segmentation of offloaded TAP frames (gso.c), shared with tap.c's offloading read.
#pragma once
#include <node_api.h>
#include <stddef.h>
#include <stdint.h>

enum { GSO_VNET_HDR_LEN = 10 };
/** Results of nvi_gso_segment besides a segment count. */
enum { GSO_NO_ROOM = -1, GSO_MALFORMED = -2, GSO_TOO_BIG = -3 };

/**
 * Wire frames from one offloaded frame `f` of `len` bytes with virtio-net header `vnet`,
 * written to dst + first_off + k * stride (k < max_slots), their lengths to lens[k].
 */
int32_t nvi_gso_segment(const uint8_t *vnet, const uint8_t *f, size_t len, uint8_t *dst, int32_t first_off, int32_t stride,
                        int32_t cap, int32_t max_slots, int32_t *lens);

int nvi_init_gso(napi_env env, napi_value exports);
