/* Rate limiter for `rate_per_second(s)`, driven by the caller's clock (no
 * timers here): the generic cell rate algorithm, i.e. a token bucket of
 * depth burst kept as one "theoretical arrival time".
 *
 * kk_tbucket_take returns 0 when the caller may go now, otherwise the
 * milliseconds until it may (the caller arms a timer; nothing here blocks).
 * A caller that comes back late by less than one interval keeps its slot,
 * so timer lateness does not drift the achieved rate below `rate`.
 * rate 0 means unlimited. */
#ifndef KK_TBUCKET_H
#define KK_TBUCKET_H

#include <stdint.h>

struct kk_tbucket {
    double rate;        /* per second; 0 = unlimited */
    double burst;       /* how many may go back to back (>= 1) */
    double interval_ms; /* 1000 / rate */
    double tat_ms;      /* theoretical arrival time of the next slot */
};

void kk_tbucket_init(struct kk_tbucket *tb, double rate, double burst, uint64_t now_ms);
uint64_t kk_tbucket_take(struct kk_tbucket *tb, uint64_t now_ms);

#endif
