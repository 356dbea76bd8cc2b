// Busy polling (busy_poll.c), told of every readiness event by poll.c.
#pragma once
#include <uv.h>

/** A data-path fd of `loop` was ready: the window of busy polling starts again. */
void nvi_busy_poll_touch(uv_loop_t *loop);
