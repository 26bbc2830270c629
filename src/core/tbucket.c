#include "kk/tbucket.h"

#include <math.h>

void kk_tbucket_init(struct kk_tbucket *tb, double rate, double burst, uint64_t now_ms)
{
    tb->rate = rate;
    tb->burst = burst < 1 ? 1 : burst;
    tb->interval_ms = rate > 0 ? 1000.0 / rate : 0;
    tb->tat_ms = (double)now_ms;
}

uint64_t kk_tbucket_take(struct kk_tbucket *tb, uint64_t now_ms)
{
    if (tb->rate <= 0)
        return 0;
    double now = (double)now_ms;
    double earliest = tb->tat_ms - tb->interval_ms * (tb->burst - 1);
    if (now >= earliest) {
        /* Late by less than one interval: advance from the slot, not from
         * now, so a late timer does not cost throughput.  Later than that
         * (idle), restart from now: idle time never banks a burst. */
        double base = tb->tat_ms > now - tb->interval_ms ? tb->tat_ms : now;
        tb->tat_ms = base + tb->interval_ms;
        return 0;
    }
    uint64_t wait = (uint64_t)ceil(earliest - now);
    return wait ? wait : 1;
}
