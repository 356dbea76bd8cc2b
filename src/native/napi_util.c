// Argument and error helpers for the addon (see napi_util.h).

#include "napi_util.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int nvi_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv) {
  size_t argc = n;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return -1;
  if (argc < n) {
    nvi_throw_type(env, "expected %zu arguments, got %zu", n, argc);
    return -1;
  }
  return 0;
}

int nvi_i32(napi_env env, napi_value v, const char *name, int32_t *out) {
  if (napi_get_value_int32(env, v, out) != napi_ok) {
    nvi_throw_type(env, "%s must be a number", name);
    return -1;
  }
  return 0;
}

int nvi_u32(napi_env env, napi_value v, const char *name, uint32_t *out) {
  if (napi_get_value_uint32(env, v, out) != napi_ok) {
    nvi_throw_type(env, "%s must be a number", name);
    return -1;
  }
  return 0;
}

int nvi_bool(napi_env env, napi_value v, const char *name, int *out) {
  bool b;
  if (napi_get_value_bool(env, v, &b) != napi_ok) {
    nvi_throw_type(env, "%s must be a boolean", name);
    return -1;
  }
  *out = b ? 1 : 0;
  return 0;
}

static int typed(napi_env env, napi_value v, const char *name, napi_typedarray_type want,
                 const char *want_name, void **data, size_t *len) {
  bool is = false;
  napi_typedarray_type type;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is ||
      napi_get_typedarray_info(env, v, &type, len, data, NULL, NULL) != napi_ok || type != want) {
    nvi_throw_type(env, "%s must be a %s", name, want_name);
    return -1;
  }
  return 0;
}

int nvi_bytes(napi_env env, napi_value v, const char *name, uint8_t **data, size_t *len) {
  return typed(env, v, name, napi_uint8_array, "Buffer or Uint8Array", (void **)data, len);
}

int nvi_i32_array(napi_env env, napi_value v, const char *name, int32_t **data, size_t *len) {
  return typed(env, v, name, napi_int32_array, "Int32Array", (void **)data, len);
}

int nvi_u32_array(napi_env env, napi_value v, const char *name, uint32_t **data, size_t *len) {
  return typed(env, v, name, napi_uint32_array, "Uint32Array", (void **)data, len);
}

int nvi_f64_array(napi_env env, napi_value v, const char *name, double **data, size_t *len) {
  return typed(env, v, name, napi_float64_array, "Float64Array", (void **)data, len);
}

int nvi_string(napi_env env, napi_value v, const char *name, char *out, size_t cap) {
  size_t need = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &need) != napi_ok) {
    nvi_throw_type(env, "%s must be a string", name);
    return -1;
  }
  if (need >= cap) {
    nvi_throw_range(env, "%s is %zu bytes long, at most %zu allowed", name, need, cap - 1);
    return -1;
  }
  napi_get_value_string_utf8(env, v, out, cap, &need);
  return 0;
}

int nvi_opt_string(napi_env env, napi_value v, const char *name, char *out, size_t cap, int *present) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t == napi_null || t == napi_undefined) {
    out[0] = 0;
    *present = 0;
    return 0;
  }
  *present = 1;
  return nvi_string(env, v, name, out, cap);
}

void nvi_throw_errno(napi_env env, const char *what, int err) {
  char msg[512];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_value m, e, n;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
  napi_create_error(env, NULL, m, &e);
  napi_create_int32(env, err, &n);
  napi_set_named_property(env, e, "errno", n);
  napi_throw(env, e);
}

void nvi_throw_type(napi_env env, const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  napi_throw_type_error(env, NULL, msg);
}

void nvi_throw_range(napi_env env, const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  napi_throw_range_error(env, NULL, msg);
}

napi_value nvi_int(napi_env env, int32_t v) {
  napi_value r;
  napi_create_int32(env, v, &r);
  return r;
}

napi_value nvi_undefined(napi_env env) {
  napi_value r;
  napi_get_undefined(env, &r);
  return r;
}

int nvi_export(napi_env env, napi_value exports, const char *name, napi_callback fn) {
  napi_value f;
  if (napi_create_function(env, name, NAPI_AUTO_LENGTH, fn, NULL, &f) != napi_ok) return -1;
  return napi_set_named_property(env, exports, name, f) == napi_ok ? 0 : -1;
}
