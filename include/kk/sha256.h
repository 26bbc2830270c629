/* SHA-256 and HMAC-SHA256 (FIPS 180-4, RFC 2104), for SigV4 and body hashes.
 *
 * On x86-64 CPUs with the SHA extensions the compression function uses them
 * (several times faster than portable code); elsewhere, or when
 * kk_sha256_force_portable(true) was called (tests), a portable C one.  The
 * output is the same either way.  Contexts are plain structs meant to live on
 * the stack: nothing here allocates, and nothing keeps pointers to inputs.
 * Not thread-safe only in the one-time CPU probe (single-threaded gateway). */
#ifndef KK_SHA256_H
#define KK_SHA256_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kk_sha256 {
    uint32_t st[8];
    uint64_t total; /* bytes hashed so far */
    uint8_t buf[64];
    size_t n; /* bytes pending in buf */
};

void kk_sha256_init(struct kk_sha256 *c);
void kk_sha256_update(struct kk_sha256 *c, const void *data, size_t len);
/* Writes the digest; c must be re-initialised before reuse. */
void kk_sha256_final(struct kk_sha256 *c, uint8_t out[32]);

/* One-shot digest of data[0..len). */
void kk_sha256(const void *data, size_t len, uint8_t out[32]);

/* Lowercase hex digest into out (64 chars + NUL).  (Also declared in kk/aws.h.) */
void kk_sha256_hex(const void *data, size_t len, char out[65]);

/* HMAC-SHA256 of msg under key (keys longer than 64 bytes are hashed first). */
void kk_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t len, uint8_t out[32]);

/* HMAC with the inner and outer pads already absorbed, for a key used many
 * times (the SigV4 signing key: one HMAC per request, 2 blocks saved each). */
struct kk_hmac_sha256_key {
    struct kk_sha256 inner, outer;
};
void kk_hmac_sha256_setkey(struct kk_hmac_sha256_key *k, const void *key, size_t keylen);
void kk_hmac_sha256_run(const struct kk_hmac_sha256_key *k, const void *msg, size_t len, uint8_t out[32]);

/* Lowercase hex of n bytes into out (2n chars + NUL). */
void kk_hex_encode(char *out, const uint8_t *in, size_t n);

/* True when the SHA extensions path is in use on this CPU. */
bool kk_sha256_accelerated(void);
/* Tests: true forces the portable compression function until set back. */
void kk_sha256_force_portable(bool on);

#endif
