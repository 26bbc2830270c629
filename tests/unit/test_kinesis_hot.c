/* The kinesis hot path shortcuts must not change results:
 *  - the body SHA-256 (kinesis_sha256.h): the SHA-extensions path matches
 *    mbedTLS for every length around the block and padding edges, and the
 *    FIPS 180-4 examples;
 *  - PutRecord answers scanned without cJSON give the same output JSON as
 *    the general path (which the same answer with an escape forces). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "kk/buf.h"
#include "kk/err.h"
#include "kk/kinesis.h"
#include "kk/kinesis_sha256.h"
#include "kk/request.h"

static void test_known_vectors(void **state)
{
    (void)state;
    char h[65];
    kk_body_sha256_hex("abc", 3, h);
    assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    kk_body_sha256_hex("", 0, h);
    assert_string_equal(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    static const char two[] = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    kk_body_sha256_hex(two, sizeof(two) - 1, h);
    assert_string_equal(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

static void test_matches_portable(void **state)
{
    (void)state;
    static uint8_t buf[4200];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof(buf); i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (uint8_t)(x >> 16);
    }
    uint8_t a[32], b[32];
    /* Every length up to a few blocks, then larger steps with odd offsets. */
    for (size_t n = 0; n < sizeof(buf); n += n < 300 ? 1 : 61) {
        kk_body_sha256(buf + (n & 7), n - (n & 7), a, false);
        kk_body_sha256(buf + (n & 7), n - (n & 7), b, true);
        if (memcmp(a, b, 32) != 0)
            fail_msg("digest differs at length %zu", n - (n & 7));
    }
    printf("# SHA extensions %s\n", kk_body_sha256_accelerated() ? "in use" : "not available: portable only");
}

static const struct kk_kinesis_limits lim = {KK_KINESIS_MAX_RECORD_BYTES, KK_KINESIS_MAX_REQUEST_BYTES};

/* Output JSON of a put_record answer, or the error code as text. */
static void put_output(const char *resp, char *dst, size_t cap)
{
    static const char req_json[] =
        "{\"metadata\":{\"method\":\"put_record\",\"stream_name\":\"s\",\"partition_key\":\"k\"},"
        "\"data\":\"YQ==\"}";
    struct kk_request req;
    struct kk_kinesis_req r;
    char perr[128], *err = NULL, *it = NULL;
    bool has = false;
    size_t failed = 0;
    struct kk_buf out;
    memset(&req, 0, sizeof(req));
    assert_int_equal(kk_request_parse(&req, req_json, sizeof(req_json) - 1, perr, sizeof(perr)), 0);
    assert_int_equal(kk_kinesis_req_parse(&r, &req, &lim, &err), 0);
    kk_buf_init(&out, 1 << 16);
    int rc = kk_kinesis_output(&r, resp, strlen(resp), &out, &has, &it, &failed);
    if (rc < 0) {
        snprintf(dst, cap, "error %d", rc);
    } else {
        assert_true(has);
        snprintf(dst, cap, "%.*s", (int)out.len, out.base);
    }
    assert_null(it);
    kk_buf_free(&out);
    kk_kinesis_req_free(&r);
    kk_request_free(&req);
}

static void test_put_record_output(void **state)
{
    (void)state;
    char a[512], b[512];
    /* The plain answer, in Kinesis' and in kinesalite's field order. */
    put_output("{\"SequenceNumber\":\"4959\",\"ShardId\":\"shardId-000000000000\"}", a, sizeof(a));
    assert_string_equal(a, "{\"EncryptionType\":null,\"SequenceNumber\":\"4959\",\"ShardId\":\"shardId-000000000000\"}");
    put_output(" {\"ShardId\" : \"shardId-000000000000\",\n\"SequenceNumber\":\"4959\" ,\"EncryptionType\":\"KMS\"} ",
               b, sizeof(b));
    assert_string_equal(b, "{\"EncryptionType\":\"KMS\",\"SequenceNumber\":\"4959\",\"ShardId\":\"shardId-000000000000\"}");
    /* Fast (plain) and general (escaped) spellings of the same answer agree,
     * including characters that the output escapes Go's way. */
    static const char *const pairs[][2] = {
        {"{\"SequenceNumber\":\"1<2>&\",\"ShardId\":\"s\"}", "{\"SequenceNumber\":\"1<2>\\u0026\",\"ShardId\":\"s\"}"},
        {"{\"SequenceNumber\":\"\xc3\xa9\",\"ShardId\":null}", "{\"SequenceNumber\":\"\\u00e9\",\"ShardId\":null}"},
        {"{\"SequenceNumber\":\"1\",\"SequenceNumber\":\"2\",\"ShardId\":\"s\"}",
         "{\"SequenceNumber\":\"\\u0031\",\"SequenceNumber\":\"2\",\"ShardId\":\"s\"}"},
        {"{\"Other\":\"x\",\"ShardId\":\"s\"}", "{\"Other\":\"\\u0078\",\"ShardId\":\"s\"}"},
        {"{}", "{\"A\":[1]}"},
    };
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        put_output(pairs[i][0], a, sizeof(a));
        put_output(pairs[i][1], b, sizeof(b));
        assert_string_equal(a, b);
    }
    /* Malformed answers are still malformed. */
    static const char *const bad[] = {"", "{", "{\"SequenceNumber\":\"1\"", "[]", "{\"a\":\"1\",}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        put_output(bad[i], a, sizeof(a));
        snprintf(b, sizeof(b), "error %d", KK_EPARSE);
        if (strcmp(a, b) != 0)
            fail_msg("answer '%s' gave %s", bad[i], a);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_vectors),
        cmocka_unit_test(test_matches_portable),
        cmocka_unit_test(test_put_record_output),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
