/* Minimal gRPC-over-HTTP/2 plumbing shared by the broker (server) and the
 * client mode: one connection = one uv_tcp_t + one nghttp2 session, output
 * gathered from nghttp2_session_mem_send into one write per flush, and
 * per-stream output queues fed to nghttp2 through a data provider.
 * Private to bench/load. */
#ifndef KK_BENCH_H2_H
#define KK_BENCH_H2_H

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "kk/buf.h"

struct h2conn;

/* Per-stream state; the owner embeds nothing: streams are allocated here. */
struct h2stream {
    int32_t id;
    struct h2conn *c;
    char path[64];
    struct kk_buf in;  /* request/response messages, framed (5-byte prefix) */
    struct kk_buf out; /* bytes queued for DATA frames */
    size_t out_off;
    bool deferred; /* provider returned DEFERRED; resume on more data */
    bool finish;   /* after out drains: trailers (server) or END_STREAM (client) */
    bool started;  /* response (server) submitted */
    bool closed;
    int grpc_status;                /* client: from trailers, -1 unknown */
    void *user;                     /* owner's per-stream pointer */
    struct h2stream *next;          /* owner lists */
    struct h2stream *cprev, *cnext; /* the connection's list (h2.c) */
};

struct h2_cbs {
    /* server: a request's headers are complete (path known). */
    void (*on_stream_open)(void *user, struct h2stream *st);
    /* a complete gRPC message arrived on st (msg without the prefix). */
    void (*on_message)(void *user, struct h2stream *st, const uint8_t *msg, size_t len);
    /* the peer ended its side (END_STREAM). */
    void (*on_remote_end)(void *user, struct h2stream *st);
    /* the stream is gone; st is freed after this returns. */
    void (*on_stream_close)(void *user, struct h2stream *st, uint32_t error_code);
    /* the connection closed (all its streams were closed before). */
    void (*on_conn_close)(void *user, struct h2conn *c);
};

struct h2conn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    nghttp2_session *s;
    bool server;
    bool closing;
    bool want_flush;
    const struct h2_cbs *cbs;
    void *user;
    char authority[96];
    struct h2conn *next;   /* owner list */
    size_t writes_pending; /* bytes handed to uv_write, not yet written */
    struct h2stream *streams;
    bool alloc_here; /* server conns are freed by h2.c */
    void (*on_ready)(struct h2conn *c, int status);
    char rbuf[65536];
};

/* Server side: accept on listener; the conn is allocated here. */
int h2_accept(uv_stream_t *listener, const struct h2_cbs *cbs, void *user, struct h2conn **out);
/* Client side: initialise c (owned by the caller, zeroed) and connect. on_ready(c, status). */
int h2_connect(uv_loop_t *loop, struct h2conn *c, const char *host, uint16_t port, const struct h2_cbs *cbs,
               void *user, void (*on_ready)(struct h2conn *c, int status));

/* Appends one gRPC message (prefix + packed bytes) to st->out; pack(msg, dst) must write exactly len. */
int h2_queue_msg(struct h2stream *st, const void *msg, size_t len,
                 size_t (*pack)(const void *msg, uint8_t *dst));
/* Server: sends response headers if not yet sent, then resumes data. */
int h2_server_respond(struct h2stream *st);
/* Server: after queued data, send trailers with grpc-status. */
void h2_server_finish(struct h2stream *st, int grpc_status);
/* Client: opens a stream for path; messages in out are sent; end=true ends the request side. */
struct h2stream *h2_client_open(struct h2conn *c, const char *path, uint32_t timeout_ms,
                                bool end_when_drained, void *user);
/* Resumes a stream after h2_queue_msg. */
void h2_resume(struct h2stream *st);
/* Writes what nghttp2 has to send (call after any change). */
int h2_flush(struct h2conn *c);
void h2_close(struct h2conn *c);
/* Frees the pool of finished streams and the shared callbacks (at exit, after the loop closed). */
void h2_pool_free(void);
static inline size_t h2_out_pending(const struct h2stream *st)
{
    return st->out.len - st->out_off;
}

#endif
