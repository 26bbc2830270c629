/* Unit tests of the API server (src/http/server.c) over real sockets on
 * 127.0.0.1: a small libuv client in this file sends raw bytes and parses the
 * answers with llhttp. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <llhttp.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "kk/http_server.h"

#define MAX_RESP 4

/* ---- test client ---- */

struct tclient {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    const char *reqs[MAX_RESP]; /* sent one after each response (all at once if pipelined) */
    int nreqs, sent;
    bool pipelined;
    bool close_after_send;
    bool wait_eof; /* keep reading after the last answer until the server closes */
    llhttp_t parser;
    int status[MAX_RESP];
    char body[MAX_RESP][512];
    size_t blen[MAX_RESP];
    int nresp;
    int ncontinue; /* interim 100 Continue answers */
    bool eof;
    bool closed;
    char rbuf[4096];
};

static int tc_on_body(llhttp_t *p, const char *at, size_t n)
{
    struct tclient *t = p->data;
    size_t room = sizeof(t->body[0]) - t->blen[t->nresp];
    if (n > room)
        n = room;
    memcpy(t->body[t->nresp] + t->blen[t->nresp], at, n);
    t->blen[t->nresp] += n;
    return 0;
}

static void tc_send_next(struct tclient *t);

static int tc_on_complete(llhttp_t *p)
{
    struct tclient *t = p->data;
    if (p->status_code == 100) {
        t->ncontinue++;
        return 0;
    }
    t->status[t->nresp] = p->status_code;
    if (t->nresp < MAX_RESP - 1)
        t->nresp++;
    return 0;
}

static const llhttp_settings_t tc_settings = {
    .on_body = tc_on_body,
    .on_message_complete = tc_on_complete,
};

static void tc_closed(uv_handle_t *h)
{
    struct tclient *t = h->data;
    t->closed = true;
}

static void tc_close(struct tclient *t)
{
    if (!uv_is_closing((uv_handle_t *)&t->tcp))
        uv_close((uv_handle_t *)&t->tcp, tc_closed);
}

static void tc_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    struct tclient *t = h->data;
    (void)s;
    *b = uv_buf_init(t->rbuf, sizeof(t->rbuf));
}

static void tc_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct tclient *t = s->data;
    if (n < 0) {
        t->eof = true;
        tc_close(t);
        return;
    }
    int before = t->nresp;
    llhttp_execute(&t->parser, b->base, (size_t)n);
    if (t->nresp != before && !t->pipelined) {
        if (t->sent < t->nreqs)
            tc_send_next(t);
        else if (!t->wait_eof)
            tc_close(t);
    } else if (t->pipelined && t->nresp >= t->nreqs && !t->wait_eof) {
        tc_close(t);
    }
}

static void tc_written(uv_write_t *w, int status)
{
    struct tclient *t = w->data;
    if (t->close_after_send)
        tc_close(t);
}

static void tc_send_next(struct tclient *t)
{
    uv_buf_t bufs[MAX_RESP];
    unsigned n = 0;
    do {
        bufs[n++] = uv_buf_init((char *)t->reqs[t->sent], (unsigned)strlen(t->reqs[t->sent]));
        t->sent++;
    } while (t->pipelined && t->sent < t->nreqs);
    t->wreq.data = t;
    assert_int_equal(uv_write(&t->wreq, (uv_stream_t *)&t->tcp, bufs, n, tc_written), 0);
}

static void tc_connected(uv_connect_t *c, int status)
{
    struct tclient *t = c->data;
    assert_int_equal(status, 0);
    uv_read_start((uv_stream_t *)&t->tcp, tc_alloc, tc_read);
    tc_send_next(t);
}

static void tc_start(uv_loop_t *loop, struct tclient *t, uint16_t port)
{
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", port, &sa);
    llhttp_init(&t->parser, HTTP_RESPONSE, &tc_settings);
    t->parser.data = t;
    uv_tcp_init(loop, &t->tcp);
    t->tcp.data = t;
    t->creq.data = t;
    assert_int_equal(uv_tcp_connect(&t->creq, &t->tcp, (const struct sockaddr *)&sa, tc_connected), 0);
}

/* ---- server side ---- */

struct fixture {
    uv_loop_t loop;
    struct kk_http_server *srv;
    int handled;
    int replied_late;
    bool done;
    uv_timer_t late; /* async replies */
    struct kk_http_exchange *pending_ex;
    char last_body[512];
    size_t last_body_len;
    char last_query[64];
    uv_timer_t guard;
};

static void on_late(uv_timer_t *t)
{
    struct fixture *f = t->data;
    f->replied_late++;
    kk_http_reply(f->pending_ex, 200, "text/plain", "late", 4);
    f->pending_ex = NULL;
    uv_close((uv_handle_t *)t, NULL);
}

static void handler(void *user, struct kk_http_exchange *ex, const struct kk_http_request_view *req)
{
    struct fixture *f = user;
    f->handled++;
    snprintf(f->last_query, sizeof(f->last_query), "%s", req->query);
    if (strcmp(req->path, "/hello") == 0 && strcmp(req->method, "GET") == 0) {
        kk_http_reply(ex, 200, "text/plain", "hello", 5);
    } else if (strcmp(req->path, "/echo") == 0 && strcmp(req->method, "POST") == 0) {
        memcpy(f->last_body, req->body, req->body_len);
        f->last_body_len = req->body_len;
        kk_http_reply(ex, 200, "application/json", req->body, req->body_len);
    } else if (strcmp(req->path, "/async") == 0) {
        f->pending_ex = ex;
        uv_timer_init(&f->loop, &f->late);
        f->late.data = f;
        uv_timer_start(&f->late, on_late, 50, 0);
    } else {
        kk_http_reply(ex, 404, "text/plain", "not found", 9);
    }
}

static void on_srv_done(void *arg)
{
    ((struct fixture *)arg)->done = true;
}

static void fx_start(struct fixture *f, size_t max_body)
{
    memset(f, 0, sizeof(*f));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(kk_http_server_start(&f->loop, "127.0.0.1", 0, max_body, handler, f, &f->srv), 0);
    assert_true(kk_http_server_port(f->srv) > 0);
}

/* Runs until the client socket closed (bounded by a 5 s guard), then closes the server. */
static void on_guard(uv_timer_t *t)
{
    uv_stop(t->loop);
}

static void run_client(struct fixture *f, struct tclient *t)
{
    uv_timer_init(&f->loop, &f->guard);
    uv_timer_start(&f->guard, on_guard, 5000, 0);
    tc_start(&f->loop, t, kk_http_server_port(f->srv));
    uint64_t start = uv_now(&f->loop);
    while (!t->closed && uv_now(&f->loop) - start < 5000)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&f->guard, NULL);
    assert_true(t->closed);
}

static void fx_finish(struct fixture *f)
{
    kk_http_server_close(f->srv, on_srv_done, f);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_true(f->done);
    assert_int_equal(uv_loop_close(&f->loop), 0);
}

static void test_get_post_keepalive(void **state)
{
    struct fixture f;
    struct tclient t = {0};
    fx_start(&f, 1024);
    t.reqs[0] = "GET /hello?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
    t.reqs[1] = "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\n\r\n{\"a\":1}";
    t.nreqs = 2;
    run_client(&f, &t);
    /* Both answers arrived on the one socket: keep-alive worked. */
    assert_int_equal(t.nresp, 2);
    assert_int_equal(t.status[0], 200);
    assert_memory_equal(t.body[0], "hello", 5);
    assert_int_equal(t.status[1], 200);
    assert_int_equal(t.blen[1], 7);
    assert_memory_equal(t.body[1], "{\"a\":1}", 7);
    assert_int_equal(f.handled, 2);
    assert_false(t.eof); /* the server kept it open; the client closed */
    fx_finish(&f);
}

static void test_query_and_chunked_body(void **state)
{
    struct fixture f;
    struct tclient t = {0};
    fx_start(&f, 1024);
    t.reqs[0] = "POST /echo?name=b1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
    t.nreqs = 1;
    run_client(&f, &t);
    assert_int_equal(t.nresp, 1);
    assert_int_equal(t.status[0], 200);
    assert_int_equal(f.last_body_len, 5);
    assert_memory_equal(f.last_body, "abcde", 5);
    assert_string_equal(f.last_query, "name=b1");
    fx_finish(&f);
}

static void test_pipelined(void **state)
{
    struct fixture f;
    struct tclient t = {0};
    fx_start(&f, 1024);
    t.reqs[0] = "GET /hello HTTP/1.1\r\nHost: a\r\n\r\n";
    t.reqs[1] = "GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n";
    t.reqs[2] = "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok";
    t.nreqs = 3;
    t.pipelined = true;
    run_client(&f, &t);
    assert_int_equal(t.nresp, 3);
    assert_int_equal(t.status[0], 200);
    assert_int_equal(t.status[1], 404);
    assert_int_equal(t.status[2], 200);
    assert_memory_equal(t.body[2], "ok", 2);
    fx_finish(&f);
}

static void test_expect_continue(void **state)
{
    struct fixture f;
    struct tclient t = {0};
    fx_start(&f, 1024);
    t.reqs[0] = "POST /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc";
    t.nreqs = 1;
    run_client(&f, &t);
    assert_int_equal(t.ncontinue, 1);
    assert_int_equal(t.nresp, 1);
    assert_int_equal(t.status[0], 200);
    assert_memory_equal(t.body[0], "abc", 3);
    fx_finish(&f);
}

static void test_413_body_too_big(void **state)
{
    struct fixture f;
    struct tclient t = {0};
    fx_start(&f, 16);
    t.reqs[0] = "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789";
    t.nreqs = 1;
    run_client(&f, &t);
    assert_int_equal(t.nresp, 1);
    assert_int_equal(t.status[0], 413);
    assert_int_equal(f.handled, 0);
    fx_finish(&f);
}

static void test_413_chunked(void **state)
{
    struct fixture f;
    struct tclient t = {0};
    fx_start(&f, 4);
    t.reqs[0] = "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                "3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n";
    t.wait_eof = true;
    t.nreqs = 1;
    run_client(&f, &t);
    assert_int_equal(t.status[0], 413);
    assert_int_equal(f.handled, 0);
    assert_true(t.eof);
    fx_finish(&f);
}

static void test_404(void **state)
{
    struct fixture f;
    struct tclient t = {0};
    fx_start(&f, 1024);
    t.reqs[0] = "GET /missing HTTP/1.1\r\nHost: a\r\n\r\n";
    t.nreqs = 1;
    run_client(&f, &t);
    assert_int_equal(t.status[0], 404);
    assert_memory_equal(t.body[0], "not found", 9);
    fx_finish(&f);
}

static void test_async_reply(void **state)
{
    struct fixture f;
    struct tclient t = {0};
    fx_start(&f, 1024);
    t.reqs[0] = "GET /async HTTP/1.1\r\nHost: a\r\n\r\n";
    t.reqs[1] = "GET /hello HTTP/1.1\r\nHost: a\r\n\r\n";
    t.nreqs = 2;
    run_client(&f, &t);
    assert_int_equal(f.replied_late, 1);
    assert_int_equal(t.nresp, 2);
    assert_int_equal(t.status[0], 200);
    assert_memory_equal(t.body[0], "late", 4);
    assert_int_equal(t.status[1], 200);
    fx_finish(&f);
}

static void test_client_leaves_before_async_reply(void **state)
{
    struct fixture f;
    struct tclient t = {0};
    fx_start(&f, 1024);
    t.reqs[0] = "GET /async HTTP/1.1\r\nHost: a\r\n\r\n";
    t.nreqs = 1;
    t.close_after_send = true;
    run_client(&f, &t);
    assert_int_equal(t.nresp, 0);
    /* Let the late reply run against the departed client. */
    uint64_t start = uv_now(&f.loop);
    while (f.replied_late == 0 && uv_now(&f.loop) - start < 5000)
        uv_run(&f.loop, UV_RUN_ONCE);
    /* A few more turns: the dropped reply's write fails and frees the connection. */
    for (int i = 0; i < 5; i++)
        uv_run(&f.loop, UV_RUN_NOWAIT);
    assert_int_equal(f.handled, 1);
    assert_int_equal(f.replied_late, 1);
    fx_finish(&f);
}

static void test_server_close_with_outstanding_exchange(void **state)
{
    struct fixture f;
    struct tclient t = {0};
    fx_start(&f, 1024);
    t.reqs[0] = "GET /async HTTP/1.1\r\nHost: a\r\n\r\n";
    t.nreqs = 1;
    uv_timer_init(&f.loop, &f.guard);
    uv_timer_start(&f.guard, on_guard, 5000, 0);
    tc_start(&f.loop, &t, kk_http_server_port(f.srv));
    while (f.handled == 0)
        uv_run(&f.loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&f.guard, NULL);
    /* Close while the handler still holds the exchange: done must come
     * when the sockets are closed, and the reply afterwards is dropped. */
    kk_http_server_close(f.srv, on_srv_done, &f);
    uv_run(&f.loop, UV_RUN_DEFAULT);
    assert_true(f.done);
    assert_int_equal(f.replied_late, 1);
    assert_true(t.closed);
    assert_int_equal(t.nresp, 0);
    assert_int_equal(uv_loop_close(&f.loop), 0);
}

static void test_malformed_400(void **state)
{
    struct fixture f;
    struct tclient t = {0};
    fx_start(&f, 1024);
    t.reqs[0] = "GET /hello HTTP/1.1\r\nHost a\r\n\r\n";
    t.wait_eof = true;
    t.nreqs = 1;
    run_client(&f, &t);
    assert_int_equal(t.nresp, 1);
    assert_int_equal(t.status[0], 400);
    assert_true(t.eof);
    assert_int_equal(f.handled, 0);
    fx_finish(&f);
}

static void test_431_header_too_big(void **state)
{
    struct fixture f;
    struct tclient t = {0};
    static char req[12000];
    fx_start(&f, 1024);
    int n = snprintf(req, sizeof(req), "GET /hello HTTP/1.1\r\nX-Big: ");
    memset(req + n, 'a', 9000);
    strcpy(req + n + 9000, "\r\n\r\n");
    t.reqs[0] = req;
    t.wait_eof = true;
    t.nreqs = 1;
    run_client(&f, &t);
    assert_int_equal(t.status[0], 431);
    assert_true(t.eof);
    assert_int_equal(f.handled, 0);
    fx_finish(&f);
}

static void test_http10_close(void **state)
{
    struct fixture f;
    struct tclient t = {0};
    fx_start(&f, 1024);
    t.reqs[0] = "GET /hello HTTP/1.0\r\n\r\n";
    t.reqs[1] = "GET /hello HTTP/1.0\r\n\r\n";
    t.wait_eof = true;
    t.nreqs = 2;
    t.pipelined = true;
    run_client(&f, &t);
    /* HTTP/1.0 without keep-alive: one answer, then the server closes. */
    assert_int_equal(t.nresp, 1);
    assert_int_equal(t.status[0], 200);
    assert_true(t.eof);
    fx_finish(&f);
}

static void test_idle_timeout(void **state)
{
    struct fixture f;
    struct tclient t = {0};
    fx_start(&f, 1024);
    kk_http_server_set_idle_timeout(f.srv, 100);
    /* Half a request, then silence: the server gives up and closes. */
    t.reqs[0] = "GET /hello HTTP/1.1\r\nHost:";
    t.nreqs = 1;
    t.wait_eof = true;
    uint64_t t0 = uv_now(&f.loop);
    run_client(&f, &t);
    assert_true(t.eof);
    assert_true(uv_now(&f.loop) - t0 >= 90);
    assert_int_equal(t.nresp, 0);
    assert_int_equal(f.handled, 0);
    fx_finish(&f);
}

static void test_bad_host(void **state)
{
    uv_loop_t loop;
    struct kk_http_server *srv = NULL;
    uv_loop_init(&loop);
    assert_true(kk_http_server_start(&loop, "not-an-ip", 0, 10, handler, NULL, &srv) < 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_post_keepalive),
        cmocka_unit_test(test_query_and_chunked_body),
        cmocka_unit_test(test_pipelined),
        cmocka_unit_test(test_expect_continue),
        cmocka_unit_test(test_413_body_too_big),
        cmocka_unit_test(test_413_chunked),
        cmocka_unit_test(test_404),
        cmocka_unit_test(test_async_reply),
        cmocka_unit_test(test_client_leaves_before_async_reply),
        cmocka_unit_test(test_server_close_with_outstanding_exchange),
        cmocka_unit_test(test_malformed_400),
        cmocka_unit_test(test_431_header_too_big),
        cmocka_unit_test(test_http10_close),
        cmocka_unit_test(test_idle_timeout),
        cmocka_unit_test(test_bad_host),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
