// Network namespaces for the calling thread (setns(2), CLONE_NEWNET).
//
// A socket or TAP belongs for its whole life to the namespace its creator was in at
// creation time. The switch may therefore step into another namespace, create the fd and
// step back, all inside one synchronous call on the JS thread: no JS runs meanwhile, and
// the other threads of the process (libuv pool, V8) never change namespace.

#define _GNU_SOURCE
#include "netns.h"

#include "napi_util.h"
#include <stdio.h>

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int nvi_netns_enter(const char *path, int *saved) {
  *saved = -1;
  if (path == NULL || path[0] == 0) return 0;
  int target = open(path, O_RDONLY | O_CLOEXEC);
  if (target < 0) return -errno;
  int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (self < 0) {
    int e = errno;
    close(target);
    return -e;
  }
  if (setns(target, CLONE_NEWNET) < 0) {
    int e = errno;
    close(target);
    close(self);
    return -e;
  }
  close(target);
  *saved = self;
  return 0;
}

int nvi_netns_enter_or_throw(napi_env env, const char *path, int *saved) {
  int rc = nvi_netns_enter(path, saved);
  if (rc == 0) return 0;
  char what[300];
  snprintf(what, sizeof what, "entering network namespace %s", path);
  nvi_throw_errno(env, what, -rc);
  return -1;
}

void nvi_netns_leave(int saved) {
  if (saved < 0) return;
  if (setns(saved, CLONE_NEWNET) < 0) {
    // The JS thread would go on in the wrong namespace: every later socket would be wrong.
    perror("nvi-switch: cannot return to the original network namespace");
    abort();
  }
  close(saved);
}
