/* gRPC-over-HTTP/2 pieces that need no socket: the 5-byte message framing,
 * response header/trailer interpretation, grpc-timeout and percent-decoding.
 * Private to src/kubemq; exposed for tests/unit/test_grpc.c.
 */
#ifndef KK_KUBEMQ_GRPC_FRAME_H
#define KK_KUBEMQ_GRPC_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kk/buf.h"

#define KK_GRPC_HDR_LEN 5

/* Writes the 5-byte prefix (flag 0, big-endian length) for a len-byte message. */
void kk_grpc_frame_hdr(uint8_t out[KK_GRPC_HDR_LEN], uint32_t len);

/* Called once per complete message; msg is valid during the call only.
 * Return 0 to go on, 1 to stop delivering (the rest is kept for
 * kk_grpc_dec_drain), < 0 to abort (returned from feed/drain). */
typedef int (*kk_grpc_msg_fn)(void *arg, const uint8_t *msg, size_t len);

/* Reassembles messages from DATA payloads.  Complete messages inside one
 * payload are delivered straight from the caller's bytes (no copy); only a
 * split message, or bytes that arrive while held, are buffered, and the
 * buffer never exceeds max_buffered. */
struct kk_grpc_dec {
    struct kk_buf buf; /* bytes [start, buf.len) are held */
    size_t start;      /* read offset: delivering does not move the rest */
    size_t max_msg;
};

void kk_grpc_dec_init(struct kk_grpc_dec *d, size_t max_msg, size_t max_buffered);
void kk_grpc_dec_free(struct kk_grpc_dec *d);
/* hold: buffer only (the receiver is paused).  Errors: KK_ETOOBIG (a
 * message is larger than max_msg, or the buffer would overflow), KK_EPARSE
 * (compressed flag set), or the callback's negative value. */
int kk_grpc_dec_feed(struct kk_grpc_dec *d, const uint8_t *p, size_t n, bool hold, kk_grpc_msg_fn fn,
                     void *arg);
/* Delivers the buffered complete messages (after a resume). */
int kk_grpc_dec_drain(struct kk_grpc_dec *d, kk_grpc_msg_fn fn, void *arg);
/* Bytes held (partial or undelivered). */
static inline size_t kk_grpc_dec_pending(const struct kk_grpc_dec *d)
{
    return d->buf.len - d->start;
}
/* Drops everything held, keeps the allocation. */
static inline void kk_grpc_dec_reset(struct kk_grpc_dec *d)
{
    kk_buf_reset(&d->buf);
    d->start = 0;
}

/* Response headers and trailers of one call. */
#define KK_GRPC_MSG_MAX 256
struct kk_grpc_resp {
    int http_status;               /* -1 until :status is seen */
    int grpc_status;               /* -1 until grpc-status is seen */
    bool bad_status;               /* grpc-status was not a number */
    char message[KK_GRPC_MSG_MAX]; /* grpc-message, percent-decoded, truncated */
};

void kk_grpc_resp_init(struct kk_grpc_resp *r);
/* Feeds one header field (response headers or trailers, in any order). */
void kk_grpc_resp_header(struct kk_grpc_resp *r, const char *name, size_t nlen, const char *value,
                         size_t vlen);
/* The outcome once the stream ended cleanly: 0 for grpc-status 0, else
 * KK_EGRPC with *grpc_status set (HTTP status != 200 is mapped as gRPC
 * does; a missing grpc-status is INTERNAL with a message). */
int kk_grpc_resp_result(const struct kk_grpc_resp *r, int *grpc_status, const char **message);

/* Percent-decodes in[0..n) into out (NUL-terminated, truncated to cap-1);
 * malformed escapes are copied literally.  Returns the decoded length. */
size_t kk_grpc_percent_decode(const char *in, size_t n, char *out, size_t cap);

/* "OK", "CANCELLED", ... "UNAUTHENTICATED"; "UNKNOWN_STATUS" otherwise. */
const char *kk_grpc_status_name(int code);

/* grpc-timeout value for ms ("<n>m", at most 8 digits: larger values use S). */
void kk_grpc_timeout_format(uint32_t ms, char out[16]);

#endif
