// Busy polling: after a data-path fd was ready, the event loop keeps turning without sleeping
// for a window of time, so that the next packet (the reply to this one, the rest of a burst)
// is read by a thread that is running, with its caches warm, instead of one woken from
// epoll_wait. Waking costs a lone packet ~0.1 ms per switch it crosses on this machine.
//
// JS API (see src/native/addon.ts):
//   busyPoll(windowUs)    0: off (the loop sleeps as soon as it is idle); at most 10 s
//   busyPollTouch()       as a readiness event: keep polling for the window from now (the key
//                         exchange's messages, which are not read through poll.c)
//   busyPollTurns()       loop turns this thread spent polling so far (a double)
//
// How: an active uv_idle handle makes libuv poll with a zero timeout. poll.c calls
// nvi_busy_poll_touch() on every readiness event; the idle callback stops the handle once
// the window has passed since the last one. The handle is unref'd: it never keeps the
// process alive. Each thread that runs an event loop (the main thread, each worker thread of
// switch.workers) has a window of its own: the state is the thread's (thread-local), made by
// its first busyPoll() and freed with its environment.

#include <errno.h>
#include <sched.h>
#include <stdlib.h>

#include "busy_poll.h"

#include "napi_util.h"

struct busy_poll {
  uv_idle_t idle;
  uv_loop_t *loop;
  uint64_t window_ns;
  uint64_t last_ns;
  double turns;
};

/** This thread's busy polling, once it called busyPoll(). */
static _Thread_local struct busy_poll *mine = NULL;

static void on_idle(uv_idle_t *h) {
  struct busy_poll *b = h->data;
  b->turns++;
  if (uv_hrtime() - b->last_ns > b->window_ns) uv_idle_stop(h);
  else sched_yield();  // a task woken on this core (a VM, the kernel's work) runs at once
}

void nvi_busy_poll_touch(uv_loop_t *loop) {
  struct busy_poll *b = mine;
  if (b == NULL || b->window_ns == 0 || loop != b->loop) return;
  b->last_ns = uv_hrtime();
  if (!uv_is_active((uv_handle_t *)&b->idle)) uv_idle_start(&b->idle, on_idle);
}

static void free_on_close(uv_handle_t *h) {
  free(h->data);
}

/** The environment (this thread's) goes: stop and free its busy polling. */
static void cleanup_hook(void *arg) {
  struct busy_poll *b = arg;
  if (mine == b) mine = NULL;
  uv_idle_stop(&b->idle);
  uv_close((uv_handle_t *)&b->idle, free_on_close);
}

static napi_value busy_poll(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  uint32_t us;
  if (nvi_args(env, info, 1, argv) || nvi_u32(env, argv[0], "windowUs", &us)) return NULL;
  if (us > 10000000) {
    nvi_throw_range(env, "windowUs %u: at most 10000000 (10 s)", us);
    return NULL;
  }
  if (mine == NULL) {
    uv_loop_t *loop;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok) return NULL;
    struct busy_poll *b = calloc(1, sizeof *b);
    if (b == NULL) {
      nvi_throw_errno(env, "calloc", ENOMEM);
      return NULL;
    }
    int rc = uv_idle_init(loop, &b->idle);
    if (rc < 0) {
      free(b);
      nvi_throw_errno(env, "uv_idle_init", -rc);
      return NULL;
    }
    b->idle.data = b;
    b->loop = loop;
    uv_unref((uv_handle_t *)&b->idle);
    napi_add_env_cleanup_hook(env, cleanup_hook, b);
    mine = b;
  }
  mine->window_ns = (uint64_t)us * 1000;
  if (mine->window_ns == 0) uv_idle_stop(&mine->idle);
  return nvi_undefined(env);
}

static napi_value busy_poll_touch(napi_env env, napi_callback_info info) {
  (void)info;
  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return NULL;
  nvi_busy_poll_touch(loop);  // nothing unless this thread's busy polling is on
  return nvi_undefined(env);
}

static napi_value busy_poll_turns(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value v;
  napi_create_double(env, mine == NULL ? 0 : mine->turns, &v);
  return v;
}

int nvi_init_busy_poll(napi_env env, napi_value exports) {
  return nvi_export(env, exports, "busyPoll", busy_poll) || nvi_export(env, exports, "busyPollTouch", busy_poll_touch) ||
         nvi_export(env, exports, "busyPollTurns", busy_poll_turns);
}
