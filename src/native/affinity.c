// CPU affinity of the calling thread (sched_setaffinity(2) with pid 0: this thread alone),
// so that a data-path thread stays on the CPUs its host gives it (hosts.<name>.cpus). The
// process's other threads (libuv's pool, V8's helpers) keep theirs.

#define _GNU_SOURCE
#include "napi_util.h"

#include <errno.h>
#include <sched.h>

// setThreadCpus(cpus: Int32Array): run the calling thread on these CPUs only.
static napi_value set_thread_cpus(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (nvi_args(env, info, 1, argv)) return NULL;
  int32_t *cpus;
  size_t n;
  if (nvi_i32_array(env, argv[0], "cpus", &cpus, &n)) return NULL;
  if (n == 0) {
    nvi_throw_range(env, "no CPU given");
    return NULL;
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  for (size_t i = 0; i < n; i++) {
    if (cpus[i] < 0 || cpus[i] >= CPU_SETSIZE) {
      nvi_throw_range(env, "CPU %d is outside 0-%d", cpus[i], CPU_SETSIZE - 1);
      return NULL;
    }
    CPU_SET(cpus[i], &set);
  }
  if (sched_setaffinity(0, sizeof set, &set) < 0) {
    nvi_throw_errno(env, "sched_setaffinity", errno);
    return NULL;
  }
  return nvi_undefined(env);
}

// threadCpus(): the CPUs the calling thread may run on, ascending.
static napi_value thread_cpus(napi_env env, napi_callback_info info) {
  (void)info;
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) < 0) {
    nvi_throw_errno(env, "sched_getaffinity", errno);
    return NULL;
  }
  napi_value out;
  napi_create_array(env, &out);
  uint32_t k = 0;
  for (int c = 0; c < CPU_SETSIZE; c++) {
    if (CPU_ISSET(c, &set)) napi_set_element(env, out, k++, nvi_int(env, c));
  }
  return out;
}

int nvi_init_affinity(napi_env env, napi_value exports) {
  return nvi_export(env, exports, "setThreadCpus", set_thread_cpus) || nvi_export(env, exports, "threadCpus", thread_cpus);
}
