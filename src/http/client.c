/* HTTP/1.1 client pool to one endpoint, over kk_stream (TCP or TLS).
 *
 * Every list is intrusive and doubly linked, so submit, cancel, lease and
 * release are O(1).  A connection owns two handles (its stream and one
 * timer, used only while connecting) and is freed when both are closed.
 * Request and idle timeouts are the same for every connection of a pool, so
 * deadlines come in order: a busy and an idle FIFO of connections, and one
 * pool timer armed for the earliest head, replace a timer restart per
 * request (O(1) list operations instead of four timer-heap operations).  The
 * pool owns that timer and one more so that close always completes
 * asynchronously, and is freed when every handle is.
 *
 * Connections are opened only while more requests wait than connections are
 * being set up (or about to be handed back), never past max_connections.
 *
 * Memory: the request head is written into one buffer of the pool, not of
 * the connection: kk_stream_write copies whatever the kernel does not take
 * at once, so the buffer is free again when conn_send returns.  A
 * connection keeps only its response-body buffer (released when large).
 */
#include "kk/http_client.h"

#include "kk/err.h"
#include "kk/log.h"

#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HEAD_MAX (64u << 10)
#define ERRTYPE_MAX 256
#define BODY_KEEP (64u << 10) /* a larger response buffer is released after its response */

enum conn_state {
    C_CONNECTING, /* stream connecting (or a synchronous connect failure pending) */
    C_IDLE,       /* on the idle list */
    C_BUSY,       /* a request on the wire (or just finished, in its callback) */
    C_CLOSING,    /* teardown started; no longer counted as open */
};

struct conn {
    struct kk_http_pool *pool;
    struct kk_stream *stream; /* NULL once closed or never connected */
    uv_timer_t timer;
    enum conn_state state;
    unsigned handles;
    int connect_err;             /* synchronous kk_stream_connect failure */
    struct conn *next, *prev;    /* all connections */
    struct conn *inext, *iprev;  /* idle list */
    struct kk_http_req *req;     /* on the wire */
    struct kk_http_req *for_req; /* re-send waiting for this fresh connection */
    uint64_t exchanges;          /* completed on this connection */
    bool reused;                 /* req went out after an exchange or an idle spell */
    bool got_bytes;              /* response bytes arrived for req */
    bool done;                   /* message complete seen */
    int fail;                    /* error decided inside a parser callback */
    llhttp_t parser;
    struct kk_buf body;
    /* header capture: field names split across reads are accumulated */
    char field[24];
    size_t field_len;
    bool field_match;
    bool in_value;
    char *errtype; /* ERRTYPE_MAX bytes, allocated at the first error-type header */
    size_t errtype_len;
    bool has_errtype;
    /* deadline FIFO membership (DL_*), see the top of the file */
    int dl;
    struct conn *dnext, *dprev;
    uint64_t deadline; /* uv_now() ms */
};

enum { DL_NONE = 0, DL_BUSY = 1, DL_IDLE = 2 };

struct kk_http_pool {
    uv_loop_t *loop;
    struct kk_http_pool_opts opts;
    char *host;
    struct kk_tls_ctx *tls;
    struct kk_buf head; /* the head being sent; see the top of the file */
    uv_timer_t closer; /* makes close asynchronous even with no connection */
    uv_timer_t dl_timer;
    uint64_t dl_armed;                 /* when dl_timer fires; 0 = stopped */
    struct conn *dl_head[2], *dl_tail[2]; /* [DL_BUSY - 1], [DL_IDLE - 1] */
    struct kk_http_req *wq_head, *wq_tail;
    struct conn *conns;
    struct conn *idle;
    unsigned nopen, nidle, nwaiting, nconnecting, nreleasing;
    unsigned handles;
    uint64_t opened_total, resent_total;
    bool closing;
    void (*done)(void *arg);
    void *done_arg;
};

static const llhttp_settings_t resp_settings;
static void conn_close(struct conn *c);
static void pool_fill(struct kk_http_pool *p);

/* ---- wait queue ---- */

static void wq_push(struct kk_http_pool *p, struct kk_http_req *r, bool front)
{
    r->_queued = 1;
    r->_conn = NULL;
    if (front) {
        r->_prev = NULL;
        r->_next = p->wq_head;
        if (p->wq_head)
            p->wq_head->_prev = r;
        else
            p->wq_tail = r;
        p->wq_head = r;
    } else {
        r->_next = NULL;
        r->_prev = p->wq_tail;
        if (p->wq_tail)
            p->wq_tail->_next = r;
        else
            p->wq_head = r;
        p->wq_tail = r;
    }
    p->nwaiting++;
}

static void wq_remove(struct kk_http_pool *p, struct kk_http_req *r)
{
    if (r->_prev)
        r->_prev->_next = r->_next;
    else
        p->wq_head = r->_next;
    if (r->_next)
        r->_next->_prev = r->_prev;
    else
        p->wq_tail = r->_prev;
    r->_next = r->_prev = NULL;
    r->_queued = 0;
    p->nwaiting--;
}

static struct kk_http_req *wq_pop(struct kk_http_pool *p)
{
    struct kk_http_req *r = p->wq_head;
    if (r)
        wq_remove(p, r);
    return r;
}

/* ---- idle list (LIFO: the warmest connection is reused first) ---- */

static void idle_push(struct conn *c)
{
    struct kk_http_pool *p = c->pool;
    c->iprev = NULL;
    c->inext = p->idle;
    if (p->idle)
        p->idle->iprev = c;
    p->idle = c;
    p->nidle++;
}

static void idle_remove(struct conn *c)
{
    struct kk_http_pool *p = c->pool;
    if (c->iprev)
        c->iprev->inext = c->inext;
    else
        p->idle = c->inext;
    if (c->inext)
        c->inext->iprev = c->iprev;
    c->inext = c->iprev = NULL;
    p->nidle--;
}

static void on_conn_timer(uv_timer_t *t);

/* ---- deadlines ---- */

static void on_dl_timer(uv_timer_t *t);

static void dl_arm(struct kk_http_pool *p, uint64_t at)
{
    if (p->closing)
        return;
    uint64_t now = uv_now(p->loop);
    uv_timer_start(&p->dl_timer, on_dl_timer, at > now ? at - now : 0, 0);
    p->dl_armed = at;
}

static void dl_del(struct conn *c)
{
    struct kk_http_pool *p = c->pool;
    if (c->dl == DL_NONE)
        return;
    int k = c->dl - 1;
    if (c->dprev)
        c->dprev->dnext = c->dnext;
    else
        p->dl_head[k] = c->dnext;
    if (c->dnext)
        c->dnext->dprev = c->dprev;
    else
        p->dl_tail[k] = c->dprev;
    c->dnext = c->dprev = NULL;
    c->dl = DL_NONE;
}

/* Appends c to a FIFO (its deadline is the latest there); the pool timer is
 * touched only when it would fire too late.  An entry removed early leaves
 * the timer as is: it then fires, finds nothing due and re-arms. */
static void dl_add(struct conn *c, int which, uint64_t timeout_ms)
{
    struct kk_http_pool *p = c->pool;
    int k = which - 1;
    dl_del(c);
    c->deadline = uv_now(p->loop) + timeout_ms;
    c->dl = which;
    c->dnext = NULL;
    c->dprev = p->dl_tail[k];
    if (p->dl_tail[k])
        p->dl_tail[k]->dnext = c;
    else
        p->dl_head[k] = c;
    p->dl_tail[k] = c;
    if (!p->dl_armed || c->deadline < p->dl_armed)
        dl_arm(p, c->deadline);
}

static void conn_idle(struct conn *c)
{
    c->state = C_IDLE;
    idle_push(c);
    dl_add(c, DL_IDLE, c->pool->opts.idle_timeout_ms);
}

static void conn_unidle(struct conn *c)
{
    idle_remove(c);
    dl_del(c);
    c->state = C_BUSY;
    c->reused = true;
}

/* ---- completion ---- */

static void req_finish(struct kk_http_req *r, int status, const struct kk_http_response *resp)
{
    r->_conn = NULL;
    r->_queued = 0;
    r->_next = r->_prev = NULL;
    r->on_response(r, status, resp);
}

/* ---- pool teardown ---- */

static void pool_maybe_free(struct kk_http_pool *p)
{
    if (!p->closing || p->handles > 0)
        return;
    void (*done)(void *) = p->done;
    void *arg = p->done_arg;
    if (p->tls)
        kk_tls_ctx_free(p->tls);
    kk_buf_free(&p->head);
    free(p->host);
    free(p);
    if (done)
        done(arg);
}

static void conn_unref(struct conn *c)
{
    if (--c->handles > 0)
        return;
    struct kk_http_pool *p = c->pool;
    if (c->prev)
        c->prev->next = c->next;
    else
        p->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    kk_buf_free(&c->body);
    free(c->errtype);
    free(c);
    p->handles--;
    pool_maybe_free(p);
}

static void on_timer_closed(uv_handle_t *h)
{
    conn_unref(h->data);
}

static void on_stream_closed(struct kk_stream *s)
{
    struct conn *c = kk_stream_user(s);
    c->stream = NULL;
    conn_unref(c);
}

/* Leaves the pool's counts at once; memory goes when the handles are closed. */
static void conn_close(struct conn *c)
{
    struct kk_http_pool *p = c->pool;
    if (c->state == C_CLOSING)
        return;
    if (c->state == C_IDLE)
        idle_remove(c);
    if (c->state == C_CONNECTING)
        p->nconnecting--;
    c->state = C_CLOSING;
    p->nopen--;
    dl_del(c);
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
    if (c->stream)
        kk_stream_close(c->stream);
    else
        conn_unref(c); /* the stream never existed */
}

/* ---- sending ---- */

static struct kk_http_req *conn_lost(struct conn *c, int *err);

/* Sends r on c (c is not idle).  Returns 0 when r is on the wire or waiting
 * for its re-send; otherwise r is detached and the error is returned for the
 * caller to report, with c idle again (prepare failed) or closing. */
static int conn_send(struct conn *c, struct kk_http_req *r)
{
    struct kk_http_pool *p = c->pool;
    int rc;

    c->state = C_BUSY;
    c->req = r;
    r->_conn = c;
    r->_queued = 0;
    c->got_bytes = false;
    c->done = false;
    c->fail = 0;
    c->has_errtype = false;
    c->errtype_len = 0;
    kk_buf_reset(&p->head);
    rc = r->prepare(r, &p->head);
    if (rc < 0) {
        /* Nothing was written: the connection stays usable. */
        c->req = NULL;
        r->_conn = NULL;
        conn_idle(c);
        return rc;
    }
    uv_buf_t bufs[2] = {
        uv_buf_init(p->head.base, (unsigned)p->head.len),
        uv_buf_init((char *)(uintptr_t)r->body, (unsigned)r->body_len),
    };
    rc = kk_stream_write(c->stream, bufs, r->body_len ? 2 : 1);
    if (rc == KK_ECLOSED) {
        /* The stream is already gone: on a reused connection that is the
         * keep-alive race again, handled like an EOF. */
        struct kk_http_req *failed = conn_lost(c, &rc);
        return failed ? rc : 0;
    }
    if (rc < 0) {
        c->req = NULL;
        r->_conn = NULL;
        conn_close(c);
        pool_fill(p);
        return rc;
    }
    dl_add(c, DL_BUSY, p->opts.request_timeout_ms);
    return 0;
}

/* A connection is free (not idle, no request): it serves the wait queue or
 * goes idle.  A request that cannot be sent is reported here, and the
 * connection moves on to the next one (a loop, not recursion: a failing
 * prepare, e.g. no credentials, may meet a long queue). */
static void conn_release(struct conn *c)
{
    struct kk_http_pool *p = c->pool;
    struct kk_http_req *r;
    while ((r = wq_pop(p)) != NULL) {
        int rc = conn_send(c, r);
        if (rc == 0)
            return;
        req_finish(r, rc, NULL);
        /* The callback may have closed the pool or taken the connection. */
        if (c->state != C_IDLE || p->closing || !p->wq_head)
            return;
        conn_unidle(c);
    }
    conn_idle(c);
}

/* ---- connecting ---- */

static void on_connect(struct kk_stream *s, int status);
static void on_read(struct kk_stream *s, const char *data, ssize_t n);

static const struct kk_stream_cbs stream_cbs = {
    .on_connect = on_connect,
    .on_read = on_read,
    .on_closed = on_stream_closed,
};

static struct conn *conn_open(struct kk_http_pool *p, struct kk_http_req *for_req)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->pool = p;
    c->state = C_CONNECTING;
    c->for_req = for_req;
    kk_buf_init(&c->body, p->opts.max_response_bytes);
    llhttp_init(&c->parser, HTTP_RESPONSE, &resp_settings);
    c->parser.data = c;
    uv_timer_init(p->loop, &c->timer);
    c->timer.data = c;
    c->handles = 2;
    p->handles++;
    c->next = p->conns;
    if (p->conns)
        p->conns->prev = c;
    p->conns = c;
    p->nopen++;
    p->nconnecting++;
    p->opened_total++;
    int rc = kk_stream_connect(p->loop, p->host, p->opts.port, p->tls, p->opts.connect_timeout_ms,
                               &stream_cbs, c, &c->stream);
    if (rc < 0) {
        /* Report it from the loop like any connect failure, never from inside submit. */
        c->stream = NULL;
        c->connect_err = rc;
        uv_timer_start(&c->timer, on_conn_timer, 0, 0);
    }
    return c;
}

/* Opens connections while more requests wait than are being provided for. */
static void pool_fill(struct kk_http_pool *p)
{
    while (!p->closing && p->nwaiting > p->nconnecting + p->nreleasing &&
           p->nopen < p->opts.max_connections) {
        if (!conn_open(p, NULL))
            break;
    }
}

static void conn_connect_failed(struct conn *c, int status)
{
    struct kk_http_pool *p = c->pool;
    struct kk_http_req *r = c->for_req;
    c->for_req = NULL;
    conn_close(c);
    /* Fail the one request this attempt stood for; the others stay queued. */
    if (!r)
        r = wq_pop(p);
    pool_fill(p);
    if (r)
        req_finish(r, status, NULL);
}

static void on_connect(struct kk_stream *s, int status)
{
    struct conn *c = kk_stream_user(s);
    struct kk_http_pool *p = c->pool;
    if (c->state != C_CONNECTING)
        return;
    if (status < 0) {
        KK_DEBUG("http", "connect to %s:%u: %s", p->host, p->opts.port, kk_strerror(status));
        conn_connect_failed(c, status);
        return;
    }
    p->nconnecting--;
    c->reused = false;
    struct kk_http_req *r = c->for_req;
    c->for_req = NULL;
    if (r) {
        int rc = conn_send(c, r);
        if (rc == 0)
            return;
        req_finish(r, rc, NULL);
        if (c->state != C_IDLE || p->closing || !p->wq_head)
            return;
        conn_unidle(c);
    }
    conn_release(c);
}

/* A connection's timeout: connect (its own timer), idle or request (the pool's). */
static void conn_timeout(struct conn *c)
{
    struct kk_http_req *r;
    switch (c->state) {
    case C_CONNECTING:
        conn_connect_failed(c, c->connect_err ? c->connect_err : KK_ETIMEOUT);
        break;
    case C_IDLE:
        conn_close(c);
        break;
    case C_BUSY:
        r = c->req;
        c->req = NULL;
        conn_close(c);
        pool_fill(c->pool);
        if (r)
            req_finish(r, KK_ETIMEOUT, NULL);
        break;
    case C_CLOSING:
        break;
    }
}

static void on_conn_timer(uv_timer_t *t)
{
    conn_timeout(t->data);
}

static void on_dl_timer(uv_timer_t *t)
{
    struct kk_http_pool *p = t->data;
    uint64_t now = uv_now(p->loop), next = 0;
    p->dl_armed = 0;
    /* Heads only: each FIFO is in deadline order.  A timeout's callbacks may
     * add or remove entries, so the heads are read again every time. */
    for (;;) {
        struct conn *c = NULL;
        for (int k = 0; k < 2 && !c; k++)
            if (p->dl_head[k] && p->dl_head[k]->deadline <= now)
                c = p->dl_head[k];
        if (!c || p->closing)
            break;
        dl_del(c);
        conn_timeout(c);
    }
    for (int k = 0; k < 2; k++)
        if (p->dl_head[k] && (!next || p->dl_head[k]->deadline < next))
            next = p->dl_head[k]->deadline;
    if (next)
        dl_arm(p, next);
}

/* ---- response parsing ---- */

static int on_message_begin(llhttp_t *hp)
{
    struct conn *c = hp->data;
    kk_buf_reset(&c->body);
    c->has_errtype = false;
    c->errtype_len = 0;
    c->field_len = 0;
    c->in_value = false;
    return 0;
}

static int on_header_field(llhttp_t *hp, const char *at, size_t n)
{
    struct conn *c = hp->data;
    if (c->in_value) {
        c->in_value = false;
        c->field_len = 0;
    }
    if (c->field_len + n <= sizeof(c->field))
        memcpy(c->field + c->field_len, at, n);
    c->field_len += n;
    return 0;
}

static int on_header_field_complete(llhttp_t *hp)
{
    static const char name[] = "x-amzn-ErrorType";
    struct conn *c = hp->data;
    c->field_match = c->field_len == sizeof(name) - 1 && strncasecmp(c->field, name, sizeof(name) - 1) == 0;
    if (c->field_match) {
        /* Only error answers carry it: successes cost no buffer. */
        if (!c->errtype && !(c->errtype = malloc(ERRTYPE_MAX))) {
            c->fail = KK_ENOMEM;
            return -1;
        }
        c->errtype_len = 0;
    }
    return 0;
}

static int on_header_value(llhttp_t *hp, const char *at, size_t n)
{
    struct conn *c = hp->data;
    c->in_value = true;
    if (!c->field_match)
        return 0;
    size_t room = ERRTYPE_MAX - 1 - c->errtype_len;
    if (n > room)
        n = room; /* a longer error type is truncated, never a failure */
    memcpy(c->errtype + c->errtype_len, at, n);
    c->errtype_len += n;
    return 0;
}

static int on_header_value_complete(llhttp_t *hp)
{
    struct conn *c = hp->data;
    if (c->field_match) {
        c->errtype[c->errtype_len] = '\0';
        c->has_errtype = true;
        c->field_match = false;
    }
    c->in_value = true;
    return 0;
}

static int on_body(llhttp_t *hp, const char *at, size_t n)
{
    struct conn *c = hp->data;
    int rc = kk_buf_append(&c->body, at, n);
    if (rc < 0) {
        c->fail = rc;
        return -1;
    }
    return 0;
}

static int on_message_complete(llhttp_t *hp)
{
    struct conn *c = hp->data;
    /* 1xx interim responses (100 Continue) precede the real one. */
    if (hp->status_code >= 100 && hp->status_code < 200 && hp->status_code != 101)
        return 0;
    c->done = true;
    return HPE_PAUSED;
}

static const llhttp_settings_t resp_settings = {
    .on_message_begin = on_message_begin,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* A complete response: answer the caller, then reuse or close. */
static void conn_complete(struct conn *c, bool reusable)
{
    struct kk_http_pool *p = c->pool;
    struct kk_http_req *r = c->req;
    struct kk_http_response resp = {
        .status = c->parser.status_code,
        .body = c->body.base ? c->body.base : "",
        .body_len = c->body.len,
        .error_type = c->has_errtype ? c->errtype : NULL,
    };

    dl_del(c);
    c->req = NULL;
    c->exchanges++;
    c->reused = true; /* whatever goes out next risks the keep-alive race */
    if (!reusable || p->closing) {
        conn_close(c);
        pool_fill(p);
        req_finish(r, 0, &resp);
        return;
    }
    /* The body lives in this connection's buffer: it is handed on only after
     * the callback; meanwhile count it so a submit from the callback waits
     * for it instead of opening another connection. */
    p->nreleasing++;
    req_finish(r, 0, &resp);
    p->nreleasing--;
    if (c->state == C_CLOSING)
        return;
    if (c->body.cap > BODY_KEEP)
        kk_buf_free(&c->body);
    if (p->closing) {
        conn_close(c);
        return;
    }
    conn_release(c);
}

/* The connection ended (EOF, reset, write error) with c->req unanswered.
 * Closes it; re-sends the request when that is safe and returns NULL, or
 * detaches it and returns it with *err set for the caller to report. */
static struct kk_http_req *conn_lost(struct conn *c, int *err)
{
    struct kk_http_pool *p = c->pool;
    struct kk_http_req *r = c->req;
    c->req = NULL;
    conn_close(c);
    if (r && !c->got_bytes && c->reused && !r->_resent && !p->closing) {
        /* The keep-alive race: the server closed an idle connection as we
         * reused it.  Nothing was answered, so sending again is safe. */
        r->_resent = 1;
        p->resent_total++;
        struct conn *nc = p->nopen < p->opts.max_connections ? conn_open(p, r) : NULL;
        if (nc) {
            r->_conn = nc;
            pool_fill(p);
            return NULL;
        }
        wq_push(p, r, true);
        pool_fill(p);
        return NULL;
    }
    pool_fill(p);
    if (r) {
        r->_conn = NULL;
        if (*err == UV_EOF || *err == UV_ECONNRESET || *err == UV_EPIPE)
            *err = KK_ECLOSED;
    }
    return r;
}

static void on_read(struct kk_stream *s, const char *data, ssize_t n)
{
    struct conn *c = kk_stream_user(s);
    llhttp_errno_t e;

    if (c->state == C_CLOSING)
        return;
    if (n < 0) {
        if (c->state == C_BUSY && c->got_bytes && n == UV_EOF) {
            /* A response delimited by the end of the connection. */
            e = llhttp_finish(&c->parser);
            if (e == HPE_PAUSED && c->done) {
                conn_complete(c, false);
                return;
            }
        }
        if (c->state == C_BUSY) {
            int err = (int)n;
            struct kk_http_req *r = conn_lost(c, &err);
            if (r)
                req_finish(r, err, NULL);
        } else {
            conn_close(c);
        }
        return;
    }
    if (c->state != C_BUSY || !c->req) {
        /* Bytes nobody asked for: the connection is out of step. */
        conn_close(c);
        return;
    }
    c->got_bytes = true;
    e = llhttp_execute(&c->parser, data, (size_t)n);
    if (e == HPE_OK)
        return;
    if (e == HPE_PAUSED && c->done) {
        const char *pos = llhttp_get_error_pos(&c->parser);
        bool trailing = pos && pos < data + n;
        /* A server may answer before the body is fully sent (kinesalite's
         * early 413): the rest would reach it as a next request, so such a
         * connection is not reused. */
        bool unsent = kk_stream_pending(c->stream) > 0;
        llhttp_resume(&c->parser);
        conn_complete(c, !trailing && !unsent && llhttp_should_keep_alive(&c->parser));
        return;
    }
    struct kk_http_req *r = c->req;
    int rc = c->fail ? c->fail : KK_EHTTP;
    c->req = NULL;
    conn_close(c);
    pool_fill(c->pool);
    req_finish(r, rc, NULL);
}

/* ---- public ---- */

int kk_http_pool_new(uv_loop_t *loop, const struct kk_http_pool_opts *opts, struct kk_http_pool **out,
                     char *err, size_t errlen)
{
    int rc;
    struct kk_http_pool *p = NULL;

    if (!loop || !opts || !opts->host || !out) {
        rc = KK_EINVAL;
        if (err && errlen)
            snprintf(err, errlen, "http pool: missing host");
        goto fail;
    }
    p = calloc(1, sizeof(*p));
    if (!p) {
        rc = KK_ENOMEM;
        goto fail;
    }
    p->loop = loop;
    p->opts = *opts;
    p->host = strdup(opts->host);
    if (!p->host) {
        rc = KK_ENOMEM;
        goto fail;
    }
    p->opts.host = p->host;
    kk_buf_init(&p->head, HEAD_MAX);
    if (!p->opts.max_connections)
        p->opts.max_connections = 32;
    if (!p->opts.connect_timeout_ms)
        p->opts.connect_timeout_ms = 5000;
    if (!p->opts.idle_timeout_ms)
        p->opts.idle_timeout_ms = 20000;
    if (!p->opts.request_timeout_ms)
        p->opts.request_timeout_ms = 10000;
    if (!p->opts.max_response_bytes)
        p->opts.max_response_bytes = 16u << 20;
    if (opts->tls) {
        struct kk_tls_opts to = opts->tls_opts;
        if (!to.alpn)
            to.alpn = "http/1.1";
        if (!to.server_name)
            to.server_name = p->host;
        rc = kk_tls_ctx_new(&to, &p->tls, err, errlen);
        if (rc < 0)
            goto fail;
    }
    /* Strings in tls_opts belong to the caller and are used only above. */
    memset(&p->opts.tls_opts, 0, sizeof(p->opts.tls_opts));
    uv_timer_init(loop, &p->closer);
    p->closer.data = p;
    uv_timer_init(loop, &p->dl_timer);
    p->dl_timer.data = p;
    p->handles = 2;
    *out = p;
    return 0;
fail:
    if (p) {
        free(p->host);
        free(p);
    }
    return rc;
}

int kk_http_pool_submit(struct kk_http_pool *p, struct kk_http_req *r)
{
    if (!r || !r->prepare || !r->on_response)
        return KK_EINVAL;
    if (p->closing)
        return KK_ESHUTDOWN;
    r->_resent = 0;
    r->_conn = NULL;
    r->_next = r->_prev = NULL;
    if (p->idle && !p->wq_head) {
        struct conn *c = p->idle;
        conn_unidle(c);
        /* A failure here is returned, never reported through on_response
         * from inside submit. */
        return conn_send(c, r);
    }
    wq_push(p, r, false);
    pool_fill(p);
    return 0;
}

void kk_http_pool_cancel(struct kk_http_pool *p, struct kk_http_req *r)
{
    if (r->_queued) {
        wq_remove(p, r);
        return;
    }
    struct conn *c = r->_conn;
    if (!c)
        return;
    r->_conn = NULL;
    if (c->for_req == r) {
        /* The fresh connection carries on and becomes idle or serves the queue. */
        c->for_req = NULL;
        return;
    }
    if (c->req == r) {
        c->req = NULL;
        conn_close(c);
        pool_fill(p);
    }
}

void kk_http_pool_stats(const struct kk_http_pool *p, struct kk_http_pool_stats *st)
{
    st->open = p->nopen;
    st->idle = p->nidle;
    st->waiting = p->nwaiting;
    st->opened_total = p->opened_total;
    st->resent_total = p->resent_total;
}

static void on_closer_closed(uv_handle_t *h)
{
    struct kk_http_pool *p = h->data;
    p->handles--;
    pool_maybe_free(p);
}

void kk_http_pool_close(struct kk_http_pool *p, void (*done)(void *arg), void *arg)
{
    if (!p || p->closing)
        return;
    p->closing = true;
    p->done = done;
    p->done_arg = arg;
    /* Hold the pool open while callbacks run: they may cancel other requests. */
    struct kk_http_req *r;
    while ((r = wq_pop(p)) != NULL)
        req_finish(r, KK_ECANCELED, NULL);
    for (struct conn *c = p->conns; c; c = c->next) {
        if (c->state == C_CLOSING)
            continue;
        r = c->req ? c->req : c->for_req;
        c->req = c->for_req = NULL;
        conn_close(c);
        if (r)
            req_finish(r, KK_ECANCELED, NULL);
    }
    uv_close((uv_handle_t *)&p->dl_timer, on_closer_closed);
    uv_close((uv_handle_t *)&p->closer, on_closer_closed);
}
