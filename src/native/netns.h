// Run a few system calls inside another network namespace (the calling thread only).

#ifndef NVI_NETNS_H
#define NVI_NETNS_H

#include <node_api.h>

/**
 * Switch the calling thread into the namespace at `path` (e.g. /run/netns/NAME); *saved
 * receives what nvi_netns_leave needs. path NULL or "" does nothing. Returns 0 or -errno.
 */
int nvi_netns_enter(const char *path, int *saved);

/** nvi_netns_enter, throwing a JS error that names the namespace on failure; returns nonzero then. */
int nvi_netns_enter_or_throw(napi_env env, const char *path, int *saved);

/** Return the calling thread to the namespace it was in; aborts if that is impossible. */
void nvi_netns_leave(int saved);

#endif
