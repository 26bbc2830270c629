#include "kk/tbucket.h"

#include <math.h>

void kk_tbucket_init(struct kk_tbucket *tb, double rate, double burst, uint64_t now_ms)
{
    tb->rate = rate;
    tb->burst = burst < 1 ? 1 : burst;
    tb->tokens = tb->burst;
    tb->last_ms = now_ms;
}

uint64_t kk_tbucket_take(struct kk_tbucket *tb, uint64_t now_ms)
{
    if (tb->rate <= 0)
        return 0;
    if (now_ms > tb->last_ms) {
        tb->tokens += (double)(now_ms - tb->last_ms) * tb->rate / 1000.0;
        if (tb->tokens > tb->burst)
            tb->tokens = tb->burst;
        tb->last_ms = now_ms;
    }
    if (tb->tokens >= 1.0) {
        tb->tokens -= 1.0;
        return 0;
    }
    uint64_t wait = (uint64_t)ceil((1.0 - tb->tokens) * 1000.0 / tb->rate);
    return wait ? wait : 1;
}
