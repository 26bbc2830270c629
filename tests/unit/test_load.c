/* Load tool internals: the log-linear histogram (bounded error, no samples
 * kept), /proc readings, the allocation-free Response scanner checked
 * against protobuf-c's own encoder, and the fake Kinesis' TLS server
 * checked against an mbedTLS client that verifies its certificate. */
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "kubemq.pb-c.h"
#include "load.h"
#include "tls.h"

static struct hist *new_hist(void)
{
    struct hist *h = malloc(sizeof(*h));
    assert_non_null(h);
    hist_init(h);
    return h;
}

/* Exact below 2048, then within 1/1024 relative error, never above max. */
static void test_hist_quantiles(void **state)
{
    struct hist *h = new_hist();
    for (uint64_t v = 1; v <= 100000; v++)
        hist_record(h, v);
    assert_int_equal(h->count, 100000);
    assert_int_equal(h->min, 1);
    assert_int_equal(h->max, 100000);
    const double qs[] = {0.001, 0.5, 0.9, 0.99, 0.999, 1.0};
    for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
        double want = qs[i] * 100000;
        double got = (double)hist_quantile(h, qs[i]);
        assert_true(got >= want);
        assert_true(got <= want * (1.0 + 1.0 / 1024) + 1);
    }
    assert_int_equal(hist_quantile(h, 0.0001), 10); /* exact range */
    free(h);
}

static void test_hist_wide_range(void **state)
{
    struct hist *h = new_hist();
    hist_record(h, 0);
    hist_record(h, 3);
    hist_record(h, (uint64_t)1 << 40); /* ~12.7 days in microseconds */
    hist_record(h, UINT64_MAX / 2);
    assert_int_equal(hist_quantile(h, 0.25), 0);
    assert_int_equal(hist_quantile(h, 0.5), 3);
    uint64_t q75 = hist_quantile(h, 0.75);
    assert_true(q75 >= (uint64_t)1 << 40 && q75 <= ((uint64_t)1 << 40) + ((uint64_t)1 << 30));
    assert_int_equal(hist_quantile(h, 1.0), UINT64_MAX / 2);
    hist_init(h);
    assert_int_equal(hist_quantile(h, 0.99), 0);
    free(h);
}

static void test_proc(void **state)
{
    volatile uint64_t x = 0;
    for (uint64_t i = 0; i < 20000000; i++) /* burn a little CPU so utime moves */
        x += i;
    assert_true(proc_cpu_s(getpid()) >= 0);
    assert_true(proc_hwm_kb(getpid()) > 0);
    assert_true(self_cpu_s() > 0);
    assert_true(proc_cpu_s(-5) < 0);
    assert_true(proc_hwm_kb(-5) < 0);
}

static void test_scan_response(void **state)
{
    Kubemq__Response r = KUBEMQ__RESPONSE__INIT;
    r.clientid = "gw";
    r.requestid = "123456";
    r.replychannel = "_load.reply";
    r.body.data = (uint8_t *)"{\"metadata\":{},\"data\":null,\"is_error\":false,\"error\":\"\"}";
    r.body.len = strlen((char *)r.body.data);
    r.executed = 1;
    r.timestamp = 1700000000123;
    uint8_t buf[512];
    size_t n = kubemq__response__pack(&r, buf);
    struct resp_view v;
    assert_int_equal(pb_scan_response(buf, n, &v), 0);
    uint64_t seq;
    assert_int_equal(parse_seq(v.request_id, v.request_id_len, &seq), 0);
    assert_int_equal(seq, 123456);
    assert_int_equal(v.body_len, r.body.len);
    assert_memory_equal(v.body, r.body.data, r.body.len);
    assert_true(v.executed);
    assert_int_equal(v.error_len, 0);

    r.executed = 0;
    r.error = "boom";
    n = kubemq__response__pack(&r, buf);
    assert_int_equal(pb_scan_response(buf, n, &v), 0);
    assert_false(v.executed);
    assert_int_equal(v.error_len, 4);
    /* Truncated input is an error, never a read past the end. */
    for (size_t cut = 1; cut < n; cut++) {
        if (pb_scan_response(buf, n - cut, &v) == 0)
            assert_true(v.body == NULL || v.body + v.body_len <= buf + n - cut);
    }
    assert_int_equal(parse_seq("12a", 3, &seq), -1);
    assert_int_equal(parse_seq("", 0, &seq), -1);
}

/* ---- TLS: an mbedTLS client against ktls over in-memory pipes ---------------------- */
struct pipe_client {
    mbedtls_ssl_context ssl;
    struct kk_buf from_server; /* ciphertext the server produced, not yet read */
    size_t off;
    struct kk_buf to_server;
};

static int cli_send(void *ctx, const unsigned char *p, size_t n)
{
    struct pipe_client *c = ctx;
    return kk_buf_append(&c->to_server, p, n) == 0 ? (int)n : MBEDTLS_ERR_SSL_ALLOC_FAILED;
}

static int cli_recv(void *ctx, unsigned char *p, size_t n)
{
    struct pipe_client *c = ctx;
    size_t have = c->from_server.len - c->off;
    if (have == 0)
        return MBEDTLS_ERR_SSL_WANT_READ;
    if (n > have)
        n = have;
    memcpy(p, c->from_server.base + c->off, n);
    c->off += n;
    return (int)n;
}

static struct kk_buf got_plain;
static bool on_plain(void *user, const char *p, size_t n)
{
    (void)user;
    return kk_buf_append(&got_plain, p, n) == 0;
}

/* Moves the client's bytes to the server and the server's back, once. */
static int pump(struct pipe_client *cl, struct ktls_conn *sc)
{
    int r = ktls_input(sc, cl->to_server.base, cl->to_server.len, on_plain, NULL);
    kk_buf_reset(&cl->to_server);
    struct kk_buf *o = ktls_out(sc);
    assert_int_equal(kk_buf_append(&cl->from_server, o->base, o->len), 0);
    kk_buf_reset(o);
    return r;
}

/* Handshake as the client with the given expected hostname; returns the
 * client handshake result and leaves both ends set up. */
static int tls_handshake(const char *cert_path, const char *hostname, struct ktls_server *srv,
                         struct pipe_client *cl, struct ktls_conn **sc, mbedtls_ssl_config *conf,
                         mbedtls_x509_crt *ca, mbedtls_ctr_drbg_context *drbg)
{
    assert_int_equal(mbedtls_x509_crt_parse_file(ca, cert_path), 0);
    assert_int_equal(mbedtls_ssl_config_defaults(conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                                 MBEDTLS_SSL_PRESET_DEFAULT),
                     0);
    mbedtls_ssl_conf_authmode(conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_ca_chain(conf, ca, NULL);
    mbedtls_ssl_conf_rng(conf, mbedtls_ctr_drbg_random, drbg);
    assert_int_equal(mbedtls_ssl_setup(&cl->ssl, conf), 0);
    assert_int_equal(mbedtls_ssl_set_hostname(&cl->ssl, hostname), 0);
    mbedtls_ssl_set_bio(&cl->ssl, cl, cli_send, cli_recv, NULL);
    *sc = ktls_conn_new(srv);
    assert_non_null(*sc);
    int r = MBEDTLS_ERR_SSL_WANT_READ;
    for (int i = 0; i < 20 && (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE); i++) {
        r = mbedtls_ssl_handshake(&cl->ssl);
        if (pump(cl, *sc) < 0)
            break;
    }
    return r;
}

static void test_tls_server(void **state)
{
    char dir[] = "/tmp/kk-test-load-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cert[64];
    snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
    char err[256];
    struct ktls_server *srv;
    assert_int_equal(ktls_server_new(cert, &srv, err, sizeof(err)), 0);

    for (int pass = 0; pass < 2; pass++) {
        const char *host = pass == 0 ? "localhost" : "kinesis.example.com";
        mbedtls_entropy_context ent;
        mbedtls_ctr_drbg_context drbg;
        mbedtls_ssl_config conf;
        mbedtls_x509_crt ca;
        struct pipe_client cl;
        struct ktls_conn *sc = NULL;
        mbedtls_entropy_init(&ent);
        mbedtls_ctr_drbg_init(&drbg);
        mbedtls_ssl_config_init(&conf);
        mbedtls_x509_crt_init(&ca);
        memset(&cl, 0, sizeof(cl));
        mbedtls_ssl_init(&cl.ssl);
        kk_buf_init(&cl.from_server, 1 << 20);
        kk_buf_init(&cl.to_server, 1 << 20);
        kk_buf_init(&got_plain, 1 << 20);
        assert_int_equal(mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &ent, NULL, 0), 0);

        int r = tls_handshake(cert, host, srv, &cl, &sc, &conf, &ca, &drbg);
        if (pass == 1) {
            /* The name is checked: a certificate for localhost does not do for another host. */
            assert_int_equal(r, MBEDTLS_ERR_X509_CERT_VERIFY_FAILED);
            assert_true(mbedtls_ssl_get_verify_result(&cl.ssl) & MBEDTLS_X509_BADCERT_CN_MISMATCH);
        } else {
            assert_int_equal(r, 0);
            assert_true(ktls_established(sc));
            /* A request in, bigger than one record; a reply out. */
            static char req[40000];
            for (size_t i = 0; i < sizeof(req); i++)
                req[i] = (char)('a' + i % 26);
            size_t sent = 0;
            while (sent < sizeof(req)) {
                int w = mbedtls_ssl_write(&cl.ssl, (const unsigned char *)req + sent, sizeof(req) - sent);
                assert_true(w > 0);
                sent += (size_t)w;
            }
            assert_int_equal(pump(&cl, sc), 0);
            assert_int_equal(got_plain.len, sizeof(req));
            assert_memory_equal(got_plain.base, req, sizeof(req));
            assert_int_equal(ktls_write(sc, "HTTP/1.1 200 OK\r\n\r\n", 19), 0);
            assert_int_equal(pump(&cl, sc), 0);
            unsigned char in[64];
            int n = mbedtls_ssl_read(&cl.ssl, in, sizeof(in));
            assert_int_equal(n, 19);
            assert_memory_equal(in, "HTTP/1.1 200 OK\r\n\r\n", 19);
            /* close_notify is reported as the peer closing. */
            assert_int_equal(mbedtls_ssl_close_notify(&cl.ssl), 0);
            assert_int_equal(pump(&cl, sc), 1);
        }
        ktls_conn_free(sc);
        mbedtls_ssl_free(&cl.ssl);
        kk_buf_free(&cl.from_server);
        kk_buf_free(&cl.to_server);
        kk_buf_free(&got_plain);
        mbedtls_x509_crt_free(&ca);
        mbedtls_ssl_config_free(&conf);
        mbedtls_ctr_drbg_free(&drbg);
        mbedtls_entropy_free(&ent);
    }
    ktls_server_free(srv);
    /* An unwritable certificate path is an error with a message, not a crash. */
    assert_int_equal(ktls_server_new("/nonexistent-dir/cert.pem", &srv, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "/nonexistent-dir/cert.pem"));
    unlink(cert);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hist_quantiles),
        cmocka_unit_test(test_hist_wide_range),
        cmocka_unit_test(test_proc),
        cmocka_unit_test(test_scan_response),
        cmocka_unit_test(test_tls_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
