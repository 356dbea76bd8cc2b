// Busy polling: after a data-path fd was ready, the event loop keeps turning without sleeping
// for a window of time, so that the next packet (the reply to this one, the rest of a burst)
// is read by a thread that is running, with its caches warm, instead of one woken from
// epoll_wait. Waking costs a lone packet ~0.1 ms per switch it crosses on this machine.
//
// JS API (see src/native/addon.ts):
//   busyPoll(windowUs)    0: off (the loop sleeps as soon as it is idle); at most 10 s
//   busyPollTouch()       as a readiness event: keep polling for the window from now (the key
//                         exchange's messages, which are not read through poll.c)
//   busyPollTurns()       loop turns spent polling so far (a double)
//
// How: an active uv_idle handle makes libuv poll with a zero timeout. poll.c calls
// nvi_busy_poll_touch() on every readiness event; the idle callback stops the handle once
// the window has passed since the last one. The handle is unref'd: it never keeps the
// process alive. One event loop per process (the main thread's) may busy-poll.

#include "busy_poll.h"

#include "napi_util.h"

static uv_idle_t idle;
static uv_loop_t *idle_loop = NULL;
static uint64_t window_ns = 0;
static uint64_t last_ns = 0;
static double turns = 0;

static void on_idle(uv_idle_t *h) {
  turns++;
  if (uv_hrtime() - last_ns > window_ns) uv_idle_stop(h);
  else sched_yield();  // a task woken on this core (a VM, the kernel's work) runs at once
}

void nvi_busy_poll_touch(uv_loop_t *loop) {
  if (window_ns == 0 || loop != idle_loop) return;
  last_ns = uv_hrtime();
  if (!uv_is_active((uv_handle_t *)&idle)) uv_idle_start(&idle, on_idle);
}

static void cleanup_hook(void *arg) {
  (void)arg;
  window_ns = 0;
  uv_idle_stop(&idle);
  uv_close((uv_handle_t *)&idle, NULL);  // static storage: nothing to free
  idle_loop = NULL;
}

static napi_value busy_poll(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  uint32_t us;
  if (nvi_args(env, info, 1, argv) || nvi_u32(env, argv[0], "windowUs", &us)) return NULL;
  if (us > 10000000) {
    nvi_throw_range(env, "windowUs %u: at most 10000000 (10 s)", us);
    return NULL;
  }
  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return NULL;
  if (idle_loop == NULL) {
    int rc = uv_idle_init(loop, &idle);
    if (rc < 0) {
      nvi_throw_errno(env, "uv_idle_init", -rc);
      return NULL;
    }
    uv_unref((uv_handle_t *)&idle);
    idle_loop = loop;
    napi_add_env_cleanup_hook(env, cleanup_hook, NULL);
  } else if (idle_loop != loop) {
    napi_throw_error(env, NULL, "busy polling is set up on another thread's event loop");
    return NULL;
  }
  window_ns = (uint64_t)us * 1000;
  if (window_ns == 0) uv_idle_stop(&idle);
  return nvi_undefined(env);
}

static napi_value busy_poll_touch(napi_env env, napi_callback_info info) {
  (void)info;
  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return NULL;
  nvi_busy_poll_touch(loop);  // nothing unless busy polling is on, and on this thread's loop
  return nvi_undefined(env);
}

static napi_value busy_poll_turns(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value v;
  napi_create_double(env, turns, &v);
  return v;
}

int nvi_init_busy_poll(napi_env env, napi_value exports) {
  return nvi_export(env, exports, "busyPoll", busy_poll) || nvi_export(env, exports, "busyPollTouch", busy_poll_touch) ||
         nvi_export(env, exports, "busyPollTurns", busy_poll_turns);
}
