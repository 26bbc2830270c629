/* Standard base64 (RFC 4648 §4, with padding), as Go's encoding/json writes
 * []byte and as Kinesis carries Data. */
#ifndef KK_B64_H
#define KK_B64_H

#include <stddef.h>
#include <stdint.h>

static inline size_t kk_b64_encoded_len(size_t n) { return (n + 2) / 3 * 4; }
static inline size_t kk_b64_decoded_max(size_t n) { return n / 4 * 3 + 3; }

/* Writes kk_b64_encoded_len(n) bytes to dst (no NUL); returns that length. */
size_t kk_b64_encode(char *dst, const uint8_t *src, size_t n);

/* Decodes standard base64 with padding required (Go's StdEncoding).
 * dst needs kk_b64_decoded_max(n) bytes: all of them may be written (bytes
 * past the returned length are scratch; on -1 dst holds garbage).  dst may
 * equal src (decoding in place).  Returns the decoded length, or -1 on any
 * invalid character, bad padding or bad length.  SSSE3 is used when the CPU
 * has it (same results). */
long kk_b64_decode(uint8_t *dst, const char *src, size_t n);

#endif
