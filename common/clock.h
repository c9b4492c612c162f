/* clock.h — the two clocks every part of the project reads (sa_common).
 * Neither can fail on Linux (clock_gettime of these ids only fails for a bad
 * pointer). */
#ifndef SA_CLOCK_H
#define SA_CLOCK_H

#include <stdint.h>

/* Wall clock: ms since the epoch (what the protocol's *_ms times are). */
uint64_t clock_wall_ms(void);
/* Monotonic clock: ms since an arbitrary point; for deadlines and durations. */
int64_t clock_mono_ms(void);

#endif
