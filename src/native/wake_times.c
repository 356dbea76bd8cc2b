// Wake times: for each wake of a data-path thread by a port (poll.c's callback) that leads to
// a packet sent, two durations: from the callback's start to the port's read (the event
// loop's entry into JS and the JS before the read), and from that read to the first write or
// send (the read itself and the pipeline). On this machine both grow tenfold when the packet
// comes after some milliseconds of quiet (caches gone cold), which is what a lone packet pays.
//
// JS API (see src/native/addon.ts):
//   wakeTimeBounds()     the histograms' upper bounds, in seconds (the last bucket: above them)
//   wakeTimes(out)       this thread's two histograms into out (Float64Array of 2 (B + 2)):
//                        the entry's B + 1 bucket counts (not cumulative) and its sum of
//                        seconds, then the same for the pipeline
//
// Cost: three clock reads per wake (a wake reads a batch), none per packet. State is the
// thread's (each worker thread of switch.workers counts its own).

#include <stdint.h>
#include <time.h>

#include "napi_util.h"
#include "wake_times.h"

/** Upper bounds, µs: half octaves from 1 µs to 2 ms. */
static const double BOUNDS_US[] = {1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 2048};
#define NB (sizeof BOUNDS_US / sizeof BOUNDS_US[0])

struct histogram {
  double counts[NB + 1];
  double sum_s;
};

static _Thread_local struct {
  int64_t wake_ns;
  int64_t read_ns;
  struct histogram entry, pipeline;
} me;

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void observe(struct histogram *h, int64_t ns) {
  double us = (double)ns / 1000;
  size_t k = 0;
  while (k < NB && us > BOUNDS_US[k]) k++;
  h->counts[k]++;
  h->sum_s += us / 1e6;
}

void nvi_wake_mark(void) {
  me.wake_ns = now_ns();
  me.read_ns = 0;
}

void nvi_wake_read(void) {
  if (me.wake_ns != 0 && me.read_ns == 0) me.read_ns = now_ns();
}

void nvi_wake_send(void) {
  if (me.read_ns == 0) return;  // a send with no wake before it (a timer, the key exchange)
  int64_t t = now_ns();
  observe(&me.entry, me.read_ns - me.wake_ns);
  observe(&me.pipeline, t - me.read_ns);
  me.wake_ns = me.read_ns = 0;
}

void nvi_wake_done(void) {
  me.wake_ns = me.read_ns = 0;
}

static napi_value bounds(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value arr, v;
  napi_create_array_with_length(env, NB, &arr);
  for (size_t k = 0; k < NB; k++) {
    napi_create_double(env, BOUNDS_US[k] / 1e6, &v);
    napi_set_element(env, arr, (uint32_t)k, v);
  }
  return arr;
}

static napi_value times(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  double *out;
  size_t len;
  if (nvi_args(env, info, 1, argv) || nvi_f64_array(env, argv[0], "out", &out, &len)) return NULL;
  if (len != 2 * (NB + 2)) {
    nvi_throw_range(env, "wakeTimes: out must hold %zu numbers, not %zu", (size_t)(2 * (NB + 2)), len);
    return NULL;
  }
  const struct histogram *h[2] = {&me.entry, &me.pipeline};
  for (int i = 0; i < 2; i++) {
    double *o = out + i * (NB + 2);
    for (size_t k = 0; k <= NB; k++) o[k] = h[i]->counts[k];
    o[NB + 1] = h[i]->sum_s;
  }
  return nvi_undefined(env);
}

int nvi_init_wake_times(napi_env env, napi_value exports) {
  return nvi_export(env, exports, "wakeTimeBounds", bounds) || nvi_export(env, exports, "wakeTimes", times);
}
