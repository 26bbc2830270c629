/* Retry delays.
 *
 * kk_backoff_full_jitter: AWS "full jitter": uniform in [0, min(cap, base*2^n)].
 * kk_retry_delay: kubemq-targets' retry middleware (connector-behaviour §5.2):
 *   back-off 100ms << n, fixed 100ms, random uniform [0, max_jitter); then
 *   capped to cap_ms when cap_ms > 0.  n counts from 0 (the first retry). */
#ifndef KK_BACKOFF_H
#define KK_BACKOFF_H

#include <stdint.h>

enum kk_retry_type {
    KK_RETRY_BACKOFF = 0,
    KK_RETRY_FIXED = 1,
    KK_RETRY_RANDOM = 2,
};

uint64_t kk_backoff_full_jitter(uint64_t base_ms, uint64_t cap_ms, unsigned attempt);

uint64_t kk_retry_delay(enum kk_retry_type type, unsigned n, uint64_t cap_ms, uint64_t max_jitter_ms);

#endif
