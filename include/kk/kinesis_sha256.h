/* SHA-256 of request bodies (kinesis module; a public header so tests reach it).
 *
 * The body hash (x-amz-content-sha256 of SigV4) is the largest CPU item of a
 * put_record: every body byte goes through it once per send.  On x86-64
 * CPUs with the SHA extensions this uses them (several times faster than
 * the portable code); elsewhere it is mbedTLS.  Same output either way. */
#ifndef KK_KINESIS_SHA256_H
#define KK_KINESIS_SHA256_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Lowercase hex digest of data[0..len) into out (64 chars + NUL). */
void kk_body_sha256_hex(const void *data, size_t len, char out[65]);

/* The raw digest; force_portable selects the mbedTLS path (for tests). */
void kk_body_sha256(const void *data, size_t len, uint8_t out[32], bool force_portable);

/* True when the SHA extensions path is in use on this CPU. */
bool kk_body_sha256_accelerated(void);

#endif
