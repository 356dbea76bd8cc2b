// Small helpers shared by the addon's C files: argument fetching that throws a TypeError
// naming the argument, typed-array access, and errors that carry an errno.
//
// Convention: a helper returns 0 on success; on failure it has already thrown a JS
// exception and returns -1, so a binding can `if (nvi_x(...)) return NULL;`.

#ifndef NVI_NAPI_UTIL_H
#define NVI_NAPI_UTIL_H

#include <node_api.h>
#include <stddef.h>
#include <stdint.h>

/** Largest batch any call accepts; equals BATCH_MAX in src/dataplane/batch.ts. */
#define NVI_BATCH_MAX 256

/** Fetch exactly `n` arguments into argv. */
int nvi_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv);

int nvi_i32(napi_env env, napi_value v, const char *name, int32_t *out);
int nvi_u32(napi_env env, napi_value v, const char *name, uint32_t *out);
int nvi_bool(napi_env env, napi_value v, const char *name, int *out);

/** A Buffer or Uint8Array: its bytes and length. */
int nvi_bytes(napi_env env, napi_value v, const char *name, uint8_t **data, size_t *len);
int nvi_i32_array(napi_env env, napi_value v, const char *name, int32_t **data, size_t *len);
int nvi_u32_array(napi_env env, napi_value v, const char *name, uint32_t **data, size_t *len);
int nvi_f64_array(napi_env env, napi_value v, const char *name, double **data, size_t *len);

/** A string no longer than cap-1 bytes, copied NUL-terminated into out. */
int nvi_string(napi_env env, napi_value v, const char *name, char *out, size_t cap);
/** A string as above, or null/undefined: then out[0] = 0 and *present = 0. */
int nvi_opt_string(napi_env env, napi_value v, const char *name, char *out, size_t cap, int *present);

/** Throw an Error whose message is "<what>: strerror(err)" and whose `errno` property is err. */
void nvi_throw_errno(napi_env env, const char *what, int err);
void nvi_throw_type(napi_env env, const char *fmt, ...);
void nvi_throw_range(napi_env env, const char *fmt, ...);

napi_value nvi_int(napi_env env, int32_t v);
napi_value nvi_undefined(napi_env env);

/** Register a function on exports. */
int nvi_export(napi_env env, napi_value exports, const char *name, napi_callback fn);

/** Each file registers its functions on the exports object. */
int nvi_init_poll(napi_env env, napi_value exports);
int nvi_init_busy_poll(napi_env env, napi_value exports);
int nvi_init_wake_times(napi_env env, napi_value exports);
int nvi_init_tap(napi_env env, napi_value exports);
int nvi_init_raw_socket(napi_env env, napi_value exports);
int nvi_init_udp_esp(napi_env env, napi_value exports);
int nvi_init_esp_gcm(napi_env env, napi_value exports);
int nvi_init_gso(napi_env env, napi_value exports);
int nvi_init_gro(napi_env env, napi_value exports);
int nvi_init_packet_port(napi_env env, napi_value exports);
int nvi_init_affinity(napi_env env, napi_value exports);
int nvi_init_thread_policy(napi_env env, napi_value exports);
int nvi_init_kx_sockets(napi_env env, napi_value exports);

#endif
