/* Unit tests of src/core/request.c: Request parsing and Response encoding,
 * byte for byte against the Go (encoding/json-compatible) wire forms. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "kk/b64.h"
#include "kk/buf.h"
#include "kk/err.h"
#include "kk/request.h"

static int parse(struct kk_request *r, const char *s, char *err, size_t errlen)
{
    return kk_request_parse(r, s, strlen(s), err, errlen);
}

static void expect_parse_error(const char *body, const char *needle)
{
    struct kk_request r;
    char err[512];
    assert_int_equal(parse(&r, body, err, sizeof(err)), KK_EPARSE);
    assert_null(r._mem);
    assert_int_equal(r.n_md, 0);
    if (!strstr(err, needle))
        fail_msg("body %s: error '%s' lacks '%s'", body, err, needle);
}

static void test_wire_example(void **state)
{
    (void)state;
    struct kk_request r;
    char err[256];
    const char *body =
        "{\"metadata\":{\"method\":\"put_record\",\"partition_key\":\"0356\",\"stream_name\":\"my_stream\"},"
        "\"data\":\"eyJteV9yZXN1bHQiOiJvayJ9\"}";
    assert_int_equal(parse(&r, body, err, sizeof(err)), 0);
    assert_int_equal(r.n_md, 3);
    assert_string_equal(r.md[0].key, "method");
    assert_string_equal(r.md[1].key, "partition_key");
    assert_string_equal(r.md[2].key, "stream_name");
    assert_string_equal(kk_request_get(&r, "method"), "put_record");
    assert_string_equal(kk_request_get(&r, "partition_key"), "0356");
    assert_string_equal(kk_request_get(&r, "stream_name"), "my_stream");
    assert_null(kk_request_get(&r, "nope"));
    assert_int_equal(r.data_len, 18);
    assert_memory_equal(r.data, "{\"my_result\":\"ok\"}", 18);
    kk_request_free(&r);
    assert_null(r._mem);
}

static void test_sorted_dupes_case(void **state)
{
    (void)state;
    struct kk_request r;
    char err[256];
    /* Case-insensitive field names, unknown fields of every type skipped,
     * duplicate keys (last wins), two metadata objects merge, escapes. */
    const char *body =
        " {\"MetaData\":{\"z\":\"1\",\"a\":\"x\",\"z\":\"2\"},\"other\":[1,-2.5e+3,{\"q\":[true,false,null]},"
        "\"s\\\"\"],\"DATA\":null,\"metadata\":{\"b\\u0041\":\"\\u00e9\\n\\ud83d\\ude00\",\"e\":\"\","
        "\"n\":null}} \n";
    assert_int_equal(parse(&r, body, err, sizeof(err)), 0);
    assert_int_equal(r.n_md, 5);
    assert_string_equal(r.md[0].key, "a");
    assert_string_equal(r.md[1].key, "bA");
    assert_string_equal(r.md[1].value, "\xc3\xa9\n\xf0\x9f\x98\x80");
    assert_string_equal(r.md[2].key, "e");
    assert_string_equal(r.md[3].key, "n");
    assert_string_equal(r.md[4].key, "z");
    assert_string_equal(r.md[4].value, "2");
    /* Empty values are kept but read as absent. */
    assert_string_equal(r.md[2].value, "");
    assert_null(kk_request_get(&r, "e"));
    assert_null(kk_request_get(&r, "n"));
    assert_null(r.data);
    kk_request_free(&r);

    /* metadata:null resets what came before; "Data" escaped base64 works. */
    assert_int_equal(
        parse(&r, "{\"metadata\":{\"a\":\"1\"},\"metadata\":null,\"Data\":\"aGk\\u003d\"}", err, sizeof(err)),
        0);
    assert_int_equal(r.n_md, 0);
    assert_null(r.md);
    assert_int_equal(r.data_len, 2);
    assert_memory_equal(r.data, "hi", 2);
    kk_request_free(&r);
}

static void test_data_null_vs_empty(void **state)
{
    (void)state;
    struct kk_request r;
    char err[256];
    assert_int_equal(parse(&r, "{\"data\":\"\"}", err, sizeof(err)), 0);
    assert_non_null(r.data);
    assert_int_equal(r.data_len, 0);
    kk_request_free(&r);
    assert_int_equal(parse(&r, "{\"data\":null}", err, sizeof(err)), 0);
    assert_null(r.data);
    kk_request_free(&r);
    assert_int_equal(parse(&r, "{}", err, sizeof(err)), 0);
    assert_null(r.data);
    assert_int_equal(r.n_md, 0);
    kk_request_free(&r);
    assert_int_equal(parse(&r, "{\"metadata\":{}}", err, sizeof(err)), 0);
    assert_int_equal(r.n_md, 0);
    kk_request_free(&r);
    /* Go's base64 decoder skips \r and \n (here from JSON escapes). */
    assert_int_equal(parse(&r, "{\"data\":\"aGVs\\r\\nbG8=\\n\"}", err, sizeof(err)), 0);
    assert_int_equal(r.data_len, 5);
    assert_memory_equal(r.data, "hello", 5);
    kk_request_free(&r);
    /* JSON null into a struct is a no-op in Go. */
    assert_int_equal(parse(&r, "null", err, sizeof(err)), 0);
    kk_request_free(&r);
}

static void test_errors(void **state)
{
    (void)state;
    struct kk_request r;
    char err[256];
    assert_int_equal(kk_request_parse(&r, "", 0, err, sizeof(err)), KK_EPARSE);
    assert_string_equal(err, "empty request");
    expect_parse_error("hello", "readObjectStart: expect { or n, but found h");
    expect_parse_error("\"abc\"", "expect { or n");
    expect_parse_error("123", "expect { or n");
    expect_parse_error("[]", "expect { or n");
    expect_parse_error("   ", "expect { or n");
    expect_parse_error("{\"data\":\"aGk\"}", "illegal base64");
    expect_parse_error("{\"data\":\"a*Gk\"}", "illegal base64");
    expect_parse_error("{\"data\":\"aG==aGk=\"}", "illegal base64");
    expect_parse_error("{\"data\":5}", "cannot unmarshal number into Go struct field Request.data");
    expect_parse_error("{\"metadata\":{\"a\":1}}",
                       "cannot unmarshal number into Go struct field Request.metadata of type string");
    expect_parse_error("{\"metadata\":{\"a\":true}}", "cannot unmarshal bool");
    expect_parse_error("{\"metadata\":\"x\"}", "of type map[string]string");
    expect_parse_error("{\"metadata\":{}} x", "bytes left");
    expect_parse_error("{\"metadata\":{}", "");
    expect_parse_error("{\"a\":[1,]}", "");
    expect_parse_error("{\"a\":01}", "");
    expect_parse_error("{\"a\":\"\x01\"}", "control character");
    expect_parse_error("{\"a\":\"\\x\"}", "invalid escape");
    expect_parse_error("{\"a\":tru}", "invalid literal");
    /* Hostile nesting is refused, not recursed into. */
    size_t n = 20000;
    char *deep = malloc(n * 2 + 16);
    strcpy(deep, "{\"a\":");
    memset(deep + 5, '[', n);
    memset(deep + 5 + n, ']', n);
    strcpy(deep + 5 + 2 * n, "}");
    expect_parse_error(deep, "max depth");
    free(deep);
    /* A NULL err buffer is allowed. */
    assert_int_equal(kk_request_parse(&r, "x", 1, NULL, 0), KK_EPARSE);
}

static void test_invalid_utf8_in(void **state)
{
    (void)state;
    struct kk_request r;
    char err[256];
    assert_int_equal(parse(&r, "{\"metadata\":{\"k\":\"a\xff\xc3\"}}", err, sizeof(err)), 0);
    assert_string_equal(kk_request_get(&r, "k"), "a\xef\xbf\xbd\xef\xbf\xbd");
    kk_request_free(&r);
    /* Lone surrogate escapes become U+FFFD. */
    assert_int_equal(parse(&r, "{\"metadata\":{\"k\":\"\\ud800x\"}}", err, sizeof(err)), 0);
    assert_string_equal(kk_request_get(&r, "k"), "\xef\xbf\xbdx");
    kk_request_free(&r);
}

static void expect_response(const struct kk_kv *md, size_t n, const void *data, size_t dlen, bool is_err,
                            const char *error, const char *want)
{
    struct kk_buf b;
    kk_buf_init(&b, 1 << 20);
    assert_int_equal(kk_response_json(&b, md, n, data, dlen, is_err, error), 0);
    if (b.len != strlen(want) || memcmp(b.base, want, b.len) != 0)
        fail_msg("got  %.*s\nwant %s", (int)b.len, b.base, want);
    kk_buf_free(&b);
}

static void test_response_examples(void **state)
{
    (void)state;
    struct kk_kv ok[] = {{"result", "ok"}};
    const char *d = "{\"EncryptionType\":\"NONE\",...}";
    expect_response(ok, 1, d, strlen(d), false, NULL,
                    "{\"metadata\":{\"result\":\"ok\"},\"data\":\"eyJFbmNyeXB0aW9uVHlwZSI6Ik5PTkUiLC4uLn0=\","
                    "\"is_error\":false,\"error\":\"\"}");
    expect_response(
        NULL, 0, NULL, 0, true,
        "All attempts fail:\n#1: error parsing stream_name, value of key stream_name cannot be empty",
        "{\"metadata\":{},\"data\":null,\"is_error\":true,\"error\":\"All attempts fail:\\n#1: error "
        "parsing stream_name, value of key stream_name cannot be empty\"}");
    expect_response(NULL, 0, "", 0, false, "",
                    "{\"metadata\":{},\"data\":\"\",\"is_error\":false,\"error\":\"\"}");
    /* Unsorted metadata is sorted on output. */
    struct kk_kv un[] = {{"z", "1"}, {"b", "2"}, {"a", "<3>"}};
    expect_response(un, 3, "a", 1, false, "",
                    "{\"metadata\":{\"a\":\"\\u003c3\\u003e\",\"b\":\"2\",\"z\":\"1\"},\"data\":\"YQ==\","
                    "\"is_error\":false,\"error\":\"\"}");
}

static void expect_escape(const char *in, size_t len, const char *want)
{
    struct kk_buf b;
    kk_buf_init(&b, 4096);
    assert_int_equal(kk_json_string(&b, in, len), 0);
    if (b.len != strlen(want) || memcmp(b.base, want, b.len) != 0)
        fail_msg("escape: got %.*s want %s", (int)b.len, b.base, want);
    kk_buf_free(&b);
}

static void test_escaping(void **state)
{
    (void)state;
    expect_escape("", 0, "\"\"");
    expect_escape("plain text 123", 14, "\"plain text 123\"");
    expect_escape("\"\\", 2, "\"\\\"\\\\\"");
    expect_escape("\n\r\t", 3, "\"\\n\\r\\t\"");
    expect_escape("\b\f\x01\x1f", 4, "\"\\u0008\\u000c\\u0001\\u001f\"");
    expect_escape("\0", 1, "\"\\u0000\"");
    expect_escape("<a>&", 4, "\"\\u003ca\\u003e\\u0026\"");
    expect_escape("/\x7f", 2, "\"/\x7f\"");
    expect_escape("\xe2\x80\xa8\xe2\x80\xa9", 6, "\"\\u2028\\u2029\"");
    expect_escape("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9, "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"");
    /* Invalid UTF-8: every bad byte is one \ufffd (Go's DecodeRune rule). */
    expect_escape("a\xff", 2, "\"a\\ufffd\"");
    expect_escape("\xc3", 1, "\"\\ufffd\"");
    expect_escape("\xc0\xaf", 2, "\"\\ufffd\\ufffd\"");                       /* overlong */
    expect_escape("\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\"");            /* surrogate */
    expect_escape("\xf4\x90\x80\x80", 4, "\"\\ufffd\\ufffd\\ufffd\\ufffd\""); /* > U+10FFFF */
    expect_escape("\xe2\x82", 2, "\"\\ufffd\\ufffd\"");                       /* truncated */

    /* Bounded: too big fails and leaves the buffer unchanged. */
    struct kk_buf b;
    kk_buf_init(&b, 8);
    assert_int_equal(kk_json_string(&b, "<<", 2), KK_ETOOBIG);
    assert_int_equal(b.len, 0);
    assert_int_equal(kk_response_json(&b, NULL, 0, NULL, 0, false, ""), KK_ETOOBIG);
    assert_int_equal(b.len, 0);
    kk_buf_free(&b);
}

static void test_raw_and_merge(void **state)
{
    (void)state;
    struct kk_request r, m;
    char err[256];
    assert_int_equal(kk_request_raw(&r, "not json", 8), 0);
    assert_int_equal(r.n_md, 0);
    assert_memory_equal(r.data, "not json", 8);
    assert_int_equal(r.data_len, 8);
    kk_request_free(&r);
    assert_int_equal(kk_request_raw(&r, "", 0), 0);
    assert_non_null(r.data);
    assert_int_equal(r.data_len, 0);
    kk_request_free(&r);

    assert_int_equal(parse(&r, "{\"metadata\":{\"stream_name\":\"mine\",\"method\":\"\"},\"data\":\"aGk=\"}",
                           err, sizeof(err)),
                     0);
    struct kk_kv extra[] = {{"stream_name", "s1"}, {"partition_key", "pk"}, {"method", "put_record"}};
    assert_int_equal(kk_request_merge_md(&m, &r, extra, 3), 0);
    kk_request_free(&r); /* the merged request owns its copy */
    assert_int_equal(m.n_md, 3);
    assert_string_equal(kk_request_get(&m, "stream_name"), "mine");  /* request wins */
    assert_string_equal(kk_request_get(&m, "partition_key"), "pk");  /* extra fills a gap */
    assert_string_equal(kk_request_get(&m, "method"), "put_record"); /* empty counts as a gap */
    assert_string_equal(m.md[0].key, "method");
    assert_string_equal(m.md[1].key, "partition_key");
    assert_string_equal(m.md[2].key, "stream_name");
    assert_int_equal(m.data_len, 2);
    assert_memory_equal(m.data, "hi", 2);
    kk_request_free(&m);

    /* No metadata anywhere, no data. */
    assert_int_equal(parse(&r, "{}", err, sizeof(err)), 0);
    assert_int_equal(kk_request_merge_md(&m, &r, NULL, 0), 0);
    assert_int_equal(m.n_md, 0);
    assert_null(m.data);
    kk_request_free(&m);
    kk_request_free(&r);
}

static void test_decode_with_extras(void **state)
{
    (void)state;
    struct kk_request r;
    char err[256];
    struct kk_kv extra[] = {
        {"stream_name", "s1"}, {"partition_key", "pk"}, {"method", "put_record"}, {"partition_key", "pk2"}};
    const char *body = "{\"metadata\":{\"stream_name\":\"mine\",\"method\":\"\"},\"data\":\"aGk=\"}";
    /* Same result as parse + merge_md, in one allocation. */
    assert_int_equal(kk_request_decode(&r, body, strlen(body), false, extra, 4, err, sizeof(err)), 0);
    assert_int_equal(r.n_md, 3);
    assert_string_equal(r.md[0].key, "method");
    assert_string_equal(r.md[0].value, "put_record");
    assert_string_equal(r.md[1].key, "partition_key");
    assert_string_equal(r.md[1].value, "pk2"); /* last extra wins among extras */
    assert_string_equal(r.md[2].key, "stream_name");
    assert_string_equal(r.md[2].value, "mine");
    assert_int_equal(r.data_len, 2);
    assert_memory_equal(r.data, "hi", 2);
    kk_request_free(&r);

    /* Raw: the body verbatim, metadata only from the extras. */
    assert_int_equal(kk_request_decode(&r, "{not json", 9, true, extra, 3, err, sizeof(err)), 0);
    assert_int_equal(r.n_md, 3);
    assert_string_equal(kk_request_get(&r, "stream_name"), "s1");
    assert_int_equal(r.data_len, 9);
    assert_memory_equal(r.data, "{not json", 9);
    kk_request_free(&r);

    /* Errors are the parse errors; extras do not hide them. */
    assert_int_equal(kk_request_decode(&r, "[1]", 3, false, extra, 3, err, sizeof(err)), KK_EPARSE);
    assert_null(r._mem);
    assert_non_null(strstr(err, "expect { or n"));
    assert_int_equal(kk_request_decode(&r, "{\"data\":\"!\"}", 12, false, extra, 3, err, sizeof(err)),
                     KK_EPARSE);
    assert_non_null(strstr(err, "illegal base64"));
    assert_int_equal(kk_request_decode(&r, "", 0, false, extra, 3, err, sizeof(err)), KK_EPARSE);
    assert_string_equal(err, "empty request");
}

static void test_large_roundtrip(void **state)
{
    (void)state;
    size_t n = 1 << 20;
    uint8_t *payload = malloc(n);
    for (size_t i = 0; i < n; i++)
        payload[i] = (uint8_t)(i * 2654435761u >> 13);
    struct kk_kv md[] = {{"method", "put_record"}, {"stream_name", "s"}};
    struct kk_buf b;
    kk_buf_init(&b, 4 << 20);
    assert_int_equal(kk_response_json(&b, md, 2, payload, n, false, ""), 0);
    /* A Response is a valid Request body (extra fields are ignored). */
    struct kk_request r;
    char err[256];
    assert_int_equal(kk_request_parse(&r, b.base, b.len, err, sizeof(err)), 0);
    assert_int_equal(r.data_len, n);
    assert_memory_equal(r.data, payload, n);
    assert_string_equal(kk_request_get(&r, "stream_name"), "s");
    /* And re-encoding gives the same bytes. */
    struct kk_buf b2;
    kk_buf_init(&b2, 4 << 20);
    assert_int_equal(kk_response_json(&b2, r.md, r.n_md, r.data, r.data_len, false, ""), 0);
    assert_int_equal(b.len, b2.len);
    assert_memory_equal(b.base, b2.base, b.len);
    kk_request_free(&r);
    kk_buf_free(&b);
    kk_buf_free(&b2);
    free(payload);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wire_example),       cmocka_unit_test(test_sorted_dupes_case),
        cmocka_unit_test(test_data_null_vs_empty), cmocka_unit_test(test_errors),
        cmocka_unit_test(test_invalid_utf8_in),    cmocka_unit_test(test_response_examples),
        cmocka_unit_test(test_escaping),           cmocka_unit_test(test_raw_and_merge),
        cmocka_unit_test(test_decode_with_extras), cmocka_unit_test(test_large_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
