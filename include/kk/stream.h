/* A client byte stream on the loop: DNS + TCP connect, optionally TLS
 * (mbedTLS with non-blocking BIO callbacks over the libuv stream).
 * Users (the HTTP/2 KubeMQ connection, the HTTP/1.1 Kinesis pool) see
 * plaintext only.
 *
 * Lifetime: kk_stream_connect allocates; kk_stream_close starts teardown
 * and on_closed runs exactly once afterwards, after which the stream's
 * memory is gone.  Callbacks never run after on_closed.  It is safe to call
 * kk_stream_close from inside any callback.
 *
 * Callback contract:
 *   on_connect(s, 0)     once, when TCP (and the TLS handshake) completed;
 *   on_connect(s, err)   once, instead, on failure (DNS, refused, timeout,
 *                        handshake or verification); the user then closes;
 *   on_read(s, p, n)     plaintext bytes, n > 0; p is valid during the call;
 *   on_read(s, NULL, err) err < 0: EOF is UV_EOF, else an error; no more
 *                        reads follow; the user closes.
 *
 * Error codes: UV_E* / UV_EAI_* from libuv pass through (UV_ECONNREFUSED,
 * UV_ECONNRESET, ...); KK_ETIMEOUT (connect timeout), KK_ETLS (handshake or
 * record failure; a peer closing during the handshake also gives KK_ETLS),
 * KK_ETLS_VERIFY (certificate chain or name; the reason is logged at warn).
 *
 * Limits: output is queued up to 32 MiB (KK_ETOOBIG beyond); a drained
 * queue larger than 16 KiB is released.  Reads use one 64 KiB buffer per
 * thread shared by all streams (no allocation per read, no read memory per
 * idle stream): on_read's data is valid only during the call.  TLS streams
 * keep undecrypted leftovers (paused reads) in their own bounded buffer.
 */
#ifndef KK_STREAM_H
#define KK_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct kk_stream;
struct kk_tls_ctx;

struct kk_tls_opts {
    const char *ca_file;     /* NULL: the system bundle (/etc/ssl/certs/ca-certificates.crt) */
    const char *cert_file;   /* client certificate (PEM), optional */
    const char *key_file;    /* its key (PEM), optional */
    const char *server_name; /* SNI + name check; NULL: the connect host (see below for IPs) */
    bool insecure_skip_verify; /* default false: verification is on */
    const char *alpn;        /* e.g. "h2" or "http/1.1"; NULL: no ALPN */
};

/* A TLS client configuration shared by every connection to one endpoint:
 * CA chain and client cert parsed once, session cache for resumption (the
 * last session, offered again only to the same server name).  TLS >= 1.2.
 *
 * Name check: the name checked is server_name if set, else the connect host.
 * A DNS name is matched by mbedTLS against dNSName SANs and the CN, and sent
 * as SNI.  An IPv4 or IPv6 literal ("10.0.0.5", "::1", "[::1]") is matched
 * only against the leaf's iPAddress SANs, byte for byte (an IPv4 address and
 * its ::ffff: mapped form are equal), never against dNSName or CN, and no
 * SNI is sent (RFC 6066 §3).  A mismatch fails with KK_ETLS_VERIFY.  With
 * insecure_skip_verify nothing is checked.
 *
 * err (optional) receives a one-line reason (file paths, never key bytes).
 * The ctx must outlive every stream that uses it. */
int kk_tls_ctx_new(const struct kk_tls_opts *opts, struct kk_tls_ctx **out, char *err, size_t errlen);
void kk_tls_ctx_free(struct kk_tls_ctx *ctx);

struct kk_stream_cbs {
    void (*on_connect)(struct kk_stream *s, int status);
    void (*on_read)(struct kk_stream *s, const char *data, ssize_t n);
    void (*on_closed)(struct kk_stream *s);
};

/* tls NULL: plaintext.  connect_timeout_ms covers DNS, TCP and handshake.
 * Returns 0 (on_connect will run) or an error (nothing will run). */
int kk_stream_connect(uv_loop_t *loop, const char *host, uint16_t port, struct kk_tls_ctx *tls,
                      uint32_t connect_timeout_ms, const struct kk_stream_cbs *cbs, void *user,
                      struct kk_stream **out);

/* Queues bytes.  The stream copies what it cannot hand to the kernel at
 * once, so bufs may be reused when this returns.  Allowed any time after
 * kk_stream_connect returned 0 (bytes written while connecting go out once
 * the connection, and the handshake, are up).  Errors surface through
 * on_read(NULL, err), from the loop, never from inside this call.  Returns 0,
 * KK_ECLOSED (closing, or failed), or KK_ETOOBIG (queue limit). */
int kk_stream_write(struct kk_stream *s, const uv_buf_t bufs[], unsigned nbufs);

/* Bytes queued but not yet written to the socket (for backpressure). */
size_t kk_stream_pending(const struct kk_stream *s);

/* Stop / resume delivering on_read (flow control towards the peer): the
 * socket is not read while stopped.  Data already received is delivered
 * after kk_stream_read_start from the loop, not from inside the call.
 * A stop during the TLS handshake takes effect once it completes. */
void kk_stream_read_stop(struct kk_stream *s);
void kk_stream_read_start(struct kk_stream *s);

/* The negotiated ALPN protocol, or NULL. */
const char *kk_stream_alpn(const struct kk_stream *s);
bool kk_stream_is_tls(const struct kk_stream *s);

/* After on_connect(s, 0): true if the TLS handshake resumed the session kept
 * in the kk_tls_ctx from an earlier connection to the same server name
 * (abbreviated handshake).  False for plaintext streams. */
bool kk_stream_tls_resumed(const struct kk_stream *s);

/* Idempotent; safe inside any callback.  No on_read runs after this call;
 * on_closed follows once, from the loop, never from inside this call.
 *
 * Graceful when the stream is open and has not failed: output still queued
 * (TLS: followed by close_notify) keeps being written until drained, then
 * FIN is sent and the peer's EOF awaited, all bounded by a linger of 2 s
 * (LINGER_MS in stream.c); input arriving meanwhile is discarded.  A write
 * error or reset ends the linger at once.  So a caller may write its last
 * bytes and close right away.  A stream that failed (on_read(NULL, err) or
 * on_connect(err) delivered or pending), or is still connecting or in the
 * TLS handshake, closes at once and its queued output is dropped. */
void kk_stream_close(struct kk_stream *s);

void *kk_stream_user(const struct kk_stream *s);
void kk_stream_set_user(struct kk_stream *s, void *user);

#endif
