/* Unit tests of the HTTP/1.1 client pool (src/http/client.c) against a small
 * libuv HTTP server in this file, on 127.0.0.1 with an ephemeral port.  The
 * request path tells the server how to answer or misbehave. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <llhttp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "kk/err.h"
#include "kk/http_client.h"

/* ---- test server ---- */

struct tsrv;

struct tconn {
    uv_tcp_t tcp;
    uv_timer_t delay;
    uv_write_t w;
    struct tsrv *srv;
    struct tconn *next, *prev;
    llhttp_t parser;
    char url[64];
    size_t urllen;
    size_t bodylen;
    int nreq;
    int handles;
    bool closing;
    bool close_after_write;
    char out[8192];
};

struct tsrv {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uint16_t port;
    int cur, max_concurrent, accepted, requests;
    size_t last_bodylen;
    struct tconn *conns;
    bool closed;
};

static void tconn_handle_closed(uv_handle_t *h)
{
    struct tconn *c = h->data;
    if (--c->handles == 0)
        free(c);
}

static void tconn_close(struct tconn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    struct tsrv *s = c->srv;
    s->cur--;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    uv_close((uv_handle_t *)&c->tcp, tconn_handle_closed);
    uv_close((uv_handle_t *)&c->delay, tconn_handle_closed);
}

static void tconn_written(uv_write_t *w, int status)
{
    struct tconn *c = w->data;
    if (c->close_after_write || status < 0)
        tconn_close(c);
}

static void tconn_send(struct tconn *c, const char *data, size_t len, bool close_after)
{
    memcpy(c->out, data, len);
    c->close_after_write = close_after;
    c->w.data = c;
    uv_buf_t b = uv_buf_init(c->out, (unsigned)len);
    uv_write(&c->w, (uv_stream_t *)&c->tcp, &b, 1, tconn_written);
}

static void tconn_send_ok(struct tconn *c)
{
    char resp[128];
    char body[16];
    int bl = snprintf(body, sizeof(body), "ok:%d", c->nreq);
    int n = snprintf(resp, sizeof(resp), "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", bl, body);
    tconn_send(c, resp, (size_t)n, false);
}

static void on_delay(uv_timer_t *t)
{
    tconn_send_ok(t->data);
}

static int ts_on_url(llhttp_t *p, const char *at, size_t n)
{
    struct tconn *c = p->data;
    if (c->urllen + n < sizeof(c->url)) {
        memcpy(c->url + c->urllen, at, n);
        c->urllen += n;
        c->url[c->urllen] = '\0';
    }
    return 0;
}

static int ts_on_begin(llhttp_t *p)
{
    struct tconn *c = p->data;
    c->urllen = 0;
    c->url[0] = '\0';
    c->bodylen = 0;
    return 0;
}

static int ts_on_body(llhttp_t *p, const char *at, size_t n)
{
    ((struct tconn *)p->data)->bodylen += n;
    return 0;
}

static int ts_on_complete(llhttp_t *p)
{
    struct tconn *c = p->data;
    struct tsrv *s = c->srv;
    static char big[6000];
    c->nreq++;
    s->requests++;
    s->last_bodylen = c->bodylen;
    if (strcmp(c->url, "/ok") == 0) {
        tconn_send_ok(c);
    } else if (strcmp(c->url, "/delay") == 0) {
        uv_timer_start(&c->delay, on_delay, 5, 0);
    } else if (strcmp(c->url, "/chunked") == 0) {
        static const char r[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                "3\r\nhel\r\n8\r\nlo world\r\n0\r\n\r\n";
        tconn_send(c, r, sizeof(r) - 1, false);
    } else if (strcmp(c->url, "/big") == 0) {
        int n = snprintf(big, sizeof(big), "HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n");
        memset(big + n, 'x', 5000);
        tconn_send(c, big, (size_t)n + 5000, false);
    } else if (strcmp(c->url, "/drop") == 0) {
        tconn_close(c); /* hangs up without a byte */
    } else if (strcmp(c->url, "/slow") == 0) {
        /* never answers */
    } else if (strcmp(c->url, "/err") == 0) {
        static const char r[] = "HTTP/1.1 400 Bad Request\r\n"
                                "X-Amzn-Errortype: ResourceNotFoundException:http://internal.amazon.com/\r\n"
                                "Content-Type: application/x-amz-json-1.1\r\nContent-Length: 2\r\n\r\n{}";
        tconn_send(c, r, sizeof(r) - 1, false);
    } else if (strcmp(c->url, "/closeafter") == 0) {
        /* Answers as keep-alive, then closes: the race the pool must absorb.
         * Nothing more is read, so a request sent meanwhile is never answered. */
        uv_read_stop((uv_stream_t *)&c->tcp);
        static const char r[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst";
        tconn_send(c, r, sizeof(r) - 1, true);
    } else if (strcmp(c->url, "/mid") == 0) {
        static const char r[] = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789";
        tconn_send(c, r, sizeof(r) - 1, true);
    } else if (strcmp(c->url, "/eofbody") == 0) {
        static const char r[] = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-eof";
        tconn_send(c, r, sizeof(r) - 1, true);
    } else {
        static const char r[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        tconn_send(c, r, sizeof(r) - 1, false);
    }
    return 0;
}

/* "/early" answers 413 as soon as the head is in and reads no more, as
 * kinesalite does with oversized uploads. */
static int ts_on_headers(llhttp_t *p)
{
    struct tconn *c = p->data;
    if (strcmp(c->url, "/early") != 0)
        return 0;
    static const char r[] = "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n";
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->srv->requests++;
    tconn_send(c, r, sizeof(r) - 1, false);
    return 0;
}

static const llhttp_settings_t ts_settings = {
    .on_headers_complete = ts_on_headers,
    .on_message_begin = ts_on_begin,
    .on_url = ts_on_url,
    .on_body = ts_on_body,
    .on_message_complete = ts_on_complete,
};

static void ts_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    static char rbuf[65536];
    *b = uv_buf_init(rbuf, sizeof(rbuf));
}

static void ts_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct tconn *c = st->data;
    if (n < 0) {
        tconn_close(c);
        return;
    }
    if (llhttp_execute(&c->parser, b->base, (size_t)n) != HPE_OK)
        tconn_close(c);
}

static void ts_on_connection(uv_stream_t *l, int status)
{
    struct tsrv *s = l->data;
    struct tconn *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->srv = s;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->delay);
    c->tcp.data = c;
    c->delay.data = c;
    c->handles = 2;
    llhttp_init(&c->parser, HTTP_REQUEST, &ts_settings);
    c->parser.data = c;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->accepted++;
    s->cur++;
    if (s->cur > s->max_concurrent)
        s->max_concurrent = s->cur;
    assert_int_equal(uv_accept(l, (uv_stream_t *)&c->tcp), 0);
    uv_read_start((uv_stream_t *)&c->tcp, ts_alloc, ts_read);
}

static void tsrv_start(uv_loop_t *loop, struct tsrv *s)
{
    struct sockaddr_in sa;
    struct sockaddr_in bound;
    int len = sizeof(bound);
    memset(s, 0, sizeof(*s));
    s->loop = loop;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    assert_int_equal(uv_tcp_bind(&s->listener, (const struct sockaddr *)&sa, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&s->listener, 128, ts_on_connection), 0);
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &len);
    s->port = ntohs(bound.sin_port);
}

static void tsrv_close(struct tsrv *s)
{
    uv_close((uv_handle_t *)&s->listener, NULL);
    while (s->conns)
        tconn_close(s->conns);
}

/* ---- client fixture ---- */

struct cfx {
    uv_loop_t loop;
    struct tsrv srv;
    struct kk_http_pool *pool;
    int completed;
    bool pool_done;
};

struct treq {
    struct kk_http_req req;
    struct cfx *f;
    const char *path;
    int status; /* transport status */
    int http;   /* HTTP status */
    char body[64];
    size_t blen;
    char errtype[128];
    int calls;
    struct treq *then; /* submitted from this one's callback */
};

static int prepare(struct kk_http_req *req, struct kk_buf *head)
{
    struct treq *t = req->data;
    return kk_buf_printf(head, "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %zu\r\n\r\n", t->path,
                         req->body_len);
}

static void on_response(struct kk_http_req *req, int status, const struct kk_http_response *resp)
{
    struct treq *t = req->data;
    t->calls++;
    t->status = status;
    if (status == 0) {
        t->http = resp->status;
        t->blen = resp->body_len < sizeof(t->body) ? resp->body_len : sizeof(t->body);
        memcpy(t->body, resp->body, t->blen);
        if (resp->error_type)
            snprintf(t->errtype, sizeof(t->errtype), "%s", resp->error_type);
    }
    t->f->completed++;
    if (t->then)
        assert_int_equal(kk_http_pool_submit(t->f->pool, &t->then->req), 0);
}

static void treq_init(struct treq *t, struct cfx *f, const char *path, const char *body)
{
    memset(t, 0, sizeof(*t));
    t->f = f;
    t->path = path;
    t->req.prepare = prepare;
    t->req.on_response = on_response;
    t->req.body = body;
    t->req.body_len = body ? strlen(body) : 0;
    t->req.data = t;
}

static void cfx_start(struct cfx *f, struct kk_http_pool_opts *o)
{
    char err[128];
    memset(f, 0, sizeof(*f));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    tsrv_start(&f->loop, &f->srv);
    o->host = "127.0.0.1";
    if (!o->port)
        o->port = f->srv.port;
    assert_int_equal(kk_http_pool_new(&f->loop, o, &f->pool, err, sizeof(err)), 0);
}

/* Turns the loop until *counter reaches n or ms pass. */
static void run_until(struct cfx *f, const int *counter, int n, uint64_t ms)
{
    uint64_t start = uv_now(&f->loop);
    while (*counter < n && uv_now(&f->loop) - start < ms)
        uv_run(&f->loop, UV_RUN_ONCE);
}

/* Turns the loop for about ms (a timer keeps it from blocking forever). */
static void on_tick(uv_timer_t *t)
{
    (void)t;
}
static void run_for(struct cfx *f, uint64_t ms)
{
    uv_timer_t tick;
    uv_timer_init(&f->loop, &tick);
    uv_timer_start(&tick, on_tick, 5, 5);
    uint64_t start = uv_now(&f->loop);
    while (uv_now(&f->loop) - start < ms)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

static void on_pool_done(void *arg)
{
    ((struct cfx *)arg)->pool_done = true;
}

static void cfx_finish(struct cfx *f)
{
    if (f->pool)
        kk_http_pool_close(f->pool, on_pool_done, f);
    tsrv_close(&f->srv);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_true(f->pool_done);
    assert_int_equal(uv_loop_close(&f->loop), 0);
}

static struct kk_http_pool_stats stats(struct cfx *f)
{
    struct kk_http_pool_stats st;
    kk_http_pool_stats(f->pool, &st);
    return st;
}

/* ---- tests ---- */

static void test_roundtrip(void **state)
{
    struct cfx f;
    struct kk_http_pool_opts o = {0};
    struct treq a, b;
    cfx_start(&f, &o);
    treq_init(&a, &f, "/ok", "{\"StreamName\":\"s\"}");
    assert_int_equal(kk_http_pool_submit(f.pool, &a.req), 0);
    run_until(&f, &f.completed, 1, 3000);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.status, 0);
    assert_int_equal(a.http, 200);
    assert_int_equal(a.blen, 4);
    assert_memory_equal(a.body, "ok:1", 4);
    assert_int_equal(f.srv.last_bodylen, strlen("{\"StreamName\":\"s\"}"));
    /* A second request reuses the idle connection. */
    treq_init(&b, &f, "/ok", NULL);
    assert_int_equal(kk_http_pool_submit(f.pool, &b.req), 0);
    run_until(&f, &f.completed, 2, 3000);
    assert_int_equal(b.status, 0);
    assert_memory_equal(b.body, "ok:2", 4);
    assert_int_equal(f.srv.accepted, 1);
    struct kk_http_pool_stats st = stats(&f);
    assert_int_equal(st.open, 1);
    assert_int_equal(st.idle, 1);
    assert_int_equal(st.opened_total, 1);
    cfx_finish(&f);
}

#define NREQ 100
static void test_max_connections(void **state)
{
    struct cfx f;
    struct kk_http_pool_opts o = {.max_connections = 4};
    static struct treq r[NREQ];
    cfx_start(&f, &o);
    for (int i = 0; i < NREQ; i++) {
        treq_init(&r[i], &f, "/delay", "x");
        assert_int_equal(kk_http_pool_submit(f.pool, &r[i].req), 0);
    }
    struct kk_http_pool_stats st = stats(&f);
    assert_int_equal(st.open, 4);
    assert_int_equal(st.waiting, NREQ);
    run_until(&f, &f.completed, NREQ, 10000);
    assert_int_equal(f.completed, NREQ);
    for (int i = 0; i < NREQ; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, 0);
        assert_int_equal(r[i].http, 200);
    }
    assert_true(f.srv.max_concurrent <= 4);
    assert_int_equal(f.srv.accepted, 4);
    st = stats(&f);
    assert_int_equal(st.opened_total, 4);
    assert_int_equal(st.waiting, 0);
    cfx_finish(&f);
}

static void test_chunked(void **state)
{
    struct cfx f;
    struct kk_http_pool_opts o = {0};
    struct treq a;
    cfx_start(&f, &o);
    treq_init(&a, &f, "/chunked", NULL);
    assert_int_equal(kk_http_pool_submit(f.pool, &a.req), 0);
    run_until(&f, &f.completed, 1, 3000);
    assert_int_equal(a.status, 0);
    assert_int_equal(a.blen, 11);
    assert_memory_equal(a.body, "hello world", 11);
    assert_int_equal(stats(&f).idle, 1);
    cfx_finish(&f);
}

static void test_eof_delimited_body(void **state)
{
    struct cfx f;
    struct kk_http_pool_opts o = {0};
    struct treq a;
    cfx_start(&f, &o);
    treq_init(&a, &f, "/eofbody", NULL);
    assert_int_equal(kk_http_pool_submit(f.pool, &a.req), 0);
    run_until(&f, &f.completed, 1, 3000);
    assert_int_equal(a.status, 0);
    assert_int_equal(a.http, 200);
    assert_int_equal(a.blen, 9);
    assert_memory_equal(a.body, "until-eof", 9);
    assert_int_equal(stats(&f).open, 0);
    cfx_finish(&f);
}

static void test_too_big(void **state)
{
    struct cfx f;
    struct kk_http_pool_opts o = {.max_response_bytes = 1000};
    struct treq a;
    cfx_start(&f, &o);
    treq_init(&a, &f, "/big", NULL);
    assert_int_equal(kk_http_pool_submit(f.pool, &a.req), 0);
    run_until(&f, &f.completed, 1, 3000);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.status, KK_ETOOBIG);
    assert_int_equal(stats(&f).open, 0);
    cfx_finish(&f);
}

static void test_timeout(void **state)
{
    struct cfx f;
    struct kk_http_pool_opts o = {.request_timeout_ms = 50};
    struct treq a;
    cfx_start(&f, &o);
    treq_init(&a, &f, "/slow", NULL);
    uint64_t t0 = uv_now(&f.loop);
    assert_int_equal(kk_http_pool_submit(f.pool, &a.req), 0);
    run_until(&f, &f.completed, 1, 3000);
    assert_int_equal(a.status, KK_ETIMEOUT);
    assert_true(uv_now(&f.loop) - t0 >= 45);
    assert_int_equal(stats(&f).open, 0);
    cfx_finish(&f);
}

static void test_keepalive_race_resend(void **state)
{
    struct cfx f;
    struct kk_http_pool_opts o = {0};
    struct treq a, b;
    cfx_start(&f, &o);
    treq_init(&a, &f, "/closeafter", NULL);
    treq_init(&b, &f, "/ok", "again");
    a.then = &b; /* sent on the connection the server is closing */
    assert_int_equal(kk_http_pool_submit(f.pool, &a.req), 0);
    run_until(&f, &f.completed, 2, 3000);
    assert_int_equal(a.status, 0);
    assert_memory_equal(a.body, "first", 5);
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.status, 0);
    assert_int_equal(b.http, 200);
    assert_memory_equal(b.body, "ok:1", 4); /* first request on a fresh connection */
    assert_int_equal(f.srv.accepted, 2);
    assert_int_equal(stats(&f).resent_total, 1);
    cfx_finish(&f);
}

static void test_resend_fails_on_fresh_connection(void **state)
{
    struct cfx f;
    struct kk_http_pool_opts o = {0};
    struct treq a, b;
    cfx_start(&f, &o);
    treq_init(&a, &f, "/closeafter", NULL);
    treq_init(&b, &f, "/drop", NULL);
    a.then = &b;
    assert_int_equal(kk_http_pool_submit(f.pool, &a.req), 0);
    run_until(&f, &f.completed, 2, 3000);
    assert_int_equal(a.status, 0);
    /* Re-sent once on a fresh connection, which also hung up: now it counts. */
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.status, KK_ECLOSED);
    assert_int_equal(stats(&f).resent_total, 1);
    assert_int_equal(f.srv.accepted, 2);
    cfx_finish(&f);
}

static int prepare_fail(struct kk_http_req *req, struct kk_buf *head)
{
    return KK_ECREDS;
}

static void test_prepare_failure(void **state)
{
    struct cfx f;
    struct kk_http_pool_opts o = {.max_connections = 1};
    struct treq a, b, c, d;
    cfx_start(&f, &o);
    treq_init(&a, &f, "/ok", NULL);
    assert_int_equal(kk_http_pool_submit(f.pool, &a.req), 0);
    run_until(&f, &f.completed, 1, 3000);
    /* On an idle connection the failure is returned by submit, no callback. */
    treq_init(&b, &f, "/ok", NULL);
    b.req.prepare = prepare_fail;
    assert_int_equal(kk_http_pool_submit(f.pool, &b.req), KK_ECREDS);
    assert_int_equal(b.calls, 0);
    assert_int_equal(stats(&f).idle, 1);
    /* Queued behind a busy connection: reported through the callback, and
     * the connection goes on to the next request. */
    treq_init(&a, &f, "/delay", NULL);
    treq_init(&c, &f, "/ok", NULL);
    treq_init(&d, &f, "/ok", NULL);
    c.req.prepare = prepare_fail;
    f.completed = 0;
    assert_int_equal(kk_http_pool_submit(f.pool, &a.req), 0);
    assert_int_equal(kk_http_pool_submit(f.pool, &c.req), 0);
    assert_int_equal(kk_http_pool_submit(f.pool, &d.req), 0);
    run_until(&f, &f.completed, 3, 3000);
    assert_int_equal(a.status, 0);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.status, KK_ECREDS);
    assert_int_equal(d.status, 0);
    assert_int_equal(f.srv.accepted, 1);
    cfx_finish(&f);
}

static void test_close_mid_response_not_resent(void **state)
{
    struct cfx f;
    struct kk_http_pool_opts o = {0};
    struct treq a, b;
    cfx_start(&f, &o);
    treq_init(&a, &f, "/ok", NULL);
    treq_init(&b, &f, "/mid", NULL);
    a.then = &b; /* reused connection, but bytes arrive before the close */
    assert_int_equal(kk_http_pool_submit(f.pool, &a.req), 0);
    run_until(&f, &f.completed, 2, 3000);
    assert_int_equal(a.status, 0);
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.status, KK_ECLOSED);
    assert_int_equal(stats(&f).resent_total, 0);
    assert_int_equal(f.srv.requests, 2);
    cfx_finish(&f);
}

static void test_early_answer_not_reused(void **state)
{
    struct cfx f;
    struct kk_http_pool_opts o = {0};
    struct treq a, b;
    size_t n = 8u << 20;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memset(big, 'd', n);
    big[n] = '\0';
    cfx_start(&f, &o);
    treq_init(&a, &f, "/early", big);
    treq_init(&b, &f, "/ok", NULL);
    a.then = &b;
    assert_int_equal(kk_http_pool_submit(f.pool, &a.req), 0);
    run_until(&f, &f.completed, 2, 5000);
    assert_int_equal(a.status, 0);
    assert_int_equal(a.http, 413);
    /* The rest of the upload was still queued: that connection was dropped
     * and the next request went on a new one. */
    assert_int_equal(b.status, 0);
    assert_int_equal(b.http, 200);
    assert_int_equal(f.srv.accepted, 2);
    assert_int_equal(stats(&f).resent_total, 0);
    cfx_finish(&f);
    free(big);
}

static void test_idle_timeout(void **state)
{
    struct cfx f;
    struct kk_http_pool_opts o = {.idle_timeout_ms = 50};
    struct treq a;
    cfx_start(&f, &o);
    treq_init(&a, &f, "/ok", NULL);
    assert_int_equal(kk_http_pool_submit(f.pool, &a.req), 0);
    run_until(&f, &f.completed, 1, 3000);
    assert_int_equal(stats(&f).open, 1);
    run_for(&f, 150);
    assert_int_equal(stats(&f).open, 0);
    assert_int_equal(stats(&f).idle, 0);
    assert_int_equal(f.srv.cur, 0); /* the server saw the close */
    cfx_finish(&f);
}

static void test_idle_closed_by_server(void **state)
{
    struct cfx f;
    struct kk_http_pool_opts o = {0};
    struct treq a, b;
    cfx_start(&f, &o);
    treq_init(&a, &f, "/closeafter", NULL);
    assert_int_equal(kk_http_pool_submit(f.pool, &a.req), 0);
    run_until(&f, &f.completed, 1, 3000);
    run_for(&f, 30);
    /* The idle connection left at the server's EOF, before any reuse. */
    assert_int_equal(stats(&f).open, 0);
    treq_init(&b, &f, "/ok", NULL);
    assert_int_equal(kk_http_pool_submit(f.pool, &b.req), 0);
    run_until(&f, &f.completed, 2, 3000);
    assert_int_equal(b.status, 0);
    assert_int_equal(stats(&f).resent_total, 0);
    cfx_finish(&f);
}

static void test_error_type(void **state)
{
    struct cfx f;
    struct kk_http_pool_opts o = {0};
    struct treq a, b;
    cfx_start(&f, &o);
    treq_init(&a, &f, "/err", NULL);
    treq_init(&b, &f, "/ok", NULL);
    a.then = &b;
    assert_int_equal(kk_http_pool_submit(f.pool, &a.req), 0);
    run_until(&f, &f.completed, 2, 3000);
    assert_int_equal(a.status, 0);
    assert_int_equal(a.http, 400);
    assert_string_equal(a.errtype, "ResourceNotFoundException:http://internal.amazon.com/");
    assert_memory_equal(a.body, "{}", 2);
    /* The next response on the same connection carries no stale error type. */
    assert_int_equal(b.http, 200);
    assert_string_equal(b.errtype, "");
    assert_int_equal(f.srv.accepted, 1);
    cfx_finish(&f);
}

static void test_cancel(void **state)
{
    struct cfx f;
    struct kk_http_pool_opts o = {.max_connections = 1};
    struct treq a, b, c;
    cfx_start(&f, &o);
    treq_init(&a, &f, "/slow", NULL);
    treq_init(&b, &f, "/ok", NULL);
    assert_int_equal(kk_http_pool_submit(f.pool, &a.req), 0);
    assert_int_equal(kk_http_pool_submit(f.pool, &b.req), 0);
    run_until(&f, &f.srv.requests, 1, 3000);
    assert_int_equal(stats(&f).waiting, 1);
    kk_http_pool_cancel(f.pool, &b.req); /* waiting */
    assert_int_equal(stats(&f).waiting, 0);
    kk_http_pool_cancel(f.pool, &a.req); /* on the wire: costs its connection */
    assert_int_equal(stats(&f).open, 0);
    kk_http_pool_cancel(f.pool, &a.req); /* twice is harmless */
    run_for(&f, 30);
    assert_int_equal(a.calls, 0);
    assert_int_equal(b.calls, 0);
    assert_int_equal(f.srv.cur, 0);
    treq_init(&c, &f, "/ok", NULL);
    assert_int_equal(kk_http_pool_submit(f.pool, &c.req), 0);
    run_until(&f, &f.completed, 1, 3000);
    assert_int_equal(c.status, 0);
    assert_int_equal(f.srv.requests, 2);
    cfx_finish(&f);
}

static void test_close_with_waiting(void **state)
{
    struct cfx f;
    struct kk_http_pool_opts o = {.max_connections = 1};
    struct treq r[3];
    cfx_start(&f, &o);
    treq_init(&r[0], &f, "/slow", NULL);
    treq_init(&r[1], &f, "/ok", NULL);
    treq_init(&r[2], &f, "/ok", NULL);
    for (int i = 0; i < 3; i++)
        assert_int_equal(kk_http_pool_submit(f.pool, &r[i].req), 0);
    run_until(&f, &f.srv.requests, 1, 3000);
    kk_http_pool_close(f.pool, on_pool_done, &f);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, KK_ECANCELED);
    }
    f.pool = NULL;
    assert_false(f.pool_done); /* done comes from the loop, after the handles */
    cfx_finish(&f);
}

static void test_connect_refused(void **state)
{
    struct cfx f;
    struct kk_http_pool_opts o = {.max_connections = 1};
    struct treq r[3];
    /* A port that was just free: bind, read it, close. */
    uv_loop_t tmp;
    uv_tcp_t t;
    struct sockaddr_in sa, bound;
    int len = sizeof(bound);
    uv_loop_init(&tmp);
    uv_tcp_init(&tmp, &t);
    uv_ip4_addr("127.0.0.1", 0, &sa);
    uv_tcp_bind(&t, (const struct sockaddr *)&sa, 0);
    uv_tcp_getsockname(&t, (struct sockaddr *)&bound, &len);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&tmp, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&tmp), 0);
    o.port = ntohs(bound.sin_port);
    cfx_start(&f, &o);
    for (int i = 0; i < 3; i++) {
        treq_init(&r[i], &f, "/ok", NULL);
        assert_int_equal(kk_http_pool_submit(f.pool, &r[i].req), 0);
    }
    run_until(&f, &f.completed, 3, 3000);
    /* One failed connect fails one request; the rest get their own attempt. */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, UV_ECONNREFUSED);
    }
    assert_int_equal(stats(&f).opened_total, 3);
    assert_int_equal(stats(&f).open, 0);
    cfx_finish(&f);
}

static void test_submit_after_close(void **state)
{
    struct cfx f;
    struct kk_http_pool_opts o = {0};
    struct treq a;
    cfx_start(&f, &o);
    treq_init(&a, &f, "/ok", NULL);
    kk_http_pool_close(f.pool, on_pool_done, &f);
    assert_int_equal(kk_http_pool_submit(f.pool, &a.req), KK_ESHUTDOWN);
    f.pool = NULL;
    cfx_finish(&f);
    assert_int_equal(a.calls, 0);
}

/* ---- TLS: node https server, certificates made with the openssl CLI ---- */

extern char **environ;
static char tls_dir[64];
static char tls_path[4][128]; /* ca.pem, srv.pem, srv.key, other-ca.pem */

static int run_sh(const char *cmd)
{
    char full[1024];
    snprintf(full, sizeof(full), "cd %s && (%s) >/dev/null 2>&1", tls_dir, cmd);
    return system(full);
}

static int tls_group_setup(void **state)
{
    static const char *names[4] = {"ca.pem", "srv.pem", "srv.key", "other.pem"};
    snprintf(tls_dir, sizeof(tls_dir), "/tmp/kk-http-tls-XXXXXX");
    if (!mkdtemp(tls_dir))
        return -1;
    for (int i = 0; i < 4; i++)
        snprintf(tls_path[i], sizeof(tls_path[i]), "%s/%s", tls_dir, names[i]);
    int rc = 0;
    rc |= run_sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 "
                 "-subj /CN=kk-http-ca -keyout ca.key -out ca.pem");
    rc |= run_sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 "
                 "-subj /CN=kk-http-other -keyout other.key -out other.pem");
    rc |= run_sh("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost "
                 "-keyout srv.key -out srv.csr && "
                 "echo 'subjectAltName=DNS:localhost,DNS:127.0.0.1,IP:127.0.0.1' > san.cnf && "
                 "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 "
                 "-extfile san.cnf -out srv.pem");
    return rc == 0 ? 0 : -1;
}

static int tls_group_teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tls_dir);
    return system(cmd) == 0 ? 0 : -1;
}

struct nodesrv {
    pid_t pid;
    int in_fd;  /* its stdin: closing it stops the server */
    int out_fd; /* its stdout */
    uint16_t port;
};

static void nodesrv_start(struct nodesrv *n)
{
    int in[2], out[2];
    char script[512];
    const char *src = getenv("KK_SOURCE_DIR");
    snprintf(script, sizeof(script), "%s/tests/unit/http_tls_server.mjs", src ? src : ".");
    assert_int_equal(pipe(in), 0);
    assert_int_equal(pipe(out), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_addclose(&fa, in[1]);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    char *argv[] = {"node", script, tls_path[1], tls_path[2], NULL};
    assert_int_equal(posix_spawnp(&n->pid, "node", &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);
    n->in_fd = in[1];
    n->out_fd = out[0];
    /* Read "PORT <n>\n", at most 10 s. */
    char line[64] = {0};
    size_t len = 0;
    n->port = 0;
    while (len < sizeof(line) - 1 && !strchr(line, '\n')) {
        struct pollfd pfd = {.fd = n->out_fd, .events = POLLIN};
        if (poll(&pfd, 1, 10000) <= 0)
            break;
        ssize_t r = read(n->out_fd, line + len, sizeof(line) - 1 - len);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    unsigned port = 0;
    if (sscanf(line, "PORT %u", &port) == 1)
        n->port = (uint16_t)port;
    assert_int_not_equal(n->port, 0);
}

static void nodesrv_stop(struct nodesrv *n)
{
    int st;
    close(n->in_fd);
    kill(n->pid, SIGTERM);
    waitpid(n->pid, &st, 0);
    close(n->out_fd);
}

static void test_tls_keepalive(void **state)
{
    struct nodesrv ns;
    struct cfx f;
    struct treq a, b;
    nodesrv_start(&ns);
    struct kk_http_pool_opts o = {.tls = true, .port = ns.port, .tls_opts = {.ca_file = tls_path[0]}};
    cfx_start(&f, &o);
    treq_init(&a, &f, "/", "hello");
    treq_init(&b, &f, "/", NULL);
    a.then = &b;
    assert_int_equal(kk_http_pool_submit(f.pool, &a.req), 0);
    run_until(&f, &f.completed, 2, 5000);
    assert_int_equal(a.status, 0);
    assert_int_equal(a.http, 200);
    assert_int_equal(a.blen, 3);
    assert_memory_equal(a.body, "1:5", 3);
    /* Second request on the same TLS connection. */
    assert_int_equal(b.status, 0);
    assert_int_equal(b.blen, 3);
    assert_memory_equal(b.body, "2:0", 3);
    assert_int_equal(stats(&f).opened_total, 1);
    cfx_finish(&f);
    nodesrv_stop(&ns);
}

static void test_tls_verify_failure(void **state)
{
    struct nodesrv ns;
    struct cfx f;
    struct treq a;
    nodesrv_start(&ns);
    struct kk_http_pool_opts o = {.tls = true, .port = ns.port, .tls_opts = {.ca_file = tls_path[3]}};
    cfx_start(&f, &o);
    treq_init(&a, &f, "/", "hello");
    assert_int_equal(kk_http_pool_submit(f.pool, &a.req), 0);
    run_until(&f, &f.completed, 1, 5000);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.status, KK_ETLS_VERIFY);
    assert_int_equal(stats(&f).open, 0);
    cfx_finish(&f);
    nodesrv_stop(&ns);
}

/* Load: 8 requests in flight over 4 connections, each answer submits the
 * next, until n are done.  Prints the rate; the assertion is that all
 * complete on the first 4 connections.  KK_HTTP_LOAD_N sets n (used to
 * compare heap allocation counts under valgrind for two n). */
struct lane {
    struct treq t;
    int *left;
};

static void on_lane_response(struct kk_http_req *req, int status, const struct kk_http_response *resp)
{
    struct lane *l = req->data;
    assert_int_equal(status, 0);
    assert_int_equal(resp->status, 200);
    l->t.f->completed++;
    if (*l->left > 0) {
        (*l->left)--;
        assert_int_equal(kk_http_pool_submit(l->t.f->pool, req), 0);
    }
}

static void test_load(void **state)
{
    struct cfx f;
    struct kk_http_pool_opts o = {.max_connections = 4};
    struct lane lanes[8];
    const char *env = getenv("KK_HTTP_LOAD_N");
    int n = env ? atoi(env) : 5000;
    int left = n - 8;
    cfx_start(&f, &o);
    for (int i = 0; i < 8; i++) {
        treq_init(&lanes[i].t, &f, "/ok", "{\"Data\":\"aGVsbG8=\",\"PartitionKey\":\"k\"}");
        lanes[i].t.req.on_response = on_lane_response;
        lanes[i].t.req.data = &lanes[i];
        lanes[i].left = &left;
        assert_int_equal(kk_http_pool_submit(f.pool, &lanes[i].t.req), 0);
    }
    uint64_t t0 = uv_hrtime();
    run_until(&f, &f.completed, n, 20000);
    uint64_t ns = uv_hrtime() - t0;
    assert_int_equal(f.completed, n);
    assert_int_equal(stats(&f).opened_total, 4);
    print_message("load: %d requests in %.1f ms, %.0f req/s (client and server on one loop)\n", n,
                  (double)ns / 1e6, n / ((double)ns / 1e9));
    cfx_finish(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_max_connections),
        cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_eof_delimited_body),
        cmocka_unit_test(test_too_big),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_keepalive_race_resend),
        cmocka_unit_test(test_resend_fails_on_fresh_connection),
        cmocka_unit_test(test_prepare_failure),
        cmocka_unit_test(test_close_mid_response_not_resent),
        cmocka_unit_test(test_early_answer_not_reused),
        cmocka_unit_test(test_idle_timeout),
        cmocka_unit_test(test_idle_closed_by_server),
        cmocka_unit_test(test_error_type),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_close_with_waiting),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_submit_after_close),
        cmocka_unit_test(test_load),
    };
    const struct CMUnitTest tls_tests[] = {
        cmocka_unit_test(test_tls_keepalive),
        cmocka_unit_test(test_tls_verify_failure),
    };
    const char *filter = getenv("KK_TEST_FILTER");
    if (filter)
        cmocka_set_test_filter(filter);
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    failed += cmocka_run_group_tests(tls_tests, tls_group_setup, tls_group_teardown);
    return failed;
}
