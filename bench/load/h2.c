/* gRPC over HTTP/2 for the load tool (see h2.h).  Deliberately small: no
 * TLS, no compression, one read buffer per connection. */
#include "h2.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kk/err.h"

#define MAX_MSG (128u << 20)

struct wreq {
    uv_write_t req;
    struct h2conn *c;
    struct kk_buf b;
};

static void link_stream(struct h2conn *c, struct h2stream *st)
{
    st->cnext = c->streams;
    if (c->streams)
        c->streams->cprev = st;
    c->streams = st;
}

/* Finished streams are kept for reuse (one unary call per reply is the
 * broker's hot path): no allocation per call once warm.  Bounded. */
#define POOL_MAX 4096
#define POOL_BUF_MAX (256u << 10)
static struct h2stream *pool;
static size_t pool_n;
static nghttp2_session_callbacks *session_cbs;

void h2_pool_free(void)
{
    while (pool) {
        struct h2stream *st = pool;
        pool = st->next;
        kk_buf_free(&st->in);
        kk_buf_free(&st->out);
        free(st);
    }
    pool_n = 0;
    if (session_cbs) {
        nghttp2_session_callbacks_del(session_cbs);
        session_cbs = NULL;
    }
}

static void free_stream(struct h2conn *c, struct h2stream *st)
{
    if (st->cprev)
        st->cprev->cnext = st->cnext;
    else
        c->streams = st->cnext;
    if (st->cnext)
        st->cnext->cprev = st->cprev;
    if (pool_n < POOL_MAX && st->in.cap <= POOL_BUF_MAX && st->out.cap <= POOL_BUF_MAX) {
        st->next = pool;
        pool = st;
        pool_n++;
        return;
    }
    kk_buf_free(&st->in);
    kk_buf_free(&st->out);
    free(st);
}

static struct h2stream *new_stream(struct h2conn *c, int32_t id)
{
    struct h2stream *st;
    struct kk_buf in, out;
    if (pool) {
        st = pool;
        pool = st->next;
        pool_n--;
        in = st->in;
        out = st->out;
        kk_buf_reset(&in);
        kk_buf_reset(&out);
    } else {
        st = malloc(sizeof(*st));
        if (!st)
            return NULL;
        kk_buf_init(&in, MAX_MSG + 5);
        kk_buf_init(&out, (size_t)1 << 30);
    }
    memset(st, 0, sizeof(*st));
    st->in = in;
    st->out = out;
    st->id = id;
    st->c = c;
    st->grpc_status = -1;
    link_stream(c, st);
    return st;
}

/* ---- data provider ---------------------------------------------------------- */
static ssize_t on_read_data(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                            nghttp2_data_source *src, void *ud)
{
    struct h2stream *st = src->ptr;
    size_t avail = st->out.len - st->out_off;
    size_t n = avail < length ? avail : length;
    if (n)
        memcpy(buf, st->out.base + st->out_off, n);
    st->out_off += n;
    if (st->out_off == st->out.len) {
        st->out.len = 0;
        st->out_off = 0;
    }
    if (n == 0 && !st->finish) {
        st->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    if (st->out.len == 0 && st->finish) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (st->c->server) {
            char status[16];
            snprintf(status, sizeof(status), "%d", st->grpc_status < 0 ? 0 : st->grpc_status);
            nghttp2_nv tr[] = {
                {(uint8_t *)"grpc-status", (uint8_t *)status, 11, strlen(status), NGHTTP2_NV_FLAG_NONE},
            };
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            nghttp2_submit_trailer(s, id, tr, 1);
        }
    }
    return (ssize_t)n;
}

/* ---- session callbacks -------------------------------------------------------- */
static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    struct h2conn *c = ud;
    if (!c->server || f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct h2stream *st = new_stream(c, f->hd.stream_id);
    if (!st)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    nghttp2_session_set_stream_user_data(s, f->hd.stream_id, st);
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
    struct h2stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (!st)
        return 0;
    if (nlen == 5 && memcmp(name, ":path", 5) == 0) {
        size_t n = vlen < sizeof(st->path) - 1 ? vlen : sizeof(st->path) - 1;
        memcpy(st->path, value, n);
        st->path[n] = 0;
    } else if (nlen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        st->grpc_status = atoi((const char *)value);
    }
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    struct h2conn *c = ud;
    struct h2stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (!st)
        return 0;
    if (c->server && f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST &&
        c->cbs->on_stream_open)
        c->cbs->on_stream_open(c->user, st);
    if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM) && c->cbs->on_remote_end)
        c->cbs->on_remote_end(c->user, st);
    return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                         void *ud)
{
    struct h2conn *c = ud;
    struct h2stream *st = nghttp2_session_get_stream_user_data(s, id);
    if (!st)
        return 0;
    const uint8_t *p = data;
    size_t n = len;
    /* Deliver whole messages straight from the frame; buffer only a split one. */
    if (st->in.len) {
        if (kk_buf_append(&st->in, data, len) != 0)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        p = (const uint8_t *)st->in.base;
        n = st->in.len;
    }
    size_t off = 0;
    while (n - off >= 5) {
        uint32_t ml = ((uint32_t)p[off + 1] << 24) | ((uint32_t)p[off + 2] << 16) |
                      ((uint32_t)p[off + 3] << 8) | p[off + 4];
        if (p[off] != 0 || ml > MAX_MSG)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        if (n - off - 5 < ml)
            break;
        c->cbs->on_message(c->user, st, p + off + 5, ml);
        off += 5 + ml;
    }
    if (p == (const uint8_t *)st->in.base) {
        kk_buf_consume(&st->in, off);
    } else if (off < n) {
        if (kk_buf_append(&st->in, p + off, n - off) != 0)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t error_code, void *ud)
{
    struct h2conn *c = ud;
    struct h2stream *st = nghttp2_session_get_stream_user_data(s, id);
    if (!st)
        return 0;
    nghttp2_session_set_stream_user_data(s, id, NULL);
    st->closed = true;
    if (c->cbs->on_stream_close)
        c->cbs->on_stream_close(c->user, st, error_code);
    free_stream(c, st);
    return 0;
}

static nghttp2_session_callbacks *callbacks(void)
{
    nghttp2_session_callbacks *cb = session_cbs;
    if (!cb) {
        nghttp2_session_callbacks_new(&cb);
        nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
        nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
        nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
        nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
        session_cbs = cb;
    }
    return cb;
}

/* ---- I/O ------------------------------------------------------------------------ */
static void on_tcp_closed(uv_handle_t *h)
{
    struct h2conn *c = h->data;
    if (c->cbs->on_conn_close)
        c->cbs->on_conn_close(c->user, c);
    if (c->alloc_here)
        free(c);
}

void h2_close(struct h2conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    while (c->streams) {
        struct h2stream *st = c->streams;
        st->closed = true;
        if (c->cbs->on_stream_close)
            c->cbs->on_stream_close(c->user, st, NGHTTP2_CANCEL);
        free_stream(c, st);
    }
    if (c->s) {
        nghttp2_session_del(c->s);
        c->s = NULL;
    }
    uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
}

static void on_written(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    w->c->writes_pending -= w->b.len;
    kk_buf_free(&w->b);
    free(w);
}

int h2_flush(struct h2conn *c)
{
    if (c->closing || !c->s)
        return KK_ECLOSED;
    struct wreq *w = NULL;
    for (;;) {
        const uint8_t *d;
        ssize_t n = nghttp2_session_mem_send(c->s, &d);
        if (n < 0) {
            h2_close(c);
            break;
        }
        if (n == 0)
            break;
        if (!w) {
            w = calloc(1, sizeof(*w));
            if (!w)
                return KK_ENOMEM;
            kk_buf_init(&w->b, (size_t)1 << 31);
            w->c = c;
        }
        if (kk_buf_append(&w->b, d, (size_t)n) != 0)
            break;
    }
    if (!w)
        return 0;
    if (c->closing || w->b.len == 0) {
        kk_buf_free(&w->b);
        free(w);
        return c->closing ? KK_ECLOSED : 0;
    }
    uv_buf_t b = uv_buf_init(w->b.base, (unsigned)w->b.len);
    c->writes_pending += w->b.len;
    int rv = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written);
    if (rv != 0) {
        c->writes_pending -= w->b.len;
        kk_buf_free(&w->b);
        free(w);
        h2_close(c);
        return rv;
    }
    if (!nghttp2_session_want_read(c->s) && !nghttp2_session_want_write(c->s))
        h2_close(c);
    return 0;
}

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    struct h2conn *c = h->data;
    *b = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void on_tcp_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct h2conn *c = s->data;
    if (n < 0) {
        h2_close(c);
        return;
    }
    if (n == 0 || c->closing)
        return;
    ssize_t rv = nghttp2_session_mem_recv(c->s, (const uint8_t *)b->base, (size_t)n);
    if (rv < 0) {
        h2_close(c);
        return;
    }
    h2_flush(c);
}

static int session_init(struct h2conn *c)
{
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    nghttp2_option_set_no_http_messaging(opt, 0);
    int rv = c->server ? nghttp2_session_server_new2(&c->s, callbacks(), c, opt)
                       : nghttp2_session_client_new2(&c->s, callbacks(), c, opt);
    nghttp2_option_del(opt);
    if (rv != 0)
        return KK_ENOMEM;
    /* Large windows: the load tool must not be the bottleneck. */
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100000},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 16 << 20},
        {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, 1 << 16},
    };
    nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, iv, 3);
    nghttp2_session_set_local_window_size(c->s, NGHTTP2_FLAG_NONE, 0, 64 << 20);
    return 0;
}

int h2_accept(uv_stream_t *listener, const struct h2_cbs *cbs, void *user, struct h2conn **out)
{
    struct h2conn *c = calloc(1, sizeof(*c));
    if (!c)
        return KK_ENOMEM;
    c->server = true;
    c->alloc_here = true;
    c->cbs = cbs;
    c->user = user;
    uv_tcp_init(listener->loop, &c->tcp);
    c->tcp.data = c;
    int rv = uv_accept(listener, (uv_stream_t *)&c->tcp);
    if (rv == 0)
        rv = session_init(c);
    if (rv != 0) {
        c->closing = true;
        uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
        return rv;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_tcp_read);
    *out = c;
    h2_flush(c);
    return 0;
}

static void on_connected(uv_connect_t *req, int status)
{
    struct h2conn *c = req->data;
    if (status == 0 && !c->closing) {
        status = session_init(c);
        if (status == 0) {
            uv_tcp_nodelay(&c->tcp, 1);
            uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_tcp_read);
            h2_flush(c);
        }
    }
    if (c->on_ready)
        c->on_ready(c, status);
}

int h2_connect(uv_loop_t *loop, struct h2conn *c, const char *host, uint16_t port, const struct h2_cbs *cbs,
               void *user, void (*on_ready)(struct h2conn *c, int status))
{
    struct sockaddr_storage ss;
    int rv = uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
    if (rv != 0)
        rv = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss);
    if (rv != 0)
        return rv;
    c->cbs = cbs;
    c->user = user;
    c->on_ready = on_ready;
    snprintf(c->authority, sizeof(c->authority), "%s:%u", host, port);
    uv_tcp_init(loop, &c->tcp);
    c->tcp.data = c;
    c->connect_req.data = c;
    rv = uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&ss, on_connected);
    if (rv != 0) {
        c->closing = true;
        uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
    }
    return rv;
}

/* ---- streams ------------------------------------------------------------------------ */
int h2_queue_msg(struct h2stream *st, const void *msg, size_t len,
                 size_t (*pack)(const void *msg, uint8_t *dst))
{
    /* Keep the queue compact when it is fed while it drains. */
    if (st->out_off > (64u << 10) && st->out_off * 2 > st->out.len) {
        kk_buf_consume(&st->out, st->out_off);
        st->out_off = 0;
    }
    uint8_t *p = (uint8_t *)kk_buf_reserve(&st->out, 5 + len);
    if (!p)
        return KK_ETOOBIG;
    p[0] = 0;
    p[1] = (uint8_t)(len >> 24);
    p[2] = (uint8_t)(len >> 16);
    p[3] = (uint8_t)(len >> 8);
    p[4] = (uint8_t)len;
    if (len)
        pack(msg, p + 5);
    kk_buf_commit(&st->out, 5 + len);
    return 0;
}

void h2_resume(struct h2stream *st)
{
    if (st->deferred && st->c->s && !st->closed) {
        st->deferred = false;
        nghttp2_session_resume_data(st->c->s, st->id);
    }
}

int h2_server_respond(struct h2stream *st)
{
    if (st->closed || !st->c->s)
        return KK_ECLOSED;
    if (st->started) {
        h2_resume(st);
        return 0;
    }
    static const nghttp2_nv hdrs[] = {
        {(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, NGHTTP2_NV_FLAG_NONE},
    };
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = on_read_data};
    st->started = true;
    return nghttp2_submit_response(st->c->s, st->id, hdrs, 2, &prd) == 0 ? 0 : KK_EH2;
}

void h2_server_finish(struct h2stream *st, int grpc_status)
{
    st->finish = true;
    st->grpc_status = grpc_status;
    h2_server_respond(st);
}

struct h2stream *h2_client_open(struct h2conn *c, const char *path, uint32_t timeout_ms,
                                bool end_when_drained, void *user)
{
    if (c->closing || !c->s)
        return NULL;
    struct h2stream *st = new_stream(c, -1);
    if (!st)
        return NULL;
    st->user = user;
    st->finish = end_when_drained;
    snprintf(st->path, sizeof(st->path), "%s", path);
    char tmo[24];
    snprintf(tmo, sizeof(tmo), "%um", timeout_ms);
    nghttp2_nv hdrs[] = {
        {(uint8_t *)":method", (uint8_t *)"POST", 7, 4, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)":path", (uint8_t *)st->path, 5, strlen(st->path), NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)":authority", (uint8_t *)c->authority, 10, strlen(c->authority), NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"grpc-timeout", (uint8_t *)tmo, 12, strlen(tmo), NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"te", (uint8_t *)"trailers", 2, 8, NGHTTP2_NV_FLAG_NONE},
    };
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = on_read_data};
    int32_t id = nghttp2_submit_request(c->s, NULL, hdrs, 7, &prd, st);
    if (id < 0) {
        free_stream(c, st);
        return NULL;
    }
    st->id = id;
    return st;
}
