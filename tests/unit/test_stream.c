/* kk_stream over real loopback sockets and a real loop: an in-test libuv
 * server for plaintext, and `openssl s_server` (certificates made at test
 * time with the openssl CLI) for TLS.  Every test ends with all handles
 * closed and uv_loop_close() == 0. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "kk/buf.h"
#include "kk/clock.h"
#include "kk/err.h"
#include "kk/stream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* ---- loop helpers ------------------------------------------------------ */

static void on_deadline(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

/* Runs the loop until cond(arg) holds or ms pass; returns cond's final value. */
static bool run_until(uv_loop_t *loop, bool (*cond)(void *), void *arg, uint64_t ms)
{
    bool expired = false;
    uv_timer_t t;
    uv_timer_init(loop, &t);
    t.data = &expired;
    uv_timer_start(&t, on_deadline, ms, 0);
    while (!cond(arg) && !expired)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return cond(arg);
}

static bool never(void *arg)
{
    return false;
}

static void finish_loop(uv_loop_t *loop)
{
    /* Everything must already be closing: a leftover handle fails the test. */
    for (int i = 0; i < 100 && uv_loop_alive(loop); i++)
        uv_run(loop, UV_RUN_NOWAIT);
    assert_int_equal(uv_loop_close(loop), 0);
}

/* ---- in-test plaintext server ------------------------------------------ */

enum srv_mode {
    SRV_ECHO,   /* echo everything back */
    SRV_SILENT, /* accept, never speak */
    SRV_CLOSE,  /* accept, then close at once */
};

struct srv_conn {
    uv_tcp_t tcp;
    struct srv *srv;
    char buf[65536];
};

struct srv {
    uv_loop_t *loop;
    uv_tcp_t listener;
    enum srv_mode mode;
    uint16_t port;
    struct srv_conn *conns[8];
    int nconns;
    int accepted;
};

struct echo_write {
    uv_write_t req;
    char data[];
};

static void on_conn_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_echo_written(uv_write_t *req, int status)
{
    free(req);
}

static void on_srv_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct srv_conn *c = h->data;
    *b = uv_buf_init(c->buf, sizeof(c->buf));
}

static void on_srv_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    if (n <= 0) {
        if (n < 0)
            uv_read_stop(st);
        return;
    }
    struct echo_write *w = malloc(sizeof(*w) + (size_t)n);
    assert_non_null(w);
    memcpy(w->data, b->base, (size_t)n);
    uv_buf_t out = uv_buf_init(w->data, (unsigned)n);
    assert_int_equal(uv_write(&w->req, st, &out, 1, on_echo_written), 0);
}

static void on_srv_conn(uv_stream_t *l, int status)
{
    struct srv *srv = l->data;
    assert_int_equal(status, 0);
    struct srv_conn *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->srv = srv;
    uv_tcp_init(srv->loop, &c->tcp);
    c->tcp.data = c;
    assert_int_equal(uv_accept(l, (uv_stream_t *)&c->tcp), 0);
    srv->accepted++;
    if (srv->mode == SRV_CLOSE || srv->nconns == 8) {
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
        return;
    }
    srv->conns[srv->nconns++] = c;
    if (srv->mode == SRV_ECHO)
        uv_read_start((uv_stream_t *)&c->tcp, on_srv_alloc, on_srv_read);
}

static void srv_start(struct srv *srv, uv_loop_t *loop, enum srv_mode mode)
{
    memset(srv, 0, sizeof(*srv));
    srv->loop = loop;
    srv->mode = mode;
    uv_tcp_init(loop, &srv->listener);
    srv->listener.data = srv;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    assert_int_equal(uv_tcp_bind(&srv->listener, (struct sockaddr *)&sa, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&srv->listener, 16, on_srv_conn), 0);
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&ss, &len);
    srv->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void srv_stop(struct srv *srv)
{
    for (int i = 0; i < srv->nconns; i++)
        uv_close((uv_handle_t *)&srv->conns[i]->tcp, on_conn_closed);
    srv->nconns = 0;
    uv_close((uv_handle_t *)&srv->listener, NULL);
}

/* ---- client side recorder ---------------------------------------------- */

struct cli {
    struct kk_stream *s;
    int connect_status;
    int connects;
    int reads_after_close;
    int read_err; /* 0 until on_read(NULL, err) */
    int closed;
    bool close_in_read;
    bool closed_by_us;
    struct kk_buf got;
    const char *alpn;
    bool resumed;
    uint64_t t_connect;
};

static void on_cli_connect(struct kk_stream *s, int status)
{
    struct cli *c = kk_stream_user(s);
    c->connects++;
    c->connect_status = status;
    c->t_connect = kk_mono_ms();
    if (status == 0) {
        c->alpn = kk_stream_alpn(s);
        c->resumed = kk_stream_tls_resumed(s);
    }
}

static void on_cli_read(struct kk_stream *s, const char *p, ssize_t n)
{
    struct cli *c = kk_stream_user(s);
    if (c->closed_by_us)
        c->reads_after_close++;
    if (n < 0) {
        c->read_err = (int)n;
        return;
    }
    assert_true(n > 0);
    assert_int_equal(kk_buf_append(&c->got, p, (size_t)n), 0);
    if (c->close_in_read) {
        c->closed_by_us = true;
        kk_stream_close(s);
        kk_stream_close(s); /* idempotent */
    }
}

static void on_cli_closed(struct kk_stream *s)
{
    struct cli *c = kk_stream_user(s);
    c->closed++;
}

static const struct kk_stream_cbs cli_cbs = {on_cli_connect, on_cli_read, on_cli_closed};

static bool cli_connected(void *arg)
{
    return ((struct cli *)arg)->connects > 0;
}
static bool cli_closed(void *arg)
{
    return ((struct cli *)arg)->closed > 0;
}
static bool cli_read_err(void *arg)
{
    return ((struct cli *)arg)->read_err != 0;
}

static size_t want_len;
static bool cli_got_want(void *arg)
{
    return ((struct cli *)arg)->got.len >= want_len;
}

static void cli_init(struct cli *c)
{
    memset(c, 0, sizeof(*c));
    kk_buf_init(&c->got, 8u << 20);
}

static void cli_close(uv_loop_t *loop, struct cli *c)
{
    c->closed_by_us = true;
    kk_stream_close(c->s);
    assert_true(run_until(loop, cli_closed, c, 2000));
    assert_int_equal(c->closed, 1);
    kk_buf_free(&c->got);
}

/* ---- plaintext tests --------------------------------------------------- */

static void test_plain_echo(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct srv srv;
    srv_start(&srv, &loop, SRV_ECHO);
    struct cli c;
    cli_init(&c);
    assert_int_equal(kk_stream_connect(&loop, "127.0.0.1", srv.port, NULL, 2000, &cli_cbs, &c, &c.s), 0);
    assert_false(kk_stream_is_tls(c.s));

    /* Many small writes, some before the connection is up. */
    struct kk_buf expect;
    kk_buf_init(&expect, 4u << 20);
    char piece[32];
    for (int i = 0; i < 2000; i++) {
        int n = snprintf(piece, sizeof(piece), "<%d>", i);
        uv_buf_t b[2] = {uv_buf_init(piece, (unsigned)n), uv_buf_init("|", 1)};
        assert_int_equal(kk_stream_write(c.s, b, 2), 0);
        /* The caller's buffer is reusable at once. */
        memset(piece, 'X', sizeof(piece));
        assert_int_equal(kk_buf_append(&expect, "<", 1), 0);
        assert_int_equal(kk_buf_printf(&expect, "%d>|", i), 0);
        if (i == 999)
            assert_true(run_until(&loop, cli_connected, &c, 2000));
    }
    assert_int_equal(c.connect_status, 0);

    /* One 1 MiB piece. */
    size_t big = 1u << 20;
    char *p = malloc(big);
    assert_non_null(p);
    for (size_t i = 0; i < big; i++)
        p[i] = (char)(i * 7 + (i >> 11));
    uv_buf_t b = uv_buf_init(p, (unsigned)big);
    assert_int_equal(kk_stream_write(c.s, &b, 1), 0);
    assert_int_equal(kk_buf_append(&expect, p, big), 0);
    memset(p, 0, big);
    free(p);

    want_len = expect.len;
    assert_true(run_until(&loop, cli_got_want, &c, 5000));
    assert_int_equal(c.got.len, expect.len);
    assert_memory_equal(c.got.base, expect.base, expect.len);
    assert_int_equal(kk_stream_pending(c.s), 0);
    assert_int_equal(c.read_err, 0);

    /* Paused: the echo arrives at the socket but is not delivered. */
    kk_stream_read_stop(c.s);
    b = uv_buf_init("paused-data", 11);
    assert_int_equal(kk_stream_write(c.s, &b, 1), 0);
    run_until(&loop, never, NULL, 150);
    assert_int_equal(c.got.len, expect.len);
    kk_stream_read_start(c.s);
    want_len = expect.len + 11;
    assert_true(run_until(&loop, cli_got_want, &c, 2000));
    assert_memory_equal(c.got.base + expect.len, "paused-data", 11);

    kk_buf_free(&expect);
    cli_close(&loop, &c);
    assert_int_equal(c.reads_after_close, 0);
    assert_int_equal(kk_stream_write(NULL, &b, 1), KK_ECLOSED);
    srv_stop(&srv);
    finish_loop(&loop);
}

static void test_plain_refused(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    /* A port that was just free: bind, read it, close. */
    struct srv srv;
    srv_start(&srv, &loop, SRV_ECHO);
    uint16_t port = srv.port;
    srv_stop(&srv);
    uv_run(&loop, UV_RUN_NOWAIT);

    struct cli c;
    cli_init(&c);
    assert_int_equal(kk_stream_connect(&loop, "127.0.0.1", port, NULL, 2000, &cli_cbs, &c, &c.s), 0);
    assert_true(run_until(&loop, cli_connected, &c, 2000));
    assert_int_equal(c.connect_status, UV_ECONNREFUSED);
    assert_int_equal(c.connects, 1);
    uv_buf_t b = uv_buf_init("x", 1);
    assert_int_equal(kk_stream_write(c.s, &b, 1), KK_ECLOSED);
    cli_close(&loop, &c);
    assert_int_equal(c.read_err, 0);
    finish_loop(&loop);
}

static void test_plain_dns_and_close_in_read(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct srv srv;
    srv_start(&srv, &loop, SRV_ECHO);
    struct cli c;
    cli_init(&c);
    c.close_in_read = true;
    /* "localhost" goes through getaddrinfo; if ::1 comes first it is refused
     * (the server is IPv4 only) and the next address is tried. */
    assert_int_equal(kk_stream_connect(&loop, "localhost", srv.port, NULL, 2000, &cli_cbs, &c, &c.s), 0);
    assert_true(run_until(&loop, cli_connected, &c, 3000));
    assert_int_equal(c.connect_status, 0);
    uv_buf_t b = uv_buf_init("ping", 4);
    assert_int_equal(kk_stream_write(c.s, &b, 1), 0);
    assert_true(run_until(&loop, cli_closed, &c, 2000));
    assert_int_equal(c.closed, 1);
    assert_int_equal(c.reads_after_close, 0);
    assert_true(c.got.len > 0);
    run_until(&loop, never, NULL, 50);
    assert_int_equal(c.closed, 1);
    kk_buf_free(&c.got);
    srv_stop(&srv);
    finish_loop(&loop);
}

static void test_plain_peer_close(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct srv srv;
    srv_start(&srv, &loop, SRV_CLOSE);
    struct cli c;
    cli_init(&c);
    assert_int_equal(kk_stream_connect(&loop, "127.0.0.1", srv.port, NULL, 2000, &cli_cbs, &c, &c.s), 0);
    assert_true(run_until(&loop, cli_read_err, &c, 2000));
    assert_int_equal(c.connect_status, 0);
    assert_int_equal(c.read_err, UV_EOF);
    cli_close(&loop, &c);
    srv_stop(&srv);
    finish_loop(&loop);
}

static void test_close_while_connecting(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct srv srv;
    srv_start(&srv, &loop, SRV_ECHO);
    /* Once during getaddrinfo, once during the TCP connect. */
    const char *hosts[] = {"localhost", "127.0.0.1"};
    for (int i = 0; i < 2; i++) {
        struct cli c;
        cli_init(&c);
        assert_int_equal(kk_stream_connect(&loop, hosts[i], srv.port, NULL, 2000, &cli_cbs, &c, &c.s), 0);
        uv_buf_t b = uv_buf_init("queued", 6);
        assert_int_equal(kk_stream_write(c.s, &b, 1), 0);
        assert_int_equal(kk_stream_pending(c.s), 6);
        cli_close(&loop, &c);
        run_until(&loop, never, NULL, 30);
        assert_int_equal(c.connects, 0);
        assert_int_equal(c.closed, 1);
    }
    srv_stop(&srv);
    finish_loop(&loop);
}

static void test_connect_sync_errors(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct cli c;
    cli_init(&c);
    assert_int_equal(kk_stream_connect(&loop, "", 80, NULL, 100, &cli_cbs, &c, &c.s), KK_EINVAL);
    assert_int_equal(kk_stream_connect(&loop, "127.0.0.1", 0, NULL, 100, &cli_cbs, &c, &c.s), KK_EINVAL);
    assert_null(c.s);
    run_until(&loop, never, NULL, 20);
    assert_int_equal(c.connects + c.closed, 0);
    kk_buf_free(&c.got);
    finish_loop(&loop);
}

/* ---- TLS fixtures ------------------------------------------------------ */

/* ---- graceful close ---------------------------------------------------- */

#define LINGER_BYTES (8u << 20)

/* A sink server for one connection: it does not read for 200 ms, then reads
 * everything, checking the byte pattern, until EOF; or (reset) it resets the
 * connection after 100 ms without reading. */
struct sink {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_tcp_t conn;
    uv_timer_t timer;
    bool reset;
    bool have_conn;
    bool eof;
    bool bad; /* a byte differed from the pattern */
    size_t got;
    uint16_t port;
    char buf[65536];
};

static unsigned char pattern_at(size_t i)
{
    return (unsigned char)(i % 251);
}

static void on_sink_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct sink *k = h->data;
    *b = uv_buf_init(k->buf, sizeof(k->buf));
}

static void on_sink_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct sink *k = st->data;
    if (n < 0) {
        k->eof = true;
        uv_read_stop(st);
        return;
    }
    for (ssize_t i = 0; i < n; i++)
        if ((unsigned char)b->base[i] != pattern_at(k->got + (size_t)i))
            k->bad = true;
    k->got += (size_t)n;
}

static void on_sink_timer(uv_timer_t *t)
{
    struct sink *k = t->data;
    if (k->reset)
        uv_tcp_close_reset(&k->conn, NULL);
    else
        uv_read_start((uv_stream_t *)&k->conn, on_sink_alloc, on_sink_read);
}

static void on_sink_conn(uv_stream_t *l, int status)
{
    struct sink *k = l->data;
    assert_int_equal(status, 0);
    assert_false(k->have_conn);
    uv_tcp_init(k->loop, &k->conn);
    k->conn.data = k;
    assert_int_equal(uv_accept(l, (uv_stream_t *)&k->conn), 0);
    /* A small receive buffer so the kernel cannot take 8 MiB at once. */
    int rcv = 64 * 1024;
    uv_recv_buffer_size((uv_handle_t *)&k->conn, &rcv);
    k->have_conn = true;
    uv_timer_start(&k->timer, on_sink_timer, k->reset ? 100 : 200, 0);
}

static void sink_start(struct sink *k, uv_loop_t *loop, bool reset)
{
    memset(k, 0, sizeof(*k));
    k->loop = loop;
    k->reset = reset;
    uv_tcp_init(loop, &k->listener);
    uv_timer_init(loop, &k->timer);
    k->listener.data = k;
    k->timer.data = k;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    assert_int_equal(uv_tcp_bind(&k->listener, (struct sockaddr *)&sa, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&k->listener, 4, on_sink_conn), 0);
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    uv_tcp_getsockname(&k->listener, (struct sockaddr *)&ss, &len);
    k->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void sink_stop(struct sink *k)
{
    if (k->have_conn && !uv_is_closing((uv_handle_t *)&k->conn))
        uv_close((uv_handle_t *)&k->conn, NULL);
    uv_close((uv_handle_t *)&k->timer, NULL);
    uv_close((uv_handle_t *)&k->listener, NULL);
}

static bool sink_eof(void *arg)
{
    return ((struct sink *)arg)->eof;
}

/* 8 MiB of the pattern, written in 1 MiB pieces. */
static void write_pattern(struct kk_stream *s)
{
    size_t piece = 1u << 20;
    unsigned char *p = malloc(piece);
    assert_non_null(p);
    for (size_t off = 0; off < LINGER_BYTES; off += piece) {
        for (size_t i = 0; i < piece; i++)
            p[i] = pattern_at(off + i);
        uv_buf_t b = uv_buf_init((char *)p, (unsigned)piece);
        assert_int_equal(kk_stream_write(s, &b, 1), 0);
    }
    free(p);
}

/* Queued output survives kk_stream_close: the peer gets every byte although
 * it read nothing for 200 ms after the close. */
static void test_plain_close_drains(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct sink k;
    sink_start(&k, &loop, false);
    struct cli c;
    cli_init(&c);
    assert_int_equal(kk_stream_connect(&loop, "127.0.0.1", k.port, NULL, 2000, &cli_cbs, &c, &c.s), 0);
    assert_true(run_until(&loop, cli_connected, &c, 2000));
    assert_int_equal(c.connect_status, 0);
    write_pattern(c.s);
    assert_true(kk_stream_pending(c.s) > 0); /* the test needs a queue at close */
    c.closed_by_us = true;
    uint64_t t0 = kk_mono_ms();
    kk_stream_close(c.s);
    kk_stream_close(c.s);
    assert_true(run_until(&loop, cli_closed, &c, 3000));
    assert_true(run_until(&loop, sink_eof, &k, 1000));
    assert_true(kk_mono_ms() - t0 >= 150);
    assert_int_equal(c.closed, 1);
    assert_int_equal(c.reads_after_close, 0);
    assert_int_equal(k.got, LINGER_BYTES);
    assert_false(k.bad);
    kk_buf_free(&c.got);
    sink_stop(&k);
    finish_loop(&loop);
}

/* A peer that resets ends the linger at once. */
static void test_plain_close_reset(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct sink k;
    sink_start(&k, &loop, true);
    struct cli c;
    cli_init(&c);
    assert_int_equal(kk_stream_connect(&loop, "127.0.0.1", k.port, NULL, 2000, &cli_cbs, &c, &c.s), 0);
    assert_true(run_until(&loop, cli_connected, &c, 2000));
    write_pattern(c.s);
    c.closed_by_us = true;
    uint64_t t0 = kk_mono_ms();
    kk_stream_close(c.s);
    assert_true(run_until(&loop, cli_closed, &c, 3000));
    assert_true(kk_mono_ms() - t0 < 1000); /* well under the 2 s linger */
    assert_int_equal(c.closed, 1);
    assert_int_equal(c.reads_after_close, 0);
    kk_buf_free(&c.got);
    sink_stop(&k);
    finish_loop(&loop);
}

static char tmpdir[64];
static char ca_pem[128], ca2_pem[128], srv_pem[128], srv_key[128], cli_pem[128], cli_key[128];
/* IP-address certificates: ip4 lists only IP:127.0.0.1, ip6 only IP:::1, and
 * nip spells 127.0.0.1 as CN and dNSName but lists IP:127.0.0.2. */
static char ip4_pem[128], ip4_key[128], ip6_pem[128], ip6_key[128], nip_pem[128], nip_key[128];

static int sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return system(cmd);
}

static int tls_setup(void **state)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/kk-stream-XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    snprintf(ca_pem, sizeof(ca_pem), "%s/ca.pem", tmpdir);
    snprintf(ca2_pem, sizeof(ca2_pem), "%s/ca2.pem", tmpdir);
    snprintf(srv_pem, sizeof(srv_pem), "%s/srv.pem", tmpdir);
    snprintf(srv_key, sizeof(srv_key), "%s/srv.key", tmpdir);
    snprintf(cli_pem, sizeof(cli_pem), "%s/cli.pem", tmpdir);
    snprintf(cli_key, sizeof(cli_key), "%s/cli.key", tmpdir);
    snprintf(ip4_pem, sizeof(ip4_pem), "%s/ip4.pem", tmpdir);
    snprintf(ip4_key, sizeof(ip4_key), "%s/ip4.key", tmpdir);
    snprintf(ip6_pem, sizeof(ip6_pem), "%s/ip6.pem", tmpdir);
    snprintf(ip6_key, sizeof(ip6_key), "%s/ip6.key", tmpdir);
    snprintf(nip_pem, sizeof(nip_pem), "%s/nip.pem", tmpdir);
    snprintf(nip_key, sizeof(nip_key), "%s/nip.key", tmpdir);
    const char *ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    int rc = 0;
    rc |= sh("cd %s && openssl req -x509 %s -keyout ca.key -out ca.pem -days 2 -subj /CN=kk-test-ca "
             "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign "
             ">/dev/null 2>&1",
             tmpdir, ec);
    rc |= sh("cd %s && openssl req -x509 %s -keyout ca2.key -out ca2.pem -days 2 -subj /CN=kk-other-ca "
             "-addext basicConstraints=critical,CA:TRUE >/dev/null 2>&1",
             tmpdir, ec);
    rc |= sh("cd %s && openssl req %s -keyout srv.key -out srv.csr -subj /CN=localhost >/dev/null 2>&1 && "
             "printf 'subjectAltName=DNS:localhost,DNS:127.0.0.1,IP:127.0.0.1\\n' > ext.cnf && "
             "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
             "-extfile ext.cnf -out srv.pem >/dev/null 2>&1",
             tmpdir, ec);
    static const struct {
        const char *name, *cn, *san;
    } ipc[] = {
        {"ip4", "kk-ip4", "IP:127.0.0.1"},
        {"ip6", "kk-ip6", "IP:::1"},
        {"nip", "127.0.0.1", "DNS:127.0.0.1,IP:127.0.0.2"},
    };
    for (size_t i = 0; i < sizeof(ipc) / sizeof(ipc[0]); i++)
        rc |= sh("cd %s && openssl req %s -keyout %s.key -out %s.csr -subj /CN=%s >/dev/null 2>&1 && "
                 "printf 'subjectAltName=%s\\n' > %s.cnf && "
                 "openssl x509 -req -in %s.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
                 "-extfile %s.cnf -out %s.pem >/dev/null 2>&1",
                 tmpdir, ec, ipc[i].name, ipc[i].name, ipc[i].cn, ipc[i].san, ipc[i].name, ipc[i].name,
                 ipc[i].name, ipc[i].name);
    rc |= sh("cd %s && openssl req %s -keyout cli.key -out cli.csr -subj /CN=kk-client >/dev/null 2>&1 && "
             "openssl x509 -req -in cli.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
             "-out cli.pem >/dev/null 2>&1",
             tmpdir, ec);
    return rc == 0 ? 0 : -1;
}

/* The running node sink (graceful close tests), killed here if a test
 * failed midway, possibly while the test had it stopped. */
static pid_t nsink_pid;

static int tls_teardown(void **state)
{
    if (nsink_pid > 0) {
        kill(nsink_pid, SIGKILL);
        waitpid(nsink_pid, NULL, 0);
    }
    sh("rm -rf %s", tmpdir);
    return 0;
}

struct ssrv {
    pid_t pid;
    uint16_t port;
};

/* Starts `openssl s_server -rev` (reverses each line) on an ephemeral port
 * of addr ("127.0.0.1" or "[::1]") with the given certificate, and reads the
 * port from its ACCEPT line; false if none shows up (server stopped).
 * no_sni: a ClientHello carrying any SNI gets a fatal unrecognized_name
 * alert (s_server's -servername check only runs with a second context). */
static bool ssrv_start_ex(struct ssrv *ss, const char *addr, const char *cert, const char *key,
                          bool require_client_cert, bool no_sni)
{
    char out[128], accept[64];
    snprintf(out, sizeof(out), "%s/s_server.%d.out", tmpdir, (int)kk_mono_ms());
    snprintf(accept, sizeof(accept), "%s:0", addr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    char *argv[24] = {"openssl", "s_server",  "-accept", accept, "-cert", (char *)cert,
                      "-key",    (char *)key, "-alpn",   "h2",   "-rev"};
    int n = 11;
    if (require_client_cert) {
        argv[n++] = "-Verify";
        argv[n++] = "1";
        argv[n++] = "-CAfile";
        argv[n++] = ca_pem;
    }
    if (no_sni) {
        argv[n++] = "-cert2";
        argv[n++] = (char *)cert;
        argv[n++] = "-key2";
        argv[n++] = (char *)key;
        argv[n++] = "-servername";
        argv[n++] = "kk-no-sni-expected.invalid";
        argv[n++] = "-servername_fatal";
    }
    argv[n] = NULL;
    assert_int_equal(posix_spawnp(&ss->pid, "openssl", &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    ss->port = 0;
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "ACCEPT %s:%%u", addr);
    uint64_t end = kk_mono_ms() + 5000;
    while (!ss->port && kk_mono_ms() < end) {
        FILE *f = fopen(out, "r");
        char line[256];
        while (f && fgets(line, sizeof(line), f)) {
            unsigned port;
            if (sscanf(line, prefix, &port) == 1)
                ss->port = (uint16_t)port;
        }
        if (f)
            fclose(f);
        if (!ss->port)
            usleep(20000);
    }
    if (!ss->port) {
        kill(ss->pid, SIGTERM);
        waitpid(ss->pid, NULL, 0);
    }
    return ss->port != 0;
}

static void ssrv_start(struct ssrv *ss, bool require_client_cert)
{
    assert_true(ssrv_start_ex(ss, "127.0.0.1", srv_pem, srv_key, require_client_cert, false));
}

static void ssrv_stop(struct ssrv *ss)
{
    kill(ss->pid, SIGTERM);
    int st;
    waitpid(ss->pid, &st, 0);
}

static int tls_connect_once(uv_loop_t *loop, struct kk_tls_ctx *ctx, const char *host, uint16_t port,
                            struct cli *c)
{
    cli_init(c);
    assert_int_equal(kk_stream_connect(loop, host, port, ctx, 3000, &cli_cbs, c, &c->s), 0);
    assert_true(kk_stream_is_tls(c->s));
    assert_true(run_until(loop, cli_connected, c, 4000));
    return c->connect_status;
}

static struct kk_tls_ctx *mkctx(const char *ca, const char *server_name, bool insecure, const char *alpn)
{
    struct kk_tls_opts o = {
        .ca_file = ca, .server_name = server_name, .insecure_skip_verify = insecure, .alpn = alpn};
    struct kk_tls_ctx *ctx = NULL;
    char err[256];
    assert_int_equal(kk_tls_ctx_new(&o, &ctx, err, sizeof(err)), 0);
    return ctx;
}

/* ---- TLS tests --------------------------------------------------------- */

static void test_tls_roundtrip_alpn_resume(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct ssrv ss;
    ssrv_start(&ss, false);
    struct kk_tls_ctx *ctx = mkctx(ca_pem, NULL, false, "h2");

    for (int round = 0; round < 2; round++) {
        struct cli c;
        cli_init(&c);
        assert_int_equal(kk_stream_connect(&loop, "127.0.0.1", ss.port, ctx, 3000, &cli_cbs, &c, &c.s), 0);
        /* Written during the handshake: queued and sent once it completes. */
        uv_buf_t b = uv_buf_init("hello tls\n", 10);
        assert_int_equal(kk_stream_write(c.s, &b, 1), 0);
        assert_true(run_until(&loop, cli_connected, &c, 4000));
        assert_int_equal(c.connect_status, 0);
        assert_non_null(c.alpn);
        assert_string_equal(c.alpn, "h2");
        assert_int_equal(c.resumed, round == 1);

        /* 200 lines of 1000 bytes in one write span many TLS records both ways
         * (s_server -rev reverses each line; it splits longer ones). */
        size_t lines = 200, ll = 1000, n = lines * ll;
        char *text = malloc(n);
        for (size_t i = 0; i < n; i++)
            text[i] = (i % ll == ll - 1) ? '\n' : (char)('a' + (i * 31 + i / ll) % 26);
        b = uv_buf_init(text, (unsigned)n);
        assert_int_equal(kk_stream_write(c.s, &b, 1), 0);

        want_len = 10 + n;
        assert_true(run_until(&loop, cli_got_want, &c, 5000));
        assert_int_equal(c.got.len, want_len);
        assert_memory_equal(c.got.base, "slt olleh\n", 10);
        for (size_t l = 0; l < lines; l++) {
            const char *in = text + l * ll, *rev = c.got.base + 10 + l * ll;
            for (size_t i = 0; i < ll - 1; i++)
                if (rev[i] != in[ll - 2 - i])
                    fail_msg("line %zu mismatch at %zu", l, i);
            assert_int_equal(rev[ll - 1], '\n');
        }
        free(text);
        assert_int_equal(kk_stream_pending(c.s), 0);

        if (round == 0) {
            /* Pause across a TLS record: nothing delivered until resumed. */
            kk_stream_read_stop(c.s);
            b = uv_buf_init("abc\n", 4);
            assert_int_equal(kk_stream_write(c.s, &b, 1), 0);
            run_until(&loop, never, NULL, 150);
            assert_int_equal(c.got.len, want_len);
            kk_stream_read_start(c.s);
            want_len += 4;
            assert_true(run_until(&loop, cli_got_want, &c, 2000));
            assert_memory_equal(c.got.base + want_len - 4, "cba\n", 4);
        }
        cli_close(&loop, &c);
    }
    kk_tls_ctx_free(ctx);
    ssrv_stop(&ss);
    finish_loop(&loop);
}

static void test_tls_verify_failures(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct ssrv ss;
    ssrv_start(&ss, false);
    struct cli c;

    /* Wrong CA. */
    struct kk_tls_ctx *ctx = mkctx(ca2_pem, NULL, false, NULL);
    assert_int_equal(tls_connect_once(&loop, ctx, "127.0.0.1", ss.port, &c), KK_ETLS_VERIFY);
    cli_close(&loop, &c);
    kk_tls_ctx_free(ctx);

    /* Right CA, wrong name. */
    ctx = mkctx(ca_pem, "wrong.example", false, NULL);
    assert_int_equal(tls_connect_once(&loop, ctx, "127.0.0.1", ss.port, &c), KK_ETLS_VERIFY);
    cli_close(&loop, &c);
    kk_tls_ctx_free(ctx);

    /* Right CA and name through DNS (server_name NULL -> the connect host). */
    ctx = mkctx(ca_pem, NULL, false, NULL);
    assert_int_equal(tls_connect_once(&loop, ctx, "localhost", ss.port, &c), 0);
    assert_null(c.alpn);
    cli_close(&loop, &c);
    kk_tls_ctx_free(ctx);

    /* The peer ends the session: s_server -rev closes on a CLOSE line. */
    ctx = mkctx(ca_pem, NULL, false, NULL);
    assert_int_equal(tls_connect_once(&loop, ctx, "127.0.0.1", ss.port, &c), 0);
    uv_buf_t b = uv_buf_init("CLOSE\n", 6);
    assert_int_equal(kk_stream_write(c.s, &b, 1), 0);
    assert_true(run_until(&loop, cli_read_err, &c, 3000));
    assert_int_equal(c.read_err, UV_EOF);
    assert_int_equal(kk_stream_write(c.s, &b, 1), KK_ECLOSED);
    cli_close(&loop, &c);
    kk_tls_ctx_free(ctx);

    /* Wrong CA and wrong name, but verification off. */
    ctx = mkctx(ca2_pem, "wrong.example", true, "h2");
    assert_int_equal(tls_connect_once(&loop, ctx, "127.0.0.1", ss.port, &c), 0);
    assert_string_equal(c.alpn, "h2");
    cli_close(&loop, &c);
    kk_tls_ctx_free(ctx);

    ssrv_stop(&ss);
    finish_loop(&loop);
}

static void test_tls_client_cert(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct ssrv ss;
    ssrv_start(&ss, true);
    struct cli c;

    /* No client certificate: the server refuses the handshake. */
    struct kk_tls_ctx *ctx = mkctx(ca_pem, NULL, false, NULL);
    int rv = tls_connect_once(&loop, ctx, "127.0.0.1", ss.port, &c);
    assert_int_equal(rv, KK_ETLS);
    cli_close(&loop, &c);
    kk_tls_ctx_free(ctx);

    struct kk_tls_opts o = {.ca_file = ca_pem, .cert_file = cli_pem, .key_file = cli_key};
    char err[256];
    assert_int_equal(kk_tls_ctx_new(&o, &ctx, err, sizeof(err)), 0);
    assert_int_equal(tls_connect_once(&loop, ctx, "127.0.0.1", ss.port, &c), 0);
    uv_buf_t b = uv_buf_init("mtls\n", 5);
    assert_int_equal(kk_stream_write(c.s, &b, 1), 0);
    want_len = 5;
    assert_true(run_until(&loop, cli_got_want, &c, 3000));
    assert_memory_equal(c.got.base, "sltm\n", 5);
    cli_close(&loop, &c);
    kk_tls_ctx_free(ctx);

    ssrv_stop(&ss);
    finish_loop(&loop);
}

static void test_tls_handshake_timeout(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct srv srv;
    srv_start(&srv, &loop, SRV_SILENT);
    struct kk_tls_ctx *ctx = mkctx(ca_pem, NULL, false, NULL);
    struct cli c;
    cli_init(&c);
    uint64_t t0 = kk_mono_ms();
    assert_int_equal(kk_stream_connect(&loop, "127.0.0.1", srv.port, ctx, 300, &cli_cbs, &c, &c.s), 0);
    assert_true(run_until(&loop, cli_connected, &c, 3000));
    assert_int_equal(c.connect_status, KK_ETIMEOUT);
    assert_int_equal(srv.accepted, 1);
    assert_true(c.t_connect - t0 >= 290);
    assert_true(c.t_connect - t0 < 1500);
    cli_close(&loop, &c);
    kk_tls_ctx_free(ctx);
    srv_stop(&srv);
    finish_loop(&loop);
}

/* One line through s_server -rev: the stream really carries data. */
static void rev_roundtrip(uv_loop_t *loop, struct cli *c)
{
    uv_buf_t b = uv_buf_init("ip\n", 3);
    assert_int_equal(kk_stream_write(c->s, &b, 1), 0);
    want_len = 3;
    assert_true(run_until(loop, cli_got_want, c, 3000));
    assert_memory_equal(c->got.base, "pi\n", 3);
}

static int connect_with(uv_loop_t *loop, const char *ca, const char *server_name, bool insecure,
                        const char *host, uint16_t port, bool roundtrip)
{
    struct kk_tls_ctx *ctx = mkctx(ca, server_name, insecure, NULL);
    struct cli c;
    int rv = tls_connect_once(loop, ctx, host, port, &c);
    if (rv == 0 && roundtrip)
        rev_roundtrip(loop, &c);
    cli_close(loop, &c);
    kk_tls_ctx_free(ctx);
    return rv;
}

/* A certificate naming the server only by IP:127.0.0.1 verifies for the
 * literal (connect host or server_name), with no SNI in the ClientHello:
 * this server rejects any SNI with a fatal alert. */
static void test_tls_ip_san_v4(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct ssrv ss;
    assert_true(ssrv_start_ex(&ss, "127.0.0.1", ip4_pem, ip4_key, false, true));

    assert_int_equal(connect_with(&loop, ca_pem, NULL, false, "127.0.0.1", ss.port, true), 0);
    /* server_name as an IP literal, whatever the connect host. */
    assert_int_equal(connect_with(&loop, ca_pem, "127.0.0.1", false, "localhost", ss.port, true), 0);
    /* The same address in IPv4-mapped IPv6 form. */
    assert_int_equal(connect_with(&loop, ca_pem, "::ffff:127.0.0.1", false, "127.0.0.1", ss.port, false), 0);
    /* Another address: name mismatch. */
    assert_int_equal(connect_with(&loop, ca_pem, "127.0.0.2", false, "127.0.0.1", ss.port, false),
                     KK_ETLS_VERIFY);
    assert_int_equal(connect_with(&loop, ca_pem, "::1", false, "127.0.0.1", ss.port, false), KK_ETLS_VERIFY);
    /* A DNS name still goes out as SNI: this server's fatal alert (KK_ETLS,
     * before any certificate) shows the check above can see an SNI. */
    assert_int_equal(connect_with(&loop, ca_pem, "localhost", false, "127.0.0.1", ss.port, false), KK_ETLS);
    /* The right address does not excuse an unknown chain. */
    assert_int_equal(connect_with(&loop, ca2_pem, NULL, false, "127.0.0.1", ss.port, false), KK_ETLS_VERIFY);
    /* Verification off: wrong CA and wrong address both pass. */
    assert_int_equal(connect_with(&loop, ca2_pem, "127.0.0.2", true, "127.0.0.1", ss.port, true), 0);

    ssrv_stop(&ss);
    finish_loop(&loop);
}

/* Spelling the address as CN or dNSName does not count (RFC 6125 §6.2.1,
 * as in Go); only an iPAddress SAN does. */
static void test_tls_ip_san_mismatch(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct ssrv ss;
    assert_true(ssrv_start_ex(&ss, "127.0.0.1", nip_pem, nip_key, false, true));

    assert_int_equal(connect_with(&loop, ca_pem, NULL, false, "127.0.0.1", ss.port, false), KK_ETLS_VERIFY);
    assert_int_equal(connect_with(&loop, ca_pem, "127.0.0.1", false, "localhost", ss.port, false),
                     KK_ETLS_VERIFY);
    /* The address the certificate does list. */
    assert_int_equal(connect_with(&loop, ca_pem, "127.0.0.2", false, "127.0.0.1", ss.port, true), 0);

    ssrv_stop(&ss);
    finish_loop(&loop);
}

static bool have_ipv6_loopback(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    bool ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

static void test_tls_ip_san_v6(void **state)
{
    if (!have_ipv6_loopback())
        skip();
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct ssrv ss;
    if (!ssrv_start_ex(&ss, "[::1]", ip6_pem, ip6_key, false, true)) {
        finish_loop(&loop);
        skip();
    }

    assert_int_equal(connect_with(&loop, ca_pem, NULL, false, "::1", ss.port, true), 0);
    assert_int_equal(connect_with(&loop, ca_pem, "[::1]", false, "::1", ss.port, false), 0);
    assert_int_equal(connect_with(&loop, ca_pem, "0:0::1", false, "::1", ss.port, false), 0);
    assert_int_equal(connect_with(&loop, ca_pem, "::2", false, "::1", ss.port, false), KK_ETLS_VERIFY);
    assert_int_equal(connect_with(&loop, ca_pem, "127.0.0.1", false, "::1", ss.port, false), KK_ETLS_VERIFY);

    ssrv_stop(&ss);
    finish_loop(&loop);
}

static void test_tls_ctx_errors(void **state)
{
    struct kk_tls_ctx *ctx = NULL;
    char err[256] = "";
    struct kk_tls_opts o = {.ca_file = "/nonexistent/ca.pem"};
    assert_int_equal(kk_tls_ctx_new(&o, &ctx, err, sizeof(err)), KK_ETLS);
    assert_null(ctx);
    assert_non_null(strstr(err, "/nonexistent/ca.pem"));
    /* The system bundle loads. */
    struct kk_tls_opts sys = {0};
    assert_int_equal(kk_tls_ctx_new(&sys, &ctx, err, sizeof(err)), 0);
    kk_tls_ctx_free(ctx);
    struct kk_tls_opts nokey = {.ca_file = ca_pem, .cert_file = srv_pem};
    assert_int_equal(kk_tls_ctx_new(&nokey, &ctx, err, sizeof(err)), KK_EINVAL);
}

/* ---- TLS graceful close ------------------------------------------------ */

/* A node TLS server for one connection: checks the byte pattern up to EOF
 * and writes "GOT <n> <ok>" to its output file (the test stops the process
 * with SIGSTOP for the slow-reader part); or (argv "reset") never reads and
 * resets the TCP connection 100 ms after the handshake. */
static const char sink_js[] =
    "const tls=require('tls'),fs=require('fs');\n"
    "const [key,cert,out,mode]=process.argv.slice(2);\n"
    "const log=(l)=>fs.appendFileSync(out,l+'\\n');\n"
    "const srv=tls.createServer({key:fs.readFileSync(key),cert:fs.readFileSync(cert)});\n"
    "let raw=null; srv.on('connection',(r)=>{ raw=r; });\n"
    "srv.on('secureConnection',(s)=>{ let n=0,ok=true; s.on('error',()=>{});\n"
    "  if(mode==='reset'){ s.pause(); setTimeout(()=>raw.resetAndDestroy(),100); return; }\n"
    "  s.on('data',(d)=>{ for(let i=0;i<d.length;i++) if(d[i]!==(n+i)%251) ok=false; n+=d.length; });\n"
    "  s.on('end',()=>{ log('GOT '+n+' '+(ok?1:0)); s.end(); srv.close(); }); });\n"
    "srv.listen(0,'127.0.0.1',()=>log('PORT '+srv.address().port));\n"
    "setTimeout(()=>process.exit(3),15000).unref();\n";

struct nsink {
    pid_t pid;
    uint16_t port;
    char out[160];
};

/* Reads "<key> <n> [<m>]" from the server's output; false until it appears. */
static bool nsink_line(struct nsink *ns, const char *key, unsigned long *a, unsigned long *b)
{
    FILE *f = fopen(ns->out, "r");
    char line[128], fmt[32];
    bool found = false;
    snprintf(fmt, sizeof(fmt), "%s %%lu %%lu", key);
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, fmt, a, b) >= 1)
            found = true;
    if (f)
        fclose(f);
    return found;
}

static bool nsink_start(struct nsink *ns, const char *mode)
{
    char js[160];
    snprintf(js, sizeof(js), "%s/sink.js", tmpdir);
    FILE *f = fopen(js, "w");
    assert_non_null(f);
    fputs(sink_js, f);
    fclose(f);
    snprintf(ns->out, sizeof(ns->out), "%s/sink.%d.out", tmpdir, (int)kk_mono_ms());
    unlink(ns->out);
    char *argv[] = {"node", js, srv_key, srv_pem, ns->out, (char *)mode, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (posix_spawnp(&ns->pid, "node", &fa, NULL, argv, environ) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        return false;
    }
    posix_spawn_file_actions_destroy(&fa);
    nsink_pid = ns->pid;
    unsigned long port = 0, unused = 0;
    uint64_t end = kk_mono_ms() + 5000;
    while (!nsink_line(ns, "PORT", &port, &unused) && kk_mono_ms() < end)
        usleep(20000);
    ns->port = (uint16_t)port;
    return port != 0;
}

static void nsink_stop(struct nsink *ns)
{
    kill(ns->pid, SIGKILL);
    waitpid(ns->pid, NULL, 0);
    nsink_pid = 0;
}

struct nsink_wait {
    struct nsink *ns;
    unsigned long n, ok;
};

static bool nsink_got(void *arg)
{
    struct nsink_wait *w = arg;
    return nsink_line(w->ns, "GOT", &w->n, &w->ok);
}

static void test_tls_close_drains(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct nsink ns;
    assert_true(nsink_start(&ns, "drain"));
    struct kk_tls_ctx *ctx = mkctx(ca_pem, "localhost", false, NULL);
    struct cli c;
    assert_int_equal(tls_connect_once(&loop, ctx, "127.0.0.1", ns.port, &c), 0);
    /* The server reads nothing from before the writes until 200 ms after the close. */
    assert_int_equal(kill(ns.pid, SIGSTOP), 0);
    write_pattern(c.s);
    assert_true(kk_stream_pending(c.s) > 0);
    c.closed_by_us = true;
    kk_stream_close(c.s);
    run_until(&loop, never, NULL, 200);
    assert_int_equal(c.closed, 0); /* still draining */
    assert_int_equal(kill(ns.pid, SIGCONT), 0);
    assert_true(run_until(&loop, cli_closed, &c, 3000));
    assert_int_equal(c.closed, 1);
    assert_int_equal(c.reads_after_close, 0);
    /* The server saw a clean end (close_notify / FIN) after every byte. */
    struct nsink_wait w = {&ns, 0, 0};
    assert_true(run_until(&loop, nsink_got, &w, 3000));
    assert_int_equal(w.n, LINGER_BYTES);
    assert_int_equal(w.ok, 1);
    kk_buf_free(&c.got);
    nsink_stop(&ns);
    kk_tls_ctx_free(ctx);
    finish_loop(&loop);
}

static void test_tls_close_reset(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct nsink ns;
    assert_true(nsink_start(&ns, "reset"));
    struct kk_tls_ctx *ctx = mkctx(ca_pem, "localhost", false, NULL);
    struct cli c;
    assert_int_equal(tls_connect_once(&loop, ctx, "127.0.0.1", ns.port, &c), 0);
    write_pattern(c.s);
    c.closed_by_us = true;
    uint64_t t0 = kk_mono_ms();
    kk_stream_close(c.s);
    assert_true(run_until(&loop, cli_closed, &c, 3000));
    assert_true(kk_mono_ms() - t0 < 1000);
    assert_int_equal(c.closed, 1);
    assert_int_equal(c.reads_after_close, 0);
    kk_buf_free(&c.got);
    nsink_stop(&ns);
    kk_tls_ctx_free(ctx);
    finish_loop(&loop);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest plain[] = {
        cmocka_unit_test(test_plain_echo),
        cmocka_unit_test(test_plain_refused),
        cmocka_unit_test(test_plain_dns_and_close_in_read),
        cmocka_unit_test(test_plain_peer_close),
        cmocka_unit_test(test_close_while_connecting),
        cmocka_unit_test(test_connect_sync_errors),
        cmocka_unit_test(test_plain_close_drains),
        cmocka_unit_test(test_plain_close_reset),
    };
    const struct CMUnitTest tls[] = {
        cmocka_unit_test(test_tls_ctx_errors),
        cmocka_unit_test(test_tls_handshake_timeout),
        cmocka_unit_test(test_tls_roundtrip_alpn_resume),
        cmocka_unit_test(test_tls_verify_failures),
        cmocka_unit_test(test_tls_client_cert),
        cmocka_unit_test(test_tls_ip_san_v4),
        cmocka_unit_test(test_tls_ip_san_mismatch),
        cmocka_unit_test(test_tls_ip_san_v6),
        cmocka_unit_test(test_tls_close_drains),
        cmocka_unit_test(test_tls_close_reset),
    };
    int rc = cmocka_run_group_tests_name("stream_plain", plain, NULL, NULL);
    rc |= cmocka_run_group_tests_name("stream_tls", tls, tls_setup, tls_teardown);
    return rc;
}
