#include "kk/backoff.h"

#include "kk/rand.h"

uint64_t kk_backoff_full_jitter(uint64_t base_ms, uint64_t cap_ms, unsigned attempt)
{
    uint64_t ceil = base_ms;
    for (unsigned i = 0; i < attempt && ceil < cap_ms; i++)
        ceil *= 2;
    if (ceil > cap_ms)
        ceil = cap_ms;
    return kk_rand_below(ceil + 1);
}

uint64_t kk_retry_delay(enum kk_retry_type type, unsigned n, uint64_t cap_ms, uint64_t max_jitter_ms)
{
    uint64_t d;
    switch (type) {
    case KK_RETRY_FIXED:
        d = 100;
        break;
    case KK_RETRY_RANDOM:
        d = kk_rand_below(max_jitter_ms);
        break;
    case KK_RETRY_BACKOFF:
    default:
        /* 100 << n overflows past n = 57; the cap or a sane ceiling wins first. */
        d = n >= 40 ? UINT64_C(100) << 40 : UINT64_C(100) << n;
        break;
    }
    if (cap_ms > 0 && d > cap_ms)
        d = cap_ms;
    return d;
}
