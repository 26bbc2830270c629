/* Token bucket rate limiter, driven by the caller's clock (no timers here).
 *
 * rate tokens per second, bucket depth burst (>= 1).  kk_tbucket_take returns
 * 0 when a token was taken, otherwise the milliseconds until one is available
 * (the caller arms a timer; nothing here blocks).  rate 0 means unlimited. */
#ifndef KK_TBUCKET_H
#define KK_TBUCKET_H

#include <stdint.h>

struct kk_tbucket {
    double rate;   /* tokens per second; 0 = unlimited */
    double burst;  /* maximum tokens */
    double tokens; /* current tokens */
    uint64_t last_ms;
};

void kk_tbucket_init(struct kk_tbucket *tb, double rate, double burst, uint64_t now_ms);
uint64_t kk_tbucket_take(struct kk_tbucket *tb, uint64_t now_ms);

#endif
