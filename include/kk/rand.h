/* Fast non-cryptographic randomness (xoshiro-style) for jitter, generated
 * partition keys and IDs.  Seeded once from the OS at first use.
 * kk_uuid4 uses the OS CSPRNG-seeded generator: unique, not secret. */
#ifndef KK_RAND_H
#define KK_RAND_H

#include <stdint.h>

uint64_t kk_rand64(void);

/* Uniform in [0, n); n == 0 returns 0. */
uint64_t kk_rand_below(uint64_t n);

/* Writes a 36-char UUID v4 and a NUL to dst. */
void kk_uuid4(char dst[37]);

#endif
