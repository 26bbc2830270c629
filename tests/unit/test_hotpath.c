/* Unit tests of the hot-path rewrites in src/core: SHA-256 / HMAC-SHA256
 * (kk/sha256.h, both compression paths), the SIMD base64 paths (checked
 * against a bit-by-bit reference, with guard bytes around the output), and
 * the memchr scan of the Request "data" string (errors must stay those of
 * the exact parser). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kk/b64.h"
#include "kk/err.h"
#include "kk/request.h"
#include "kk/sha256.h"

/* ---- SHA-256 ------------------------------------------------------------- */

static void hex(const uint8_t *d, size_t n, char *out)
{
    kk_hex_encode(out, d, n);
}

static void check_vectors(void)
{
    static const char two[] = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    uint8_t d[32];
    char h[65];
    kk_sha256_hex("abc", 3, h);
    assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    kk_sha256_hex("", 0, h);
    assert_string_equal(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    kk_sha256_hex(two, sizeof(two) - 1, h);
    assert_string_equal(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* One million 'a' in uneven updates: every buffering branch. */
    struct kk_sha256 c;
    char a[1000];
    memset(a, 'a', sizeof(a));
    kk_sha256_init(&c);
    size_t left = 1000000, step = 1;
    while (left) {
        size_t n = step < left ? step : left;
        kk_sha256_update(&c, a, n);
        left -= n;
        step = step % 990 + 7; /* 1..996: within a[] */
    }
    kk_sha256_final(&c, d);
    hex(d, 32, h);
    assert_string_equal(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");

    uint8_t key[131];
    memset(key, 0x0b, 20);
    kk_hmac_sha256(key, 20, "Hi There", 8, d);
    hex(d, 32, h);
    assert_string_equal(h, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    kk_hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28, d);
    hex(d, 32, h);
    assert_string_equal(h, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    memset(key, 0xaa, sizeof(key));
    const char *m6 = "Test Using Larger Than Block-Size Key - Hash Key First";
    kk_hmac_sha256(key, sizeof(key), m6, strlen(m6), d);
    hex(d, 32, h);
    assert_string_equal(h, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    /* The pre-keyed form gives the same MAC, and can be reused. */
    struct kk_hmac_sha256_key k;
    uint8_t d2[32];
    kk_hmac_sha256_setkey(&k, "Jefe", 4);
    kk_hmac_sha256_run(&k, "x", 1, d);
    kk_hmac_sha256_run(&k, "what do ya want for nothing?", 28, d2);
    hex(d2, 32, h);
    assert_string_equal(h, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    kk_hmac_sha256("Jefe", 4, "x", 1, d2);
    assert_memory_equal(d, d2, 32);
}

static void test_sha256_vectors(void **state)
{
    (void)state;
    printf("# SHA extensions %s\n", kk_sha256_accelerated() ? "in use" : "not available: portable only");
    check_vectors();
    kk_sha256_force_portable(true);
    check_vectors();
    kk_sha256_force_portable(false);
}

/* Both paths agree on every length around the block edges, and streaming in
 * two pieces split anywhere equals one shot. */
static void test_sha256_paths_agree(void **state)
{
    (void)state;
    uint8_t buf[300], a[32], b[32], c2[32];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 131 + 7);
    for (size_t n = 0; n <= 290; n++) {
        kk_sha256(buf + (n & 7), n, a);
        kk_sha256_force_portable(true);
        kk_sha256(buf + (n & 7), n, b);
        kk_sha256_force_portable(false);
        assert_memory_equal(a, b, 32);
        struct kk_sha256 c;
        kk_sha256_init(&c);
        kk_sha256_update(&c, buf + (n & 7), n / 3);
        kk_sha256_update(&c, buf + (n & 7) + n / 3, n - n / 3);
        kk_sha256_final(&c, c2);
        assert_memory_equal(a, c2, 32);
    }
}

/* ---- base64 -------------------------------------------------------------- */

static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Bit-by-bit reference encoder. */
static size_t ref_encode(char *dst, const uint8_t *src, size_t n)
{
    size_t o = 0, bits = 0;
    uint32_t acc = 0;
    for (size_t i = 0; i < n; i++) {
        acc = acc << 8 | src[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            dst[o++] = A[(acc >> bits) & 63];
        }
    }
    if (bits)
        dst[o++] = A[(acc << (6 - bits)) & 63];
    while (o % 4)
        dst[o++] = '=';
    return o;
}

#define GUARD 32

static void test_b64_roundtrip(void **state)
{
    (void)state;
    static uint8_t src[700], dec[700 + 2 * GUARD];
    static char enc[1000 + GUARD], ref[1000];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof(src); i++) {
        x = x * 1103515245u + 12345u;
        src[i] = (uint8_t)(x >> 16);
    }
    for (size_t n = 0; n <= 600; n++) {
        const uint8_t *s = src + (n % 5);
        size_t rl = ref_encode(ref, s, n);
        memset(enc, 0x7f, sizeof(enc));
        size_t el = kk_b64_encode(enc, s, n);
        assert_int_equal(el, rl);
        assert_int_equal(el, kk_b64_encoded_len(n));
        assert_memory_equal(enc, ref, rl);
        assert_int_equal((unsigned char)enc[el], 0x7f); /* nothing written past the end */
        /* Decode into a buffer with guards on both sides of decoded_max. */
        size_t room = kk_b64_decoded_max(el);
        memset(dec, 0xA5, sizeof(dec));
        long dl = kk_b64_decode(dec + GUARD, enc, el);
        assert_int_equal(dl, (long)n);
        assert_memory_equal(dec + GUARD, s, n);
        for (size_t g = 0; g < GUARD; g++) {
            assert_int_equal(dec[g], 0xA5);
            assert_int_equal(dec[GUARD + room + g], 0xA5);
        }
    }
}

/* Any foreign byte anywhere (inside SIMD blocks or the scalar tail), and
 * padding anywhere but the end, fails the whole decode. */
static void test_b64_rejects(void **state)
{
    (void)state;
    static const unsigned char bad[] = {'=', '*', '-', '_', ' ', '\n', 0, 0x80, 0xff, '"', '\\', '.', ':', '@',
                                        '[', '`', '{'};
    uint8_t src[150], dec[256];
    char enc[256];
    for (size_t i = 0; i < sizeof(src); i++)
        src[i] = (uint8_t)(i * 37);
    size_t el = kk_b64_encode(enc, src, sizeof(src)); /* 200 chars, no padding */
    assert_int_equal(el, 200);
    for (size_t pos = 0; pos < el; pos++) {
        for (size_t b = 0; b < sizeof(bad); b++) {
            char save = enc[pos];
            enc[pos] = (char)bad[b];
            long r = kk_b64_decode(dec, enc, el);
            /* "==" at the very end is valid padding; '=' only in the last two. */
            if (bad[b] == '=' && pos == el - 1)
                assert_int_equal(r, 149);
            else
                assert_int_equal(r, -1);
            enc[pos] = save;
        }
    }
    assert_int_equal(kk_b64_decode(dec, enc, el), 150);
}

/* ---- Request "data" scan ------------------------------------------------- */

static void expect_error(const char *body, const char *needle)
{
    struct kk_request r;
    char err[512];
    assert_int_equal(kk_request_parse(&r, body, strlen(body), err, sizeof(err)), KK_EPARSE);
    assert_null(r._mem);
    if (!strstr(err, needle))
        fail_msg("body %s: error '%s' lacks '%s'", body, err, needle);
}

static void test_data_scan(void **state)
{
    (void)state;
    struct kk_request r;
    char err[512];
    /* Bytes the fast scan does not check make the exact parse say what it says. */
    expect_error("{\"data\":\"aGVs\x01bG8=\"}", "invalid control character");
    expect_error("{\"data\":\"aGVs\x01bG8=\",\"metadata\":5}", "invalid control character");
    expect_error("{\"data\":\"aGVsbG8=\",\"metadata\":{\"a\":\"\x02\"}}", "invalid control character");
    expect_error("{\"data\":\"aGVs\xc3\xa9" "bG8=\"}", "illegal base64");
    expect_error("{\"data\":\"aGVs\xff" "bG8=\"}", "illegal base64");
    expect_error("{\"data\":\"aGVsbG8=", "unexpected end of input");
    expect_error("{\"data\":\"aGVsbG8=\"", "");
    expect_error("{\"data\":\"aGVsbG8=\"} x", "bytes left");

    /* Escapes take the exact path and still decode (Go ignores \r and \n). */
    const char *esc = "{\"data\":\"aGVs\\nbG8\\u003d\"}";
    assert_int_equal(kk_request_parse(&r, esc, strlen(esc), err, sizeof(err)), 0);
    assert_int_equal(r.data_len, 5);
    assert_memory_equal(r.data, "hello", 5);
    kk_request_free(&r);

    /* The last "data" wins whichever path each took. */
    const char *two = "{\"data\":\"aGk\\u003d\",\"data\":\"aGVsbG8=\"}";
    assert_int_equal(kk_request_parse(&r, two, strlen(two), err, sizeof(err)), 0);
    assert_int_equal(r.data_len, 5);
    kk_request_free(&r);
    const char *two_b = "{\"data\":\"aGVsbG8=\",\"data\":\"aGk\\u003d\"}";
    assert_int_equal(kk_request_parse(&r, two_b, strlen(two_b), err, sizeof(err)), 0);
    assert_int_equal(r.data_len, 2);
    kk_request_free(&r);

    /* A large payload through the SIMD decoder, metadata unsorted. */
    static uint8_t raw[3000];
    static char body[5000];
    for (size_t i = 0; i < sizeof(raw); i++)
        raw[i] = (uint8_t)(i * 7 + 3);
    int n = snprintf(body, sizeof(body), "{\"metadata\":{\"stream_name\":\"s\",\"method\":\"put_record\"},\"data\":\"");
    n += (int)kk_b64_encode(body + n, raw, sizeof(raw));
    n += snprintf(body + n, sizeof(body) - (size_t)n, "\"}");
    assert_int_equal(kk_request_parse(&r, body, (size_t)n, err, sizeof(err)), 0);
    assert_int_equal(r.data_len, sizeof(raw));
    assert_memory_equal(r.data, raw, sizeof(raw));
    assert_string_equal(kk_request_get(&r, "method"), "put_record");
    assert_string_equal(kk_request_get(&r, "stream_name"), "s");
    assert_string_equal(r.md[0].key, "method");
    kk_request_free(&r);

    /* Escaped line breaks every 76 characters (MIME style): the exact path
     * unescapes and then decodes in place through the SIMD blocks. */
    char *w = body;
    w += sprintf(w, "{\"data\":\"");
    size_t el = kk_b64_encode(w + 2000, raw, 1500); /* staging area further on */
    memmove(body + 4000 - el, w + 2000, el);
    const char *e = body + 4000 - el;
    for (size_t i = 0; i < el; i += 76) {
        size_t k = el - i < 76 ? el - i : 76;
        memmove(w, e + i, k);
        w += k;
        w += sprintf(w, "\\r\\n");
    }
    w += sprintf(w, "\"}");
    assert_int_equal(kk_request_parse(&r, body, (size_t)(w - body), err, sizeof(err)), 0);
    assert_int_equal(r.data_len, 1500);
    assert_memory_equal(r.data, raw, 1500);
    kk_request_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_vectors), cmocka_unit_test(test_sha256_paths_agree),
        cmocka_unit_test(test_b64_roundtrip),  cmocka_unit_test(test_b64_rejects),
        cmocka_unit_test(test_data_scan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
