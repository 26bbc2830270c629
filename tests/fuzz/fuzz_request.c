/* Fuzz target: Request JSON (kk_request_parse, kk_request_decode,
 * kk_request_merge_md, kk_request_get in include/kk/request.h).
 *
 * Invariants for any body:
 *   - failure leaves a zeroed request and a non-empty message;
 *   - success gives metadata strictly sorted by key (unique), valid UTF-8;
 *   - parse -> kk_response_json -> parse gives the same metadata and data,
 *     and encoding that again gives the same bytes (a fixed point);
 *   - kk_request_get finds every key (binary search agrees with the array);
 *   - kk_request_decode(extra) == kk_request_parse + kk_request_merge_md(extra);
 *   - kk_request_raw keeps the body as data, byte for byte. */
#include <string.h>

#include "fuzz.h"
#include "kk/buf.h"
#include "kk/err.h"
#include "kk/request.h"

static const struct kk_kv extra[] = {
    {"method", "put_record"}, {"stream_name", "fuzz"}, {"a", ""}, {"partition_key", "k1"}, {"a", "last"},
};

static void same_request(const struct kk_request *a, const struct kk_request *b)
{
    FZ_CHECK(a->n_md == b->n_md);
    for (size_t i = 0; i < a->n_md; i++) {
        FZ_CHECK(strcmp(a->md[i].key, b->md[i].key) == 0);
        FZ_CHECK(strcmp(a->md[i].value, b->md[i].value) == 0);
    }
    FZ_CHECK((a->data == NULL) == (b->data == NULL));
    FZ_CHECK(a->data_len == b->data_len);
    FZ_CHECK(a->data_len == 0 || memcmp(a->data, b->data, a->data_len) == 0);
}

static void check_request(const struct kk_request *r)
{
    for (size_t i = 0; i < r->n_md; i++) {
        FZ_CHECK(r->md[i].key && r->md[i].value);
        FZ_CHECK(i == 0 || strcmp(r->md[i - 1].key, r->md[i].key) < 0);
        FZ_CHECK(fz_valid_utf8(r->md[i].key, strlen(r->md[i].key)));
        FZ_CHECK(fz_valid_utf8(r->md[i].value, strlen(r->md[i].value)));
        const char *v = kk_request_get(r, r->md[i].key);
        FZ_CHECK(r->md[i].value[0] ? v == r->md[i].value : v == NULL);
    }
    FZ_CHECK(r->data || r->data_len == 0);
}

static void encode(struct kk_buf *b, const struct kk_request *r)
{
    kk_buf_reset(b);
    FZ_CHECK(kk_response_json(b, r->md, r->n_md, r->data, r->data_len, false, "") == 0);
}

int kk_fuzz_request(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    struct kk_request req, again, merged, decoded, raw;
    struct kk_buf b1, b2;
    char err[256];
    int rc;

    err[0] = '\0';
    rc = kk_request_parse(&req, body, size, err, sizeof(err));
    if (rc != 0) {
        FZ_CHECK(rc == KK_EPARSE);
        FZ_CHECK(req.md == NULL && req.n_md == 0 && req.data == NULL && req._mem == NULL);
        FZ_CHECK(err[0] != '\0' && strlen(err) < sizeof(err));
        /* decode must reject the same bodies */
        FZ_CHECK(kk_request_decode(&decoded, body, size, false, extra, 5, NULL, 0) == KK_EPARSE);
    } else {
        check_request(&req);
        kk_buf_init(&b1, (size_t)1 << 30);
        kk_buf_init(&b2, (size_t)1 << 30);
        encode(&b1, &req);
        FZ_CHECK(kk_request_parse(&again, b1.base, b1.len, err, sizeof(err)) == 0);
        same_request(&req, &again);
        encode(&b2, &again);
        FZ_CHECK(b1.len == b2.len && memcmp(b1.base, b2.base, b1.len) == 0);
        kk_request_free(&again);
        kk_buf_free(&b1);
        kk_buf_free(&b2);

        FZ_CHECK(kk_request_merge_md(&merged, &req, extra, 5) == 0);
        check_request(&merged);
        FZ_CHECK(kk_request_decode(&decoded, body, size, false, extra, 5, err, sizeof(err)) == 0);
        same_request(&merged, &decoded);
        kk_request_free(&merged);
        kk_request_free(&decoded);
        kk_request_free(&req);
    }

    FZ_CHECK(kk_request_raw(&raw, body, size) == 0);
    FZ_CHECK(raw.n_md == 0 && raw.data_len == size && (size == 0 || memcmp(raw.data, data, size) == 0));
    kk_request_free(&raw);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return kk_fuzz_request(data, size);
}
