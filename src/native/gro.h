// Coalescing of TCP segments and UDP datagrams into super-frames for an offloading TAP (gro.c), shared with
// tap.c's write.
#pragma once
#include <node_api.h>
#include <stddef.h>
#include <stdint.h>

enum { GRO_VNET_HDR_LEN = 10, GRO_MAX_FRAME = 65535 + 40 + 14 };

/** The end (exclusive) of the run of frames idx[k..] that may be written as one frame (UDP runs only with `udp`). */
int32_t nvi_gro_run(const uint8_t *buf, const int32_t *start, const int32_t *len, const int32_t *idx, int32_t k, int32_t n, int udp);
/** Build the frame for run idx[k..end) into out (GRO_MAX_FRAME bytes) and its virtio-net header; returns its length. */
size_t nvi_gro_build(const uint8_t *buf, const int32_t *start, const int32_t *len, const int32_t *idx, int32_t k, int32_t end,
                     uint8_t *vnet, uint8_t *out);

int nvi_init_gro(napi_env env, napi_value exports);
