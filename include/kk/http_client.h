/* HTTP/1.1 client connection pool to one endpoint (Kinesis), on the loop.
 *
 * At most max_connections connections exist; requests beyond that wait in a
 * FIFO of kk_http_req (not of bytes), so a later layer can coalesce several
 * waiting requests into one.  Keep-alive with llhttp response parsing,
 * Content-Length and chunked bodies, responses bounded by
 * max_response_bytes.  Idle connections close after idle_timeout_ms; an
 * idle connection the server closes leaves the pool at once.  A request
 * whose reused connection closes before any response byte arrives is sent
 * again once on a fresh connection (the keep-alive race), without the
 * caller seeing it.
 *
 * Signing happens at send time: when a connection is ready for a request,
 * the pool calls req->prepare, which writes the complete request head
 * (request line, headers, blank line) into the given buffer; the pool then
 * writes head + body.  prepare may also build the body then and set
 * req->body / req->body_len: the pool reads them right after prepare
 * returns and uses them only during that send (the stream copies what the
 * kernel does not take), so such a body may live in a buffer that the next
 * prepare call reuses.  A request waiting for a connection then holds no
 * body bytes at all.
 */
#ifndef KK_HTTP_CLIENT_H
#define KK_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "kk/buf.h"
#include "kk/stream.h"

struct kk_http_pool;

struct kk_http_pool_opts {
    const char *host;
    uint16_t port;
    bool tls;
    struct kk_tls_opts tls_opts;   /* used when tls */
    unsigned max_connections;      /* default 32 */
    uint32_t connect_timeout_ms;   /* default 5000 */
    uint32_t idle_timeout_ms;      /* default 20000 */
    uint32_t request_timeout_ms;   /* per attempt, default 10000 */
    size_t max_response_bytes;     /* default 16 MiB */
};

struct kk_http_response {
    int status;               /* HTTP status code */
    const char *body;         /* valid only during on_response */
    size_t body_len;
    const char *error_type;   /* x-amzn-ErrorType header value as sent (e.g. "Foo:http://..."),
                               * truncated to 255 bytes, or NULL; valid during on_response */
};

struct kk_http_req;

/* Writes the request head for this send into head (already reset).  Called
 * once per send, right before writing; return <0 to fail the request. */
typedef int (*kk_http_prepare_cb)(struct kk_http_req *req, struct kk_buf *head);

/* status 0: resp is the parsed response.  status < 0: transport failure
 * (KK_ETIMEOUT, KK_ECLOSED, UV_ECONNREFUSED, KK_ETLS_VERIFY, KK_ETOOBIG,
 * KK_ECANCELED when the pool closes, ...), resp NULL.  Called exactly once
 * per successful submit unless the request is cancelled first. */
typedef void (*kk_http_response_cb)(struct kk_http_req *req, int status,
                                    const struct kk_http_response *resp);

struct kk_http_req {
    /* public: set by the caller before submit */
    kk_http_prepare_cb prepare;
    kk_http_response_cb on_response;
    const char *body;  /* set at submit: valid until on_response (a re-send writes it
                        * again); or set by prepare on each send: see the top */
    size_t body_len;
    void *data;        /* caller's */
    /* private: owned by the pool while submitted */
    struct kk_http_req *_next, *_prev;
    void *_conn;
    uint8_t _resent;
    uint8_t _queued;
};

int kk_http_pool_new(uv_loop_t *loop, const struct kk_http_pool_opts *opts, struct kk_http_pool **out,
                     char *err, size_t errlen);

/* Sends req on an idle connection or queues it; returns 0 (on_response will
 * run, never from inside this call) or an error (it will not run): e.g. the
 * error prepare returned when a connection was free at once, KK_ESHUTDOWN
 * after close.  req must stay valid until on_response or cancel. */
int kk_http_pool_submit(struct kk_http_pool *pool, struct kk_http_req *req);

/* Withdraws req: on_response will not run.  A request already on the wire
 * costs its connection (closed), the rest of the pool is unaffected. */
void kk_http_pool_cancel(struct kk_http_pool *pool, struct kk_http_req *req);

struct kk_http_pool_stats {
    unsigned open;      /* connections open or connecting */
    unsigned idle;      /* open and idle */
    unsigned waiting;   /* requests waiting for a connection */
    uint64_t opened_total;
    uint64_t resent_total; /* keep-alive race re-sends */
};
void kk_http_pool_stats(const struct kk_http_pool *pool, struct kk_http_pool_stats *st);

/* Fails waiting and in-flight requests with KK_ECANCELED (their callbacks
 * run inside this call), closes every connection, then, from the loop once
 * every handle is closed, frees the pool and calls done once. */
void kk_http_pool_close(struct kk_http_pool *pool, void (*done)(void *arg), void *arg);

#endif
