/* SHA-256 of request bodies: now the core one (kk/sha256.h, which keeps the
 * SHA-extensions path this header introduced); these names stay for callers. */
#ifndef KK_KINESIS_SHA256_H
#define KK_KINESIS_SHA256_H

#include "kk/sha256.h"

/* Lowercase hex digest of data[0..len) into out (64 chars + NUL). */
static inline void kk_body_sha256_hex(const void *data, size_t len, char out[65])
{
    kk_sha256_hex(data, len, out);
}

/* The raw digest; force_portable selects the portable path (for tests). */
static inline void kk_body_sha256(const void *data, size_t len, uint8_t out[32], bool force_portable)
{
    if (force_portable)
        kk_sha256_force_portable(true);
    kk_sha256(data, len, out);
    if (force_portable)
        kk_sha256_force_portable(false);
}

/* True when the SHA extensions path is in use on this CPU. */
static inline bool kk_body_sha256_accelerated(void)
{
    return kk_sha256_accelerated();
}

#endif
