// The switch's helper threads yield to its packet threads. A Node process runs more threads
// than its event loop: V8's platform workers (optimizing compiles, concurrent GC) and libuv's
// pool. Left at the default policy, a helper that wakes on the CPU of a packet thread preempts
// it for as long as its job runs (0.5-3 ms of a compile was seen in the middle of a first
// packet's miss path). SCHED_BATCH (sched(7)) keeps a helper's share of the CPU but takes away
// its wake-up preemption: a helper runs when the packet thread sleeps or on another CPU.
//
// Packet threads (the main thread, each data-path worker) mark themselves; yieldHelperThreads
// then moves every other thread of the process that runs under SCHED_OTHER to SCHED_BATCH.

#define _GNU_SOURCE
#include "napi_util.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_MARKED 256

static pthread_mutex_t marked_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t marked[MAX_MARKED];
static int marked_count;

static int is_marked(pid_t tid) {
  for (int i = 0; i < marked_count; i++) {
    if (marked[i] == tid) return 1;
  }
  return 0;
}

// markPacketThread(): the calling thread carries packets; yieldHelperThreads leaves it as it is.
// Returns its thread id.
static napi_value mark_packet_thread(napi_env env, napi_callback_info info) {
  (void)info;
  pid_t tid = (pid_t)syscall(SYS_gettid);
  pthread_mutex_lock(&marked_lock);
  int known = is_marked(tid);
  int full = !known && marked_count == MAX_MARKED;
  if (!known && !full) marked[marked_count++] = tid;
  pthread_mutex_unlock(&marked_lock);
  if (full) {
    nvi_throw_range(env, "more than %d packet threads", MAX_MARKED);
    return NULL;
  }
  return nvi_int(env, tid);
}

// yieldHelperThreads(): every thread of this process that no packet thread marked and that runs
// under SCHED_OTHER goes to SCHED_BATCH. Returns how many threads are helpers under SCHED_BATCH
// now (moved by this call or before). A thread that exits meanwhile is skipped.
static napi_value yield_helper_threads(napi_env env, napi_callback_info info) {
  (void)info;
  DIR *dir = opendir("/proc/self/task");
  if (!dir) {
    nvi_throw_errno(env, "opendir /proc/self/task", errno);
    return NULL;
  }
  int batch = 0;
  int failed = 0;
  struct dirent *e;
  pthread_mutex_lock(&marked_lock);
  while ((e = readdir(dir)) != NULL) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    pid_t tid = (pid_t)atoi(e->d_name);
    if (is_marked(tid)) continue;
    int policy = sched_getscheduler(tid);
    if (policy < 0) continue; // exited
    policy &= ~SCHED_RESET_ON_FORK;
    if (policy == SCHED_OTHER) {
      struct sched_param p = { .sched_priority = 0 };
      if (sched_setscheduler(tid, SCHED_BATCH, &p) < 0) {
        if (errno == ESRCH) continue;
        failed = errno;
        break;
      }
      policy = SCHED_BATCH;
    }
    if (policy == SCHED_BATCH) batch++;
  }
  pthread_mutex_unlock(&marked_lock);
  closedir(dir);
  if (failed) {
    nvi_throw_errno(env, "sched_setscheduler SCHED_BATCH", failed);
    return NULL;
  }
  return nvi_int(env, batch);
}

int nvi_init_thread_policy(napi_env env, napi_value exports) {
  return nvi_export(env, exports, "markPacketThread", mark_packet_thread) ||
         nvi_export(env, exports, "yieldHelperThreads", yield_helper_threads);
}
