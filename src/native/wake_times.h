// Where a packet's time goes in the switch after its port woke the thread (wake_times.c):
// poll.c marks the wake, the batch reads and writes of the ports tell when they run.
#pragma once

/** A port's readiness callback starts (poll.c). */
void nvi_wake_mark(void);
/** A port read starts (the first one after the mark counts). */
void nvi_wake_read(void);
/** A write or send starts: the first one after a read closes the wake's sample. */
void nvi_wake_send(void);
/** The readiness callback returned: a wake that sent nothing leaves no sample. */
void nvi_wake_done(void);
