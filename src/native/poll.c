// Readiness of a non-blocking fd through the Node event loop (uv_poll), so that a port is
// read on the JS thread in batches with no thread-pool round trip per packet.
//
// JS API (see src/native/addon.ts):
//   pollCreate(fd, cb)        -> watcher   cb(status, events) once per readiness event
//   pollStart(w, events)                   events: 1 readable, 2 writable
//   pollStop(w)
//   pollRef(w, ref)                        an unref'd watcher does not keep the process alive
//   pollClose(w)                           idempotent; no callback runs after it
//
// uv_poll is level-triggered: when the JS side drains only part of what is queued (a batch),
// the loop reports the fd again on its next turn, after the other ports had their turn.
//
// Lifetime: the watcher memory is shared by the uv handle (freed in its close callback)
// and the JS external (its finalizer); it is freed when both are done. The env cleanup
// hook closes a watcher that is still open when the environment goes away.

#include "napi_util.h"

#include <stdlib.h>
#include <uv.h>

#include "busy_poll.h"
#include "wake_times.h"

typedef struct {
  uv_poll_t handle;
  napi_env env;
  napi_ref callback;
  napi_async_context async;
  int closed;
  /** Owners still holding the struct: the uv handle and the JS external. */
  int owners;
} watcher;

static void release(watcher *w) {
  if (--w->owners == 0) free(w);
}

static void on_handle_closed(uv_handle_t *h) {
  release((watcher *)h->data);
}

static void cleanup_hook(void *arg);

static void watcher_close(watcher *w, int from_cleanup_hook) {
  if (w->closed) return;
  w->closed = 1;
  uv_poll_stop(&w->handle);  // also removes the fd from epoll: the caller may close it next
  if (!from_cleanup_hook) napi_remove_env_cleanup_hook(w->env, cleanup_hook, w);
  napi_delete_reference(w->env, w->callback);
  napi_async_destroy(w->env, w->async);
  uv_close((uv_handle_t *)&w->handle, on_handle_closed);
}

static void cleanup_hook(void *arg) {
  watcher_close((watcher *)arg, 1);
}

static void finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  watcher *w = data;
  watcher_close(w, 0);
  release(w);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  watcher *w = h->data;
  if (w->closed) return;
  nvi_wake_mark();
  nvi_busy_poll_touch(h->loop);
  napi_env env = w->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, recv, argv[2], result;
  napi_get_reference_value(env, w->callback, &cb);
  napi_get_global(env, &recv);  // make_callback needs an object as receiver
  napi_create_int32(env, status, &argv[0]);
  napi_create_int32(env, events, &argv[1]);
  // make_callback runs the tick and microtask queues afterwards, like any I/O callback.
  if (napi_make_callback(env, w->async, recv, cb, 2, argv, &result) == napi_pending_exception) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);  // goes to process 'uncaughtException'
  }
  nvi_wake_done();  // a send after this callback (a miss resolved later) is not this wake's
  napi_close_handle_scope(env, scope);
}

static int get_watcher(napi_env env, napi_value v, watcher **out) {
  void *data = NULL;
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t != napi_external || napi_get_value_external(env, v, &data) != napi_ok || data == NULL) {
    nvi_throw_type(env, "expected a poll watcher");
    return -1;
  }
  *out = data;
  return 0;
}

static napi_value poll_create(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t fd;
  if (nvi_args(env, info, 2, argv) || nvi_i32(env, argv[0], "fd", &fd)) return NULL;
  napi_valuetype t;
  napi_typeof(env, argv[1], &t);
  if (t != napi_function) {
    nvi_throw_type(env, "callback must be a function");
    return NULL;
  }
  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return NULL;
  watcher *w = calloc(1, sizeof *w);
  if (w == NULL) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  int rc = uv_poll_init(loop, &w->handle, fd);
  if (rc < 0) {
    free(w);
    nvi_throw_errno(env, "uv_poll_init", -rc);
    return NULL;
  }
  w->handle.data = w;
  w->env = env;
  w->owners = 2;
  napi_value name, external;
  napi_create_string_utf8(env, "nvi:poll", NAPI_AUTO_LENGTH, &name);
  napi_create_reference(env, argv[1], 1, &w->callback);
  napi_async_init(env, NULL, name, &w->async);
  napi_add_env_cleanup_hook(env, cleanup_hook, w);
  if (napi_create_external(env, w, finalize, NULL, &external) != napi_ok) {
    watcher_close(w, 0);
    release(w);
    return NULL;
  }
  return external;
}

static napi_value poll_start(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  watcher *w;
  int32_t events;
  if (nvi_args(env, info, 2, argv) || get_watcher(env, argv[0], &w) || nvi_i32(env, argv[1], "events", &events)) {
    return NULL;
  }
  if (w->closed) {
    napi_throw_error(env, NULL, "poll watcher is closed");
    return NULL;
  }
  int uv_events = ((events & 1) ? UV_READABLE : 0) | ((events & 2) ? UV_WRITABLE : 0);
  int rc = uv_poll_start(&w->handle, uv_events, on_poll);
  if (rc < 0) {
    nvi_throw_errno(env, "uv_poll_start", -rc);
    return NULL;
  }
  return nvi_undefined(env);
}

static napi_value poll_stop(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  watcher *w;
  if (nvi_args(env, info, 1, argv) || get_watcher(env, argv[0], &w)) return NULL;
  if (!w->closed) uv_poll_stop(&w->handle);
  return nvi_undefined(env);
}

static napi_value poll_ref(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  watcher *w;
  int ref;
  if (nvi_args(env, info, 2, argv) || get_watcher(env, argv[0], &w) || nvi_bool(env, argv[1], "ref", &ref)) {
    return NULL;
  }
  if (!w->closed) {
    if (ref) uv_ref((uv_handle_t *)&w->handle);
    else uv_unref((uv_handle_t *)&w->handle);
  }
  return nvi_undefined(env);
}

static napi_value poll_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  watcher *w;
  if (nvi_args(env, info, 1, argv) || get_watcher(env, argv[0], &w)) return NULL;
  watcher_close(w, 0);
  return nvi_undefined(env);
}

int nvi_init_poll(napi_env env, napi_value exports) {
  return nvi_export(env, exports, "pollCreate", poll_create) || nvi_export(env, exports, "pollStart", poll_start) ||
         nvi_export(env, exports, "pollStop", poll_stop) || nvi_export(env, exports, "pollRef", poll_ref) ||
         nvi_export(env, exports, "pollClose", poll_close);
}
