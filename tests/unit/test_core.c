/* Unit tests of src/core: errors, buffers, base64, clock, backoff, token bucket. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kk/b64.h"
#include "kk/backoff.h"
#include "kk/buf.h"
#include "kk/clock.h"
#include "kk/err.h"
#include "kk/log.h"
#include "kk/prom.h"
#include "kk/rand.h"
#include "kk/tbucket.h"

static void test_err_names(void **state)
{
    (void)state;
    assert_string_equal(kk_strerror(KK_ETIMEOUT), "timed out");
    assert_string_equal(kk_errname(KK_ENOMEM), "KK_ENOMEM");
    assert_string_equal(kk_errname(-104), "ECONNRESET"); /* libuv passes through */
    assert_string_equal(kk_strerror(0), "success");
    assert_string_equal(kk_strerror(-99999), "unknown error");
}

static void test_buf_bounded(void **state)
{
    (void)state;
    struct kk_buf b;
    kk_buf_init(&b, 10);
    assert_int_equal(kk_buf_append(&b, "hello", 5), 0);
    assert_int_equal(kk_buf_append(&b, "world", 5), 0);
    assert_int_equal(kk_buf_append(&b, "!", 1), KK_ETOOBIG);
    assert_int_equal(b.len, 10);
    assert_memory_equal(b.base, "helloworld", 10);
    kk_buf_consume(&b, 5);
    assert_memory_equal(b.base, "world", 5);
    assert_int_equal(kk_buf_printf(&b, "%d", 42), 0);
    assert_memory_equal(b.base, "world42", 7);
    assert_int_equal(kk_buf_printf(&b, "%s", "0123"), KK_ETOOBIG);
    kk_buf_free(&b);
}

static void test_b64_roundtrip(void **state)
{
    (void)state;
    const char *vec[][2] = {{"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},
                            {"foo", "Zm9v"}, {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="},
                            {"foobar", "Zm9vYmFy"}};
    for (size_t i = 0; i < sizeof(vec) / sizeof(vec[0]); i++) {
        char enc[32];
        size_t n = kk_b64_encode(enc, (const uint8_t *)vec[i][0], strlen(vec[i][0]));
        assert_int_equal(n, strlen(vec[i][1]));
        assert_memory_equal(enc, vec[i][1], n);
        uint8_t dec[32];
        long m = kk_b64_decode(dec, vec[i][1], strlen(vec[i][1]));
        assert_int_equal(m, strlen(vec[i][0]));
        assert_memory_equal(dec, vec[i][0], (size_t)m);
    }
    /* Every byte value, every length up to 300. */
    uint8_t src[300], dec[310];
    char enc[410];
    for (int i = 0; i < 300; i++)
        src[i] = (uint8_t)(i * 7 + 3);
    for (size_t len = 0; len <= 300; len++) {
        size_t n = kk_b64_encode(enc, src, len);
        assert_int_equal(n, kk_b64_encoded_len(len));
        assert_int_equal(kk_b64_decode(dec, enc, n), (long)len);
        assert_memory_equal(dec, src, len);
    }
    assert_int_equal(kk_b64_decode(dec, "Zm9", 3), -1);
    assert_int_equal(kk_b64_decode(dec, "Zm9*", 4), -1);
    assert_int_equal(kk_b64_decode(dec, "Zg==Zg==", 8), -1);
    assert_int_equal(kk_b64_decode(dec, "Z===", 4), -1);
}

static void test_rfc3339(void **state)
{
    (void)state;
    char s[32];
    kk_fmt_rfc3339_ms(s, 1612960496789);
    assert_string_equal(s, "2021-02-10T12:34:56.789Z");
    kk_fmt_rfc3339_ms(s, 1612960496000);
    assert_string_equal(s, "2021-02-10T12:34:56Z");
    kk_fmt_rfc3339_ms(s, 1612960496780);
    assert_string_equal(s, "2021-02-10T12:34:56.78Z");
    int64_t ns;
    assert_int_equal(kk_parse_rfc3339("2021-02-10T12:34:56.789Z", &ns), 0);
    assert_true(ns == INT64_C(1612960496789000000));
    assert_int_equal(kk_parse_rfc3339("2021-02-10T13:34:56+01:00", &ns), 0);
    assert_true(ns == INT64_C(1612960496000000000));
    assert_int_equal(kk_parse_rfc3339("2021-02-10 12:34:56Z", &ns), KK_EINVAL);
    assert_int_equal(kk_parse_rfc3339("yesterday", &ns), KK_EINVAL);
}

static void test_backoff_bounds(void **state)
{
    (void)state;
    for (unsigned a = 0; a < 70; a++) {
        for (int i = 0; i < 50; i++) {
            uint64_t d = kk_backoff_full_jitter(100, 5000, a);
            assert_true(d <= 5000);
            if (a == 0)
                assert_true(d <= 100);
        }
    }
    assert_int_equal(kk_retry_delay(KK_RETRY_BACKOFF, 0, 0, 100), 100);
    assert_int_equal(kk_retry_delay(KK_RETRY_BACKOFF, 3, 0, 100), 800);
    assert_int_equal(kk_retry_delay(KK_RETRY_BACKOFF, 3, 500, 100), 500);
    assert_int_equal(kk_retry_delay(KK_RETRY_FIXED, 9, 0, 100), 100);
    assert_int_equal(kk_retry_delay(KK_RETRY_BACKOFF, 200, 1000, 100), 1000);
    for (int i = 0; i < 100; i++)
        assert_true(kk_retry_delay(KK_RETRY_RANDOM, 1, 0, 50) < 50);
}

static void test_tbucket(void **state)
{
    (void)state;
    struct kk_tbucket tb;
    kk_tbucket_init(&tb, 10, 1, 1000);
    assert_int_equal(kk_tbucket_take(&tb, 1000), 0);
    uint64_t w = kk_tbucket_take(&tb, 1000);
    assert_true(w >= 99 && w <= 100);
    assert_int_equal(kk_tbucket_take(&tb, 1100), 0);
    /* 1 s at 10/s with burst 1 admits about 10. */
    kk_tbucket_init(&tb, 10, 1, 0);
    int taken = 0;
    for (uint64_t t = 0; t < 1000; t++)
        taken += kk_tbucket_take(&tb, t) == 0;
    assert_true(taken >= 10 && taken <= 11);
    /* A caller that always comes back a little late keeps the full rate. */
    kk_tbucket_init(&tb, 50, 1, 0);
    int went = 0;
    uint64_t t = 0;
    while (t < 2000) {
        uint64_t wait_ms = kk_tbucket_take(&tb, t);
        if (wait_ms == 0) {
            went++;
            continue;
        }
        t += wait_ms + 3; /* timer fires 3 ms late */
    }
    assert_true(went >= 99 && went <= 101);
    kk_tbucket_init(&tb, 0, 1, 0);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(kk_tbucket_take(&tb, 0), 0);
}

static void test_uuid(void **state)
{
    (void)state;
    char a[37], b[37];
    kk_uuid4(a);
    kk_uuid4(b);
    assert_int_equal(strlen(a), 36);
    assert_true(a[14] == '4');
    assert_string_not_equal(a, b);
}

static void test_log_json(void **state)
{
    (void)state;
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    kk_log_set_stream(f);
    kk_log_set_format(KK_LOG_JSON);
    kk_log(KK_LOG_INFO, "b1", "say \"%s\"\n", "hi");
    kk_log(KK_LOG_DEBUG, "b1", "hidden");
    kk_log_set_stream(NULL);
    kk_log_set_format(KK_LOG_TEXT);
    fclose(f);
    assert_non_null(strstr(out, "\"level\":\"INFO\",\"source\":\"b1\",\"msg\":\"say \\\"hi\\\"\\n\""));
    assert_null(strstr(out, "hidden"));
    free(out);
    enum kk_log_level l;
    assert_int_equal(kk_log_parse_level("WARN", &l), 0);
    assert_int_equal(l, KK_LOG_WARN);
    assert_int_equal(kk_log_parse_level("loud", &l), KK_EINVAL);
}

/* Receives every datagram waiting on fd (SOCK_SEQPACKET keeps write(2)
 * boundaries): one packet per write. */
static int recv_packets(int fd, char pkts[][8192], size_t *lens, int max)
{
    int n = 0;
    while (n < max) {
        ssize_t r = recv(fd, pkts[n], sizeof(pkts[n]) - 1, MSG_DONTWAIT);
        if (r <= 0)
            break;
        pkts[n][r] = '\0';
        lens[n++] = (size_t)r;
    }
    return n;
}

/* Each log line is exactly one write(2), in both formats, including escapes
 * and the truncation of a message past the line limit. */
static void test_log_one_write_per_line(void **state)
{
    (void)state;
    static char pkts[4][8192];
    size_t lens[4];
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
    /* A logger that wrote byte by byte fills the socket: fail, not hang. */
    assert_int_equal(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
    FILE *f = fdopen(sv[0], "w");
    assert_non_null(f);
    setvbuf(f, NULL, _IONBF, 0); /* as stderr */
    char *big = malloc(10001);
    memset(big, 'x', 10000);
    big[10000] = '\0';
    big[5] = '"';
    kk_log_set_stream(f);
    kk_log_set_format(KK_LOG_JSON);
    kk_log(KK_LOG_INFO, "b\"1", "tab\there \x01 quote \" back \\ %d", 42);
    kk_log(KK_LOG_ERROR, "b1", "%s", big);
    kk_log_set_format(KK_LOG_TEXT);
    kk_log(KK_LOG_WARN, "b1", "plain %s", "text");
    kk_log_set_stream(NULL);
    int n = recv_packets(sv[1], pkts, lens, 4);
    assert_int_equal(n, 3);
    for (int i = 0; i < n; i++) {
        assert_true(lens[i] <= 4096);
        assert_int_equal(pkts[i][lens[i] - 1], '\n');
        assert_ptr_equal(strchr(pkts[i], '\n'), pkts[i] + lens[i] - 1); /* one line */
    }
    assert_non_null(strstr(pkts[0], "\"source\":\"b\\\"1\",\"msg\":\"tab\\there \\u0001 quote \\\" back "
                                    "\\\\ 42\"}\n"));
    assert_true(strncmp(pkts[0], "{\"time\":\"", 9) == 0);
    /* cut with a marker, the JSON still closed */
    assert_non_null(strstr(pkts[1], "\"msg\":\"xxxxx\\\"xxx"));
    assert_non_null(strstr(pkts[1], "xxx...[truncated]\"}\n"));
    assert_non_null(strstr(pkts[2], "\tWARN\tb1\tplain text\n"));
    kk_log_set_format(KK_LOG_TEXT);
    free(big);
    fclose(f);
    close(sv[1]);
}

static void test_prom_label(void **state)
{
    (void)state;
    struct kk_buf b;
    kk_buf_init(&b, 1024);
    assert_int_equal(kk_prom_label(&b, "a\"b\\c\nd"), 0);
    assert_int_equal(kk_prom_label(&b, NULL), 0);
    assert_int_equal(kk_prom_label(&b, "plain"), 0);
    assert_int_equal(b.len, strlen("a\\\"b\\\\c\\nd") + 5);
    assert_memory_equal(b.base, "a\\\"b\\\\c\\ndplain", b.len);
    kk_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_names),  cmocka_unit_test(test_buf_bounded),
        cmocka_unit_test(test_b64_roundtrip), cmocka_unit_test(test_rfc3339),
        cmocka_unit_test(test_backoff_bounds), cmocka_unit_test(test_tbucket),
        cmocka_unit_test(test_uuid),       cmocka_unit_test(test_log_json),
        cmocka_unit_test(test_log_one_write_per_line), cmocka_unit_test(test_prom_label),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
