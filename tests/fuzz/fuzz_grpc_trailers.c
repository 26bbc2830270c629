/* Fuzz target: gRPC response headers/trailers (kk_grpc_resp_*,
 * kk_grpc_percent_decode, kk_grpc_timeout_format in src/kubemq/grpc_frame.h).
 *
 * Input: header fields "name=value" separated by '\n' (names such as
 * ":status", "grpc-status", "grpc-message"); the first 4 bytes also give a
 * grpc-timeout in ms.  A reference model (last value of each header wins,
 * simple decimal and percent decoding) predicts http_status, grpc_status,
 * message and the result of kk_grpc_resp_result.  Percent decoding is also
 * checked at several output capacities (always NUL-terminated, a prefix of
 * the full decoding) and against percent-encoding (decode(encode(x)) == x);
 * the timeout text must read back to the same duration (at most 8 digits). */
#include <string.h>

#include "fuzz.h"
#include "grpc_frame.h"
#include "kk/err.h"

static int ref_uint(const char *v, size_t n)
{
    int x = 0;

    if (n == 0 || n > 9)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (v[i] - '0');
    }
    return x;
}

static int hexv(char c)
{
    const char *h = "0123456789abcdef", *H = "0123456789ABCDEF";
    for (int i = 0; i < 16; i++)
        if (c == h[i] || c == H[i])
            return i;
    return -1;
}

/* Full decoding, no truncation; out needs n bytes. */
static size_t ref_pct(const char *in, size_t n, char *out)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        if (in[i] == '%' && i + 2 < n && hexv(in[i + 1]) >= 0 && hexv(in[i + 2]) >= 0) {
            out[o++] = (char)(hexv(in[i + 1]) << 4 | hexv(in[i + 2]));
            i += 2;
        } else {
            out[o++] = in[i];
        }
    }
    return o;
}

static void check_pct(const char *v, size_t n)
{
    static const size_t caps[] = {1, 2, 3, 16, KK_GRPC_MSG_MAX};
    char *full = malloc(n + 1), *out = malloc(n + 2), *enc = malloc(3 * n + 1);
    size_t fl;

    FZ_CHECK(full && out && enc);
    fl = ref_pct(v, n, full);
    FZ_CHECK(kk_grpc_percent_decode(v, n, out, 0) == 0);
    for (size_t c = 0; c < sizeof(caps) / sizeof(caps[0]); c++) {
        size_t cap = caps[c] < n + 2 ? caps[c] : n + 2;
        memset(out, 'Z', n + 2);
        size_t got = kk_grpc_percent_decode(v, n, out, cap);
        size_t want = fl < cap - 1 ? fl : cap - 1;
        FZ_CHECK(got == want);
        FZ_CHECK(out[got] == '\0');
        FZ_CHECK(memcmp(out, full, got) == 0);
        if (cap < n + 2)
            FZ_CHECK(out[cap] == 'Z'); /* nothing written past cap */
    }
    /* gRPC's encoding: everything outside printable ASCII and '%' as %XX */
    size_t e = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)v[i];
        if (ch < 0x20 || ch > 0x7e || ch == '%') {
            enc[e++] = '%';
            enc[e++] = "0123456789ABCDEF"[ch >> 4];
            enc[e++] = "0123456789ABCDEF"[ch & 15];
        } else {
            enc[e++] = (char)ch;
        }
    }
    FZ_CHECK(kk_grpc_percent_decode(enc, e, out, n + 1) == n);
    FZ_CHECK(n == 0 || memcmp(out, v, n) == 0);
    free(full);
    free(out);
    free(enc);
}

static void check_timeout(uint32_t ms)
{
    char t[16], *end;

    memset(t, 'Z', sizeof(t));
    kk_grpc_timeout_format(ms, t);
    size_t l = strnlen(t, sizeof(t));
    FZ_CHECK(l >= 2 && l <= 9);
    unsigned long long v = strtoull(t, &end, 10);
    FZ_CHECK(end == t + l - 1);
    if (t[l - 1] == 'm')
        FZ_CHECK(v == ms);
    else
        FZ_CHECK(t[l - 1] == 'S' && v * 1000 >= ms && v * 1000 < (unsigned long long)ms + 1000);
}

int kk_fuzz_grpc_trailers(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data, *end = s + size;
    struct kk_grpc_resp r;
    int http = -1, grpc = -1, gs;
    bool bad = false;
    char msg[KK_GRPC_MSG_MAX];
    const char *m;

    msg[0] = '\0';
    if (size >= 4)
        check_timeout((uint32_t)data[0] << 24 | (uint32_t)data[1] << 16 | (uint32_t)data[2] << 8 | data[3]);
    kk_grpc_resp_init(&r);
    while (s < end) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        const char *line_end = nl ? nl : end;
        const char *eq = memchr(s, '=', (size_t)(line_end - s));
        const char *name = s, *value = eq ? eq + 1 : line_end;
        size_t nlen = (size_t)((eq ? eq : line_end) - s), vlen = (size_t)(line_end - value);

        kk_grpc_resp_header(&r, name, nlen, value, vlen);
        if (nlen == 7 && memcmp(name, ":status", 7) == 0) {
            http = ref_uint(value, vlen);
        } else if (nlen == 11 && memcmp(name, "grpc-status", 11) == 0) {
            grpc = ref_uint(value, vlen);
            bad = grpc < 0;
        } else if (nlen == 12 && memcmp(name, "grpc-message", 12) == 0) {
            FZ_CHECK(kk_grpc_percent_decode(value, vlen, msg, sizeof(msg)) < sizeof(msg));
        }
        check_pct(value, vlen);
        FZ_CHECK(memchr(r.message, '\0', sizeof(r.message)) != NULL);
        s = line_end + (nl ? 1 : 0);
    }
    FZ_CHECK(r.http_status == http && r.grpc_status == grpc && r.bad_status == bad);
    FZ_CHECK(strcmp(r.message, msg) == 0);

    int rc = kk_grpc_resp_result(&r, &gs, &m);
    FZ_CHECK(m != NULL && strlen(m) < KK_GRPC_MSG_MAX);
    FZ_CHECK(kk_grpc_status_name(gs) != NULL && gs >= 0);
    if (http == 200 && grpc == 0) {
        FZ_CHECK(rc == 0 && gs == 0);
    } else {
        FZ_CHECK(rc == KK_EGRPC);
        if (http == 200)
            FZ_CHECK(gs == (grpc >= 0 ? grpc : 13));
        else
            FZ_CHECK(gs != 0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return kk_fuzz_grpc_trailers(data, size);
}
