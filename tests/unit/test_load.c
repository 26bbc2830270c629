/* Load tool internals: the log-linear histogram (bounded error, no samples
 * kept), /proc readings, and the allocation-free Response scanner checked
 * against protobuf-c's own encoder. */
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hist_quantiles),
        cmocka_unit_test(test_hist_wide_range),
        cmocka_unit_test(test_proc),
        cmocka_unit_test(test_scan_response),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
