#include "kk/rand.h"

#include <stdio.h>
#include <sys/random.h>
#include <uv.h>

static uint64_t state[4];
static int seeded;

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static void seed(void)
{
    if (getrandom(state, sizeof(state), 0) != (ssize_t)sizeof(state)) {
        /* Fall back on time: jitter quality only, never security. */
        uint64_t t = uv_hrtime();
        for (int i = 0; i < 4; i++)
            state[i] = t = t * 6364136223846793005ULL + 1442695040888963407ULL;
    }
    if (!(state[0] | state[1] | state[2] | state[3]))
        state[0] = 1;
    seeded = 1;
}

uint64_t kk_rand64(void)
{
    if (!seeded)
        seed();
    /* xoshiro256** */
    uint64_t result = rotl(state[1] * 5, 7) * 9;
    uint64_t t = state[1] << 17;
    state[2] ^= state[0];
    state[3] ^= state[1];
    state[1] ^= state[2];
    state[0] ^= state[3];
    state[2] ^= t;
    state[3] = rotl(state[3], 45);
    return result;
}

uint64_t kk_rand_below(uint64_t n)
{
    if (n == 0)
        return 0;
    /* Lemire's multiply-shift; the tiny bias is irrelevant for jitter. */
    __extension__ typedef unsigned __int128 u128;
    return (uint64_t)(((u128)kk_rand64() * n) >> 64);
}

void kk_uuid4(char dst[37])
{
    uint64_t a = kk_rand64(), b = kk_rand64();
    a = (a & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;
    b = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;
    snprintf(dst, 37, "%08x-%04x-%04x-%04x-%012llx", (unsigned)(a >> 32), (unsigned)(a >> 16) & 0xffff,
             (unsigned)a & 0xffff, (unsigned)(b >> 48), (unsigned long long)(b & 0xffffffffffffULL));
}
